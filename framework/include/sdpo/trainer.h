#pragma once
// The trainer: the online RL loop of DESIGN.md section 3, one epoch at a time, with evaluation,
// HDF5 logging (flushed every epoch) and checkpoints.
//
// Example:
//   sdpo::Trainer trainer(sdpo::Manifest::load("experiments/toy/quickstart.json"));
//   trainer.run();   // writes <output.dir>/<name>/{run.h5, manifest.json, checkpoints/, *.png}

#include <map>
#include <memory>
#include <string>

#include "sdpo/manifest.h"

namespace sdpo {

struct TrainerOptions {
  std::string output_dir;  ///< overrides <output.dir>/<name> when not empty
};

class Trainer {
 public:
  explicit Trainer(Manifest manifest, TrainerOptions options = {});
  ~Trainer();

  /// Runs every epoch. On a NaN/Inf (sdpo::NumericError) or any other error the run file is
  /// flushed and closed, the last good checkpoint stays, and the error is rethrown with the epoch.
  void run();

  const std::string& run_dir() const;
  /// Mean evaluation reward per step count after the last evaluation ("steps_<n>" -> value).
  const std::map<std::string, double>& last_eval() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sdpo
