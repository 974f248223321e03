#include "rebel_loss.h"

#include <ATen/ATen.h>

namespace sdpo {

namespace {

// Δρ = ρ^a − ρ^b with the old log-probs as constants (5.3: "Old log-probs are constants").
at::Tensor log_ratio_difference(const RebelLossInput& in) {
  return (in.log_prob_a - in.old_log_prob_a.detach()) - (in.log_prob_b - in.old_log_prob_b.detach());
}

// ΔA = A^a − A^b; no advantage clipping in REBEL (5.3).
at::Tensor advantage_difference(const RebelLossInput& in) { return (in.advantage_a - in.advantage_b).detach(); }

}  // namespace

at::Tensor rebel_per_step_loss(const RebelLossInput& in) {
  TORCH_CHECK(in.log_prob_a.dim() == 1, "rebel_per_step_loss: log-probs must be (B,)");
  const double c = 1.0 / in.eta;
  return (c * log_ratio_difference(in) - advantage_difference(in)).pow(2).mean();
}

at::Tensor rebel_trajectory_loss(const RebelLossInput& in) {
  TORCH_CHECK(in.log_prob_a.dim() == 2, "rebel_trajectory_loss: log-probs must be (B, T)");
  const double c = 1.0 / in.eta;
  // 5.3: the sum over steps is inside the square (a trajectory-level regression).
  return (c * log_ratio_difference(in).sum(1) - advantage_difference(in)).pow(2).mean();
}

at::Tensor rebel_trajectory_residual(const RebelLossInput& in) {
  TORCH_CHECK(in.log_prob_a.dim() == 2, "rebel_trajectory_residual: log-probs must be (B, T)");
  const double c = 1.0 / in.eta;
  return (c * log_ratio_difference(in).detach().sum(1) - advantage_difference(in)).detach();
}

at::Tensor rebel_trajectory_step_surrogate(const RebelLossInput& in, const at::Tensor& residual) {
  TORCH_CHECK(in.log_prob_a.dim() == 1, "rebel_trajectory_step_surrogate: log-probs must be (B,)");
  const double c = 1.0 / in.eta;
  // mean_b(e_b²) has gradient mean_b(2·e_b·c·Σ_k ∇Δρ_b(k)); this is the k-th term of that sum.
  return (2.0 * c * residual.detach() * log_ratio_difference(in)).mean();
}

}  // namespace sdpo
