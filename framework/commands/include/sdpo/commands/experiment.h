#pragma once
// Experiment manifests and `sdpo experiment` (DESIGN.md section 5): a base run manifest and a
// grid, expanded into named runs; each run trains in a folder of its own; a complete run is
// skipped, an interrupted one resumes exactly from its last checkpoint (TrainerOptions::resume);
// <output dir>/index.json lists every run and its state.
//
// Experiment manifest (JSON, comments allowed; unknown keys are errors naming the file and path):
//   {
//     "name": "fig5_toy",                       optional; default: the file name without .json
//     "description": "...",                     optional
//     "base": "quickstart.json",                the run manifest every run starts from: a path
//                                               relative to this file, or an inline object
//     "set": {"train.epochs": 10},              optional; overrides for every run
//     "grid": {"train.seed": [1, 2],            optional; each key a --set path, each value a
//              "reward.name": ["colorfulness", "jpeg_compressibility"]},   non-empty array
//     "runs": [{"name": "sdpo", "set": {}},     optional named variants, for settings that do
//              {"name": "ddpo", "set": {"algorithm": {"name": "ddpo"},     not form a cross
//                                       "train.learning_rate": 0.0006}},   product; "base" gives
//              {"name": "rebel", "base": "rebel.json"}],                   a variant its own base
//     "output": {"dir": "runs/fig5_toy"},       optional; default runs/<name> (relative to the
//                                               current directory, as run manifests' paths)
//     "plots": [...]                            optional; read by experiments/plot.py only
//   }
// "base" may be left out when every variant has its own. The runs are every named variant (one
// unnamed variant without "runs") x every point of the grid's cross product (keys in file
// order, the last varying fastest). Each run's manifest is its base with, in order, "set", the
// variant's "set", the grid point and the command line's --set applied (values are JSON: a
// string, number, object...), plus "name" = the run's name and "output.dir" = the experiment's
// folder.
// A run's name, which is also its folder under the output dir, is the variant's name (at most 40
// letters, digits and ._+-=, without "__") and one
// "<key>=<value>" per grid key, joined by "__" (e.g. "ddpo__train.seed=2"); "base" when there is
// neither. Values are written as JSON (strings unquoted, doubles in their shortest %g form:
// 0.0001, 1.5e-05); characters other
// than letters, digits and ._+- become '-', and an object, array or value longer than 40
// characters becomes "h" + 8 hex digits of a hash of its JSON. Names depend only on the
// settings, so adding a grid value or a variant never renames another run's folder; two runs
// that would share a name are an error.
//
// Example:
//   auto e = sdpo::Experiment::load("experiments/toy/fig5.json");
//   auto report = sdpo::run_experiment(e, {}, std::cout);   // report.failed > 0: exit non-zero

#include <boost/json/object.hpp>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "sdpo/train/checkpoint.h"
#include "sdpo/train/manifest.h"

namespace sdpo {

/// One run of an experiment.
struct ExperimentRun {
  std::string name;              ///< stable, unique; also the folder name
  std::string variant;           ///< runs[i].name; empty without "runs"
  boost::json::object settings;  ///< what sets it apart: the variant's "set" and its grid point
  Manifest manifest;             ///< resolved (see the file comment)
  std::string dir;               ///< <output dir>/<name>
};

struct Experiment {
  std::string file;
  std::string name;
  std::string description;
  std::string output_dir;
  std::vector<ExperimentRun> runs;

  /// Reads and expands `path`; every run's manifest is parsed and validated as a run manifest
  /// (errors name "<path> (run <name>; base <file>)" and the JSON path). `overrides` ("json.path=value")
  /// apply to every run after the experiment's own settings; `output_dir` (when not empty)
  /// replaces output.dir. Throws FileError or ManifestError.
  static Experiment load(
      const std::string& path, const std::vector<std::string>& overrides = {}, const std::string& output_dir = {});
};

/// One entry of index.json.
struct RunRecord {
  std::string name;
  std::string variant;
  boost::json::object settings;
  std::string folder;            ///< the run folder, relative to the index's folder
  std::string state;             ///< "pending", "running", "complete" or "failed"
  std::string error;             ///< the failure, when state is "failed"
  std::int64_t epochs = 0;       ///< train.epochs
  std::int64_t epochs_done = 0;  ///< epochs logged in the run file
  std::int64_t resume_from = 0;  ///< its newest checkpoint: where a resume starts
  double wall_seconds = 0;       ///< wall-clock seconds logged (cumulative over resumes)
  std::string updated_at;        ///< when this entry last changed (UTC, ISO 8601)
};

struct ExperimentOptions {
  bool dry_run = false;  ///< list the runs, their state and estimated cost; run and write nothing
  /// Only the runs whose name matches: a glob (fnmatch: * ? [..]) when it has a wildcard, else
  /// a substring. Empty: every run.
  std::string only;
  bool progress = true;  ///< "run i/n <name> epoch e/E, ~time left" on stderr after each epoch
  /// Called after every epoch of every run (tests: an exception here interrupts the run).
  std::function<void(const ExperimentRun&, const TrainingCounters&)> on_epoch;
};

struct ExperimentReport {
  std::vector<RunRecord> runs;  ///< every run of the experiment, in order (as in index.json)
  std::string index_path;       ///< <output dir>/index.json
  std::int64_t selected = 0;    ///< runs matching ExperimentOptions::only
  std::int64_t trained = 0;     ///< runs trained (or resumed) to completion now
  std::int64_t skipped = 0;     ///< selected runs that were already complete
  std::int64_t failed = 0;      ///< selected runs that failed now
};

/// Validates every run (components registered, options accepted), then trains every selected
/// run that is not complete, one after the other, resuming interrupted ones. A run that throws
/// is marked failed with its error and the next one starts. index.json is rewritten atomically
/// before and after every run and after every epoch. With dry_run, prints the listing to `out`
/// and touches nothing. Prints a summary to `out` either way.
ExperimentReport run_experiment(const Experiment& e, const ExperimentOptions& options, std::ostream& out);

}  // namespace sdpo
