// `sdpo experiment`: runs an expanded experiment one run after the other, skipping complete
// runs, resuming interrupted ones, keeping <output dir>/index.json current; and the --dry-run
// listing with cost and time estimates (sdpo/commands/experiment.h).
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>

#include "sdpo/commands/experiment.h"
#include "sdpo/core/algorithm.h"
#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/train/clocks.h"
#include "sdpo/train/components.h"
#include "sdpo/train/interrupt.h"
#include "sdpo/train/progress.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/trainer.h"

namespace sdpo {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

bool selected(const std::string& name, const std::string& only) {
  if (only.empty()) return true;
  if (only.find_first_of("*?[") != std::string::npos) return fnmatch(only.c_str(), name.c_str(), 0) == 0;
  return name.find(only) != std::string::npos;
}

// The work of one run in the cost model's unit: one image denoised by one sampling step of a
// training trajectory. Evaluation and the updates are left out: they scale with the same
// numbers for one algorithm, and the time estimate (from logged seconds) includes them.
struct RunCost {
  std::int64_t images_per_epoch = 0;  ///< trajectories sampled per epoch
  double steps = 0;                   ///< T (its mean over sample.steps when that is a list)
  std::string algorithm;
  /// Runs of equal `key` cost the same per epoch (the basis of borrowed time estimates).
  std::string key() const {
    std::ostringstream s;
    s << algorithm << "/" << images_per_epoch << "/" << steps;
    return s.str();
  }
};

RunCost cost_of(const Manifest& m) {
  RunCost c;
  // Paired algorithms sample two trajectories per prompt (RolloutSpec::paired); building the
  // algorithm reads its options only, no weights.
  const bool paired = Registry::global().create<Algorithm>(m.algorithm)->spec().paired;
  c.images_per_epoch = m.train.batch_size * m.train.batches_per_epoch * (paired ? 2 : 1);
  c.steps = static_cast<double>(m.sample.steps);
  if (!m.sample.step_choices.empty()) {
    double sum = 0;
    for (auto t : m.sample.step_choices) sum += static_cast<double>(t);
    c.steps = sum / static_cast<double>(m.sample.step_choices.size());
  }
  c.algorithm = m.algorithm.name;
  return c;
}

std::int64_t units_left(const RunCost& c, const RunRecord& r) {
  if (r.state == "complete") return 0;
  return std::llround(static_cast<double>((r.epochs - r.resume_from) * c.images_per_epoch) * c.steps);
}

json::object to_json(const RunRecord& r) {
  json::object o{
      {"name", r.name},
      {"variant", r.variant},
      {"settings", r.settings},
      {"folder", r.folder},
      {"state", r.state},
      {"epochs", r.epochs},
      {"epochs_done", r.epochs_done},
      {"resume_from", r.resume_from},
      {"wall_seconds", r.wall_seconds},
      {"updated_at", r.updated_at}};
  if (!r.error.empty()) o["error"] = r.error;
  return o;
}

// Written beside and renamed over the old index, so a reader (or a kill) never sees half a file.
void write_index(const Experiment& e, const ExperimentReport& rep) {
  json::array runs;
  for (const auto& r : rep.runs) runs.push_back(to_json(r));
  json::object root{{"experiment", e.name},          {"file", e.file},
                    {"description", e.description},  {"output_dir", e.output_dir},
                    {"updated_at", utc_timestamp()}, {"runs", std::move(runs)}};
  const std::string tmp = rep.index_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    errno = 0;
    f << json_pretty(root) << "\n";
    f.flush();
    if (!f) {
      throw FileError(
          tmp, std::string("cannot write the experiment index: ") + (errno ? std::strerror(errno) : "stream error"));
    }
  }
  std::error_code ec;
  fs::rename(tmp, rep.index_path, ec);
  if (ec) throw FileError(rep.index_path, "cannot move the new index into place: " + ec.message());
}

// The entries of an earlier invocation's index (name -> entry): their failures are kept until
// the run is retried, and their timestamps while nothing changes.
std::map<std::string, json::object> previous_index(const std::string& index_path) {
  std::map<std::string, json::object> out;
  std::error_code ec;
  if (!fs::exists(index_path, ec)) return out;
  try {
    const json::value v = json_parse_file(index_path);
    for (const auto& r : v.at("runs").as_array()) {
      out[std::string(r.at("name").as_string())] = r.as_object();
    }
  } catch (const std::exception& ex) {
    std::fprintf(
        stderr, "warning: %s: unreadable (%s); rebuilding it from the run folders\n", index_path.c_str(), ex.what());
    out.clear();
  }
  return out;
}

