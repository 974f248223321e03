// Dynamic loss scaling with torch.cuda.amp.GradScaler's semantics (loss_scaler.h).
#include "sdpo/core/loss_scaler.h"

#include <ATen/ATen.h>

#include <sstream>

#include "sdpo/core/error.h"

namespace sdpo {

bool loss_scaling_enabled(const std::string& mode, at::ScalarType trained_dtype) {
  if (mode == "on") return true;
  if (mode == "off") return false;
  if (mode == "auto") return trained_dtype == at::kHalf;
  throw Error("loss_scaling: expected \"auto\", \"on\" or \"off\", got '" + mode + "'");
}

LossScaler::LossScaler(const LossScalingOptions& options) : options_(options), scale_(options.init_scale) {
  if (!options_.enabled) return;
  TORCH_CHECK(options_.init_scale > 0, "loss scaling: init_scale must be > 0");
  TORCH_CHECK(options_.growth_factor >= 1, "loss scaling: growth_factor must be >= 1");
  TORCH_CHECK(
      options_.backoff_factor > 0 && options_.backoff_factor < 1, "loss scaling: backoff_factor must be in (0, 1)");
  TORCH_CHECK(options_.growth_interval >= 1, "loss scaling: growth_interval must be >= 1");
}

void LossScaler::unscale(const std::vector<at::Tensor>& parameters) const {
  if (!options_.enabled) return;
  // GradScaler multiplies by the reciprocal (exact for a power-of-two scale); the norm the
  // optimizer takes next, and its clip, then see the true gradient.
  const double inverse = 1.0 / scale_;
  for (const auto& p : parameters) {
    if (p.grad().defined()) p.grad().mul_(inverse);
  }
}

void LossScaler::update(bool finite) {
  if (!options_.enabled) return;
  if (finite) {
    if (++growth_tracker_ >= options_.growth_interval) {
      scale_ *= options_.growth_factor;
      growth_tracker_ = 0;
    }
    return;
  }
  ++skipped_;
  growth_tracker_ = 0;
  const double next = scale_ * options_.backoff_factor;
  if (next < options_.min_scale) {
    std::ostringstream s;
    s << "optimizer: the gradient is NaN or Inf even at loss scale " << scale_ << " (" << skipped_
      << " steps skipped so far); a backoff would go below " << options_.min_scale
      << ": the training has diverged, not underflowed";
    throw NumericError(s.str());
  }
  scale_ = next;
}

void LossScaler::save(TensorMap& out) const {
  if (!options_.enabled) return;
  out["loss_scaler.scale"] = at::scalar_tensor(scale_, at::kDouble);
  out["loss_scaler.growth_tracker"] = at::scalar_tensor(growth_tracker_, at::kLong);
  out["loss_scaler.skipped"] = at::scalar_tensor(skipped_, at::kLong);
}

void LossScaler::load(const TensorMap& in) {
  if (!options_.enabled) return;
  auto scale = in.find("loss_scaler.scale");
  if (scale == in.end()) {
    scale_ = options_.init_scale;
    growth_tracker_ = skipped_ = 0;
    return;
  }
  scale_ = scale->second.item<double>();
  auto tracker = in.find("loss_scaler.growth_tracker");
  auto skipped = in.find("loss_scaler.skipped");
  growth_tracker_ = tracker == in.end() ? 0 : tracker->second.item<std::int64_t>();
  skipped_ = skipped == in.end() ? 0 : skipped->second.item<std::int64_t>();
}

}  // namespace sdpo
