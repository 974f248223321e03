// DDIM with log-probabilities: research/algorithms.md sections 2.1-2.4. The conventions (and the
// quirks) are those of the reference implementations (ddpo-pytorch / sdpo ddim_with_logprob),
// so that their hyperparameters (e.g. the 1e-4 clip range on per-dimension log-ratios) carry over.
#include "sdpo/math/ddim.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sdpo/core/error.h"

namespace sdpo {

at::Tensor ddim_alphas_cumprod(const DDIMSchedule& s) {
  TORCH_CHECK(s.num_train_timesteps >= 2, "DDIM schedule: num_train_timesteps must be >= 2");
  at::Tensor betas;
  if (s.beta_schedule == "scaled_linear") {
    // 2.1: float32 linspace of square roots, then squared.
    betas = at::linspace(std::sqrt(s.beta_start), std::sqrt(s.beta_end), s.num_train_timesteps, at::kFloat).pow(2);
  } else if (s.beta_schedule == "linear") {
    betas = at::linspace(s.beta_start, s.beta_end, s.num_train_timesteps, at::kFloat);
  } else {
    throw Error("DDIM schedule: beta_schedule must be 'scaled_linear' or 'linear', got '" + s.beta_schedule + "'");
  }
  return at::cumprod(1.0 - betas, 0);
}

std::vector<std::int64_t> ddim_timesteps(const DDIMSchedule& s, std::int64_t n) {
  const std::int64_t T = s.num_train_timesteps;
  TORCH_CHECK(n >= 1 && n <= T, "DDIM: number of steps must be in [1, ", T, "], got ", n);
  std::vector<std::int64_t> ts;
  if (s.spacing == "trailing") {
    // 2.3: round(arange(T, 0, -T/n)) - 1, numpy rounding (half to even).
    double r = static_cast<double>(T) / static_cast<double>(n);
    for (std::int64_t i = 0; i < n; ++i) {
      double v = static_cast<double>(T) - static_cast<double>(i) * r;
      ts.push_back(static_cast<std::int64_t>(std::nearbyint(v)) - 1);
    }
  } else if (s.spacing == "leading") {
    std::int64_t r = T / n;
    for (std::int64_t i = n - 1; i >= 0; --i) ts.push_back(i * r + s.steps_offset);
  } else {
    throw Error("DDIM: spacing must be 'trailing' or 'leading', got '" + s.spacing + "'");
  }
  return ts;
}

// 2.4 step 3, shared by the sampler's step and by training that regresses the predicted x0
// (few-step distillation).
DDIMPrediction ddim_prediction(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& sample,
    const std::string& prediction) {
  std::vector<int64_t> bshape(static_cast<size_t>(sample.dim()), 1);
  bshape[0] = sample.size(0);
  auto ab_t = alphas_cumprod.to(sample.device()).index_select(0, timestep.to(sample.device(), at::kLong));
  ab_t = ab_t.view(bshape).to(sample.scalar_type());
  auto bb_t = 1 - ab_t;
  if (prediction == "epsilon") return {(sample - bb_t.sqrt() * model_output) / ab_t.sqrt(), model_output};
  if (prediction == "v_prediction") {
    return {ab_t.sqrt() * sample - bb_t.sqrt() * model_output, ab_t.sqrt() * model_output + bb_t.sqrt() * sample};
  }
  if (prediction == "sample") return {model_output, (sample - ab_t.sqrt() * model_output) / bb_t.sqrt()};
  throw Error("DDIM step: prediction must be 'epsilon', 'v_prediction' or 'sample', got '" + prediction + "'");
}

DDIMStepResult ddim_step(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& sample,
    std::int64_t num_steps,
    double eta,
    const std::string& prediction,
    const at::Tensor& prev_sample,
    c10::optional<at::Generator> generator) {
  const std::int64_t T = alphas_cumprod.size(0);
  TORCH_CHECK(
      timestep.dim() == 1 && timestep.size(0) == sample.size(0),
      "DDIM step: timestep must be (B,) with B = ", sample.size(0), ", got ", timestep.sizes());
  TORCH_CHECK(
      model_output.sizes() == sample.sizes(), "DDIM step: model output ", model_output.sizes(),
      " does not match sample ", sample.sizes());
  auto ac = alphas_cumprod.to(sample.device());
  auto t = timestep.to(sample.device(), at::kLong);
  // 2.4 step 1-2: t_prev = t - T // n, clamped to [0, T-1] *before* the >= 0 test, so
  // final_alpha_cumprod is never used (quirk 11.1; harmless when set_alpha_to_one is false).
  auto t_prev = (t - T / num_steps).clamp(0, T - 1);
  std::vector<int64_t> bshape(static_cast<size_t>(sample.dim()), 1);
  bshape[0] = sample.size(0);
  auto ab_t = ac.index_select(0, t).view(bshape).to(sample.scalar_type());
  auto ab_prev = ac.index_select(0, t_prev).view(bshape).to(sample.scalar_type());

  auto [pred_x0, pred_eps] = ddim_prediction(ac, model_output, t, sample, prediction);

  // 2.4 steps 6-7: variance and mean.
  auto variance = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev);
  auto std_dev = eta * variance.sqrt();
  auto dir = (1 - ab_prev - std_dev.pow(2)).clamp_min(0).sqrt() * pred_eps;
  auto mean = ab_prev.sqrt() * pred_x0 + dir;

  at::Tensor prev = prev_sample;
  if (!prev.defined()) {
    TORCH_CHECK(eta == 0 || generator.has_value(), "DDIM step: a generator is needed to draw noise");
    // Noise is drawn on the CPU generator and moved, so a seed gives the same trajectory on any device.
    // On a GPU it is drawn into pinned host memory and copied without blocking: a pageable copy
    // would synchronize the stream at every step (the same values either way).
    at::Tensor z;
    if (eta == 0) {
      z = at::zeros_like(sample);
    } else if (sample.is_cuda()) {
      z = at::randn(sample.sizes(), *generator, sample.options().device(at::kCPU).pinned_memory(true))
              .to(sample.device(), sample.scalar_type(), /*non_blocking=*/true);
    } else {
      z = at::randn(sample.sizes(), *generator, sample.options().device(at::kCPU)).to(sample.device());
    }
    prev = (mean + std_dev * z).detach();
  }

  at::Tensor log_prob;
  if (eta == 0) {
    log_prob = at::zeros({sample.size(0)}, sample.options());
  } else {
    // 2.4 step 9: Gaussian log-density of the detached transition, averaged over non-batch dims.
    auto lp = -(prev.detach() - mean).pow(2) / (2 * std_dev.pow(2)) - std_dev.log() - std::log(std::sqrt(2 * M_PI));
    std::vector<int64_t> dims;
    for (int64_t d = 1; d < sample.dim(); ++d) dims.push_back(d);
    log_prob = lp.mean(dims);
  }
  return {prev.to(sample.scalar_type()), pred_x0, log_prob};
}

}  // namespace sdpo
