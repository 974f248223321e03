#pragma once
// Pure math of few-step distillation (`sdpo pretrain` with method few_step_distillation, issue
// 15): the toy world's stand-in for SD-Turbo. SD-Turbo is a few-step model that the unchanged
// DDIM sampler (trailing spacing, eta 1) samples well at 1 step and still at 2-50 steps; SD-Turbo
// got there by adversarial diffusion distillation. The toy gets there by regression on its
// teacher's trajectories (knowledge distillation in the manner of Luhman and Luhman 2021):
//
//   teacher: z ~ N(0, I) at t_0 = 999, a K-step trailing DDIM trajectory with eta 0,
//            states x_{t_k} (k = 0..K-1) and its output x0^T (clamped to [-1, 1]);
//   student: at every distilled state, x0_hat = ddim_prediction(student(x_{t_k}, t_k, c)).pred_x0,
//            loss_distill = mean (x0_hat - x0^T)^2 over states, pixels and the batch;
//   plus the denoising loss of the base model's training on labelled images (noised images at
//   uniform and few-step timesteps, the prediction against its target), weight `denoise_weight`:
//            loss = loss_distill + denoise_weight * loss_denoise.
//
// The distilled states are those the student's own n-step trailing schedules start their steps
// from, for n in `distill_steps` (t = 999 for 1 step; 999 and 499 for 2; ...): the student learns
// to jump from each of them straight to the teacher's result. An eps-predictor's 1-step output
// is (x - sqrt(1 - ab) eps_hat) / sqrt(ab) with 1 / sqrt(ab_999) ~ 14.6, so a loss on eps_hat
// (the base's training) barely constrains it; the regression is in x0 space, where the sample
// is. With eta 1 the student's later states are not on the teacher's deterministic path but
// q(x_t | x0_hat) draws; the denoising loss keeps the model right there.
// No model, no state: every function is testable against hand-computed values.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "sdpo/math/ddim.h"

namespace sdpo {

/// The positions k in the teacher's `teacher_steps`-step trailing trajectory (timesteps
/// ddim_timesteps(schedule, teacher_steps)) at which states are distilled: those whose timestep is
/// one of the trailing timesteps of some n in `student_steps`. Increasing, without repeats.
/// Throws sdpo::Error naming n when one of n's timesteps is not on the teacher's grid (e.g. 4
/// student steps on a 6-step teacher), or when a count is < 1 or the list is empty.
/// With 1000 training timesteps, 8 teacher steps and {1, 2, 4}: timesteps 999, 749, 499, 249 at
/// positions {0, 2, 4, 6}.
std::vector<std::int64_t> distillation_positions(
    const DDIMSchedule& schedule, std::int64_t teacher_steps, const std::vector<std::int64_t>& student_steps);

/// loss_distill + denoise_weight * loss_denoise, each a mean squared error over all elements:
/// `student_x0` and `teacher_x0` (B_d, ...), `denoise_prediction` and `denoise_target` (B, ...).
/// Returns a 0-dim tensor (differentiable in the student's tensors).
struct FewStepLoss {
  at::Tensor total, distill, denoise;  ///< 0-dim each
};
FewStepLoss few_step_distillation_loss(
    const at::Tensor& student_x0,
    const at::Tensor& teacher_x0,
    const at::Tensor& denoise_prediction,
    const at::Tensor& denoise_target,
    double denoise_weight);

}  // namespace sdpo
