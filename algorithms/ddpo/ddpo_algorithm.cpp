// Algorithm `ddpo`: Denoising Diffusion Policy Optimization (research/algorithms.md section 4),
// the PPO-clip estimator of the official code (DDPO_IS) and the score-function estimator
// (DDPO_SF, a PROPOSAL: the paper's REINFORCE variant has no official PyTorch code).
//
// Notation map: N = trajectories (one per prompt, unpaired); T = buffer.num_steps; π_n = the step
// permutation of trajectory n; j = position; k = π_n(j) = the trained step; ε = clip_range;
// B_t = ctx.train_batch_size; G_acc = optimizer accumulation; num_train_timesteps = int(T·fraction).
#include <ATen/ATen.h>

#include <cmath>

#include "ddpo_loss.h"
#include "sdpo/algorithm.h"
#include "sdpo/error.h"
#include "sdpo/model.h"
#include "sdpo/optimizer.h"
#include "sdpo/plugin.h"
#include "sdpo/rollout_ops.h"
#include "sdpo/sampler.h"

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
    TORCH_CHECK(!buf.paired && buf.advantages.defined(), "algorithm 'ddpo': needs an unpaired buffer with advantages");
    const int64_t n = buf.size(), T = buf.num_steps;
    const int64_t batch = std::max<int64_t>(1, ctx.train_batch_size);
    // 4.4: num_train_timesteps = int(T * timestep_fraction) (at least one).
    const int64_t trained = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(T) * o_.timestep_fraction));
    const int64_t minibatches = (n + batch - 1) / batch;
    const bool sf = o_.estimator == "sf";
    // 4.4: one optimizer step covers every trained step of G_acc mini-batches (accelerate's
    // accumulation G_acc * num_train_timesteps). 4.3 DDPO_SF: exactly one optimizer step per round
    // of sampling, so the accumulation spans every (mini-batch, position) of the epoch.
    const int64_t accumulation =
        sf ? minibatches * trained : std::max<int64_t>(1, ctx.optimizer.options().gradient_accumulation) * trained;
    auto long_cpu = at::TensorOptions().dtype(at::kLong);

    // 4.4 step 1: one permutation of the batch axis.
    auto order = o_.shuffle_batch ? at::randperm(n, ctx.generator, long_cpu) : at::arange(n, long_cpu);
    // 4.4 step 2: an independent permutation of the T steps for each sample (indexed by row, so
    // that it travels with the sample through the batch permutation).
    std::vector<at::Tensor> perms;
    perms.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      perms.push_back(o_.shuffle_timestep ? at::randperm(T, ctx.generator, long_cpu) : at::arange(T, long_cpu));
    }
    auto perm = at::stack(perms);  // (N, T): perm[row][j] = k

    double loss_sum = 0, clip_sum = 0, kl_sum = 0;
    int64_t micro = 0;
    ctx.model.set_training(true);
    // 4.4 steps 3-4: mini-batches of B_t (outer), positions j < num_train_timesteps (inner), one
    // backward per (i, j).
    for (int64_t start = 0; start < n; start += batch) {
      const int64_t end = std::min(n, start + batch);
      auto rows = order.slice(0, start, end);
      auto row_perm = perm.index_select(0, rows);
      for (int64_t j = 0; j < trained; ++j) {
        auto k = row_perm.select(1, j).contiguous();  // (b,) trained step per sample
        auto lp = sdpo::rollout_log_prob(ctx.model, ctx.sampler, buf, rows, k);
        auto old_lp = sdpo::rollout_select(buf.log_probs, rows, k);
        // 4.2: A has no time axis in DDPO; the trainer's (N, T) advantages have identical
        // columns for a sparse final reward, so column k is that A.
        auto adv = sdpo::rollout_select(buf.advantages, rows, k);
        auto res = sf ? sdpo::ddpo_sf_loss(lp, adv, o_.adv_clip_max)
                      : sdpo::ddpo_is_loss(lp, old_lp, adv, o_.clip_range, o_.adv_clip_max);
        const double lv = res.loss.item<double>();
        if (!std::isfinite(lv)) {
          throw sdpo::NumericError(
              "algorithm 'ddpo': the loss is " + std::to_string(lv) + " at epoch " + std::to_string(ctx.epoch) +
              ", mini-batch " + std::to_string(start / batch) + ", position " + std::to_string(j));
        }
        // Accelerate divides each micro-batch loss by the accumulation count (4.4): the
        // accumulated gradient is an average.
        (res.loss / static_cast<double>(accumulation)).backward();
        ctx.optimizer.micro_step(accumulation);
        loss_sum += lv;
        clip_sum += res.clipfrac;
        kl_sum += res.approx_kl;
        ++micro;
      }
    }
    // A trailing partial accumulation (samples not a multiple of B_t·G_acc) still updates.
    ctx.optimizer.flush();
    ctx.model.set_training(false);
    const double m = static_cast<double>(std::max<int64_t>(micro, 1));
    return {
        {"loss", loss_sum / m},
        {"clipfrac", clip_sum / m},
        {"approx_kl", kl_sum / m},
        {"grad_norm", ctx.optimizer.last_grad_norm()},
        {"updates", static_cast<double>(ctx.optimizer.updates())}};
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
