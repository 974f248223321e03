#pragma once
// Latent similarities, anchors and similarity-weighted dense rewards (research/algorithms.md
// 7.1-7.2, 9.1). Pure functions shared by the dense-reward predictors.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "sdpo/core/dense_reward.h"

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

// ---- Building blocks of the 9.1 ablation variants ----------------------------------------------

/// The step indices {0, ..., T-1} for every row: (n, T) int64 (every step queried).
at::Tensor every_step(std::int64_t n, std::int64_t num_steps, const at::TensorOptions& options);

/// The ends {0, T-1} for every row: (n, 2) int64, or (n, 1) = {0} when T = 1 (one step).
at::Tensor end_steps(std::int64_t n, std::int64_t num_steps, const at::TensorOptions& options);

/// 9.1 fixed anchor: k = floor(T/2) - 1 clamped to [1, T-2], which is k = 24 at T = 50 (the "25th
/// step"). Needs T >= 3 (no interior step otherwise).
std::int64_t fixed_anchor(std::int64_t num_steps);

/// 9.1 random anchors: n independent draws, uniform in {1, ..., T-2}, from `generator` (a CPU
/// generator). Needs T >= 3. Returns (n,) int64 on the CPU.
at::Tensor random_anchors(std::int64_t n, std::int64_t num_steps, at::Generator& generator);

/// 9.1 "2 queries & interpolation": R̂_k = (1 - w_k) q_first + w_k q_last with w_k = k / (T-1),
/// i.e. q(0) + (k/(T-1)) (q(T-1) - q(0)) with both ends exact. first, last: (N,). Returns (N, T)
/// float; T = 1 gives q_last (the only step is both ends).
at::Tensor dense_linear_interpolation(const at::Tensor& first, const at::Tensor& last, std::int64_t num_steps);

/// The plan of the similarity-weighted variants (7.1-7.2, 9.1). pred_x0: (N, T, ...). anchor:
/// (N,) int64 or undefined.
///   - T = 1: steps (N, 1) = {0}; no similarities, no anchor.
///   - anchor undefined, T >= 2: steps (N, 2) = (0, T-1); similarities (N, 2, T).
///   - anchor defined (needs T >= 3): steps (N, 3) = (0, T-1, anchor), in that order so that the
///     anchor's exact reward is written last (7.2 step 3); similarities (N, 3, T); plan.anchor set.
QueryPlan similarity_plan(const at::Tensor& pred_x0, const at::Tensor& anchor);

/// Every step queried (9.1 "50 queries"): R̂_k = q(k). The steps of each row must cover
/// {0, ..., T-1} (a later query wins where two coincide). queried, steps: (N, Q). Returns (N, T) float.
at::Tensor dense_exact_every_step(const at::Tensor& queried, const at::Tensor& steps, std::int64_t num_steps);

/// Dense rewards of a plan from similarity_plan: the similarity-weighted mix, then exact rewards at
/// every queried step (dense_similarity_weighted); without similarities (T = 1) the queried
/// steps must cover the trajectory (dense_exact_every_step). queried: (N, Q). Returns (N, T) float.
at::Tensor similarity_predict(const QueryPlan& plan, const at::Tensor& queried);

/// Checks queried (N, Q) against plan.steps (N, Q) with a message naming `who`.
void check_queried(const QueryPlan& plan, const at::Tensor& queried, const char* who);

}  // namespace sdpo
