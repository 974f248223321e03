#include "sdpo_loss.h"

#include <ATen/ATen.h>

namespace sdpo {

at::Tensor sdpo_step_weights(std::int64_t num_steps, double lambda, StepWeighting weighting) {
  TORCH_CHECK(num_steps >= 1, "sdpo_step_weights: num_steps must be >= 1, got ", num_steps);
  auto k = at::arange(num_steps, at::TensorOptions().dtype(at::kDouble));
  // 9.4: the exponent runs forward (λ^k, 7.3) or backward (λ^(T−1−k)); it only ever scales the
  // log-ratio terms of the loss (7.4), never ΔÂ.
  auto exponent = weighting == StepWeighting::kForward ? k : static_cast<double>(num_steps - 1) - k;
  return at::pow(lambda, exponent);
}

SDPOLossOutput sdpo_loss(const SDPOLossInput& in) {
  SDPOLossOutput out;
  const double c = in.adv_clip_max;
  auto adv_a = in.advantage_a.clamp(-c, c);
  auto adv_b = in.advantage_b.clamp(-c, c);
  // Logged two-sided (the reference counts only the lower side, quirk 11.6).
  out.adv_clipfrac =
      ((in.advantage_a.abs() > c).to(at::kDouble).sum() + (in.advantage_b.abs() > c).to(at::kDouble).sum())
          .item<double>() /
      (2.0 * static_cast<double>(in.advantage_a.numel()));
  auto delta_adv = (adv_a - adv_b).detach();
  auto w = in.weight / in.eta;

  auto ratio_a = in.log_prob_a - in.old_log_prob_a.detach();
  auto ratio_b = in.log_prob_b - in.old_log_prob_b.detach();
  // Eq. 14: unclipped squared error of the weighted log-ratio difference against ΔÂ.
  auto unclipped = (w * (ratio_a - ratio_b) - delta_adv).pow(2);
  if (in.clip_range <= 0) {
    out.loss = unclipped.mean();
    return out;
  }
  // Eq. 15: clip(ℓ_θ, ℓ_old ± ε) − ℓ_old = clip(ρ, ±ε); the gradient is zero outside (−ε, ε).
  const double eps = in.clip_range;
  auto clipped = (w * (ratio_a.clamp(-eps, eps) - ratio_b.clamp(-eps, eps)) - delta_adv).pow(2);
  // Eq. 16: elementwise max; autograd differentiates the selected branch (quirk 11.5).
  out.loss = at::maximum(unclipped, clipped).mean();
  out.clipfrac = (clipped > unclipped).to(at::kDouble).mean().item<double>();
  return out;
}

}  // namespace sdpo
