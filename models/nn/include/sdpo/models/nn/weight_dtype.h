#pragma once
// The `dtype` option every paper-scale component has ("float32", "float16" or "bfloat16": the
// dtype its weights are stored and run in), and the one rule that goes with it: this libtorch
// has no float16 convolutions or matrix products on the CPU, so float16 weights must be on a GPU.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <mutex>
#include <string>
#include <vector>

namespace sdpo::nn {

/// The option's choices, for OptionReader::string(..., choices).
const std::vector<std::string>& weight_dtype_names();

/// "float32" -> kFloat, "float16" -> kHalf, "bfloat16" -> kBFloat16; anything else throws.
c10::ScalarType weight_dtype(const std::string& name);

/// Throws sdpo::ManifestError at "<json_path>.dtype" of `file` when float16 weights would run on
/// the CPU `device`.
void check_weight_dtype_on(
    c10::ScalarType dtype, const c10::Device& device, const std::string& file, const std::string& json_path);

/// Where a frozen model's weights are (the paper-scale text encoder, decoder and rewards): the
/// dtype of its `dtype` option, the device, and the mutex that guards the device and the module
/// together, since a reward's forward runs on a worker thread while to() runs on the main one. Every use and every move
/// checks the float16-on-CPU rule, naming the component's options in the manifest.
class WeightPlacement {
 public:
  /// `dtype_name`: the option's value (weight_dtype); `file`, `json_path`: the component's options.
  WeightPlacement(const std::string& dtype_name, std::string file, std::string json_path);

  c10::ScalarType dtype() const { return dtype_; }
  /// The device the weights are on; read it while holding lock_for_use().
  c10::Device device() const { return device_; }

  /// Locks for a forward and checks the dtype on the current device.
  std::unique_lock<std::mutex> lock_for_use();

  /// Locks, checks the dtype on `device`, calls move(device) (which moves the modules) and records
  /// the device only once the move returned.
  template <class Move>
  void move_to(c10::Device device, Move&& move) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_weight_dtype_on(dtype_, device, file_, json_path_);
    move(device);
    device_ = device;
  }

 private:
  c10::ScalarType dtype_;
  std::string file_, json_path_;
  std::mutex mutex_;
  c10::Device device_{c10::kCPU};
};

}  // namespace sdpo::nn
