#pragma once
// The DDPO losses for one trained step of a mini-batch of trajectories (research/algorithms.md
// 4.3). Pure functions: no model, testable by hand.
//
// Notation map: log_prob = ℓ_θ(k) (per-dimension mean, 2.6), old_log_prob = ℓ_old(k) (the
// sampling-time log-prob), advantage = A (the trajectory's normalized final reward, 4.2),
// clip_range = ε, adv_clip_max = the loss-time advantage clip.

#include <ATen/core/Tensor.h>

namespace sdpo {

struct DDPOLossOutput {
  at::Tensor loss;       ///< scalar, differentiable with respect to log_prob
  double clipfrac = 0;   ///< mean(|ratio − 1| > ε); 0 for the score-function loss
  double approx_kl = 0;  ///< ½·mean((ℓ_θ − ℓ_old)²); 0 for the score-function loss
};

/// DDPO_IS (PPO-clip, the official code): L = mean max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε)),
/// ratio = exp(ℓ_θ − ℓ_old), A clipped to ±adv_clip_max. Tensors are (B,); log_prob may require
/// grad, old_log_prob and advantage are treated as constants.
DDPOLossOutput ddpo_is_loss(
    const at::Tensor& log_prob,
    const at::Tensor& old_log_prob,
    const at::Tensor& advantage,
    double clip_range,
    double adv_clip_max);

/// DDPO_SF (REINFORCE / score function): L = mean(−A·ℓ_θ), A clipped to ±adv_clip_max.
DDPOLossOutput ddpo_sf_loss(const at::Tensor& log_prob, const at::Tensor& advantage, double adv_clip_max);

}  // namespace sdpo
