// Run folders on disk: the newest checkpoint, the state of the run file, and the roll-back a
// resume starts with (sdpo/train/run_folder.h).
#include "sdpo/train/run_folder.h"

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <set>

#include "sdpo/core/error.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"

namespace sdpo {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// "<prefix><digits><suffix>" -> digits as a number, or -1 when `name` is not of that form.
std::int64_t numbered(const std::string& name, const std::string& prefix, const std::string& suffix) {
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0) return -1;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 15) return -1;
  return std::stoll(digits);
}

void collect_differences(
    const json::object& a, const json::object& b, const std::string& prefix, std::vector<std::string>& out) {
  std::set<std::string> keys;
  for (const auto& kv : a) keys.insert(std::string(kv.key()));
  for (const auto& kv : b) keys.insert(std::string(kv.key()));
  for (const auto& key : keys) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    const json::value* x = a.if_contains(key);
    const json::value* y = b.if_contains(key);
    const auto& free = resume_free_keys();
    if (std::find(free.begin(), free.end(), path) != free.end()) continue;
    if (x && y && x->is_object() && y->is_object()) {
      collect_differences(x->as_object(), y->as_object(), path, out);
    } else if (!x || !y || *x != *y) {
      out.push_back(path);
    }
  }
}

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, std::int64_t epoch) {
  return (fs::path(run_dir) / "checkpoints" / ("epoch_" + std::to_string(epoch))).string();
}

std::int64_t last_checkpoint_epoch(const std::string& run_dir) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::int64_t best = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::int64_t k = numbered(e.path().filename().string(), "epoch_", "");
    if (k <= best || !e.is_directory()) continue;
    // A checkpoint is written to epoch_<k>.tmp and renamed, so a folder under its final name is
    // whole; the file check guards against folders made by hand or by another tool.
    bool whole = true;
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer.safetensors"}) {
      whole = whole && fs::is_regular_file(e.path() / f);
    }
    if (whole) best = k;
  }
  return best;
}

const std::vector<std::string>& resume_free_keys() {
  static const std::vector<std::string> keys{"train.epochs", "output.progress", "output.dir", "name", "description"};
  return keys;
}

std::vector<std::string> resume_differences(const json::object& logged, const json::object& now) {
  std::vector<std::string> out;
  collect_differences(logged, now, "", out);
  std::sort(out.begin(), out.end());
  return out;
}

bool evaluates_at(const Manifest& m, std::int64_t epoch) {
  if (m.eval.every <= 0) return false;
  return epoch == 0 || epoch % m.eval.every == 0 || epoch == m.train.epochs;
}

RunFolderStatus inspect_run_folder(const std::string& run_dir, std::int64_t epochs) {
  RunFolderStatus s;
  const std::string path = (fs::path(run_dir) / "run.h5").string();
  s.checkpoint_epoch = last_checkpoint_epoch(run_dir);
  std::error_code ec;
  if (!fs::exists(path, ec)) return s;
  s.started = true;
  try {
    RunFile f = RunFile::open(path, /*writable=*/false);
    s.manifest = f.attribute("manifest");
    if (f.rows("train") > 0) {
      s.epochs_logged = static_cast<std::int64_t>(f.read_curve("train", "epoch").back());
      s.wall_seconds = f.read_curve("train", "wall_seconds").back();
    }
  } catch (const Error& e) {
    s.problem = e.what();
  }
  // A run of 0 epochs (the base model's evaluation only) writes no checkpoint: its run file is all.
  s.complete = s.problem.empty() && s.epochs_logged == epochs && s.checkpoint_epoch == epochs;
  return s;
}

void rewind_run_folder(const std::string& run_dir, RunFile& file, std::int64_t epoch, const Manifest& m) {
  for (const auto& group : file.curve_groups()) {
    const bool train = group == "train";
    const std::vector<double> logged = file.read_curve(group, "epoch");
    // Rows are in epoch order, so the rows kept are a prefix.
    std::int64_t keep = 0;
    for (double e : logged) {
      const auto k = static_cast<std::int64_t>(e);
      if (k > epoch || (k == epoch && !train && !evaluates_at(m, k))) break;
      ++keep;
    }
    if (train && keep != epoch) {
      throw FileError(
          file.path(), "holds " + std::to_string(keep) + " training rows up to epoch " + std::to_string(epoch) +
                           ", but the checkpoint " + checkpoint_dir(run_dir, epoch) + " is at epoch " +
                           std::to_string(epoch) + "; the run file and checkpoints are not of the same run");
    }
    file.truncate_rows(group, keep);
  }
  file.remove_trajectories_after(epoch);
  file.flush();

  // Collected first: removing entries while a directory_iterator walks them is unspecified.
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::int64_t k = numbered(e.path().filename().string(), "samples_epoch_", ".png");
    if (k > epoch || (k == epoch && !evaluates_at(m, k))) stale.push_back(e.path());
  }
  const fs::path checkpoints = fs::path(run_dir) / "checkpoints";
  if (fs::is_directory(checkpoints, ec)) {
    for (const auto& e : fs::directory_iterator(checkpoints, ec)) {
      const std::string name = e.path().filename().string();
      // Leftovers of a save that was killed, and checkpoints past the one resumed from (none in
      // a folder the trainer wrote; removed so that the newest checkpoint is the resumed run's).
      if (numbered(name, "epoch_", ".tmp") >= 0 || numbered(name, "epoch_", ".old") >= 0 ||
          numbered(name, "epoch_", "") > epoch) {
        stale.push_back(e.path());
      }
    }
  }
  for (const auto& p : stale) fs::remove_all(p, ec);
}

void clear_run_folder(const std::string& run_dir) {
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    if (numbered(e.path().filename().string(), "samples_epoch_", ".png") >= 0) stale.push_back(e.path());
  }
  for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    if (e.path().filename().string().rfind("epoch_", 0) == 0) stale.push_back(e.path());
  }
  for (const auto& p : stale) fs::remove_all(p, ec);
}

}  // namespace sdpo
