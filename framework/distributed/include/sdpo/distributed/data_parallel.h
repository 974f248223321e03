#pragma once
// The trainer's data-parallel steps (DESIGN.md section 9; sdpo/distributed/distributed.h for the process
// group): how the ranks' rollout buffers line up as one "union" epoch, and the gathers that make
// every rank normalize and log that union.
//
// Union layout: the ranks' buffers concatenated in rank order, keeping the paired layout, i.e.
// [rank 0 rows; rank 1 rows; ...] unpaired and [all a rows by rank; all b rows by rank] paired
// (the same concatenation the trainer uses for the batches of one epoch). A one-process run that
// samples every rank's batches (TrainerOptions::sampling_ranks) builds exactly this buffer, which is
// how tests/integration/distributed_test.cpp compares the two.

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/rollout.h"

namespace sdpo {

class Distributed;

/// Concatenates per-batch (or per-rank) tensors along N; for paired parts ([a rows; b rows]
/// each) the result is [all a rows; all b rows]. Undefined parts give an undefined result.
at::Tensor cat_rows(const std::vector<at::Tensor>& parts, bool paired);
std::vector<std::string> cat_prompts(const std::vector<std::vector<std::string>>& parts, bool paired);

/// The rows of rank `rank` in a union tensor of `world` equal-sized rank parts (inverse of
/// cat_rows).
at::Tensor rank_rows(const at::Tensor& all, int rank, int world, bool paired);

/// One buffer of the parts in the union layout (every field that is defined in the first part).
RolloutBuffer merge_rollouts(const std::vector<RolloutBuffer>& parts);

/// Every rank's dense rewards and prompts in the union layout, on every rank. Prompts travel as
/// their index in `pool` (the training prompts, identical on every rank).
struct GatheredRewards {
  at::Tensor dense_rewards;          ///< (N x world, T)
  std::vector<std::string> prompts;  ///< N x world
};
GatheredRewards gather_rewards(const RolloutBuffer& local, const std::vector<std::string>& pool, Distributed& dist);

/// The mean over ranks of each metric (every rank's algorithm reports the same keys).
Metrics mean_over_ranks(const Metrics& metrics, Distributed& dist);

}  // namespace sdpo
