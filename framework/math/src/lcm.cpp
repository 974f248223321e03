// LCM sampler math: research/models.md 8.2 (schedule, scalings, step; RLCM's changes) and 8.3
// (guidance embedding), research/algorithms.md 5.2 (the RLCM policy and its log-prob) and 7.7
// (SDPO on an LCM: `denoised` is the step's predicted clean sample).
#include "sdpo/math/lcm.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sdpo/core/error.h"
#include "sdpo/math/ddim.h"

namespace sdpo {

LCMPolicy parse_lcm_policy(const std::string& name) {
  if (name == "rlcm") return LCMPolicy::kRLCM;
  if (name == "diffusers") return LCMPolicy::kDiffusers;
  throw Error("LCM: policy must be 'rlcm' or 'diffusers', got '" + name + "'");
}

at::Tensor lcm_alphas_cumprod(const LCMSchedule& s) {
  // The LCM's betas are the DDIM ones (models.md 8.2: scaled_linear 0.00085-0.012, 1000 steps).
  DDIMSchedule d;
  d.num_train_timesteps = s.num_train_timesteps;
  d.beta_start = s.beta_start;
  d.beta_end = s.beta_end;
  d.beta_schedule = s.beta_schedule;
  return ddim_alphas_cumprod(d);
}

std::vector<std::int64_t> lcm_timesteps(const LCMSchedule& s, std::int64_t n) {
  const std::int64_t orig = s.original_inference_steps;
  TORCH_CHECK(
      orig >= 1 && orig <= s.num_train_timesteps, "LCM: original_inference_steps must be in [1, ",
      s.num_train_timesteps, "], got ", orig);
  TORCH_CHECK(
      n >= 1 && n <= orig, "LCM: number of steps must be in [1, original_inference_steps = ", orig, "], got ", n);
  // models.md 8.2: k = T // orig; origin = [1..orig]*k - 1, reversed, so index j holds (orig - j)*k - 1.
  const std::int64_t k = s.num_train_timesteps / orig;
  std::vector<std::int64_t> ts;
  if (s.spacing == "linspace") {
    // floor(linspace(0, orig, n, endpoint=False)): numpy computes arange(n) * (orig / n).
    const double step = static_cast<double>(orig) / static_cast<double>(n);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto j = static_cast<std::int64_t>(std::floor(static_cast<double>(i) * step));
      ts.push_back((orig - j) * k - 1);
    }
  } else if (s.spacing == "stride") {
    // algorithms.md 5.1 (the diffusers RLCM ran): origin[::-(orig // n)][:n].
    const std::int64_t skip = orig / n;
    for (std::int64_t i = 0; i < n; ++i) ts.push_back((orig - i * skip) * k - 1);
  } else {
    throw Error("LCM: spacing must be 'linspace' or 'stride', got '" + s.spacing + "'");
  }
  return ts;
}

std::pair<at::Tensor, at::Tensor> lcm_boundary_scalings(
    const at::Tensor& timestep, double timestep_scaling, double sigma_data) {
  // models.md 8.2: s = t * timestep_scaling; c_skip = sd^2/(s^2+sd^2), c_out = s/sqrt(s^2+sd^2).
  auto s = timestep.to(at::kDouble) * timestep_scaling;
  const double sd2 = sigma_data * sigma_data;
  auto denom = s.pow(2) + sd2;
  return {sd2 / denom, s / denom.sqrt()};
}

LCMStepPlan lcm_step_plan(const LCMSchedule& schedule, const at::Tensor& timestep, std::int64_t n, LCMPolicy policy) {
  TORCH_CHECK(timestep.dim() == 1, "LCM step: timestep must be (B,), got ", timestep.sizes());
  const auto ts = lcm_timesteps(schedule, n);
  auto t_cpu = timestep.to(at::kCPU, at::kLong).contiguous();
  const std::int64_t b = t_cpu.size(0);
  auto next = at::empty({b}, at::kLong);
  auto stochastic = at::empty({b}, at::kBool);
  const auto* t = t_cpu.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < b; ++i) {
    std::size_t pos = ts.size();
    for (std::size_t j = 0; j < ts.size(); ++j) {
      if (ts[j] == t[i]) pos = j;
    }
    if (pos == ts.size()) {
      throw Error(
          "LCM step: timestep " + std::to_string(t[i]) + " is not in the " + std::to_string(n) +
          "-step LCM schedule (the sampler's timesteps(" + std::to_string(n) + "))");
    }
    const bool last = pos + 1 == ts.size();
    // models.md 8.2: t' = the next scheduled timestep, t itself on the last step.
    next[i] = last ? t[i] : ts[pos + 1];
    // RLCM injects noise on every step of a multi-step schedule; diffusers on all but the last.
    stochastic[i] = policy == LCMPolicy::kRLCM ? n > 1 : !last;
  }
  return {next.to(timestep.device()), stochastic.to(timestep.device())};
}

