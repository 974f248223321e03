// The online RL loop (DESIGN.md section 3): sample -> query rewards -> dense rewards -> returns ->
// advantages -> algorithm update -> log -> evaluate -> checkpoint, one epoch at a time.
#include "sdpo/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <fcntl.h>
#include <torch/csrc/api/include/torch/version.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/decoder.h"
#include "sdpo/core/dense_reward.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/core/update_loop.h"
#include "sdpo/distributed/data_parallel.h"
#include "sdpo/distributed/distributed.h"
#include "sdpo/math/returns.h"
#include "sdpo/train/checkpoint.h"
#include "sdpo/train/clocks.h"
#include "sdpo/train/components.h"
#include "sdpo/train/evaluation.h"
#include "sdpo/train/image_io.h"
#include "sdpo/train/interrupt.h"
#include "sdpo/train/progress.h"
#include "sdpo/train/reference_model.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/run_lock.h"
#include "sdpo/train/sampling.h"
#include "sdpo/train/threads.h"

namespace sdpo {
namespace fs = std::filesystem;

namespace {

// fsync of a closed file, so that a rename after it never publishes a file whose blocks are not
// yet on disk (a power cut, not only a kill). Best effort: an error here is reported by the rename.
void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
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

// The train row of a train.update_schedule per_batch epoch: each metric's mean over the batches'
// updates, except the optimizer's running state (`updates`, the running count of steps every
// algorithm reports, and under loss scaling `loss_scale` and `skipped_updates`), whose mean
// would be no count at all: it keeps its value after the last batch. One batch gives its metrics
// unchanged (v / 1 == v), so per_batch at one batch logs what epoch logs.
bool is_running_state(const std::string& metric) {
  return metric == "updates" || metric == "loss_scale" || metric == "skipped_updates";
}

Metrics mean_over_batches(const std::vector<Metrics>& batches) {
  Metrics out;
  std::map<std::string, std::int64_t> count;
  for (const auto& metrics : batches) {
    for (const auto& [k, v] : metrics) {
      auto [it, fresh] = out.emplace(k, v);
      if (!fresh) it->second = is_running_state(k) ? v : it->second + v;
      ++count[k];
    }
  }
  for (auto& [k, v] : out) {
    if (!is_running_state(k)) v /= static_cast<double>(count[k]);
  }
  return out;
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
  std::unique_ptr<DeviceClock> device_clock;  ///< device_seconds (sdpo/train/clocks.h), set by run()
  std::map<std::string, double> last_eval;
  c10::Device device{at::kCPU};
  std::int64_t resumed_from = 0;
  /// The process group when WORLD_SIZE > 1 (sdpo/distributed/distributed.h), else null: one process, today's
  /// run. Rank r samples from its own stream rank_seed(train.seed, r); only rank 0 writes.
  std::shared_ptr<Distributed> dist;
  /// TrainerOptions::sampling_ranks: the streams of the simulated ranks 1..n-1.
  std::vector<at::Generator> simulated_rank_gens;
  double device_seconds_base = 0;  ///< with dist: device_seconds of the checkpoint resumed from

  bool writes() const { return !dist || dist->is_main(); }
  void run();  // Trainer::run() without the failure report

  // Continues the run folder from checkpoint `resumed_from` (TrainerOptions::resume): the
  // manifest must be the run's up to resume_free_keys(); then the training state is restored
  // and the run file rolled back to that epoch, so the epochs after it are re-run and re-logged
  // exactly as an unbroken run would have.
  // A rank other than 0 only restores the training state (its own random stream included); the
  // run folder is rank 0's.
  void resume_state_only() {
    counters = checkpoint_load(
        checkpoint_dir(dir, resumed_from), *c.model, optimizer.get(), c.normalizer.get(), &gen, dist->rank());
  }

  void resume() {
    const std::string run_path = (fs::path(dir) / "run.h5").string();
    if (resumed_from > m.train.epochs) {
      throw ManifestError(
          m.file, "train.epochs",
          "the run in " + dir + " has a checkpoint at epoch " + std::to_string(resumed_from) +
              ", past train.epochs = " + std::to_string(m.train.epochs) +
              "; give at least that many epochs or another output folder");
    }
    if (!fs::exists(run_path)) {
      throw FileError(
          run_path,
          "missing, but " + checkpoint_dir(dir, resumed_from) + " exists: cannot resume without the run's curves");
    }
    boost::system::error_code ec;
    boost::json::value logged = boost::json::parse(RunFile::open(run_path, false).attribute("manifest"), ec);
    if (ec || !logged.is_object()) throw FileError(run_path, "its root attribute 'manifest' is not a JSON object");
    const auto diffs = resume_differences(logged.as_object(), m.root);
    if (!diffs.empty()) {
      std::string list;
      for (const auto& d : diffs) list += (list.empty() ? "" : ", ") + d;
      std::string free;
      for (const auto& k : resume_free_keys()) free += (free.empty() ? "" : ", ") + k;
      throw ManifestError(
          m.file, diffs.front(),
          "differs from the manifest of the run being resumed in " + dir + " (at " + list +
              "); a resume may change only " + free);
    }
    counters = checkpoint_load(checkpoint_dir(dir, resumed_from), *c.model, optimizer.get(), c.normalizer.get(), &gen);
    if (counters.epoch != resumed_from) {
      throw FileError(
          checkpoint_dir(dir, resumed_from),
          "holds the counters of epoch " + std::to_string(counters.epoch) + ", not " + std::to_string(resumed_from));
    }
    // The rollback runs on a copy that is then renamed over run.h5 (rename is atomic): a kill at
    // any moment of a resume leaves either the old file, which the next resume rolls back again,
    // or the rolled-back one, never a half-edited file.
    const std::string rewind_path = run_path + ".rewind";
    std::error_code fec;
    fs::copy_file(run_path, rewind_path, fs::copy_options::overwrite_existing, fec);
    if (fec) throw FileError(rewind_path, "cannot copy the run file for its rollback: " + fec.message());
    {
      RunFile copy = RunFile::open(rewind_path);
      rewind_run_folder(dir, copy, resumed_from, m);
      copy.set_attribute("manifest", m.text());
      // The resumed piece runs with this process's threads (the speed of its epochs depends on it).
      copy.set_attribute("intra_op_threads", std::to_string(intra_op_threads()));
      copy.flush();
    }
    sync_file(rewind_path);
    fs::rename(rewind_path, run_path, fec);
    if (fec) throw FileError(run_path, "cannot move the rolled-back run file into place: " + fec.message());
    file = std::make_unique<RunFile>(RunFile::open(run_path));
    std::cerr << "resuming " << dir << " from its checkpoint at epoch " << resumed_from << " of " << m.train.epochs
              << "\n";
  }

  // Collective with several ranks (every rank calls it at the same points): device_seconds is
  // then the sum over the ranks, wall_seconds rank 0's.
  void tick_clocks() {
    counters.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    // Process CPU time on the CPU (all threads); synchronized wall time on a CUDA device.
    if (!dist) {
      counters.device_seconds = device_clock->seconds();
      return;
    }
    auto t = at::full({1}, device_clock->seconds(), at::TensorOptions().dtype(at::kDouble));
    dist->all_reduce_sum(t, "device seconds");
    counters.device_seconds = device_seconds_base + t.item<double>();
  }

  // Checkpoint: rank 0 writes it, with every rank's random stream (gathered: a collective).
  void save_checkpoint() {
    tick_clocks();
    std::vector<at::Tensor> rng_states;
    if (dist) rng_states = dist->all_gather(gen.get_state().unsqueeze(0), "random states");
    if (!writes()) return;
    for (auto& t : rng_states) t = t.squeeze(0);
    checkpoint_save(
        checkpoint_dir(dir, counters.epoch), *c.model, *optimizer, *c.normalizer, gen, counters, rng_states);
  }

  std::map<std::string, double> counter_row() {
    tick_clocks();
    return {
        {"epoch", static_cast<double>(counters.epoch)},
        {"samples", static_cast<double>(counters.samples)},
        {"reward_queries", static_cast<double>(counters.reward_queries)},
        {"wall_seconds", counters.wall_seconds},
        {"device_seconds", counters.device_seconds},
        {"devices", static_cast<double>(dist ? dist->world_size() : 1)}};  // one device per process
  }

  // Every rank evaluates its share (evaluation.h); rank 0 logs and draws the grid.
  void evaluate() {
    EvalResult r = evaluate_model(m, c, device, dist.get());
    for (const auto& [steps, stats] : r.per_steps) {
      auto row = counter_row();
      row["reward_mean"] = stats.mean;
      row["reward_std"] = stats.std;
      row["images"] = static_cast<double>(stats.count);
      if (file) file->append_row("eval/steps_" + std::to_string(steps), row);
      last_eval["steps_" + std::to_string(steps)] = stats.mean;
    }
    if (!writes()) return;
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
  // With several ranks every rank draws from its own stream (so that each stream advances as in
  // a one-process run) and all take rank 0's draw: the ranks' buffers must have one T.
  std::int64_t trajectory_steps() {
    const auto& choices = m.sample.step_choices;
    if (choices.size() <= 1) return m.sample.steps;
    const auto n = static_cast<std::int64_t>(choices.size());
    const auto draw = [&](at::Generator& g) {
      return at::randint(n, {1}, g, at::TensorOptions().dtype(at::kLong)).item<std::int64_t>();
    };
    auto i = at::full({1}, draw(gen), at::TensorOptions().dtype(at::kLong));
    for (auto& g : simulated_rank_gens) draw(g);
    if (dist) dist->broadcast(i, 0, "trajectory steps");
    return choices[static_cast<std::size_t>(i.item<std::int64_t>())];
  }

  // Steps 1-3 of the epoch's sampling batches [first, first + count) for one rank, every random
  // draw from `gen`: the buffer up to its dense and final rewards (no returns, no advantages yet).
  // Adds the reward queries to `queries`.
  RolloutBuffer sample_batches(
      at::Generator& gen,
      std::int64_t T,
      std::int64_t first,
      std::int64_t count,
      EpochTimes& times,
      Progress* bar,
      std::int64_t& queries) {
    const auto spec = c.algorithm->spec();
    const auto& pool = c.prompts->train_prompts();
    const std::int64_t B = m.train.batch_size;
    const auto shape = c.model->latent_shape();
    std::vector<std::int64_t> noise_shape{B};
    noise_shape.insert(noise_shape.end(), shape.begin(), shape.end());
    std::vector<RolloutBuffer> parts;  // one per batch, merged in the union layout below
    for (std::int64_t batch = first; batch < first + count; ++batch) {
      check_interrupt();  // Ctrl-C: stop between batches (sdpo/train/interrupt.h)
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
      Trajectories tr =
          sample_trajectories(*c.model, *c.sampler, cond, x_T.to(device), T, gen, true, m.sample.forward_batch);
      sampling.stop();
      // A diverged policy shows here first: blamed on the model, not on the reward it feeds.
      if (!at::isfinite(tr.final_sample).all().item<bool>()) {
        throw NumericError(
            "model '" + m.model.name + "' produced NaN or Inf while sampling at epoch " +
            std::to_string(counters.epoch + 1) + " (diverged weights? lower train.learning_rate)");
      }
      const std::int64_t N = x_T.size(0);
      QueryPlan plan;
      at::Tensor scores, dense;
      if (spec.final_image_reward) {
        // 3'. sparse reward of the decoded final sample, copied along the trajectory.
        const at::Tensor final_image =
            c.sampler->final_image_is_pred_x0() ? tr.pred_x0.select(1, tr.pred_x0.size(1) - 1) : tr.final_sample;
        auto images = timed(times.decode, device, [&] { return c.decoder->decode(final_image); });
        check_finite(images, "decoder '" + m.decoder.name + "'", counters.epoch + 1);
        scores =
            timed(times.reward, device, [&] { return c.reward->score(images, prompts); }).to(at::kFloat).view({N, 1});
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
        check_finite(images, "decoder '" + m.decoder.name + "'", counters.epoch + 1);
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

      RolloutBuffer part;
      part.num_steps = T;
      part.paired = spec.paired;
      part.prompts = std::move(prompts);
      part.cond = cond;
      part.timesteps = tr.timesteps;
      part.latents = tr.latents;
      part.next_latents = tr.next_latents;
      part.log_probs = tr.log_probs;
      if (m.output.save_latents) part.pred_x0 = tr.pred_x0;
      part.query_steps = plan.steps;
      part.queried_rewards = scores;
      part.similarities = plan.similarities;
      part.anchor_step = plan.anchor;
      part.dense_rewards = dense;
      parts.push_back(std::move(part));
      if (bar) bar->tick("sampled " + std::to_string(batch + 1));
    }
    PhaseTimer preparing(times.prepare, device);
    RolloutBuffer buf = merge_rollouts(parts);
    buf.final_rewards = buf.dense_rewards.select(1, T - 1).clone();
    return buf;
  }

  // The batches [first, first + count) of this epoch: this process's and, with
  // TrainerOptions::sampling_ranks, the simulated ranks' too, as their union.
  RolloutBuffer sample_round(
      std::int64_t T, std::int64_t first, std::int64_t count, EpochTimes& times, Progress& bar, std::int64_t& queries) {
    RolloutBuffer buf = sample_batches(gen, T, first, count, times, &bar, queries);
    if (simulated_rank_gens.empty()) return buf;
    std::vector<RolloutBuffer> parts{std::move(buf)};
    for (auto& g : simulated_rank_gens) parts.push_back(sample_batches(g, T, first, count, times, nullptr, queries));
    return merge_rollouts(parts);
  }

  // Steps 4-5 on one sampled buffer (the whole epoch, or one batch under train.update_schedule
  // per_batch): returns -> advantages -> the algorithm's update. Each call advances the
  // normalizer's state by this buffer's returns. Sets `all_dense` to the buffer's dense rewards
  // over all ranks (for the log).
  Metrics prepare_and_update(RolloutBuffer& buf, EpochTimes& times, at::Tensor& all_dense) {
    const auto spec = c.algorithm->spec();
    PhaseTimer preparing(times.prepare, device);
    // 4. dense rewards -> returns -> advantages. With several ranks the normalizer sees every
    // rank's returns (gathered in the union layout, data_parallel.h), so that its per-prompt
    // statistics and state are the same on every rank; each rank keeps its own rows.
    all_dense = buf.dense_rewards;
    if (dist) {
      auto g = gather_rewards(buf, c.prompts->train_prompts(), *dist);
      all_dense = g.dense_rewards;
      auto returns = returns_discounted(all_dense, spec.gamma);
      auto advantages = c.normalizer->normalize(returns, g.prompts);
      check_finite(advantages, "normalizer '" + m.normalizer.name + "'", counters.epoch + 1);
      buf.returns = rank_rows(returns, dist->rank(), dist->world_size(), buf.paired);
      buf.advantages = rank_rows(advantages, dist->rank(), dist->world_size(), buf.paired);
    } else {
      buf.returns = returns_discounted(buf.dense_rewards, spec.gamma);
      buf.advantages = c.normalizer->normalize(buf.returns, buf.prompts);
      check_finite(buf.advantages, "normalizer '" + m.normalizer.name + "'", counters.epoch + 1);
    }
    preparing.stop();

    // 5. the algorithm's updates (gradients all-reduced at each optimizer step: see the
    // constructor's gradient hook).
    UpdateContext ctx{*c.model,       *c.sampler, *optimizer, gen, counters.epoch + 1, m.train.train_batch_size,
                      reference.get()};
    return timed(times.update, device, [&] { return run_update_phase(*c.algorithm, buf, ctx); });
  }

  void train_epoch() {
    const bool per_batch = m.train.update_schedule == "per_batch";
    const std::int64_t n_b = m.train.batches_per_epoch;
    Progress bar(
        m.output.progress, "epoch " + std::to_string(counters.epoch + 1) + "/" + std::to_string(m.train.epochs),
        n_b + (per_batch ? n_b : 1));
    std::int64_t queries = 0;
    EpochTimes times;
    const auto epoch_start = std::chrono::steady_clock::now();
    const std::int64_t T = trajectory_steps();
    RolloutBuffer buf;
    at::Tensor all_dense;  // the epoch's rewards over all ranks, for the log
    Metrics metrics;
    if (per_batch) {
      // RLCM's loop (research/algorithms.md 5.4): sample one batch, normalize it, update on it,
      // so that every update trains on samples of the current policy and the normalizer's
      // state advances batch by batch, as RLCM's stat tracker does. The epoch's buffer (for the
      // log) is the batches' union.
      std::vector<RolloutBuffer> parts;
      std::vector<at::Tensor> dense_parts;
      std::vector<Metrics> batch_metrics;
      for (std::int64_t b = 0; b < n_b; ++b) {
        RolloutBuffer part = sample_round(T, b, 1, times, bar, queries);
        at::Tensor dense;
        batch_metrics.push_back(prepare_and_update(part, times, dense));
        bar.tick("updated " + std::to_string(b + 1));
        // Only the log reads a batch after its update: free what it never writes, so that the
        // epoch holds one batch's training tensors at a time.
        part.cond = at::Tensor();
        part.next_latents = at::Tensor();
        if (!m.output.save_latents) part.latents = at::Tensor();
        parts.push_back(std::move(part));
        dense_parts.push_back(dense);
      }
      PhaseTimer preparing(times.prepare, device);
      buf = merge_rollouts(parts);
      all_dense = cat_rows(dense_parts, buf.paired);
      metrics = mean_over_batches(batch_metrics);
    } else {
      buf = sample_round(T, 0, n_b, times, bar, queries);
      metrics = prepare_and_update(buf, times, all_dense);
      bar.tick("updated");
    }

    counters.epoch += 1;
    if (dist) {
      metrics = mean_over_ranks(metrics, *dist);
      auto q = at::full({1}, queries, at::TensorOptions().dtype(at::kLong));
      dist->all_reduce_sum(q, "reward queries");
      queries = q.item<std::int64_t>();
    }
    counters.samples += all_dense.size(0);
    counters.reward_queries += queries;
    auto row = counter_row();
    for (const auto& [k, v] : metrics) row[k] = v;
    auto first = all_dense.select(1, 0).to(at::kDouble),
         last = (dist ? all_dense.select(1, T - 1) : buf.final_rewards).to(at::kDouble);
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
    if (file) file->append_row("train", row);
    // Trajectories of rank 0's own rows only (every rank's would be world_size times the data).
    if (file && m.output.save_trajectories) {
      std::map<std::string, at::Tensor> arrays{
          {"queried_rewards", buf.queried_rewards},
          {"query_steps", buf.query_steps},
          {"dense_rewards", buf.dense_rewards},
          {"returns", buf.returns},
          {"advantages", buf.advantages},
          {"log_probs", buf.log_probs},
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
  s.dist = Distributed::from_env(s.device);
  if (s.dist && s.device.is_cuda() && !s.device.has_index()) {
    // One GPU per process: "cuda" means this machine's LOCAL_RANK-th.
    s.m.device = "cuda:" + std::to_string(s.dist->local_rank());
    s.device = c10::Device(s.m.device);
  }
  if (s.dist && s.opts.sampling_ranks > 1) {
    throw Error(
        "TrainerOptions::sampling_ranks simulates ranks in one process; it cannot be combined with WORLD_SIZE > 1");
  }
  s.dir = s.opts.output_dir.empty() ? (fs::path(s.m.output.dir) / s.m.name).string() : s.opts.output_dir;
  s.c = build_components(s.m, ComponentSet::kTraining);
  if (s.m.eval.every > 0) evaluation_prompts(s.m, s.c);  // an empty set fails here, not after an epoch
  OptimizerOptions optimizer = s.m.train.optimizer;
  optimizer.loss_scaling.enabled = loss_scaling_enabled(s.m.train.loss_scaling, s.c.model->trained_dtype());
  s.optimizer = std::make_unique<Optimizer>(s.c.model->trainable_parameters(), optimizer);
  if (s.dist) {
    // Data parallel: each update applies the mean of the ranks' accumulated gradients.
    auto* dist = s.dist.get();
    s.optimizer->set_gradient_hook([dist](const std::vector<at::Tensor>& p) { dist->all_reduce_gradients(p); });
  }
  if (s.c.algorithm->spec().needs_reference_model) {
    s.reference = make_reference_model(s.c.model, s.m.model, s.device);
  }
  if (s.opts.wrap_model) {
    s.c.model = s.opts.wrap_model(s.c.model);
    if (s.reference) s.reference = s.opts.wrap_model(s.reference);
  }
  s.gen = at::make_generator<at::CPUGeneratorImpl>(rank_seed(s.m.train.seed, s.dist ? s.dist->rank() : 0));
  for (std::int64_t r = 1; r < s.opts.sampling_ranks; ++r) {
    s.simulated_rank_gens.push_back(
        at::make_generator<at::CPUGeneratorImpl>(rank_seed(s.m.train.seed, static_cast<int>(r))));
  }
}

Trainer::~Trainer() = default;

const std::string& Trainer::run_dir() const { return impl_->dir; }
const std::map<std::string, double>& Trainer::last_eval() const { return impl_->last_eval; }

std::int64_t Trainer::resumed_from() const { return impl_->resumed_from; }

void Trainer::run() {
  try {
    impl_->run();
  } catch (const std::exception& e) {
    // Peers blocked in a collective then say which rank stopped and why (distributed.h).
    if (impl_->dist) impl_->dist->report_failure(error_message(e));
    throw;
  }
}

void Trainer::Impl::run() {
  auto& s = *this;
  // The folder is this process's while it writes it (a second writer is refused, naming us).
  std::unique_ptr<RunFolderLock> lock;
  if (s.writes()) lock = std::make_unique<RunFolderLock>(s.dir);
  const std::string run_path = (fs::path(s.dir) / "run.h5").string();
  s.resumed_from = s.opts.resume ? last_checkpoint_epoch(s.dir) : 0;
  if (s.dist) {
    // Rank 0's folder decides; no rank reads it after rank 0 has moved on (this is a sync point).
    auto from = at::full({1}, s.resumed_from, at::TensorOptions().dtype(at::kLong));
    s.dist->broadcast(from, 0, "resume epoch");
    s.resumed_from = from.item<std::int64_t>();
  }
  if (s.resumed_from > 0) {
    if (s.writes()) {
      s.resume();
    } else {
      s.resume_state_only();
    }
  } else if (s.writes()) {
    const std::int64_t old_checkpoints = last_checkpoint_epoch(s.dir);
    if (!s.opts.resume && !s.opts.overwrite && (fs::exists(run_path) || old_checkpoints > 0)) {
      throw Error(
          s.dir + " already holds a run (" +
          (fs::exists(run_path) ? "run.h5" + std::string(old_checkpoints > 0 ? " and " : "") : std::string()) +
          (old_checkpoints > 0 ? "a checkpoint at epoch " + std::to_string(old_checkpoints) : std::string()) +
          "); pass --resume to continue it or --overwrite to replace it, or write to another --output");
    }
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
                   {"intra_op_threads", std::to_string(intra_op_threads())},
                   {"started_at", utc_timestamp()}}));
  }
  if (s.writes()) {
    const auto manifest_path = (fs::path(s.dir) / "manifest.json").string();
    std::ofstream mf(manifest_path);
    errno = 0;
    mf << s.m.text() << "\n";
    mf.flush();
    if (!mf) {
      throw FileError(manifest_path, std::string("write failed: ") + (errno ? std::strerror(errno) : "stream error"));
    }
  }
  if (s.dist) {
    // As DDP does at construction: every rank starts from rank 0's weights, whatever it loaded.
    at::NoGradGuard no_grad;
    for (auto& p : s.c.model->trainable_parameters()) s.dist->broadcast(p, 0, "initial weights");
  }
  // The clocks continue from the checkpoint's counters, so wall_seconds and device_seconds stay
  // cumulative over the pieces of a resumed run. With several ranks each rank's clock starts at
  // 0 and tick_clocks() adds their sum to the checkpoint's.
  s.wall_start = std::chrono::steady_clock::now() - std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                        std::chrono::duration<double>(s.counters.wall_seconds));
  s.device_seconds_base = s.counters.device_seconds;
  s.device_clock = std::make_unique<DeviceClock>(s.device, s.dist ? 0.0 : s.counters.device_seconds);
  bool epoch_done = false;
  std::string stage;  // what the epoch loop is doing besides training, for the error message
  // On the way out after an error: a flush that fails too (a full disk) must not replace the
  // first error, and the file is closed either way (the last flushed epoch stays readable).
  auto close_quietly = [&] {
    if (!s.file) return;
    try {
      s.file->flush();
    } catch (const std::exception&) {
    }
    s.file.reset();
  };
  try {
    if (s.resumed_from == 0) {
      if (evaluates_at(s.m, 0)) s.evaluate();
      if (s.file) s.file->flush();
    }
    for (std::int64_t e = s.counters.epoch; e < s.m.train.epochs; ++e) {
      check_interrupt();
      s.train_epoch();
      const bool last = s.counters.epoch == s.m.train.epochs;
      stage = "while evaluating after epoch " + std::to_string(s.counters.epoch);
      if (evaluates_at(s.m, s.counters.epoch)) s.evaluate();
      stage = "while writing epoch " + std::to_string(s.counters.epoch) + " to the run file";
      if (s.file) s.file->flush();
      stage = "while saving the checkpoint of epoch " + std::to_string(s.counters.epoch);
      if (s.counters.epoch % s.m.train.checkpoint_every == 0 || last) s.save_checkpoint();
      stage.clear();
      if (s.opts.on_epoch) {
        epoch_done = true;  // an exception from the callback comes after a complete epoch
        s.opts.on_epoch(s.counters);
        epoch_done = false;
      }
    }
  } catch (const Interrupted&) {
    // Not a failure: the command line says how to resume.
    close_quietly();
    throw;
  } catch (const std::exception& e) {
    close_quietly();
    const std::string when = epoch_done       ? "after epoch " + std::to_string(s.counters.epoch)
                             : !stage.empty() ? stage
                                              : "during epoch " + std::to_string(s.counters.epoch + 1);
    throw Error(
        "run '" + s.m.name + "' stopped " + when + ": " + error_message(e) + " (run file " + run_path +
        " holds every completed epoch; " + "checkpoints in " + (fs::path(s.dir) / "checkpoints").string() + ")");
  }
  if (s.file) {
    s.file->flush();
    s.file.reset();
  }
}

}  // namespace sdpo
