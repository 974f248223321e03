#pragma once
// The REBEL losses for a batch of pairs (research/algorithms.md 5.3 and 5.5). Pure functions: no
// model, testable by hand.
//
// Notation map: log_prob_* = ℓ_θ^m(k), old_log_prob_* = ℓ_old^m(k) (sampling-time log-probs),
// ρ^m(k) = ℓ_θ^m(k) − ℓ_old^m(k), advantage_* = A^m (one per trajectory: the sparse final reward
// normalized per prompt), c = 1/eta.

#include <ATen/core/Tensor.h>

namespace sdpo {

struct RebelLossInput {
  at::Tensor log_prob_a, log_prob_b;          ///< (B,) one step, or (B, T) a whole trajectory
  at::Tensor old_log_prob_a, old_log_prob_b;  ///< same shape as log_prob_*, constants
  at::Tensor advantage_a, advantage_b;        ///< (B,) constants
  double eta = 1.0;                           ///< c = 1/eta scales the log-ratio difference
};

/// Per-step form (paper Eq. 7, 5.5): mean over pairs of (c·(ρ^a(k) − ρ^b(k)) − (A^a − A^b))².
/// log_prob_* are (B,) tensors of one step k. Returns a scalar.
at::Tensor rebel_per_step_loss(const RebelLossInput& in);

/// Trajectory form (RLCM, 5.3), direct: mean over pairs of (c·Σ_k(ρ^a(k) − ρ^b(k)) − ΔA)², the sum
/// over steps inside the square. log_prob_* are (B, T). Returns a scalar. Keeps the graph of all T
/// steps alive, so the trainer uses the residual / surrogate pair below instead.
at::Tensor rebel_trajectory_loss(const RebelLossInput& in);

/// The residual e = c·Σ_k(ρ^a(k) − ρ^b(k)) − ΔA per pair, detached: (B,). log_prob_* are (B, T)
/// (typically from a no-grad pass). The trajectory loss is mean(e²).
at::Tensor rebel_trajectory_residual(const RebelLossInput& in);

/// The memory-saving surrogate of step k (5.5): mean over pairs of 2·e·c·(ρ^a(k) − ρ^b(k)) with e
/// detached. log_prob_* are (B,) tensors of one step. Summing its gradients over all T steps gives
/// exactly the gradient of rebel_trajectory_loss (d e²/dθ = 2e·de/dθ, de/dθ = c·Σ_k dΔρ(k)/dθ).
/// Its value is not the loss.
at::Tensor rebel_trajectory_step_surrogate(const RebelLossInput& in, const at::Tensor& residual);

}  // namespace sdpo
