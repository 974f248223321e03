#pragma once
// The `dtype` option every paper-scale component has ("float32", "float16" or "bfloat16": the
// dtype its weights are stored and run in), and the one rule that goes with it: this libtorch
// has no float16 convolutions or matrix products on the CPU, so float16 weights must be on a GPU.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <string>
#include <vector>

namespace sdpo::nn {

/// The option's choices, for OptionReader::string(..., choices).
const std::vector<std::string>& weight_dtype_names();

/// "float32" -> kFloat, "float16" -> kHalf, "bfloat16" -> kBFloat16; anything else throws.
c10::ScalarType weight_dtype(const std::string& name);

/// Throws sdpo::ManifestError at "<json_path>.dtype" of `file` when float16 weights would run on
/// the CPU `device`.
void check_weight_dtype_on(c10::ScalarType dtype, const c10::Device& device, const std::string& file,
                           const std::string& json_path);

}  // namespace sdpo::nn
