#pragma once
// Latent similarities, anchors and similarity-weighted dense rewards (research/algorithms.md
// 7.1-7.2, 9.1). Pure functions shared by the dense-reward predictors.

#include <ATen/core/Tensor.h>

namespace sdpo {

/// pred_x0: (N, T, ...); steps: (N, Q) int64. Returns (N, Q, T): the cosine similarity of the
/// flattened x̂^(k) to x̂^(steps[n, q]) for every k.
at::Tensor similarity_to_steps(const at::Tensor& pred_x0, const at::Tensor& steps);

/// Adaptive anchor: argmin_k (sim_first[k] + sim_last[k]) per row. sim_*: (N, T).
/// `interior` restricts k to {1, ..., T-2} (the paper's Eq. 10; needs T >= 3); otherwise all k
/// (the reference code). Ties go to the smallest k. Returns (N,) int64.
at::Tensor anchor_argmin(const at::Tensor& sim_first, const at::Tensor& sim_last, bool interior);

/// Similarity-weighted dense rewards: R̂_k = Σ_q r_q s_qk / Σ_q s_qk, then every queried step
/// gets its exact reward, in query order (a later query wins where two coincide).
/// queried: (N, Q); sims: (N, Q, T); steps: (N, Q) int64. Returns (N, T).
at::Tensor dense_similarity_weighted(const at::Tensor& queried, const at::Tensor& sims, const at::Tensor& steps);

/// Overwrites rewards[n, steps[n, q]] = queried[n, q] in query order. rewards: (N, T).
at::Tensor dense_keep_exact(at::Tensor rewards, const at::Tensor& queried, const at::Tensor& steps);

}  // namespace sdpo
