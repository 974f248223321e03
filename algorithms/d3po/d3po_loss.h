#pragma once
// The D3PO loss for one trained step of a batch of pairs, and its preference labels
// (research/algorithms.md 6.2 and 6.3). Pure functions: no model, testable by hand.
//
// Notation map: log_prob_* = ℓ_θ^m(k), ref_log_prob_* = ℓ_ref^m(k) (the frozen pretrained model on
// the same stored transition), label_* = h_m ∈ {+1, 0, −1}, beta = β, eps = ε.

#include <ATen/core/Tensor.h>

namespace sdpo {

struct D3POLabels {
  at::Tensor label_a, label_b;  ///< (B,) float: +1 for the higher reward, −1 for the lower, 0 on a tie
};

/// 6.2: scalar comparison of the pair's raw final rewards (not advantages).
D3POLabels d3po_preference_labels(const at::Tensor& reward_a, const at::Tensor& reward_b);

struct D3POLossInput {
  at::Tensor log_prob_a, log_prob_b;          ///< (B,) differentiable
  at::Tensor ref_log_prob_a, ref_log_prob_b;  ///< (B,) constants
  at::Tensor label_a, label_b;                ///< (B,) from d3po_preference_labels
  double beta = 0.1;                          ///< β
  double eps = 0.1;                           ///< ratio clip: q ∈ [1 − ε, 1 + ε]
};

struct D3POLossOutput {
  at::Tensor loss;                ///< scalar: mean over pairs of −log σ(β(h_a log q_a + h_b log q_b))
  double mean_abs_log_q = 0;      ///< mean |log q| over both members (after the clip)
  double mean_abs_log_ratio = 0;  ///< mean |ℓ_θ − ℓ_ref| over both members (before the clip)
  double clampfrac = 0;           ///< fraction of ratios (a and b) outside [1 − ε, 1 + ε]
};

D3POLossOutput d3po_loss(const D3POLossInput& in);

}  // namespace sdpo
