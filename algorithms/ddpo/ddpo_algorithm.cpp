// Algorithm `ddpo`: Denoising Diffusion Policy Optimization (research/algorithms.md section 4),
// the PPO-clip estimator of the official code (DDPO_IS) and the score-function estimator
// (DDPO_SF, a PROPOSAL: the paper's REINFORCE variant has no official PyTorch code).
//
// Notation map: N = trajectories (one per prompt, unpaired); T = buffer.num_steps; π_n = the step
// permutation of trajectory n; j = position; k = π_n(j) = the trained step; ε = clip_range;
// B_t = ctx.train_batch_size; G_acc = optimizer accumulation; num_train_timesteps = int(T·fraction).
#include <ATen/ATen.h>

#include "ddpo_loss.h"
#include "sdpo/core/algorithm.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/rollout_ops.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"

namespace {

struct DDPOOptions {
  std::string estimator = "is";
  double clip_range = 1e-4;
  double adv_clip_max = 5.0;
  double timestep_fraction = 1.0;
  bool shuffle_batch = true;
  bool shuffle_timestep = true;

  static DDPOOptions read(sdpo::OptionReader& r) {
    DDPOOptions o;
    o.estimator = r.string(
        "estimator", o.estimator,
        "is: importance-sampled PPO-clip (official code); sf: score function, one update per epoch", {"is", "sf"});
    o.clip_range =
        r.number("clip_range", o.clip_range, 0.0, 1e6, "PPO clip of the ratio to [1-eps, 1+eps] (estimator is)");
    o.adv_clip_max = r.number("adv_clip_max", o.adv_clip_max, 0.0, 1e12, "advantages clipped to +-this at loss time");
    o.timestep_fraction =
        r.number("timestep_fraction", o.timestep_fraction, 1e-6, 1.0, "fraction of the T steps trained");
    o.shuffle_batch = r.boolean("shuffle_batch", o.shuffle_batch, "permute the trajectories before rebatching");
    o.shuffle_timestep =
        r.boolean("shuffle_timestep", o.shuffle_timestep, "independent step permutation per trajectory");
    return o;
  }
};

class DDPOAlgorithm final : public sdpo::Algorithm {
 public:
  explicit DDPOAlgorithm(const DDPOOptions& o) : o_(o) {}

  sdpo::RolloutSpec spec() const override {
    sdpo::RolloutSpec s;
    s.paired = false;             // 4.1: one trajectory per prompt
    s.shared_noise = false;       // 4.1: independent initial noise
    s.gamma = 0.0;                // 4.2: no discounting; the same A at every step
    s.final_image_reward = true;  // 4.1: only the decoded x^(T) is scored
    return s;
  }

  sdpo::Metrics update(sdpo::RolloutBuffer& buf, sdpo::UpdateContext& ctx) override {
    if (buf.paired || !buf.advantages.defined()) {
      throw sdpo::Error("algorithm 'ddpo': needs an unpaired buffer with advantages");
    }
    const int64_t n = buf.size(), T = buf.num_steps;
    const int64_t batch = std::max<int64_t>(1, ctx.train_batch_size);
    const int64_t trained = sdpo::trained_steps(T, o_.timestep_fraction);  // 4.4: num_train_timesteps
    const int64_t minibatches = (n + batch - 1) / batch;
    const bool sf = o_.estimator == "sf";
    // 4.4: one optimizer step covers every trained step of G_acc mini-batches (accelerate's
    // accumulation G_acc * num_train_timesteps). 4.3 DDPO_SF: exactly one optimizer step per round
    // of sampling, so the accumulation spans every (mini-batch, position) of the epoch.
    const int64_t accumulation =
        sf ? minibatches * trained : std::max<int64_t>(1, ctx.optimizer.options().gradient_accumulation) * trained;

    // 4.4 steps 1-2: one permutation of the batch axis, then an independent permutation of the T
    // steps for each sample (indexed by row, so that it travels with the sample).
    const auto order = sdpo::draw_update_order(n, T, o_.shuffle_batch, o_.shuffle_timestep, ctx.generator);

    sdpo::MetricSums sums;
    // 4.4 steps 3-4: mini-batches of B_t (outer), positions j < num_train_timesteps (inner), one
    // backward per (i, j). The trainer's final flush updates on a trailing partial accumulation
    // (samples not a multiple of B_t·G_acc).
    for (int64_t start = 0; start < n; start += batch) {
      const int64_t end = std::min(n, start + batch);
      auto rows = order.rows.slice(0, start, end);
      auto row_perm = order.steps.index_select(0, rows);
      for (int64_t j = 0; j < trained; ++j) {
        auto k = row_perm.select(1, j).contiguous();  // (b,) trained step per sample
        auto lp = sdpo::rollout_log_prob(ctx.model, ctx.sampler, buf, rows, k);
        auto old_lp = sdpo::rollout_select(buf.log_probs, rows, k);
        // 4.2: A has no time axis in DDPO; the trainer's (N, T) advantages have identical
        // columns for a sparse final reward, so column k is that A.
        auto adv = sdpo::rollout_select(buf.advantages, rows, k);
        auto res = sf ? sdpo::ddpo_sf_loss(lp, adv, o_.adv_clip_max)
                      : sdpo::ddpo_is_loss(lp, old_lp, adv, o_.clip_range, o_.adv_clip_max);
        const std::string where = "mini-batch " + std::to_string(start / batch) + ", position " + std::to_string(j);
        sums.add("loss", sdpo::backward_micro_batch(res.loss, accumulation, ctx, "ddpo", where));
        sums.add("clipfrac", res.clipfrac);
        sums.add("approx_kl", res.approx_kl);
        sums.next_term();
      }
    }
    return sums.means();
  }

 private:
  DDPOOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Algorithm, DDPOOptions>(
      "ddpo", "Denoising Diffusion Policy Optimization: PPO-clip (is) or REINFORCE (sf) on the final-image reward",
      &DDPOOptions::read,
      [](const DDPOOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<DDPOAlgorithm>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("ddpo", "0.1.0", register_plugin)
