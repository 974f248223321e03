#pragma once
// State dicts of torch::nn modules as sdpo::TensorMap, with the strict loading rules every
// model and text encoder shares (DESIGN.md section 3, `Model::load_state_dict`), and seeded
// construction that leaves the global random state untouched.
//
// Example (inside a plugin's Model implementation):
//   TensorMap state_dict() const override { return sdpo::module_state_dict(*net_); }
//   void load_state_dict(const TensorMap& w, bool strict, const std::string& src) override {
//     sdpo::module_load_state_dict(*net_, w, strict, src, "model 'toy_unet'");
//   }
//   { sdpo::ScopedSeed seed(options.seed); net_ = MyNet(options); }   // reproducible init
//
// Thread safety: module functions are as thread-safe as the module; ScopedSeed changes the
// process-wide default CPU generator while it lives (use it at start-up only).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "sdpo/core/tensor_map.h"

namespace torch {
namespace nn {
class Module;
}  // namespace nn
}  // namespace torch

namespace sdpo {

/// Parameters, then buffers, of `module` keyed by their dotted paths ("down.0.res.conv1.weight").
/// The tensors are detached views sharing the module's storage (no copy).
TensorMap module_state_dict(const torch::nn::Module& module);

/// Copies `weights` into the parameters and buffers of `module` with the same paths (converting
/// dtype, keeping the module's device). Every check runs before anything is copied, so a refused
/// file leaves the module untouched. Throws sdpo::Error naming `source` (the file), `component`
/// (e.g. "model 'toy_unet'") and the offending key when:
///   - a weight's shape differs from the module's (always);
///   - a weight is not floating point where the module's tensor is (always);
///   - with `strict`, a module key is missing from `weights` or `weights` has a key the module
///     does not.
void module_load_state_dict(
    torch::nn::Module& module,
    const TensorMap& weights,
    bool strict,
    const std::string& source,
    const std::string& component);

/// Number of scalar parameters of `module`.
std::int64_t module_parameter_count(const torch::nn::Module& module);

/// Freezes a module that is only evaluated (a reward model, a text encoder, a decoder): every
/// parameter gets requires_grad = false and the module (with its children) goes to eval mode.
void module_freeze(torch::nn::Module& module);

/// Seeds the default CPU generator for the lifetime of the object and restores its previous state
/// on destruction, so that building a module under it (libtorch's initializers draw from the
/// default generator) is reproducible from `seed` without disturbing anybody else's random stream.
class ScopedSeed {
 public:
  explicit ScopedSeed(std::uint64_t seed);
  ~ScopedSeed();
  ScopedSeed(const ScopedSeed&) = delete;
  ScopedSeed& operator=(const ScopedSeed&) = delete;

 private:
  at::Tensor saved_state_;
};

}  // namespace sdpo