// A run's record from its folder: complete, pending (not started, or resumable), or failed
// (an earlier failure, or a folder holding a run of other settings).
RunRecord record_from_disk(
    const ExperimentRun& run, const std::map<std::string, json::object>& previous, RunFolderStatus& status) {
  RunRecord r;
  r.name = run.name;
  r.variant = run.variant;
  r.settings = run.settings;
  r.folder = fs::path(run.dir).filename().string();  // relative to the index's folder
  r.epochs = run.manifest.train.epochs;
  status = inspect_run_folder(run.dir, r.epochs);
  r.epochs_done = status.epochs_logged;
  r.resume_from = status.checkpoint_epoch;
  r.wall_seconds = status.wall_seconds;
  r.state = status.complete ? "complete" : "pending";
  if (!status.manifest.empty()) {
    boost::system::error_code ec;
    const json::value logged = json::parse(status.manifest, ec);
    const auto diffs = !ec && logged.is_object() ? resume_differences(logged.as_object(), run.manifest.root)
                                                 : std::vector<std::string>{"(unreadable manifest)"};
    if (!diffs.empty()) {
      std::string list;
      for (const auto& d : diffs) list += (list.empty() ? "" : ", ") + d;
      r.state = "failed";
      r.error = run.dir + " holds a run of other settings (at " + list + "); remove the folder to run it again";
    }
  }
  if (!status.problem.empty()) {
    r.state = "failed";
    r.error = status.problem;
  }
  const auto it = previous.find(run.name);
  const json::object* before = it == previous.end() ? nullptr : &it->second;
  auto text = [&](const char* key) {
    const json::value* v = before ? before->if_contains(key) : nullptr;
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  if (r.state == "pending" && text("state") == "failed") {
    r.state = "failed";
    r.error = text("error");
  }
  const json::value* done = before ? before->if_contains("epochs_done") : nullptr;
  const bool unchanged = before && text("state") == r.state && done && done->is_int64() &&
                         done->as_int64() == r.epochs_done && !text("updated_at").empty();
  r.updated_at = unchanged ? text("updated_at") : utc_timestamp();
  return r;
}

// Seconds per epoch for the time estimate, and what they are based on.
struct Timing {
  double seconds_per_epoch = -1;
  std::string basis;
};

std::vector<Timing> timings(
    const Experiment& e, const std::vector<RunCost>& costs, const std::vector<RunFolderStatus>& status) {
  std::vector<Timing> own(e.runs.size());
  for (std::size_t i = 0; i < e.runs.size(); ++i) {
    if (status[i].epochs_logged > 0 && status[i].wall_seconds > 0) {
      own[i] = {status[i].wall_seconds / static_cast<double>(status[i].epochs_logged), "own log"};
    }
  }
  std::vector<Timing> out = own;
  for (std::size_t i = 0; i < e.runs.size(); ++i) {
    for (std::size_t j = 0; j < e.runs.size() && out[i].seconds_per_epoch < 0; ++j) {
      if (own[j].seconds_per_epoch >= 0 && costs[j].key() == costs[i].key()) {
        out[i] = {own[j].seconds_per_epoch, "like " + e.runs[j].name};
      }
    }
  }
  return out;
}

std::string with_commas(std::int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

void print_dry_run(
    const Experiment& e,
    const ExperimentOptions& o,
    const ExperimentReport& rep,
    const std::vector<std::size_t>& chosen,
    const std::vector<RunCost>& costs,
    const std::vector<Timing>& time,
    std::ostream& out) {
  out << "experiment " << e.name << " (" << e.file << "): " << e.runs.size() << " runs";
  if (!o.only.empty()) out << ", " << chosen.size() << " matching '" << o.only << "'";
  out << "; folder " << e.output_dir << "\n";
  char line[256];
  std::snprintf(
      line, sizeof line, "  %3s  %-8s  %7s  %16s  %9s  %s\n", "#", "state", "epochs", "image-steps left", "time left",
      "run");
  out << line;
  std::int64_t total_units = 0, timed = 0, untimed = 0;
  double total_seconds = 0;
  for (std::size_t k = 0; k < chosen.size(); ++k) {
    const std::size_t i = chosen[k];
    const RunRecord& r = rep.runs[i];
    const std::int64_t units = units_left(costs[i], r);
    total_units += units;
    std::string left = "-", note;
    if (units > 0) {
      if (time[i].seconds_per_epoch >= 0) {
        const double secs = time[i].seconds_per_epoch * static_cast<double>(r.epochs - r.resume_from);
        total_seconds += secs;
        ++timed;
        left = "~" + format_duration(secs);
        note = time[i].basis;
      } else {
        left = "?";
        ++untimed;
      }
      if (r.resume_from > 0)
        note += std::string(note.empty() ? "" : "; ") + "resumes at epoch " + std::to_string(r.resume_from);
    }
    if (r.state == "failed") {
      // The first line, shortened: the whole error is in index.json.
      std::string error = r.error.substr(0, r.error.find('\n'));
      if (error.size() > 160) error = error.substr(0, 157) + "...";
      note += std::string(note.empty() ? "" : "; ") + "failed: " + error;
    }
    const std::string epochs = std::to_string(r.epochs_done) + "/" + std::to_string(r.epochs);
    std::snprintf(
        line, sizeof line, "  %3zu  %-8s  %7s  %16s  %9s  ", k + 1, r.state.c_str(), epochs.c_str(),
        with_commas(units).c_str(), left.c_str());
    out << line << r.name << (note.empty() ? "" : "  (" + note + ")") << "\n";
  }
  out << "cost: " << with_commas(total_units)
      << " image-steps left = epochs left x images per epoch x T, summed over the runs (the sampling steps of\n"
         "      training trajectories; evaluation and updates are not counted)\n";
  out << "time: ";
  if (timed > 0) {
    out << "~" << format_duration(total_seconds) << " for " << timed << " run" << (timed > 1 ? "s" : "")
        << ", from the wall_seconds per epoch logged by the run itself (own log) or by a run of this experiment\n"
           "      with the same algorithm, images per epoch and T (like <run>)";
  } else {
    out << "no estimate: no run with the same algorithm, images per epoch and T has logged an epoch yet";
  }
  if (timed > 0 && untimed > 0)
    out << "; " << untimed << " run" << (untimed > 1 ? "s have" : " has") << " no estimate yet";
  out << "\n";
}

// Holds an exclusive lock on <dir>/.lock while the runner writes there: a second `sdpo
// experiment` on the same folder would train the same runs twice and interleave index.json.
// The kernel drops the lock when the process dies, so a killed runner leaves nothing stale.
class OutputLock {
 public:
  explicit OutputLock(const std::string& dir) : path_((fs::path(dir) / ".lock").string()) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw FileError(path_, std::string("cannot open the lock file: ") + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw FileError(path_, "another `sdpo experiment` is running in " + dir + " (it holds this lock)");
    }
  }
  ~OutputLock() { ::close(fd_); }  // closing releases the lock
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

// Time-left bookkeeping for the progress line: this invocation's seconds per unit of work.
struct Clock {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double units_done = 0;
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

}  // namespace

ExperimentReport run_experiment(const Experiment& e, const ExperimentOptions& o, std::ostream& out) {
  // Every run is validated before the first one starts: a typo in the last run of a grid must
  // not wait for hours of the first runs to show.
  std::vector<RunCost> costs;
  for (const auto& run : e.runs) {
    validate_components(run.manifest, ComponentSet::kTraining);
    costs.push_back(cost_of(run.manifest));
  }
  ExperimentReport rep;
  rep.index_path = (fs::path(e.output_dir) / "index.json").string();
  const auto previous = previous_index(rep.index_path);
  std::vector<RunFolderStatus> status(e.runs.size());
  for (std::size_t i = 0; i < e.runs.size(); ++i) rep.runs.push_back(record_from_disk(e.runs[i], previous, status[i]));
  std::vector<std::size_t> chosen;
  for (std::size_t i = 0; i < e.runs.size(); ++i) {
    if (selected(e.runs[i].name, o.only)) chosen.push_back(i);
  }
  rep.selected = static_cast<std::int64_t>(chosen.size());
  if (o.dry_run) {
    print_dry_run(e, o, rep, chosen, costs, timings(e, costs, status), out);
    return rep;
  }

  fs::create_directories(e.output_dir);
  const OutputLock lock(e.output_dir);
  write_index(e, rep);
  Clock clock;
  const std::int64_t n = rep.selected;
  for (std::size_t k = 0; k < chosen.size(); ++k) {
    const ExperimentRun& run = e.runs[chosen[k]];
    RunRecord& rec = rep.runs[chosen[k]];
    const std::string tag = "run " + std::to_string(k + 1) + "/" + std::to_string(n) + " " + run.name;
    if (rec.state == "complete") {
      ++rep.skipped;
      print_status(o.progress, tag + ": complete, skipped");
      continue;
    }
    rec.state = "running";
    rec.error.clear();
    rec.updated_at = utc_timestamp();
    write_index(e, rep);
    print_status(
        o.progress, tag + (rec.resume_from > 0 ? ": resuming from epoch " + std::to_string(rec.resume_from) + " of " +
                                                     std::to_string(rec.epochs)
                                               : ": starting, " + std::to_string(rec.epochs) + " epochs"));
    const auto run_start = std::chrono::steady_clock::now();
    std::int64_t first_epoch = -1;
    const double units_per_epoch = static_cast<double>(costs[chosen[k]].images_per_epoch) * costs[chosen[k]].steps;
    try {
      TrainerOptions to(run.dir);
      to.resume = true;
      to.on_epoch = [&](const TrainingCounters& c) {
        if (first_epoch < 0) first_epoch = c.epoch - 1;
        rec.epochs_done = c.epoch;
        rec.wall_seconds = c.wall_seconds;
        if (c.epoch % run.manifest.train.checkpoint_every == 0 || c.epoch == rec.epochs) rec.resume_from = c.epoch;
        rec.updated_at = utc_timestamp();
        write_index(e, rep);
        clock.units_done += units_per_epoch;
        // This run's own pace for its remaining epochs; this invocation's pace per unit of work
        // for the runs after it.
        const double run_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
        const double run_left =
            run_secs / static_cast<double>(c.epoch - first_epoch) * static_cast<double>(rec.epochs - c.epoch);
        double later_units = 0;
        for (std::size_t j = k + 1; j < chosen.size(); ++j) {
          later_units += static_cast<double>(units_left(costs[chosen[j]], rep.runs[chosen[j]]));
        }
        const double all_left = run_left + later_units * clock.seconds() / clock.units_done;
        print_status(
            o.progress, tag + " epoch " + std::to_string(c.epoch) + "/" + std::to_string(rec.epochs) + ", ~" +
                            format_duration(run_left) + " left (all runs ~" + format_duration(all_left) + ")");
        if (o.on_epoch) o.on_epoch(run, c);
      };
      Trainer trainer(run.manifest, to);
      trainer.run();
      RunFolderStatus done;
      rec = record_from_disk(run, {}, done);
      if (rec.state != "complete") {
        throw Error("the run ended without its final epoch logged and checkpointed in " + run.dir);
      }
      ++rep.trained;
      print_status(o.progress, tag + ": complete");
    } catch (const Interrupted&) {
      // Ctrl-C stops the experiment, not just this run: the index says where it stood, and the
      // next `sdpo experiment` resumes the run from its last checkpoint.
      rec.state = "pending";
      rec.resume_from = last_checkpoint_epoch(run.dir);
      rec.updated_at = utc_timestamp();
      write_index(e, rep);
      throw;
    } catch (const std::exception& ex) {
      rec.state = "failed";
      rec.error = error_message(ex);
      rec.resume_from = last_checkpoint_epoch(run.dir);
      rec.updated_at = utc_timestamp();
      ++rep.failed;
      print_status(true, tag + ": failed: " + rec.error);
    }
    write_index(e, rep);
  }
  out << "experiment " << e.name << ": " << rep.trained << " run" << (rep.trained == 1 ? "" : "s") << " trained, "
      << rep.skipped << " already complete, " << rep.failed << " failed (of " << n << " selected, " << e.runs.size()
      << " in all); index " << rep.index_path << "\n";
  return rep;
}

}  // namespace sdpo
