#pragma once
// Pure math of latent consistency distillation (LCD): Luo et al. 2023, "Latent Consistency
// Models", Algorithm 1, with the guidance weight w = 0 (the teacher's conditional prediction, no
// classifier-free mix). A student f_theta(x, t) = c_skip(t) x + c_out(t) x0_hat(theta; x, t) (the
// lcm sampler's consistency output, lcm_consistency_output in lcm.h) is trained so that
//   f_theta(x_{t_{n+1}}, t_{n+1})  ~=  f_{theta^-}(x^_{t_n}, t_n),
// where x_{t_{n+1}} is a noised data point, x^_{t_n} is one deterministic DDIM step of the frozen
// teacher from it, and theta^- is an exponential moving average of theta. The driver that runs it
// is consistency_distillation_driver.h (`sdpo pretrain` with method latent_consistency_distillation).
// No model, no state: every function is testable against hand-computed values.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sdpo {

/// The two timesteps of one LCD pair, (B,) int64 each.
struct LCDTimesteps {
  at::Tensor start;   ///< t_{n+1} = (index + 1) * k - 1: one of the lcm sampler's origin timesteps
  at::Tensor target;  ///< t_n = max(t_{n+1} - k, 0): where the teacher's DDIM step lands
};

/// Timesteps for `index` (B,) int64 in [0, N) with k = num_train_timesteps / N (integer division,
/// N = original_inference_steps, 1 <= N <= num_train_timesteps). With 1000 and 50: index 0 -> (19,
/// 0), index 49 -> (999, 979). The origin grid is the lcm sampler's (models.md 8.2), so the
/// student is trained at exactly the timesteps its n-step schedules visit; the first grid point
/// steps to t = 0, where the boundary condition f(x, 0) = x makes the target the teacher's step.
LCDTimesteps lcd_timesteps(
    const at::Tensor& index, std::int64_t num_train_timesteps, std::int64_t original_inference_steps);

/// One deterministic DDIM step (eta 0) of the teacher from x at t_{n+1} to t_n (algorithms.md
/// 2.4 with sigma = 0): x^ = sqrt(ab_{t_n}) x0_hat + sqrt(1 - ab_{t_n}) eps_hat, where x0_hat and
/// eps_hat come from `teacher_output` by `prediction` ("epsilon", "v_prediction", "sample").
/// `alphas_cumprod`: (T_train,); `teacher_output`, `x`: (B, ...). Returns (B, ...).
at::Tensor lcd_teacher_step(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& teacher_output,
    const LCDTimesteps& t,
    const at::Tensor& x,
    const std::string& prediction);

/// The distance d(a, b) averaged over every element (a, b: same shape): "l2" -> (a - b)^2;
/// "huber" -> sqrt((a - b)^2 + c^2) - c (the pseudo-Huber loss of improved consistency training,
/// ~ |a - b| for large errors, ~ (a - b)^2 / 2c for small ones). Returns a 0-dim tensor.
at::Tensor consistency_loss(const at::Tensor& a, const at::Tensor& b, const std::string& kind, double huber_c);

/// target <- decay * target + (1 - decay) * online for every pair, in place, without autograd.
/// The lists must match in length and shapes (sdpo::Error otherwise).
void ema_update(const std::vector<at::Tensor>& target, const std::vector<at::Tensor>& online, double decay);

}  // namespace sdpo
