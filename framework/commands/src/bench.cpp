#include "sdpo/commands/bench.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

#include "sdpo/commands/counting_model.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"

namespace sdpo {
namespace fs = std::filesystem;

namespace {

// Removes a temporary run folder on every way out.
struct TempFolder {
  std::string path;
  ~TempFolder() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

BenchReport run_bench(const Manifest& manifest, const BenchOptions& options) {
  if (options.epochs < 1) throw Error("bench: --epochs must be at least 1");
  if (options.warmup_epochs < 0) throw Error("bench: the warm-up epochs must be 0 or more");
  Manifest m = manifest;
  m.train.epochs = options.warmup_epochs + options.epochs;
  m.eval.every = 0;
  m.output.progress = false;
  // The run file records the manifest that ran.
  auto set = [&](const char* section, const char* key, boost::json::value v) {
    auto& s = m.root[section];
    if (!s.is_object()) s = boost::json::object();
    s.as_object()[key] = std::move(v);
  };
  set("train", "epochs", m.train.epochs);
  set("eval", "every", 0);
  set("output", "progress", false);

  TempFolder temp;
  std::string dir = options.output_dir;
  if (dir.empty()) {
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir = (fs::temp_directory_path() / ("sdpo_bench_" + std::to_string(::getpid()) + "_" + std::to_string(stamp)))
              .string();
    temp.path = dir;
  }

  BenchReport r;
  r.name = m.name;
  r.algorithm = m.algorithm.name;
  r.device = m.device;
  r.epochs = options.epochs;
  r.warmup_epochs = options.warmup_epochs;

  auto log = std::make_shared<ModelCallLog>();
  std::shared_ptr<Model> policy;  // the model as built, under the counter
  std::vector<ModelCall> timed_calls;
  std::int64_t epoch = 0;
  double device_seconds_before = 0, device_seconds_after = 0;

  TrainerOptions o(dir);
  o.wrap_model = [&](std::shared_ptr<Model> model) -> std::shared_ptr<Model> {
    if (!policy) policy = model;
    return std::make_shared<CountingModel>(std::move(model), log);
  };
  o.on_epoch_times = [&](const EpochTimes& t) {
    ++epoch;
    if (epoch > options.warmup_epochs) {
      r.times.sampling += t.sampling;
      r.times.decode += t.decode;
      r.times.reward += t.reward;
      r.times.prepare += t.prepare;
      r.times.update += t.update;
      r.times.epoch += t.epoch;
      timed_calls.insert(timed_calls.end(), log->calls.begin(), log->calls.end());
    }
    log->clear_calls();
  };
  o.on_epoch = [&](const TrainingCounters& c) {
    if (c.epoch == options.warmup_epochs) device_seconds_before = c.device_seconds;
    device_seconds_after = c.device_seconds;
  };
  {
    Trainer trainer(m, o);
    trainer.run();
  }
  r.device_seconds = device_seconds_after - device_seconds_before;
  for (const auto& c : timed_calls) {
    r.forwards += 1;
    r.grad_forwards += c.grad ? 1 : 0;
    r.backwards += c.backwards;
  }
  if (!policy || timed_calls.empty()) throw Error("bench: the run made no model calls to compare with");

  // The bare loop: an untimed warm-up on a few calls, then every call of the timed epochs.
  const c10::Device device(m.device);
  const auto warm = std::min<std::size_t>(timed_calls.size(), 4);
  replay_model_calls(*policy, *log, std::vector<ModelCall>(timed_calls.begin(), timed_calls.begin() + warm), device);
  // No-grad calls, then grad calls: the model work of sampling and of the update, apart (the order
  // within each part is the run's).
  std::vector<ModelCall> no_grad_calls, grad_calls;
  for (const auto& c : timed_calls) (c.grad ? grad_calls : no_grad_calls).push_back(c);
  r.bare_no_grad_seconds = replay_model_calls(*policy, *log, no_grad_calls, device);
  r.bare_grad_seconds = replay_model_calls(*policy, *log, grad_calls, device);
  r.bare_seconds = r.bare_no_grad_seconds + r.bare_grad_seconds;
  return r;
}

std::string format_bench_report(const BenchReport& r) {
  std::ostringstream s;
  char line[160];
  s << "sdpo bench: " << r.name << " (algorithm " << r.algorithm << ", " << r.epochs << " timed epoch"
    << (r.epochs == 1 ? "" : "s") << " after " << r.warmup_epochs << " warm-up, device " << r.device << ", "
    << r.devices << " device" << (r.devices == 1 ? "" : "s") << ")\n";
  std::snprintf(line, sizeof line, "  %-34s %10s %8s\n", "phase", "seconds", "share");
  s << line;
  const double total = r.times.epoch;
  const double other = total - r.times.sampling - r.times.decode - r.times.reward - r.times.prepare - r.times.update;
  const std::pair<const char*, double> rows[] = {
      {"sampling", r.times.sampling},   {"decoding", r.times.decode}, {"reward", r.times.reward},
      {"preparation", r.times.prepare}, {"update", r.times.update},   {"other (logging, buffers, progress)", other}};
  for (const auto& [phase, seconds] : rows) {
    std::snprintf(
        line, sizeof line, "  %-34s %10.4f %7.1f%%\n", phase, seconds, total > 0 ? 100 * seconds / total : 0.0);
    s << line;
  }
  std::snprintf(line, sizeof line, "  %-34s %10.4f %7.1f%%\n", "epoch total", total, 100.0);
  s << line;
  s << "model calls: " << r.forwards << " forwards (" << r.grad_forwards << " with grad), " << r.backwards
    << " backwards\n";
  std::snprintf(
      line, sizeof line,
      "bare libtorch loop (the same calls, same inputs): %.4f s (no-grad forwards %.4f s, grad forwards and "
      "backwards %.4f s)\n",
      r.bare_seconds, r.bare_no_grad_seconds, r.bare_grad_seconds);
  s << line;
  std::snprintf(line, sizeof line, "overhead ratio (epoch / bare loop): %.3f\n", r.overhead_ratio());
  s << line;
  std::snprintf(
      line, sizeof line, "overhead ratio without decoding and reward ((epoch - decode - reward) / bare loop): %.3f\n",
      r.overhead_ratio_without_reward());
  s << line;
  std::snprintf(
      line, sizeof line, "device_seconds: %.4f (%s)\n", r.device_seconds,
      c10::Device(r.device).is_cpu() ? "process CPU time, all threads" : "device wall time, synchronized");
  s << line;
  return s.str();
}

}  // namespace sdpo
