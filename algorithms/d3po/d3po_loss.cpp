#include "d3po_loss.h"

#include <ATen/ATen.h>

#include <cmath>

namespace sdpo {

D3POLabels d3po_preference_labels(const at::Tensor& reward_a, const at::Tensor& reward_b) {
  // 6.2: r_a > r_b -> (+1, −1); r_a < r_b -> (−1, +1); tie -> (0, 0) (loss log 2, zero gradient).
  auto ra = reward_a.to(at::kDouble), rb = reward_b.to(at::kDouble);
  auto sign = (ra > rb).to(at::kFloat) - (ra < rb).to(at::kFloat);
  return {sign, -sign};
}

D3POLossOutput d3po_loss(const D3POLossInput& in) {
  D3POLossOutput out;
  // 6.3: q = clip(exp(ℓ_θ − ℓ_ref), 1 − ε, 1 + ε). Clamping the log-ratio to [log(1 − ε), log(1 + ε)]
  // gives the same log q and the same gradient (1 inside, 0 outside) without overflowing exp.
  const double lo = std::log(1.0 - in.eps), hi = std::log(1.0 + in.eps);
  auto log_ratio_a = in.log_prob_a - in.ref_log_prob_a.detach();
  auto log_ratio_b = in.log_prob_b - in.ref_log_prob_b.detach();
  auto log_q_a = log_ratio_a.clamp(lo, hi);
  auto log_q_b = log_ratio_b.clamp(lo, hi);
  // −log σ(β(log q_w − log q_l)) written with the labels; a tie has h = 0 and loss log 2.
  auto z = in.beta * (in.label_a.detach() * log_q_a + in.label_b.detach() * log_q_b);
  out.loss = -at::log_sigmoid(z).mean();

  const double n = 2.0 * static_cast<double>(in.log_prob_a.numel());
  auto sum_abs = [](const at::Tensor& a, const at::Tensor& b) {
    return (a.detach().abs().sum() + b.detach().abs().sum()).item<double>();
  };
  out.mean_abs_log_q = sum_abs(log_q_a, log_q_b) / n;
  out.mean_abs_log_ratio = sum_abs(log_ratio_a, log_ratio_b) / n;
  auto outside = [&](const at::Tensor& r) { return ((r.detach() < lo) | (r.detach() > hi)).to(at::kDouble).sum(); };
  out.clampfrac = (outside(log_ratio_a) + outside(log_ratio_b)).item<double>() / n;
  return out;
}

}  // namespace sdpo
