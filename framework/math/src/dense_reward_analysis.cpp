// Table 3's similarity measures between predicted and target dense rewards (research/algorithms.md
// 9.1 "Table 3 metrics", 12.2). The paper normalizes "to account for scale"; 1-query copy's cosine
// of ~2e-8 says the normalization is per trajectory (9.1, inference), which is what is done here.
#include "sdpo/math/dense_reward_analysis.h"

#include <ATen/ATen.h>

namespace sdpo {
namespace {

at::Tensor as_rows(const at::Tensor& t, const char* who) {
  TORCH_CHECK(
      t.defined() && t.dim() == 2, who, ": expected (N, T) rewards, got ", t.defined() ? t.sizes() : at::IntArrayRef{});
  TORCH_CHECK(t.is_floating_point(), who, ": expected floating-point rewards, got ", t.scalar_type());
  return t.detach().to(at::kCPU, at::kDouble);
}

void check_pair(const at::Tensor& a, const at::Tensor& b, const char* who) {
  TORCH_CHECK(a.sizes() == b.sizes(), who, ": shapes differ, ", a.sizes(), " vs ", b.sizes());
}

}  // namespace

at::Tensor normalize_per_trajectory(const at::Tensor& rewards, double eps) {
  auto x = as_rows(rewards, "normalize_per_trajectory");
  TORCH_CHECK(eps >= 0, "normalize_per_trajectory: eps must be >= 0, got ", eps);
  auto mean = x.mean(1, true);
  auto std = x.std(1, /*unbiased=*/false, true);
  // A constant row has std 0 up to rounding (mean of T equal values need not be exact): the guard
  // is relative to the row's magnitude, and such rows give exact zeros.
  auto scale = at::clamp_min(x.abs().amax(1, true), 1.0);
  auto constant = std <= scale * eps;
  auto z = (x - mean) / at::where(constant, at::ones_like(std), std);
  return at::where(constant, at::zeros_like(z), z);
}

at::Tensor cosine_per_trajectory(const at::Tensor& a, const at::Tensor& b) {
  auto x = as_rows(a, "cosine_per_trajectory"), y = as_rows(b, "cosine_per_trajectory");
  check_pair(x, y, "cosine_per_trajectory");
  auto norms = x.norm(2, 1) * y.norm(2, 1);
  auto zero = norms <= 0;
  return at::where(zero, at::zeros_like(norms), (x * y).sum(1) / at::where(zero, at::ones_like(norms), norms));
}

at::Tensor l1_per_trajectory(const at::Tensor& a, const at::Tensor& b) {
  auto x = as_rows(a, "l1_per_trajectory"), y = as_rows(b, "l1_per_trajectory");
  check_pair(x, y, "l1_per_trajectory");
  return (x - y).abs().sum(1);
}

at::Tensor l2_per_trajectory(const at::Tensor& a, const at::Tensor& b) {
  auto x = as_rows(a, "l2_per_trajectory"), y = as_rows(b, "l2_per_trajectory");
  check_pair(x, y, "l2_per_trajectory");
  return (x - y).pow(2).sum(1).sqrt();
}

DenseRewardComparison compare_dense_rewards(const at::Tensor& predicted, const at::Tensor& target) {
  check_pair(predicted, target, "compare_dense_rewards");
  auto p = normalize_per_trajectory(predicted), t = normalize_per_trajectory(target);
  DenseRewardComparison c;
  c.trajectories = p.size(0);
  TORCH_CHECK(c.trajectories > 0, "compare_dense_rewards: no trajectories");
  c.cosine_mean = cosine_per_trajectory(p, t).mean().item<double>();
  c.l1_sum = l1_per_trajectory(p, t).sum().item<double>();
  auto l2 = l2_per_trajectory(p, t);
  c.l2_sum = l2.sum().item<double>();
  c.l2_pooled = l2.pow(2).sum().sqrt().item<double>();
  return c;
}

}  // namespace sdpo
