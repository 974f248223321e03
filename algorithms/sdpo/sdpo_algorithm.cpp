// Algorithm `sdpo`: Stepwise Diffusion Policy Optimization (research/algorithms.md section 7).
//
// Notation map: T = buffer.num_steps; pairs b = 0..B-1 are rows b (member a) and b+B (member b);
// π_b = the step permutation of pair b; j = position; k = π_b(j) = the trained step;
// λ^k = stepwise weight; η = log_scale; ε = clip_range; G_acc = optimizer accumulation.
#include <ATen/ATen.h>
#include <cmath>

#include "sdpo/algorithm.h"
#include "sdpo/error.h"
#include "sdpo/model.h"
#include "sdpo/optimizer.h"
#include "sdpo/plugin.h"
#include "sdpo/rollout_ops.h"
#include "sdpo/sampler.h"
#include "sdpo_loss.h"

namespace {

struct SDPOOptions {
  double gamma = 0.99;
  double lambda = 0.99;
  double eta = 1.0;
  double clip_range = 1e-4;
  double adv_clip_max = 5.0;
  double timestep_fraction = 1.0;
  bool shuffle_batch = true;
  bool shuffle_timestep = true;

  static SDPOOptions read(sdpo::OptionReader& r) {
    SDPOOptions o;
    o.gamma = r.number("gamma", o.gamma, 0.0, 1.0, "discount of the dense-reward returns (0: returns = rewards)");
    o.lambda = r.number("lambda", o.lambda, 0.0, 1.0, "stepwise importance weight decay: w_k = lambda^k");
    o.eta = r.number("eta", o.eta, 1e-12, 1e12, "log-ratio scale factor (weight w_k / eta)");
    o.clip_range = r.number("clip_range", o.clip_range, 0.0, 1e6, "clip of per-step log-ratios (0: none)");
    o.adv_clip_max = r.number("adv_clip_max", o.adv_clip_max, 0.0, 1e12, "advantages clipped to +-this");
    o.timestep_fraction = r.number("timestep_fraction", o.timestep_fraction, 1e-6, 1.0, "fraction of the T steps trained");
    o.shuffle_batch = r.boolean("shuffle_batch", o.shuffle_batch, "permute the pairs before rebatching");
    o.shuffle_timestep = r.boolean("shuffle_timestep", o.shuffle_timestep, "independent step permutation per pair");
    return o;
  }
};

class SDPOAlgorithm final : public sdpo::Algorithm {
 public:
  explicit SDPOAlgorithm(const SDPOOptions& o) : o_(o) {}

  sdpo::RolloutSpec spec() const override {
    sdpo::RolloutSpec s;
    s.paired = true;
    s.shared_noise = true;  // 7.1: b reuses a's initial noise
    s.gamma = o_.gamma;
    return s;
  }

  sdpo::Metrics update(sdpo::RolloutBuffer& buf, sdpo::UpdateContext& ctx) override {
    TORCH_CHECK(buf.paired && buf.advantages.defined(), "algorithm 'sdpo': needs a paired buffer with advantages");
    const int64_t pairs = buf.groups(), T = buf.num_steps;
    const int64_t batch = std::max<int64_t>(1, ctx.train_batch_size);
    const int64_t trained = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(T) * o_.timestep_fraction));
    auto long_cpu = at::TensorOptions().dtype(at::kLong);

    // 7.5 step 1: permute the pair axis.
    auto order = o_.shuffle_batch ? at::randperm(pairs, ctx.generator, long_cpu) : at::arange(pairs, long_cpu);
    // 7.5 step 2: one independent permutation of the T steps per pair (shared by a and b).
    std::vector<at::Tensor> perms;
    for (int64_t b = 0; b < pairs; ++b) {
      perms.push_back(o_.shuffle_timestep ? at::randperm(T, ctx.generator, long_cpu) : at::arange(T, long_cpu));
    }
    auto perm = at::stack(perms);  // (pairs, T): perm[b][j] = k

    auto device = buf.latents.device();
    auto weights_all = at::pow(o_.lambda, at::arange(T, at::TensorOptions().dtype(at::kDouble))).to(at::kFloat);

    double loss_sum = 0, clip_sum = 0, adv_clip_sum = 0;
    int64_t micro = 0;
    ctx.model.set_training(true);
    // 7.5: position-outer, mini-batch-inner loop; one backward per (j, mini-batch).
    for (int64_t j = 0; j < trained; ++j) {
      for (int64_t start = 0; start < pairs; start += batch) {
        const int64_t end = std::min(pairs, start + batch);
        auto pair_idx = order.slice(0, start, end);                   // (b,)
        auto k = perm.index_select(0, pair_idx).select(1, j);         // (b,) trained step per pair
        auto rows = at::cat({pair_idx, pair_idx + pairs});            // a rows then b rows
        auto kk = at::cat({k, k});
        // One batched forward for both members of every pair.
        auto lp = sdpo::rollout_log_prob(ctx.model, ctx.sampler, buf, rows, kk);
        auto old_lp = sdpo::rollout_select(buf.log_probs, rows, kk);
        auto adv = sdpo::rollout_select(buf.advantages, rows, kk);
        const int64_t b = end - start;
        sdpo::SDPOLossInput li;
        li.log_prob_a = lp.slice(0, 0, b);
        li.log_prob_b = lp.slice(0, b, 2 * b);
        li.old_log_prob_a = old_lp.slice(0, 0, b);
        li.old_log_prob_b = old_lp.slice(0, b, 2 * b);
        li.advantage_a = adv.slice(0, 0, b);
        li.advantage_b = adv.slice(0, b, 2 * b);
        li.weight = weights_all.index_select(0, k).to(device);
        li.eta = o_.eta;
        li.clip_range = o_.clip_range;
        li.adv_clip_max = o_.adv_clip_max;
        auto res = sdpo::sdpo_loss(li);
        double lv = res.loss.item<double>();
        if (!std::isfinite(lv)) {
          throw sdpo::NumericError("algorithm 'sdpo': the loss is " + std::to_string(lv) + " at epoch " +
                                   std::to_string(ctx.epoch) + ", position " + std::to_string(j));
        }
        // Accelerate divides each micro-batch loss by the accumulation count (7.5).
        (res.loss / static_cast<double>(ctx.optimizer.options().gradient_accumulation)).backward();
        ctx.optimizer.micro_step();
        loss_sum += lv;
        clip_sum += res.clipfrac;
        adv_clip_sum += res.adv_clipfrac;
        ++micro;
      }
    }
    ctx.optimizer.flush();
    ctx.model.set_training(false);
    const double m = static_cast<double>(std::max<int64_t>(micro, 1));
    return {{"loss", loss_sum / m},
            {"clipfrac", clip_sum / m},
            {"adv_clipfrac", adv_clip_sum / m},
            {"grad_norm", ctx.optimizer.last_grad_norm()},
            {"updates", static_cast<double>(ctx.optimizer.updates())}};
  }

 private:
  SDPOOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Algorithm, SDPOOptions>(
      "sdpo", "Stepwise Diffusion Policy Optimization: dense reward differences of paired trajectories",
      &SDPOOptions::read,
      [](const SDPOOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<SDPOAlgorithm>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("sdpo", "0.1.0", register_plugin)
