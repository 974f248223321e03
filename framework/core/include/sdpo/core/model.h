#pragma once
// Interface kind `model`: the noise (or velocity, or sample) predictor eps_theta(x_t, t, c).
// It owns the trainable parameters (all of them for the toy model; LoRA adapters for SD-Turbo).
//
// Example:
//   auto model = registry.create<sdpo::Model>(cfg);
//   at::Tensor eps = model->forward(x_t, t, cond);   // (B, C, H, W)
//
// Thread safety: not thread-safe; one trainer drives one model.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/api.h"
#include "sdpo/core/tensor_map.h"

namespace sdpo {

class SDPO_API Model {
 public:
  static constexpr const char* kKind = "model";
  virtual ~Model() = default;

  /// x_t: (B, C, H, W) float latents; t: (B,) int64 timesteps in [0, 999];
  /// cond: (B, L, D) conditioning from the text encoder. Returns (B, C, H, W).
  virtual at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) = 0;

  /// "epsilon", "v_prediction" or "sample": what forward() predicts (research/algorithms.md 2.4).
  virtual std::string prediction_type() const = 0;

  /// Latent shape (C, H, W) of one sample.
  virtual std::vector<std::int64_t> latent_shape() const = 0;

  /// Parameters the optimizer updates (requires_grad = true), in a fixed order.
  virtual std::vector<at::Tensor> trainable_parameters() = 0;

  /// Every weight needed to rebuild the model (base + adapters), keyed by parameter path.
  virtual TensorMap state_dict() const = 0;
  /// Only the trainable weights (what a training checkpoint stores).
  virtual TensorMap trainable_state_dict() const = 0;
  /// Loads weights by name; with `strict`, a missing or unexpected key or a shape mismatch
  /// throws an sdpo::Error naming the key. `source` names the file in messages.
  virtual void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) = 0;

  virtual void set_training(bool training) = 0;
  virtual void to(c10::Device device) = 0;

  /// The dtype the gradients flow through on the way to the trainable parameters: the frozen
  /// base's compute dtype under an adapter. float16 here turns on loss scaling by default
  /// (train.loss_scaling "auto", sdpo/core/loss_scaler.h).
  virtual at::ScalarType trained_dtype() const { return at::kFloat; }

  /// Whether the trainable parameters are an adapter (LoRA) over frozen pretrained weights.
  virtual bool has_adapter() const { return false; }
  /// Switches the adapter off (forward() is then the pretrained model's) or back on. Called only
  /// when has_adapter(); the framework uses it for a reference policy that costs no second copy
  /// of the weights (sdpo/train/reference_model.h).
  virtual void set_adapter_enabled(bool enabled) {}
};

}  // namespace sdpo
