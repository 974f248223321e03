// The online RL loop (DESIGN.md section 3): sample -> query rewards -> dense rewards -> returns ->
// advantages -> algorithm update -> log -> evaluate -> checkpoint, one epoch at a time.
#include "sdpo/trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <torch/csrc/api/include/torch/version.h>

#include "progress.h"
#include "sdpo/algorithm.h"
#include "sdpo/checkpoint.h"
#include "sdpo/clocks.h"
#include "sdpo/components.h"
#include "sdpo/decoder.h"
#include "sdpo/dense_reward.h"
#include "sdpo/error.h"
#include "sdpo/evaluation.h"
#include "sdpo/image_io.h"
#include "sdpo/model.h"
#include "sdpo/normalizer.h"
#include "sdpo/optimizer.h"
#include "sdpo/registry.h"
#include "sdpo/prompts.h"
#include "sdpo/reference_model.h"
#include "sdpo/returns.h"
#include "sdpo/reward.h"
#include "sdpo/run_file.h"
#include "sdpo/run_folder.h"
#include "sdpo/sampler.h"
#include "sdpo/sampling.h"
#include "sdpo/text_encoder.h"

namespace sdpo {
namespace fs = std::filesystem;

namespace {

// Concatenates per-batch tensors along N. For paired buffers each part holds [a rows; b rows];
// the result keeps that layout over the whole epoch: [all a rows; all b rows].
at::Tensor cat_rows(const std::vector<at::Tensor>& parts, bool paired) {
  if (!parts.front().defined()) return at::Tensor();
  if (!paired) return at::cat(parts, 0);
  std::vector<at::Tensor> a, b;
  for (const auto& p : parts) {
    auto half = p.size(0) / 2;
    a.push_back(p.slice(0, 0, half));
    b.push_back(p.slice(0, half));
  }
  a.insert(a.end(), b.begin(), b.end());
  return at::cat(a, 0);
}

std::vector<std::string> cat_prompts(const std::vector<std::vector<std::string>>& parts, bool paired) {
  std::vector<std::string> a, b;
  for (const auto& p : parts) {
    auto half = paired ? p.size() / 2 : p.size();
    a.insert(a.end(), p.begin(), p.begin() + static_cast<long>(half));
    b.insert(b.end(), p.begin() + static_cast<long>(half), p.end());
  }
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void check_finite(const at::Tensor& t, const std::string& what, std::int64_t epoch) {
  if (!at::isfinite(t).all().item<bool>()) {
    throw NumericError(what + " produced NaN or Inf at epoch " + std::to_string(epoch));
  }
}

// Adds the wall seconds from construction to stop() (or destruction) to one EpochTimes field.
// A CUDA device is synchronized at both ends, so queued kernels count in the phase that queued
// them; on the CPU it only reads the steady clock.
class PhaseTimer {
 public:
  PhaseTimer(double& total, c10::Device device) : total_(total), device_(device) {
    synchronize_device(device_);
    start_ = std::chrono::steady_clock::now();
  }
  ~PhaseTimer() { stop(); }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;
  void stop() {
    if (!running_) return;
    running_ = false;
    synchronize_device(device_);
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double& total_;
  c10::Device device_;
  std::chrono::steady_clock::time_point start_;
  bool running_ = true;
};

template <typename F>
auto timed(double& total, c10::Device device, F&& f) {
  PhaseTimer timer(total, device);
  return f();
}

}  // namespace

struct Trainer::Impl {
  Manifest m;
  TrainerOptions opts;
  Components c;
  std::unique_ptr<Optimizer> optimizer;
  std::shared_ptr<Model> reference;  ///< frozen pretrained copy, when the algorithm asks for one
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  std::unique_ptr<RunFile> file;
  std::string dir;
  TrainingCounters counters;
  std::chrono::steady_clock::time_point wall_start;
  std::unique_ptr<DeviceClock> device_clock;  ///< device_seconds (sdpo/clocks.h), set by run()
  std::map<std::string, double> last_eval;
  c10::Device device{at::kCPU};
  std::int64_t resumed_from = 0;

  // Continues the run folder from checkpoint `resumed_from` (TrainerOptions::resume): the
  // manifest must be the run's up to resume_free_keys(); then the training state is restored
  // and the run file rolled back to that epoch, so the epochs after it are re-run and re-logged
  // exactly as an unbroken run would have.
  void resume() {
    const std::string run_path = (fs::path(dir) / "run.h5").string();
    if (resumed_from > m.train.epochs) {
      throw ManifestError(m.file, "train.epochs",
                          "the run in " + dir + " has a checkpoint at epoch " + std::to_string(resumed_from) +
                              ", past train.epochs = " + std::to_string(m.train.epochs) +
                              "; give at least that many epochs or another output folder");
    }
    if (!fs::exists(run_path)) {
      throw FileError(run_path, "missing, but " + checkpoint_dir(dir, resumed_from) +
                                    " exists: cannot resume without the run's curves");
    }
    file = std::make_unique<RunFile>(RunFile::open(run_path));
    boost::system::error_code ec;
    boost::json::value logged = boost::json::parse(file->attribute("manifest"), ec);
    if (ec || !logged.is_object()) throw FileError(run_path, "its root attribute 'manifest' is not a JSON object");
    const auto diffs = resume_differences(logged.as_object(), m.root);
    if (!diffs.empty()) {
      std::string list;
      for (const auto& d : diffs) list += (list.empty() ? "" : ", ") + d;
      std::string free;
      for (const auto& k : resume_free_keys()) free += (free.empty() ? "" : ", ") + k;
      throw ManifestError(m.file, diffs.front(),
                          "differs from the manifest of the run being resumed in " + dir + " (at " + list +
                              "); a resume may change only " + free);
    }
    counters = checkpoint_load(checkpoint_dir(dir, resumed_from), *c.model, optimizer.get(), c.normalizer.get(), &gen);
    if (counters.epoch != resumed_from) {
      throw FileError(checkpoint_dir(dir, resumed_from),
                      "holds the counters of epoch " + std::to_string(counters.epoch) + ", not " +
                          std::to_string(resumed_from));
    }
    rewind_run_folder(dir, *file, resumed_from, m);
    file->set_attribute("manifest", m.text());
    file->flush();
    std::cerr << "resuming " << dir << " from its checkpoint at epoch " << resumed_from << " of "
              << m.train.epochs << "\n";
  }

  void tick_clocks() {
    counters.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    // Process CPU time on the CPU (all threads); synchronized wall time on a CUDA device.
    counters.device_seconds = device_clock->seconds();
  }

  std::map<std::string, double> counter_row() {
    tick_clocks();
    return {{"epoch", static_cast<double>(counters.epoch)},
            {"samples", static_cast<double>(counters.samples)},
            {"reward_queries", static_cast<double>(counters.reward_queries)},
            {"wall_seconds", counters.wall_seconds},
            {"device_seconds", counters.device_seconds},
            {"devices", 1.0}};  // one process, one device (scale-out is DESIGN.md section 9)
  }

  void evaluate() {
    EvalResult r = evaluate_model(m, c, device);
    for (const auto& [steps, stats] : r.per_steps) {
      auto row = counter_row();
      row["reward_mean"] = stats.mean;
      row["reward_std"] = stats.std;
      row["images"] = static_cast<double>(stats.count);
      file->append_row("eval/steps_" + std::to_string(steps), row);
      last_eval["steps_" + std::to_string(steps)] = stats.mean;
    }
    std::string png = (fs::path(dir) / ("samples_epoch_" + std::to_string(counters.epoch) + ".png")).string();
    png_write(png, r.grid);
    std::ostringstream s;
    s << "eval epoch " << counters.epoch << ":";
    for (const auto& [steps, stats] : r.per_steps) s << "  " << steps << " steps " << stats.mean;
    std::cerr << s.str() << "\n";
  }

  // T of the next epoch: sample.steps, or a uniform draw from its list (mixed-step training).
  // One draw per epoch, not per batch: an epoch's buffer then holds one trajectory length, and
  // every algorithm's update (its shuffles, accumulation and final flush over the epoch) and the
  // normalizer's batch statistics stay what they are at a fixed T.
  std::int64_t trajectory_steps() {
    const auto& choices = m.sample.step_choices;
    if (choices.size() <= 1) return m.sample.steps;
    const auto n = static_cast<std::int64_t>(choices.size());
    const auto i = at::randint(n, {1}, gen, at::TensorOptions().dtype(at::kLong)).item<std::int64_t>();
    return choices[static_cast<std::size_t>(i)];
  }

  void train_epoch() {
    const auto spec = c.algorithm->spec();
    const auto& pool = c.prompts->train_prompts();
    const std::int64_t B = m.train.batch_size, T = trajectory_steps();
    const auto shape = c.model->latent_shape();
    std::vector<std::int64_t> noise_shape{B};
    noise_shape.insert(noise_shape.end(), shape.begin(), shape.end());

    Progress bar(m.output.progress, "epoch " + std::to_string(counters.epoch + 1) + "/" + std::to_string(m.train.epochs),
                 m.train.batches_per_epoch + 1);
    std::vector<std::vector<std::string>> prompt_parts;
    std::vector<at::Tensor> cond_p, ts_p, lat_p, next_p, lp_p, x0_p, steps_p, q_p, sim_p, anchor_p, dense_p;
    std::int64_t queries = 0;
    EpochTimes times;
    const auto epoch_start = std::chrono::steady_clock::now();
    for (std::int64_t batch = 0; batch < m.train.batches_per_epoch; ++batch) {
      at::NoGradGuard no_grad;
      PhaseTimer sampling(times.sampling, device);
      // 1. prompts, uniformly with replacement (4.1/7.1), encoded once per batch.
      auto idx = at::randint(static_cast<std::int64_t>(pool.size()), {B}, gen, at::TensorOptions().dtype(at::kLong));
      std::vector<std::string> prompts;
      for (std::int64_t i = 0; i < B; ++i) prompts.push_back(pool[static_cast<size_t>(idx[i].item<std::int64_t>())]);
      auto cond = c.text_encoder->encode(prompts);
      auto x_T = at::randn(noise_shape, gen) * c.sampler->init_noise_sigma();
      if (spec.paired) {
        // 2. a pair shares the prompt, and the initial noise when the algorithm asks for it.
        auto x_b = spec.shared_noise ? x_T : at::randn(noise_shape, gen) * c.sampler->init_noise_sigma();
        x_T = at::cat({x_T, x_b}, 0);
        cond = at::cat({cond, cond}, 0);
        auto copy = prompts;
        prompts.insert(prompts.end(), copy.begin(), copy.end());
      }
      Trajectories tr = sample_trajectories(*c.model, *c.sampler, cond, x_T.to(device), T, gen, true);
      sampling.stop();
      const std::int64_t N = x_T.size(0);
      QueryPlan plan;
      at::Tensor scores, dense;
      if (spec.final_image_reward) {
        // 3'. sparse reward of the decoded final sample, copied along the trajectory.
        const at::Tensor final_image = c.sampler->final_image_is_pred_x0()
                                           ? tr.pred_x0.select(1, tr.pred_x0.size(1) - 1)
                                           : tr.final_sample;
        auto images = timed(times.decode, device, [&] { return c.decoder->decode(final_image); });
        scores = timed(times.reward, device, [&] { return c.reward->score(images, prompts); }).to(at::kFloat).view({N, 1});
        check_finite(scores, "reward '" + m.reward.name + "'", counters.epoch + 1);
        plan.num_steps = T;
        plan.steps = at::full({N, 1}, T - 1, at::TensorOptions().dtype(at::kLong));
        dense = scores.expand({N, T}).contiguous();
        queries += N;
      } else {
        // 3. query the planned steps' predicted x0.
        PhaseTimer planning(times.prepare, device);
        plan = c.dense_reward->plan(tr.pred_x0, gen);
        const std::int64_t Q = plan.steps.size(1);
        auto gather_idx = plan.steps.to(device).view({N, Q, 1, 1, 1}).expand({N, Q, shape[0], shape[1], shape[2]});
        auto picked = tr.pred_x0.gather(1, gather_idx).reshape({N * Q, shape[0], shape[1], shape[2]});
        planning.stop();
        auto images = timed(times.decode, device, [&] { return c.decoder->decode(picked); });
        std::vector<std::string> image_prompts;
        for (const auto& p : prompts) image_prompts.insert(image_prompts.end(), static_cast<size_t>(Q), p);
        scores = timed(times.reward, device, [&] { return c.reward->score(images, image_prompts); })
                     .to(at::kFloat)
                     .view({N, Q});
        check_finite(scores, "reward '" + m.reward.name + "'", counters.epoch + 1);
        queries += N * Q;
        dense = timed(times.prepare, device, [&] { return c.dense_reward->predict(plan, scores); });
        check_finite(dense, "dense_reward '" + m.dense_reward.name + "'", counters.epoch + 1);
      }

      prompt_parts.push_back(prompts);
      cond_p.push_back(cond);
      ts_p.push_back(tr.timesteps);
      lat_p.push_back(tr.latents);
      next_p.push_back(tr.next_latents);
      lp_p.push_back(tr.log_probs);
      if (m.output.save_latents) x0_p.push_back(tr.pred_x0);
      steps_p.push_back(plan.steps);
      q_p.push_back(scores);
      sim_p.push_back(plan.similarities);
      anchor_p.push_back(plan.anchor);
      dense_p.push_back(dense);
      bar.tick("sampled " + std::to_string(batch + 1));
    }
    PhaseTimer preparing(times.prepare, device);
    const bool paired = spec.paired;
    RolloutBuffer buf;
    buf.num_steps = T;
    buf.paired = paired;
    buf.prompts = cat_prompts(prompt_parts, paired);
    buf.cond = cat_rows(cond_p, paired);
    buf.timesteps = cat_rows(ts_p, paired);
    buf.latents = cat_rows(lat_p, paired);
    buf.next_latents = cat_rows(next_p, paired);
    buf.log_probs = cat_rows(lp_p, paired);
    if (!x0_p.empty()) buf.pred_x0 = cat_rows(x0_p, paired);
    buf.query_steps = cat_rows(steps_p, paired);
    buf.queried_rewards = cat_rows(q_p, paired);
    buf.similarities = cat_rows(sim_p, paired);
    buf.anchor_step = cat_rows(anchor_p, paired);
    buf.dense_rewards = cat_rows(dense_p, paired);
    buf.final_rewards = buf.dense_rewards.select(1, T - 1).clone();
    // 4. dense rewards -> returns -> advantages.
    buf.returns = returns_discounted(buf.dense_rewards, spec.gamma);
    buf.advantages = c.normalizer->normalize(buf.returns, buf.prompts);
    check_finite(buf.advantages, "normalizer '" + m.normalizer.name + "'", counters.epoch + 1);
    preparing.stop();

    // 5. the algorithm's updates.
    UpdateContext ctx{*c.model, *c.sampler, *optimizer, gen, counters.epoch + 1, m.train.train_batch_size,
                      reference.get()};
    Metrics metrics = timed(times.update, device, [&] { return c.algorithm->update(buf, ctx); });
    bar.tick("updated");

    counters.epoch += 1;
    counters.samples += buf.size();
    counters.reward_queries += queries;
    auto row = counter_row();
    for (const auto& [k, v] : metrics) row[k] = v;
    auto first = buf.dense_rewards.select(1, 0).to(at::kDouble), last = buf.final_rewards.to(at::kDouble);
    row["reward_first_mean"] = first.mean().item<double>();
    row["reward_first_std"] = first.std(false).item<double>();
    row["reward_last_mean"] = last.mean().item<double>();
    row["reward_last_std"] = last.std(false).item<double>();
    row["reward_queries_per_trajectory"] = static_cast<double>(buf.query_steps.size(1));
    row["trajectory_steps"] = static_cast<double>(T);
    row["time_sampling"] = times.sampling;
    row["time_decode"] = times.decode;
    row["time_reward"] = times.reward;
    row["time_prepare"] = times.prepare;
    row["time_update"] = times.update;
    file->append_row("train", row);
    if (m.output.save_trajectories) {
      std::map<std::string, at::Tensor> arrays{
          {"queried_rewards", buf.queried_rewards}, {"query_steps", buf.query_steps},
          {"dense_rewards", buf.dense_rewards},     {"returns", buf.returns},
          {"advantages", buf.advantages},           {"log_probs", buf.log_probs},
          {"timesteps", buf.timesteps}};
      if (buf.anchor_step.defined()) arrays["anchor_step"] = buf.anchor_step;
      if (buf.similarities.defined()) arrays["similarities"] = buf.similarities;
      if (m.output.save_latents) {
        arrays["latents"] = buf.latents;
        arrays["pred_x0"] = buf.pred_x0;
      }
      file->write_trajectories(counters.epoch, arrays, buf.prompts);
    }
    std::ostringstream s;
    s << "loss " << metrics["loss"] << "  reward first " << row["reward_first_mean"] << " last "
      << row["reward_last_mean"];
    bar.finish(s.str());
    times.epoch = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    if (opts.on_epoch_times) opts.on_epoch_times(times);
  }
};

Trainer::Trainer(Manifest manifest, TrainerOptions options) : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.m = std::move(manifest);
  s.opts = std::move(options);
  s.device = c10::Device(s.m.device);
  s.dir = s.opts.output_dir.empty() ? (fs::path(s.m.output.dir) / s.m.name).string() : s.opts.output_dir;
  s.c = build_components(s.m, ComponentSet::kTraining);
  if (s.m.eval.every > 0) evaluation_prompts(s.m, s.c);  // an empty set fails here, not after an epoch
  s.optimizer = std::make_unique<Optimizer>(s.c.model->trainable_parameters(), s.m.train.optimizer);
  if (s.c.algorithm->spec().needs_reference_model) {
    s.reference = make_reference_model(s.c.model, s.m.model, s.device);
  }
  if (s.opts.wrap_model) {
    s.c.model = s.opts.wrap_model(s.c.model);
    if (s.reference) s.reference = s.opts.wrap_model(s.reference);
  }
  s.gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(s.m.train.seed));
}

Trainer::~Trainer() = default;

const std::string& Trainer::run_dir() const { return impl_->dir; }
const std::map<std::string, double>& Trainer::last_eval() const { return impl_->last_eval; }

std::int64_t Trainer::resumed_from() const { return impl_->resumed_from; }

void Trainer::run() {
  auto& s = *impl_;
  fs::create_directories(s.dir);
  const std::string run_path = (fs::path(s.dir) / "run.h5").string();
  s.resumed_from = s.opts.resume ? last_checkpoint_epoch(s.dir) : 0;
  if (s.resumed_from > 0) {
    s.resume();
  } else {
    if (s.opts.resume && fs::exists(run_path)) {
      std::cerr << "no complete checkpoint in " << s.dir << ": starting the run afresh\n";
    }
    // A fresh run replaces whatever run the folder held: its checkpoints and grids would
    // otherwise pass for this run's (a later resume would pick up a stale checkpoint).
    clear_run_folder(s.dir);
    s.file = std::make_unique<RunFile>(RunFile::create(
        run_path, {{"manifest", s.m.text()},
                   {"framework_version", SDPO_VERSION},
                   {"torch_version", TORCH_VERSION},
                   {"device", s.m.device},
                   {"started_at", now_iso()}}));
  }
  {
    std::ofstream mf(fs::path(s.dir) / "manifest.json");
    mf << s.m.text() << "\n";
  }
  // The clocks continue from the checkpoint's counters, so wall_seconds and device_seconds stay
  // cumulative over the pieces of a resumed run.
  s.wall_start = std::chrono::steady_clock::now() -
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(s.counters.wall_seconds));
  s.device_clock = std::make_unique<DeviceClock>(s.device, s.counters.device_seconds);
  bool epoch_done = false;
  try {
    if (s.resumed_from == 0) {
      if (evaluates_at(s.m, 0)) s.evaluate();
      s.file->flush();
    }
    for (std::int64_t e = s.counters.epoch; e < s.m.train.epochs; ++e) {
      s.train_epoch();
      const bool last = s.counters.epoch == s.m.train.epochs;
      if (evaluates_at(s.m, s.counters.epoch)) s.evaluate();
      s.file->flush();
      if (s.counters.epoch % s.m.train.checkpoint_every == 0 || last) {
        s.tick_clocks();
        checkpoint_save(checkpoint_dir(s.dir, s.counters.epoch), *s.c.model, *s.optimizer, *s.c.normalizer, s.gen,
                        s.counters);
      }
      if (s.opts.on_epoch) {
        epoch_done = true;  // an exception from the callback comes after a complete epoch
        s.opts.on_epoch(s.counters);
        epoch_done = false;
      }
    }
  } catch (const std::exception& e) {
    s.file->flush();
    s.file.reset();
    const std::string when = epoch_done ? "after epoch " + std::to_string(s.counters.epoch)
                                        : "during epoch " + std::to_string(s.counters.epoch + 1);
    throw Error("run '" + s.m.name + "' stopped " + when + ": " + e.what() +
                " (run file " + run_path + " holds every completed epoch; " +
                "checkpoints in " + (fs::path(s.dir) / "checkpoints").string() + ")");
  }
  s.file->flush();
  s.file.reset();
}

}  // namespace sdpo
