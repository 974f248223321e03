#pragma once
// Pure latent-consistency-model (LCM) sampler math (research/models.md 8.2-8.3,
// research/algorithms.md 5.2 and 7.7): the LCM timestep schedule, the boundary-condition
// scalings, one step of the LCM policy with the Gaussian log-density of the transition, and the
// guidance-scale ("w") embedding an LCM UNet takes as timestep_cond. No model, no state:
// testable against hand-computed values.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sdpo {

/// Which of the two LCM policies a step follows (models.md 8.2).
enum class LCMPolicy {
  kRLCM,       ///< RLCM's patched step: noise on every step when n > 1, the last one included
  kDiffusers,  ///< stock diffusers: no noise on the last step (x = denoised)
};

/// Parses "rlcm" / "diffusers"; anything else throws sdpo::Error.
LCMPolicy parse_lcm_policy(const std::string& name);

struct LCMSchedule {
  std::int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  ///< "scaled_linear" or "linear"
  std::int64_t original_inference_steps = 50;   ///< the LCM's distillation schedule length
  /// "linspace": n indices at floor(linspace(0, orig, n, endpoint=False)) (diffusers today);
  /// "stride": every (orig // n)-th index (the diffusers version RLCM ran, algorithms.md 5.1).
  std::string spacing = "linspace";
  double timestep_scaling = 10.0;  ///< s = t * timestep_scaling in the boundary scalings
  double sigma_data = 0.5;
};

/// alpha_bar_i for i = 0..num_train_timesteps-1, float32 (the DDIM schedule, algorithms.md 2.1).
at::Tensor lcm_alphas_cumprod(const LCMSchedule& schedule);

/// Timesteps of an n-step trajectory in denoising order (models.md 8.2), 1 <= n <= orig:
/// origin = [1..orig]*k - 1 with k = T_train // orig, reversed, then n entries picked by
/// `schedule.spacing`. E.g. n = 4 (linspace) -> 999, 759, 499, 259.
std::vector<std::int64_t> lcm_timesteps(const LCMSchedule& schedule, std::int64_t n);

/// Boundary-condition scalings at timesteps t (any shape, integer or float):
/// s = t * timestep_scaling, c_skip = sd^2 / (s^2 + sd^2), c_out = s / sqrt(s^2 + sd^2).
/// Returns (c_skip, c_out), float64, shaped like t.
std::pair<at::Tensor, at::Tensor> lcm_boundary_scalings(
    const at::Tensor& timestep, double timestep_scaling, double sigma_data = 0.5);

/// Where a step at timestep t of an n-step trajectory goes (models.md 8.2): t' is the next
/// scheduled timestep, t itself on the last step; `stochastic` says whether noise is injected.
struct LCMStepPlan {
  at::Tensor next_timestep;  ///< (B,) int64, on timestep's device
  at::Tensor stochastic;     ///< (B,) bool, on timestep's device
};

/// The plan for `timestep` (B,) in an n-step trajectory. Every timestep must be one of
/// lcm_timesteps(schedule, n) (sdpo::Error otherwise). kRLCM: stochastic iff n > 1;
/// kDiffusers: stochastic iff t is not the last timestep.
LCMStepPlan lcm_step_plan(const LCMSchedule& schedule, const at::Tensor& timestep, std::int64_t n, LCMPolicy policy);

/// The consistency function's two outputs at timestep t (models.md 8.2).
struct LCMConsistencyOutput {
  at::Tensor denoised;  ///< (B, ...): c_out(t) * x0_hat + c_skip(t) * x_t
  at::Tensor pred_x0;   ///< (B, ...): the raw x0 estimate x0_hat from the model output
};

/// The LCM consistency function f(x_t, t) from a model output (models.md 8.2): x0_hat as in DDIM
/// (algorithms.md 2.4 step 4), then the boundary-condition mix. `alphas_cumprod`: (T_train,);
/// `model_output`, `sample`: (B, ...); `timestep`: (B,) int64 in [0, T_train); `prediction`:
/// "epsilon", "v_prediction" or "sample". At t = 0 with timestep_scaling > 0, c_skip = 1 and
/// c_out = 0, so denoised = x_t exactly (the boundary condition f(x, 0) = x). Differentiable in
/// model_output and sample; the lcm sampler's step and consistency distillation both use it.
LCMConsistencyOutput lcm_consistency_output(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& sample,
    double timestep_scaling,
    double sigma_data,
    const std::string& prediction);

struct LCMStepResult {
  at::Tensor prev_sample;  ///< (B, ...): x_{t'}; the given one when scoring, detached when drawn
  at::Tensor denoised;     ///< (B, ...): c_out * x0_hat + c_skip * x_t, the consistency output
  at::Tensor pred_x0;      ///< (B, ...): the raw x0 estimate x0_hat from the model output
  at::Tensor log_prob;     ///< (B,): mean over non-batch dims; 0 where the step is deterministic
};

/// One LCM step (models.md 8.2, algorithms.md 5.2). `alphas_cumprod`: (T_train,);
/// `model_output`, `sample`: (B, ...); `timestep`, `next_timestep`: (B,) int64; `stochastic`:
/// (B,) bool; `prediction`: "epsilon", "v_prediction" or "sample".
///   x0_hat from the model output as in DDIM (algorithms.md 2.4 step 4);
///   denoised = c_out(t) * x0_hat + c_skip(t) * x_t;
///   stochastic: x_{t'} ~ N(sqrt(ab_{t'}) * denoised, (1 - ab_{t'}) I), log_prob = the Gaussian
///     log-density of the detached x_{t'}, averaged over non-batch dims (algorithms.md 2.6);
///   deterministic: x_{t'} = denoised, log_prob = 0 (no density; as DDIM with eta = 0).
/// If `prev_sample` is undefined it is drawn with `generator` (noise from the CPU generator,
/// moved to the sample's device). Gradients reach model_output through denoised and log_prob.
LCMStepResult lcm_step(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& next_timestep,
    const at::Tensor& stochastic,
    const at::Tensor& sample,
    double timestep_scaling,
    double sigma_data,
    const std::string& prediction,
    const at::Tensor& prev_sample,
    c10::optional<at::Generator> generator);

/// The LCM guidance-scale embedding (models.md 8.3): w (B,) -> (B, dim) float32 with
/// w' = 1000 w, half = dim / 2, freq_i = exp(-i ln(10000) / (half - 1)) for i < half,
/// emb = [sin(w' freq), cos(w' freq)] (sin first, no flip), a zero column appended for odd dim.
/// dim >= 4. Computed in float32 as the reference pipeline does.
at::Tensor lcm_guidance_embedding(const at::Tensor& w, std::int64_t dim);

}  // namespace sdpo
