#include "sdpo/math/consistency_distillation.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "sdpo/core/error.h"

namespace sdpo {

LCDTimesteps lcd_timesteps(
    const at::Tensor& index, std::int64_t num_train_timesteps, std::int64_t original_inference_steps) {
  TORCH_CHECK(
      original_inference_steps >= 1 && original_inference_steps <= num_train_timesteps,
      "consistency distillation: original_inference_steps must be in [1, num_train_timesteps = ", num_train_timesteps,
      "], got ", original_inference_steps);
  TORCH_CHECK(index.dim() == 1, "consistency distillation: index must be (B,), got ", index.sizes());
  auto i = index.to(at::kLong);
  TORCH_CHECK(
      i.numel() == 0 || (i.min().item<std::int64_t>() >= 0 && i.max().item<std::int64_t>() < original_inference_steps),
      "consistency distillation: index must be in [0, ", original_inference_steps, ")");
  // The LCM origin grid (models.md 8.2): [1..N] * k - 1. One teacher step spans k training
  // timesteps; below the first grid point the step lands on t = 0 (LCM's solver clamps there).
  const std::int64_t k = num_train_timesteps / original_inference_steps;
  at::Tensor start = (i + 1) * k - 1;
  return {start, at::clamp_min(start - k, 0)};
}

at::Tensor lcd_teacher_step(
    const at::Tensor& alphas_cumprod,
    const at::Tensor& teacher_output,
    const LCDTimesteps& t,
    const at::Tensor& x,
    const std::string& prediction) {
  TORCH_CHECK(
      x.dim() >= 2 && teacher_output.sizes() == x.sizes(), "consistency distillation: teacher output ",
      teacher_output.sizes(), " does not match x ", x.sizes());
  const std::int64_t b = x.size(0);
  TORCH_CHECK(
      t.start.sizes() == at::IntArrayRef{b} && t.target.sizes() == at::IntArrayRef{b},
      "consistency distillation: timesteps must be (B,) with B = ", b);
  std::vector<std::int64_t> bshape(static_cast<std::size_t>(x.dim()), 1);
  bshape[0] = b;
  auto ac = alphas_cumprod.to(x.device(), x.scalar_type());
  auto ab = ac.index_select(0, t.start.to(x.device(), at::kLong)).view(bshape);
  auto ab_prev = ac.index_select(0, t.target.to(x.device(), at::kLong)).view(bshape);
  auto a = ab.sqrt(), s = (1 - ab).sqrt();
  // algorithms.md 2.4 step 4, both estimates from the one output.
  at::Tensor x0, eps;
  if (prediction == "epsilon") {
    eps = teacher_output;
    x0 = (x - s * eps) / a;
  } else if (prediction == "v_prediction") {
    x0 = a * x - s * teacher_output;
    eps = a * teacher_output + s * x;
  } else if (prediction == "sample") {
    x0 = teacher_output;
    eps = (x - a * x0) / s;
  } else {
    throw Error(
        "consistency distillation: prediction must be 'epsilon', 'v_prediction' or 'sample', got '" + prediction + "'");
  }
  // DDIM with sigma = 0 (2.4 steps 5-7): the probability-flow ODE solver of LCD's Algorithm 1.
  return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps;
}

at::Tensor consistency_loss(const at::Tensor& a, const at::Tensor& b, const std::string& kind, double huber_c) {
  TORCH_CHECK(a.sizes() == b.sizes(), "consistency loss: shapes differ, ", a.sizes(), " vs ", b.sizes());
  // In float32 at least, as the reference LCD script casts both sides before the distance.
  auto d = a.to(at::kFloat) - b.to(at::kFloat);
  if (kind == "l2") return d.pow(2).mean();
  if (kind == "huber") {
    TORCH_CHECK(huber_c > 0, "consistency loss: huber_c must be > 0, got ", huber_c);
    return (d.pow(2) + huber_c * huber_c).sqrt().sub(huber_c).mean();
  }
  throw Error("consistency loss: kind must be 'l2' or 'huber', got '" + kind + "'");
}

void ema_update(const std::vector<at::Tensor>& target, const std::vector<at::Tensor>& online, double decay) {
  if (target.size() != online.size()) {
    throw Error(
        "EMA update: " + std::to_string(target.size()) + " target tensors but " + std::to_string(online.size()) +
        " online ones");
  }
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < target.size(); ++i) {
    TORCH_CHECK(
        target[i].sizes() == online[i].sizes(), "EMA update: tensor ", i, " has shape ", target[i].sizes(),
        " in the target but ", online[i].sizes(), " online");
    // lerp_: target + (1 - decay) * (online - target) = decay * target + (1 - decay) * online.
    target[i].lerp_(online[i].to(target[i].dtype()), 1.0 - decay);
  }
}

}  // namespace sdpo
