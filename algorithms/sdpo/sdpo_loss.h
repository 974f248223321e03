#pragma once
// The SDPO loss for one trained step of a batch of pairs (research/algorithms.md 7.4, paper
// Eqs. 14-16). Pure function: no model, testable by hand.
//
// Notation map: log_prob_* = ℓ_θ^m(k), old_log_prob_* = ℓ_old^m(k), advantage_* = Â^m_k,
// weight = λ^k (or the variant's weight), eta = η (log-ratio scale), clip_range = ε.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sdpo {

/// Which end of the trajectory the stepwise importance weights favour (research/algorithms.md
/// 7.3, 9.4): kForward w_k = λ^k (the default; the first, noisiest step weighs 1), kReverse
/// w_k = λ^(T−1−k) (the reference code's commented-out line; the last step weighs 1).
enum class StepWeighting { kForward, kReverse };

/// The weights w_k of every step k = 0..T−1 as a (T,) float64 tensor (before the division by η).
at::Tensor sdpo_step_weights(std::int64_t num_steps, double lambda, StepWeighting weighting);

struct SDPOLossInput {
  at::Tensor log_prob_a, log_prob_b;          ///< (B,) differentiable
  at::Tensor old_log_prob_a, old_log_prob_b;  ///< (B,) constants (sampling-time log-probs)
  at::Tensor advantage_a, advantage_b;        ///< (B,) constants
  at::Tensor weight;                          ///< (B,) stepwise importance weight λ^k
  double eta = 1.0;                           ///< log-ratio scale factor η
  double clip_range = 1e-4;                   ///< ε on per-dimension-mean log-ratios; <= 0: no clipping
  double adv_clip_max = 5.0;                  ///< advantages clipped to ±this
};

struct SDPOLossOutput {
  at::Tensor loss;          ///< scalar: mean over pairs of max(l, l̃)
  double clipfrac = 0;      ///< fraction of pairs where the clipped branch is larger
  double adv_clipfrac = 0;  ///< fraction of advantages (a and b) moved by the ±adv_clip_max clip
};

SDPOLossOutput sdpo_loss(const SDPOLossInput& in);

}  // namespace sdpo
