#include "ddpo_loss.h"

#include <ATen/ATen.h>

namespace sdpo {

DDPOLossOutput ddpo_is_loss(
    const at::Tensor& log_prob,
    const at::Tensor& old_log_prob,
    const at::Tensor& advantage,
    double clip_range,
    double adv_clip_max) {
  DDPOLossOutput out;
  // 4.2: advantages are clipped at loss time, not by the normalizer.
  auto adv = advantage.detach().clamp(-adv_clip_max, adv_clip_max);
  auto log_ratio = log_prob - old_log_prob.detach();
  auto ratio = at::exp(log_ratio);
  // 4.3: the pessimistic (elementwise max) of the unclipped and clipped surrogate losses; autograd
  // differentiates the selected branch, so a clipped ratio on the side A pushes it carries no gradient.
  auto unclipped = -adv * ratio;
  auto clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range);
  out.loss = at::maximum(unclipped, clipped).mean();
  auto lr = log_ratio.detach();
  out.approx_kl = 0.5 * (lr * lr).mean().item<double>();
  out.clipfrac = ((ratio.detach() - 1.0).abs() > clip_range).to(at::kDouble).mean().item<double>();
  return out;
}

DDPOLossOutput ddpo_sf_loss(const at::Tensor& log_prob, const at::Tensor& advantage, double adv_clip_max) {
  DDPOLossOutput out;
  auto adv = advantage.detach().clamp(-adv_clip_max, adv_clip_max);
  // 4.3 DDPO_SF: the score-function estimator; its gradient is −A·∇ℓ_θ, which equals the IS
  // gradient at θ = θ_old (ratio 1).
  out.loss = (-adv * log_prob).mean();
  return out;
}

}  // namespace sdpo
