#pragma once
// The math of the paper's Table 3 (research/algorithms.md 9.1, 12.2): how close each dense-reward
// predictor's R̂ is to the target that queries every step, after per-trajectory normalization.
// Pure functions on (N, T) tensors (N trajectories, T steps); computed in float64 on the CPU.
//
// Example:
//   auto c = compare_dense_rewards(predicted, target);   // both (N, T)
//   // c.cosine_mean ∈ [-1, 1]; c.l1_sum, c.l2_sum, c.l2_pooled >= 0

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sdpo {

/// Below this (relative to the row's largest |value|, at least 1) a row's standard deviation
/// counts as zero: the row is constant and normalizes to zeros.
inline constexpr double kDenseRewardNormEps = 1e-8;

/// Z-scores each row of `rewards` (N, T): (x − mean) / std with the population std (divisor T).
/// A row whose std <= eps · max(1, max_k |x_k|) is constant and becomes all zeros (so the
/// 1-query copy predictor, constant along the trajectory, has cosine 0 to any target).
/// Returns (N, T) float64.
at::Tensor normalize_per_trajectory(const at::Tensor& rewards, double eps = kDenseRewardNormEps);

/// Cosine similarity of each pair of rows of a and b (N, T): a·b / (|a| |b|), 0 where either
/// row is zero. Returns (N,) float64.
at::Tensor cosine_per_trajectory(const at::Tensor& a, const at::Tensor& b);

/// L1 distance of each pair of rows: Σ_k |a_k − b_k|. Returns (N,) float64.
at::Tensor l1_per_trajectory(const at::Tensor& a, const at::Tensor& b);

/// L2 (Euclidean) distance of each pair of rows: sqrt(Σ_k (a_k − b_k)²). Returns (N,) float64.
at::Tensor l2_per_trajectory(const at::Tensor& a, const at::Tensor& b);

/// One predictor against the target, both rows normalized by normalize_per_trajectory first.
struct DenseRewardComparison {
  std::int64_t trajectories = 0;  ///< N
  double cosine_mean = 0;         ///< mean over trajectories of the per-trajectory cosine
  double l1_sum = 0;              ///< sum over trajectories of the per-trajectory L1 distance
  double l2_sum = 0;              ///< sum over trajectories of the per-trajectory L2 distance
  /// sqrt of the sum over trajectories of the squared per-trajectory L2 distances: the L2 norm
  /// of the whole (N, T) difference. Table 3's L2 column has this scale (12.2: 1-query copy
  /// gives sqrt(N·T) here, N·sqrt(T) in l2_sum).
  double l2_pooled = 0;
};

/// predicted, target: (N, T) raw dense rewards (any float dtype and device).
DenseRewardComparison compare_dense_rewards(const at::Tensor& predicted, const at::Tensor& target);

}  // namespace sdpo
