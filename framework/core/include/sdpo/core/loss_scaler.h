#pragma once
// Dynamic loss scaling for training through float16 (research/algorithms.md 4.4: the reference
// trains under accelerate's mixed_precision="fp16", whose torch.cuda.amp.GradScaler multiplies the
// loss before backward). With an accumulation of 32, SDPO's per-element gradients at the UNet
// output are ~1e-6, inside float16's subnormal range: without a scale they flush to zero.
//
// The state machine is GradScaler's:
//   - backward runs on loss * scale; before anything reads the gradients they are unscaled
//     (multiplied by 1 / scale), so the gradient-norm clip sees the true gradient;
//   - a non-finite unscaled gradient skips the step: scale *= backoff_factor, the clean-step count
//     restarts;
//   - after growth_interval clean steps in a row: scale *= growth_factor.
// The scale stays a power of two under the default factors, so scaling and unscaling are exact in
// float32 (a float32 run scaled equals the unscaled one bit for bit).
//
// Example (inside an optimizer step, after the micro-batch backwards of loss * scale()):
//   scaler.unscale(parameters);                  // their gradients /= scale, in place
//   bool finite = std::isfinite(total_grad_norm);
//   if (finite) { clip; step; }
//   scaler.update(finite);
//
// Thread safety: not thread-safe.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/api.h"
#include "sdpo/core/tensor_map.h"

namespace sdpo {

struct LossScalingOptions {
  bool enabled = false;
  double init_scale = 65536.0;  ///< 2^16, GradScaler's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;  ///< clean steps in a row before the scale grows
  /// A skip that would take the scale below this stops the run (NumericError): a loss that
  /// overflows at scale 1 has diverged; no scale can rescue it.
  double min_scale = 1.0;
};

/// "auto" (on exactly when the trained path computes in float16), "on" or "off": whether a run
/// scales its loss. bfloat16 has float32's exponent range and needs no scale.
SDPO_API bool loss_scaling_enabled(const std::string& mode, at::ScalarType trained_dtype);

class SDPO_API LossScaler {
 public:
  explicit LossScaler(const LossScalingOptions& options = {});

  bool enabled() const { return options_.enabled; }
  /// The factor the loss is multiplied by before backward (1 when disabled).
  double scale() const { return options_.enabled ? scale_ : 1.0; }
  /// Divides every defined gradient of `parameters` by scale() in place (nothing when disabled).
  void unscale(const std::vector<at::Tensor>& parameters) const;
  /// After an optimizer step attempt: `finite` false = the step was skipped (backoff), true = it
  /// was applied (growth after growth_interval in a row). Throws NumericError when a backoff would
  /// fall below min_scale. No-op when disabled.
  void update(bool finite);

  std::int64_t skipped() const { return skipped_; }                ///< steps skipped so far
  std::int64_t growth_tracker() const { return growth_tracker_; }  ///< clean steps since the last change

  /// "loss_scaler.scale", ".growth_tracker", ".skipped" (empty when disabled).
  void save(TensorMap& out) const;
  /// Restores what save() wrote; a state without the keys (a checkpoint written unscaled) starts
  /// from init_scale.
  void load(const TensorMap& in);

 private:
  LossScalingOptions options_;
  double scale_;
  std::int64_t growth_tracker_ = 0;
  std::int64_t skipped_ = 0;
};

}  // namespace sdpo
