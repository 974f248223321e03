#pragma once
// Named tensors: state dicts, checkpoints and safetensors files all speak this type.

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace sdpo {

/// Ordered name -> tensor map (names as in the module's parameter paths, e.g. "down.0.conv.weight").
using TensorMap = std::map<std::string, at::Tensor>;

}  // namespace sdpo
