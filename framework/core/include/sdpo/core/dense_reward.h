#pragma once
// Interface kind `dense_reward`: which predicted-x0 steps of each trajectory to score, and how to
// turn those queried rewards into one reward per step (research/algorithms.md 7.2, 9.1).
//
// Example:
//   QueryPlan plan = predictor->plan(pred_x0, gen);          // pred_x0: (N, T, C, H, W)
//   at::Tensor q = score(decode(pred_x0 gathered at plan.steps));   // (N, Q)
//   at::Tensor dense = predictor->predict(plan, q);          // (N, T)
//
// Thread safety: stateless; thread-safe.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "sdpo/core/api.h"

namespace sdpo {

struct QueryPlan {
  std::int64_t num_steps = 0;  ///< T
  at::Tensor steps;            ///< (N, Q) int64: queried step indices (denoising order)
  at::Tensor similarities;     ///< (N, Q, T) float: cosine of step k to each queried step; may be undefined
  at::Tensor anchor;           ///< (N,) int64: the anchor step where one is chosen; may be undefined
};

class SDPO_API DenseRewardPredictor {
 public:
  static constexpr const char* kKind = "dense_reward";
  virtual ~DenseRewardPredictor() = default;

  /// Reward queries per trajectory of T steps (logged as cost).
  virtual std::int64_t queries_per_trajectory(std::int64_t num_steps) const = 0;

  /// pred_x0: (N, T, ...) predicted clean latents of every step. Returns the steps to query.
  virtual QueryPlan plan(const at::Tensor& pred_x0, at::Generator& generator) const = 0;

  /// queried: (N, Q) rewards of the planned steps. Returns (N, T) dense rewards; queried steps
  /// keep their exact rewards.
  virtual at::Tensor predict(const QueryPlan& plan, const at::Tensor& queried) const = 0;
};

}  // namespace sdpo
