#pragma once
// The trainer: the online RL loop of DESIGN.md section 3, one epoch at a time, with evaluation,
// HDF5 logging (flushed every epoch) and checkpoints; and exact resume from a run folder's last
// checkpoint.
//
// Example:
//   sdpo::Trainer trainer(sdpo::Manifest::load("experiments/toy/quickstart.json"));
//   trainer.run();   // writes <output.dir>/<name>/{run.h5, manifest.json, checkpoints/, *.png}
//
//   sdpo::TrainerOptions o;
//   o.resume = true;  // continue the folder from its last checkpoint (a fresh run if it has none)
//   sdpo::Trainer(sdpo::Manifest::load("experiments/toy/quickstart.json"), o).run();

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "sdpo/train/checkpoint.h"
#include "sdpo/train/manifest.h"

namespace sdpo {

class Model;

/// Data parallel (docs/distributed.md): when the environment names a process group (WORLD_SIZE >
/// 1, sdpo/distributed/distributed.h) every rank runs the same Trainer on its own prompts and noise (its own
/// random stream); rewards are all-gathered before the normalizer, gradients all-reduced before
/// every optimizer step, evaluation split across the ranks; only rank 0 writes the run folder.
/// Without it nothing changes.

/// Wall seconds of one training epoch and of its phases; the phases are also logged per epoch as
/// the train curves time_sampling, time_decode, time_reward, time_prepare and time_update. On a
/// CUDA device the timers synchronize it at phase boundaries; on the CPU they only read a clock.
struct EpochTimes {
  double sampling = 0;  ///< prompt draws, text encoding, initial noise, the sampler loop
  double decode = 0;    ///< decoder->decode of the images scored
  double reward = 0;    ///< reward->score
  double prepare = 0;   ///< dense-reward plan and prediction, buffer assembly, returns, normalizer
  double update = 0;    ///< algorithm->update
  double epoch = 0;     ///< the whole epoch: the phases plus logging and the rest
};

struct TrainerOptions {
  TrainerOptions() = default;
  /// `Trainer(m, {dir})`: only the run folder.
  TrainerOptions(std::string dir) : output_dir(std::move(dir)) {}  // NOLINT(google-explicit-constructor)

  std::string output_dir;  ///< overrides <output.dir>/<name> when not empty
  /// Continue the run folder from its newest complete checkpoint (checkpoints/epoch_<k>):
  /// restore the trainable weights, optimizer, normalizer, random generator and counters, roll
  /// the run file back to epoch k (sdpo/train/run_folder.h) and train epochs k+1.. from there. On CPU
  /// the result is bit-identical to a run that never stopped. The manifest may differ from the
  /// run's only in resume_free_keys() (e.g. a larger train.epochs); otherwise run() throws a
  /// ManifestError naming the keys. A folder without a checkpoint starts afresh.
  bool resume = false;
  /// Without `resume`, a folder that already holds a run (run.h5 or a checkpoint) is refused;
  /// with `overwrite` the new run replaces it. Either way a folder another process is writing is
  /// refused (sdpo/train/run_lock.h).
  bool overwrite = false;
  /// Called after every completed epoch (logged, evaluated, checkpointed if due) with the
  /// counters. An exception from it stops the run like any other error: the run file is closed
  /// and the last checkpoint stays (how tests interrupt a run; how `sdpo experiment` reports).
  std::function<void(const TrainingCounters&)> on_epoch;
  /// Applied once to the built model, and to the reference model when the algorithm has one,
  /// before training: every forward of the run then goes through what it returns (`sdpo bench`
  /// counts them with sdpo/commands/counting_model.h). It must forward every Model call to its argument.
  std::function<std::shared_ptr<Model>(std::shared_ptr<Model>)> wrap_model;
  /// Called at the end of every training epoch (before evaluation and checkpoint) with its times.
  std::function<void(const EpochTimes&)> on_epoch_times;
  /// Test hook (tests/integration/distributed_test.cpp): in one process, sample every epoch (every
  /// batch under train.update_schedule per_batch) as `sampling_ranks` data-parallel ranks would (rank r's batches from
  /// rank r's random stream, sdpo/distributed/distributed.h's rank_seed) and train on their union, laid out as the
  /// ranks' rewards are gathered. With train.train_batch_size scaled by the same factor, its first update is that of
  /// `sampling_ranks` processes (up to float rounding). 1: an ordinary run.
  std::int64_t sampling_ranks = 1;
};

class Trainer {
 public:
  explicit Trainer(Manifest manifest, TrainerOptions options = {});
  ~Trainer();

  /// Runs every epoch (from the resumed one with TrainerOptions::resume). On a NaN/Inf
  /// (sdpo::NumericError) or any other error the run file is flushed and closed, the last good
  /// checkpoint stays, and the error is rethrown with the epoch.
  void run();

  const std::string& run_dir() const;
  /// The epoch run() started from: 0, or the checkpoint it resumed (valid after run()).
  std::int64_t resumed_from() const;
  /// Mean evaluation reward per step count after the last evaluation ("steps_<n>" -> value).
  const std::map<std::string, double>& last_eval() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sdpo
