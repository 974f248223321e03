#pragma once
// Pure DDIM math (research/algorithms.md section 2): the scaled-linear schedule, trailing and
// leading spacing, and one step with the Gaussian log-density of the transition. No model, no
// state: testable against hand-computed values.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sdpo {

struct DDIMSchedule {
  std::int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  ///< "scaled_linear" or "linear"
  std::string spacing = "trailing";             ///< "trailing" or "leading"
  std::int64_t steps_offset = 1;                ///< used by "leading" only
  bool set_alpha_to_one = false;
};

/// alpha_bar_i for i = 0..num_train_timesteps-1, float32 as diffusers computes it (2.1).
at::Tensor ddim_alphas_cumprod(const DDIMSchedule& schedule);

/// Timesteps of an n-step trajectory in denoising order (2.3). Trailing uses round-half-to-even.
std::vector<std::int64_t> ddim_timesteps(const DDIMSchedule& schedule, std::int64_t n);

/// The model's estimates of the clean sample and the noise at `timestep` (2.4 step 3):
/// epsilon: x0 = (x - sqrt(1 - ab) out) / sqrt(ab); v_prediction: x0 = sqrt(ab) x - sqrt(1 - ab) out,
/// eps = sqrt(ab) out + sqrt(1 - ab) x; sample: x0 = out, eps = (x - sqrt(ab) x0) / sqrt(1 - ab).
/// `alphas_cumprod`: (T_train,); `timestep`: (B,) int64; `model_output`, `sample`: (B, ...).
struct DDIMPrediction {
  at::Tensor pred_x0;   ///< (B, ...)
  at::Tensor pred_eps;  ///< (B, ...)
};
DDIMPrediction ddim_prediction(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& sample,
    const std::string& prediction);

struct DDIMStepResult {
  at::Tensor prev_sample;  ///< (B, ...)
  at::Tensor pred_x0;      ///< (B, ...)
  at::Tensor log_prob;     ///< (B,) mean over non-batch dims
};

/// One DDIM step with log-prob (2.4), exactly as the reference: t_prev = t - T_train // n,
/// clamped to [0, T_train-1] before alpha_bar_prev is looked up (quirk 11.1), variance
/// sigma^2 = (1-ab_prev)/(1-ab_t) * (1 - ab_t/ab_prev), std = eta * sigma.
/// `alphas_cumprod`: (T_train,) float; `timestep`: (B,) int64; `prediction`: "epsilon",
/// "v_prediction" or "sample". If `prev_sample` is undefined it is drawn with `generator`.
/// With eta = 0 the step is deterministic and log_prob is undefined (zeros are returned).
DDIMStepResult ddim_step(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& sample,
    std::int64_t num_steps,
    double eta,
    const std::string& prediction,
    const at::Tensor& prev_sample,
    c10::optional<at::Generator> generator);

}  // namespace sdpo
