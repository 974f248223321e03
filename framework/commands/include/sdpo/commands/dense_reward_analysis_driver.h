#pragma once
// `sdpo analyze dense-rewards`: the paper's Table 3 on a manifest's world (research/algorithms.md
// 9.1, 12.2). Samples trajectories with the manifest's model, sampler and training prompts,
// scores the predicted x0 of every step (the target), runs every registered dense_reward
// predictor (default options) on the same trajectories, feeding each the target's exact rewards
// at the steps its plan asks for (no extra reward calls), and compares each prediction with the
// target (sdpo/math/dense_reward_analysis.h).
//
// Example:
//   auto a = analyze_dense_rewards(Manifest::load("experiments/toy/quickstart.json"), {"out", 64});
//   std::cout << format_dense_reward_analysis(a);   // also in out/dense_reward_analysis.{csv,h5}
//
// Thread safety: not thread-safe (builds components, loads plugins).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/math/dense_reward_analysis.h"
#include "sdpo/train/manifest.h"

namespace sdpo {

struct DenseRewardAnalysisOptions {
  std::string output_dir;         ///< empty: <output.dir>/<name> of the manifest
  std::int64_t trajectories = 0;  ///< 0: one training epoch's worth (train.batch_size x
                                  ///< batches_per_epoch, x 2 for a paired algorithm)
};

struct DenseRewardAnalysisRow {
  std::string predictor;                    ///< registered dense_reward name
  std::int64_t queries_per_trajectory = 0;  ///< steps its plan queried per trajectory
  DenseRewardComparison comparison;         ///< against the target, after normalization
  at::Tensor dense;                         ///< (N, T) its raw dense rewards (CPU float)
};

struct DenseRewardAnalysis {
  std::int64_t trajectories = 0;             ///< N
  std::int64_t steps = 0;                    ///< T = sample.steps
  std::string reward;                        ///< the manifest's reward name
  at::Tensor target;                         ///< (N, T) raw exact rewards of every step (CPU float)
  std::vector<DenseRewardAnalysisRow> rows;  ///< one per registered predictor, by name
  std::string csv_path, h5_path;             ///< files written
};

/// Runs the analysis and writes <dir>/dense_reward_analysis.csv and .h5. Throws ManifestError
/// (no reward named, bad trajectory count), NumericError (non-finite rewards) or FileError.
DenseRewardAnalysis analyze_dense_rewards(const Manifest& m, const DenseRewardAnalysisOptions& options);

/// The printable table: a header saying what is averaged and summed, then one line per predictor.
std::string format_dense_reward_analysis(const DenseRewardAnalysis& a);

}  // namespace sdpo
