#pragma once
// A run folder as `sdpo train` writes it: run.h5, manifest.json, checkpoints/epoch_<k>/ and
// samples_epoch_<k>.png. What resuming a run and `sdpo experiment` need to know about one: its
// newest complete checkpoint, how far its run file got, whether it is complete, whether a
// manifest may continue it, and how to roll it back to a checkpoint.
//
// Example:
//   auto st = sdpo::inspect_run_folder("runs/fig5/sdpo__train.seed=1", 20);
//   if (!st.complete) { /* resume from st.checkpoint_epoch */ }

#include <boost/json/object.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace sdpo {

class RunFile;
struct Manifest;

/// `<run_dir>/checkpoints/epoch_<epoch>`.
std::string checkpoint_dir(const std::string& run_dir, std::int64_t epoch);

/// The epoch of the newest complete checkpoint under `<run_dir>/checkpoints`: a folder
/// `epoch_<k>` holding model, optimizer and trainer safetensors (an `epoch_<k>.tmp` left by an
/// interrupted save is not one). 0 when there is none.
std::int64_t last_checkpoint_epoch(const std::string& run_dir);

/// The manifest keys a resumed run may change: `train.epochs` (to extend a run),
/// `output.progress`, `output.dir`, `name` and `description`. Everything else decides what the
/// run computes.
const std::vector<std::string>& resume_free_keys();

/// JSON paths (e.g. "train.learning_rate", sorted) where `now` differs from `logged` (the
/// manifest a run was started with), apart from resume_free_keys().
std::vector<std::string> resume_differences(const boost::json::object& logged, const boost::json::object& now);

/// True when a run of `m` evaluates after epoch `epoch` (epoch 0: the base model; then every
/// eval.every epochs and the last epoch).
bool evaluates_at(const Manifest& m, std::int64_t epoch);

struct RunFolderStatus {
  bool started = false;               ///< run.h5 exists
  std::string problem;                ///< why run.h5 could not be read (empty: it could)
  std::string manifest;               ///< the resolved manifest run.h5 holds (empty if unread)
  std::int64_t epochs_logged = 0;     ///< the last epoch in /curves/train
  double wall_seconds = 0;            ///< wall_seconds of that row (cumulative over resumes)
  std::int64_t checkpoint_epoch = 0;  ///< last_checkpoint_epoch()
  bool complete = false;              ///< epoch `epochs` logged and its checkpoint present (0 epochs: run.h5 readable)
};

/// Reads what a run folder holds (the run file read-only). A missing folder is a run not
/// started; an unreadable run file is reported in `problem`, not thrown.
RunFolderStatus inspect_run_folder(const std::string& run_dir, std::int64_t epochs);

/// Rolls the run folder of `m` back to the end of epoch `epoch` (its checkpoint): keeps the
/// curve rows of epochs <= `epoch` (and the evaluation rows of `epoch` only when `m` evaluates
/// there, so that a run extended past its old last epoch logs what an unbroken run logs),
/// deletes later trajectories, sample grids and `.tmp` checkpoint folders. Throws FileError when
/// the run file holds fewer training rows than the checkpoint's epochs.
void rewind_run_folder(const std::string& run_dir, RunFile& file, std::int64_t epoch, const Manifest& m);

/// Removes the checkpoints (`checkpoints/epoch_<k>*`) and sample grids (`samples_epoch_<k>.png`)
/// of an earlier run from `run_dir`, before a fresh run writes there.
void clear_run_folder(const std::string& run_dir);

}  // namespace sdpo
