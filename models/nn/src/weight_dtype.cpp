#include "sdpo/models/nn/weight_dtype.h"

#include <c10/util/Exception.h>

#include <utility>

#include "sdpo/core/error.h"

namespace sdpo::nn {

const std::vector<std::string>& weight_dtype_names() {
  static const std::vector<std::string> names{"float32", "float16", "bfloat16"};
  return names;
}

c10::ScalarType weight_dtype(const std::string& name) {
  if (name == "float32") return c10::kFloat;
  if (name == "float16") return c10::kHalf;
  if (name == "bfloat16") return c10::kBFloat16;
  TORCH_CHECK(false, "weight dtype must be float32, float16 or bfloat16, got '", name, "'");
}

void check_weight_dtype_on(
    c10::ScalarType dtype, const c10::Device& device, const std::string& file, const std::string& json_path) {
  if (dtype == c10::kHalf && device.is_cpu()) {
    throw ManifestError(
        file, json_path.empty() ? "dtype" : json_path + ".dtype",
        "float16 needs a CUDA device; on the CPU use float32 or bfloat16");
  }
}

WeightPlacement::WeightPlacement(const std::string& dtype_name, std::string file, std::string json_path)
    : dtype_(weight_dtype(dtype_name)), file_(std::move(file)), json_path_(std::move(json_path)) {}

std::unique_lock<std::mutex> WeightPlacement::lock_for_use() {
  std::unique_lock<std::mutex> lock(mutex_);
  check_weight_dtype_on(dtype_, device_, file_, json_path_);
  return lock;
}

}  // namespace sdpo::nn