LCMConsistencyOutput lcm_consistency_output(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& model_output,
    const at::Tensor& timestep,
    const at::Tensor& sample,
    double timestep_scaling,
    double sigma_data,
    const std::string& prediction) {
  const std::int64_t b = sample.size(0);
  TORCH_CHECK(sample.dim() >= 2, "LCM consistency output: sample must be (B, ...), got ", sample.sizes());
  TORCH_CHECK(
      model_output.sizes() == sample.sizes(), "LCM consistency output: model output ", model_output.sizes(),
      " does not match sample ", sample.sizes());
  TORCH_CHECK(
      timestep.dim() == 1 && timestep.size(0) == b, "LCM consistency output: timestep must be (B,) with B = ", b,
      ", got ", timestep.sizes());
  auto t = timestep.to(sample.device(), at::kLong);
  std::vector<int64_t> bshape(static_cast<size_t>(sample.dim()), 1);
  bshape[0] = b;
  const auto dtype = sample.scalar_type();
  auto ab_t = alphas_cumprod.to(sample.device()).index_select(0, t).view(bshape).to(dtype);
  auto bb_t = 1 - ab_t;

  // algorithms.md 2.4 step 4: the raw x0 estimate from the model output.
  at::Tensor x0;
  if (prediction == "epsilon") {
    x0 = (sample - bb_t.sqrt() * model_output) / ab_t.sqrt();
  } else if (prediction == "v_prediction") {
    x0 = ab_t.sqrt() * sample - bb_t.sqrt() * model_output;
  } else if (prediction == "sample") {
    x0 = model_output;
  } else {
    throw Error("LCM step: prediction must be 'epsilon', 'v_prediction' or 'sample', got '" + prediction + "'");
  }

  // models.md 8.2: denoised = c_out * x0 + c_skip * x_t (boundary condition at t).
  auto [c_skip, c_out] = lcm_boundary_scalings(t, timestep_scaling, sigma_data);
  auto denoised = c_out.view(bshape).to(dtype) * x0 + c_skip.view(bshape).to(dtype) * sample;
  return {denoised, x0};
}

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
    c10::optional<at::Generator> generator) {
  const std::int64_t b = sample.size(0);
  TORCH_CHECK(sample.dim() >= 2, "LCM step: sample must be (B, ...), got ", sample.sizes());
  TORCH_CHECK(
      model_output.sizes() == sample.sizes(), "LCM step: model output ", model_output.sizes(),
      " does not match sample ", sample.sizes());
  TORCH_CHECK(
      timestep.dim() == 1 && timestep.size(0) == b, "LCM step: timestep must be (B,) with B = ", b, ", got ",
      timestep.sizes());
  TORCH_CHECK(
      next_timestep.sizes() == timestep.sizes() && stochastic.sizes() == timestep.sizes(),
      "LCM step: next_timestep and stochastic must be (B,) like timestep");
  TORCH_CHECK(
      !prev_sample.defined() || prev_sample.sizes() == sample.sizes(), "LCM step: prev_sample ", prev_sample.sizes(),
      " does not match sample ", sample.sizes());
  const std::int64_t T = alphas_cumprod.size(0);
  auto t = timestep.to(sample.device(), at::kLong);
  auto t_next = next_timestep.to(sample.device(), at::kLong);
  TORCH_CHECK(
      t.min().item<std::int64_t>() >= 0 && t.max().item<std::int64_t>() < T && t_next.min().item<std::int64_t>() >= 0 &&
          t_next.max().item<std::int64_t>() < T,
      "LCM step: timesteps must be in [0, ", T - 1, "]");
  auto ac = alphas_cumprod.to(sample.device());
  std::vector<int64_t> bshape(static_cast<size_t>(sample.dim()), 1);
  bshape[0] = b;
  const auto dtype = sample.scalar_type();
  auto ab_next = ac.index_select(0, t_next).view(bshape).to(dtype);

  auto [denoised, x0] = lcm_consistency_output(ac, model_output, t, sample, timestep_scaling, sigma_data, prediction);

  // algorithms.md 5.2: x_{t'} ~ N(sqrt(ab_{t'}) denoised, (1 - ab_{t'}) I) where stochastic.
  auto mask = stochastic.to(sample.device(), at::kBool);
  auto mean = ab_next.sqrt() * denoised;
  auto std_dev = (1 - ab_next).sqrt();
  at::Tensor prev = prev_sample;
  if (!prev.defined()) {
    const bool any_noise = mask.any().item<bool>();
    TORCH_CHECK(!any_noise || generator.has_value(), "LCM step: a generator is needed to draw noise");
    if (any_noise) {
      // Noise from the CPU generator, moved: a seed gives the same trajectory on any device.
      auto z = at::randn(sample.sizes(), *generator, sample.options().device(at::kCPU)).to(sample.device());
      prev = at::where(mask.view(bshape), mean + std_dev * z, denoised);
    } else {
      prev = denoised;
    }
    prev = prev.detach();
  }

  // Gaussian log-density of the detached transition, averaged over non-batch dims (2.6); a
  // deterministic step has no density and scores 0.
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < sample.dim(); ++d) dims.push_back(d);
  auto lp = (-(prev.detach().to(dtype) - mean).pow(2) / (2 * std_dev.pow(2)) - std_dev.log() - 0.5 * std::log(2 * M_PI))
                .mean(dims);
  auto log_prob = at::where(mask, lp, at::zeros_like(lp));
  return {prev.to(dtype), denoised, x0, log_prob};
}

at::Tensor lcm_guidance_embedding(const at::Tensor& w, std::int64_t dim) {
  TORCH_CHECK(w.dim() == 1, "LCM guidance embedding: w must be (B,), got ", w.sizes());
  TORCH_CHECK(dim >= 4, "LCM guidance embedding: dim must be >= 4 (the divisor is dim/2 - 1), got ", dim);
  // models.md 8.3, in float32: w' = 1000 w; freq_i = exp(-i ln(10000)/(half-1)); [sin, cos].
  const std::int64_t half = dim / 2;
  auto ww = w.to(at::kFloat) * 1000.0;
  const double scale = std::log(10000.0) / static_cast<double>(half - 1);
  auto freq = at::exp(at::arange(half, w.options().dtype(at::kFloat)) * -scale);
  auto args = ww.unsqueeze(1) * freq.unsqueeze(0);
  auto emb = at::cat({at::sin(args), at::cos(args)}, 1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

}  // namespace sdpo
