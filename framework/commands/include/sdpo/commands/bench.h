#pragma once
// `sdpo bench MANIFEST`: the time of training epochs, by phase, against a bare libtorch loop
// doing the same model forward and backward passes on the same inputs, measured in the same
// process (issue 8; benchmarks/README.md defines the ratios).
//
// Example:
//   sdpo::BenchOptions o;
//   o.epochs = 2;
//   auto r = sdpo::run_bench(sdpo::Manifest::load("experiments/toy/quickstart.json"), o);
//   std::cout << sdpo::format_bench_report(r);   // phases, bare-loop seconds, overhead ratios
//
// Thread safety: runs a Trainer; one at a time per process.

#include <cstdint>
#include <string>

#include "sdpo/core/api.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/trainer.h"

namespace sdpo {

struct BenchOptions {
  std::int64_t epochs = 1;         ///< timed epochs (>= 1)
  std::int64_t warmup_epochs = 1;  ///< untimed epochs before them (>= 0)
  /// Run folder; empty: a fresh folder under the system temp folder, removed afterwards.
  std::string output_dir;
};

struct BenchReport {
  std::string name;       ///< the manifest's name
  std::string algorithm;  ///< the manifest's algorithm
  std::string device;     ///< the manifest's device
  std::int64_t devices = 1;
  std::int64_t epochs = 0;  ///< timed epochs
  std::int64_t warmup_epochs = 0;
  EpochTimes times;                ///< summed over the timed epochs
  std::int64_t forwards = 0;       ///< model forwards in the timed epochs (policy and reference)
  std::int64_t grad_forwards = 0;  ///< of which with grad mode on
  std::int64_t backwards = 0;      ///< backward passes through a forward's output
  double bare_seconds = 0;         ///< the bare libtorch loop doing the same calls
  /// Its two parts, replayed one after the other: the forwards without grad (sampling, the
  /// update's old-policy or reference forwards) and those with grad with their backwards.
  double bare_no_grad_seconds = 0;
  double bare_grad_seconds = 0;
  double device_seconds = 0;  ///< device_seconds over the timed epochs (sdpo/train/clocks.h)

  /// epoch seconds / bare-loop seconds (the ratio: decoding and rewards count as overhead).
  double overhead_ratio() const { return times.epoch / bare_seconds; }
  /// (epoch - decode - reward) seconds / bare-loop seconds: the framework's own overhead.
  double overhead_ratio_without_reward() const { return (times.epoch - times.decode - times.reward) / bare_seconds; }
};

/// Trains warmup_epochs + epochs epochs of `manifest` (evaluation off, progress bar off) with its
/// model wrapped in a CountingModel, then replays the timed epochs' model calls in a bare loop
/// (replay_model_calls) after an untimed warm-up of a few of them.
SDPO_API BenchReport run_bench(const Manifest& manifest, const BenchOptions& options);

/// The table `sdpo bench` prints: phase, seconds, share; counts; bare loop; both ratios.
SDPO_API std::string format_bench_report(const BenchReport& report);

}  // namespace sdpo
