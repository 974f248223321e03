// Algorithm `sdpo`: Stepwise Diffusion Policy Optimization (research/algorithms.md section 7) and
// its ablation variants (section 9): `returns` (9.2), `weighting` (9.4) and `update` (9.5).
//
// Notation map: T = buffer.num_steps; pairs b = 0..B-1 are rows b (member a) and b+B (member b);
// π_b = the step permutation of pair b; j = position; k = π_b(j) = the trained step;
// w_k = λ^k (forward) or λ^(T−1−k) (reverse) = stepwise weight; η = eta (log_scale);
// ε = clip_range; G_acc = optimizer accumulation; num_train_timesteps = int(T·timestep_fraction).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/rollout_ops.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"
#include "sdpo_loss.h"

namespace {

// Gradient-update schedules (9.5).
const char* const kStepShuffled = "step_shuffled";        // 7.5 default: position-outer, G_acc
const char* const kStepwiseOrdered = "stepwise_ordered";  // shuffle_timestep = false: k = j
const char* const kStepAccumulated = "step_accumulated";  // PROPOSAL: mini-batch-outer, G_acc·T

struct SDPOOptions {
  std::string returns = "discounted";
  double gamma = 0.99;
  std::string weighting = "forward";
  double lambda = 0.99;
  double eta = 1.0;
  double clip_range = 1e-4;
  double adv_clip_max = 5.0;
  double timestep_fraction = 1.0;
  std::string update = kStepShuffled;
  bool shuffle_batch = true;
  bool shuffle_timestep = true;
  /// `shuffle_timestep: false` turned the default update into stepwise_ordered (the legacy
  /// spelling); the factory refuses it when `update` was also given explicitly.
  bool update_from_shuffle_timestep = false;

  static SDPOOptions read(sdpo::OptionReader& r) {
    SDPOOptions o;
    o.returns = r.string(
        "returns", o.returns,
        "9.2: discounted = G_k = R_k + gamma G_(k+1); none = G = R (gamma ignored; "
        "the same as discounted with gamma 0)",
        {"discounted", "none"});
    o.gamma = r.number(
        "gamma", o.gamma, 0.0, 1.0, "discount of the returns when returns = discounted (0: returns = rewards)");
    o.weighting = r.string(
        "weighting", o.weighting, "9.4 stepwise importance weight: forward = lambda^k, reverse = lambda^(T-1-k)",
        {"forward", "reverse"});
    o.lambda = r.number("lambda", o.lambda, 0.0, 1.0, "stepwise importance weight decay (1: no weighting)");
    o.eta = r.number("eta", o.eta, 1e-12, 1e12, "log-ratio scale factor (weight w_k / eta)");
    o.clip_range = r.number("clip_range", o.clip_range, 0.0, 1e6, "clip of per-step log-ratios (0: none)");
    o.adv_clip_max = r.number("adv_clip_max", o.adv_clip_max, 0.0, 1e12, "advantages clipped to +-this");
    o.timestep_fraction =
        r.number("timestep_fraction", o.timestep_fraction, 1e-6, 1.0, "fraction of the T steps trained");
    o.update = r.string(
        "update", o.update,
        "9.5 gradient updates: step_shuffled (7.5), stepwise_ordered (steps 0..T-1 in order), "
        "step_accumulated (PROPOSAL: one update per G_acc mini-batches x all steps)",
        {kStepShuffled, kStepwiseOrdered, kStepAccumulated});
    o.shuffle_batch = r.boolean("shuffle_batch", o.shuffle_batch, "permute the pairs before rebatching");
    // The default follows `update`, so an explicit `true` next to stepwise_ordered is detectable.
    o.shuffle_timestep = r.boolean(
        "shuffle_timestep", o.update != kStepwiseOrdered,
        "independent step permutation per pair; false alone = update stepwise_ordered (legacy spelling); "
        "must agree with update step_shuffled/stepwise_ordered; free with step_accumulated");
    if (o.update == kStepwiseOrdered && o.shuffle_timestep) {
      r.fail(
          "shuffle_timestep",
          "true disagrees with update 'stepwise_ordered' (which trains the steps in order); "
          "remove shuffle_timestep or set update 'step_shuffled'");
    }
    if (o.update == kStepShuffled && !o.shuffle_timestep) {
      o.update = kStepwiseOrdered;  // 9.5: shuffle_timestep = false is the stepwise variant
      o.update_from_shuffle_timestep = true;
    }
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
    // 9.2: "none" is G = R̂, which the trainer's returns_discounted computes for gamma 0 (7.3).
    s.gamma = o_.returns == "none" ? 0.0 : o_.gamma;
    return s;
  }

  sdpo::Metrics update(sdpo::RolloutBuffer& buf, sdpo::UpdateContext& ctx) override {
    if (!buf.paired || !buf.advantages.defined()) {
      throw sdpo::Error("algorithm 'sdpo': needs a paired buffer with advantages");
    }
    const int64_t pairs = buf.groups(), T = buf.num_steps;
    const int64_t batch = std::max<int64_t>(1, ctx.train_batch_size);
    const int64_t trained = sdpo::trained_steps(T, o_.timestep_fraction);
    const int64_t g_acc = std::max<int64_t>(1, ctx.optimizer.options().gradient_accumulation);

    // 7.5 step 1: permute the pair axis (kept on for every update schedule, 9.5). Step 2: one
    // independent permutation of the T steps per pair (shared by a and b); stepwise_ordered uses
    // the identity, so position j is step j for every pair (9.5).
    const auto order = sdpo::draw_update_order(pairs, T, o_.shuffle_batch, o_.shuffle_timestep, ctx.generator);

    const auto weighting = o_.weighting == "reverse" ? sdpo::StepWeighting::kReverse : sdpo::StepWeighting::kForward;
    auto weights_all = sdpo::sdpo_step_weights(T, o_.lambda, weighting).to(at::kFloat);

    sdpo::MetricSums sums;
    if (o_.update == kStepAccumulated) {
      // 9.5 step-accumulated (PROPOSAL): mini-batch-outer, position-inner, as DDPO (4.4); one
      // optimizer update per G_acc mini-batches x num_train_timesteps backwards.
      const int64_t accumulation = g_acc * trained;
      for (int64_t start = 0; start < pairs; start += batch) {
        for (int64_t j = 0; j < trained; ++j) micro_batch(buf, ctx, order, weights_all, start, j, accumulation, sums);
      }
    } else {
      // 7.5: position-outer, mini-batch-inner loop; one backward per (j, mini-batch), an update
      // every G_acc mini-batches (accelerate's accumulation is not multiplied by T).
      for (int64_t j = 0; j < trained; ++j) {
        for (int64_t start = 0; start < pairs; start += batch)
          micro_batch(buf, ctx, order, weights_all, start, j, g_acc, sums);
      }
    }
    return sums.means();
  }

 private:
  // One backward: the pairs order.rows[start, start + B_t) at their position j (7.4), the loss
  // divided by `accumulation` (accelerate's averaging over the accumulated micro-batches).
  void micro_batch(
      sdpo::RolloutBuffer& buf,
      sdpo::UpdateContext& ctx,
      const sdpo::UpdateOrder& order,
      const at::Tensor& weights_all,
      int64_t start,
      int64_t j,
      int64_t accumulation,
      sdpo::MetricSums& sums) const {
    const int64_t pairs = buf.groups();
    const int64_t end = std::min(pairs, start + std::max<int64_t>(1, ctx.train_batch_size));
    auto pair_idx = order.rows.slice(0, start, end);              // (b,)
    auto k = order.steps.index_select(0, pair_idx).select(1, j);  // (b,) trained step per pair
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
    li.weight = weights_all.index_select(0, k).to(buf.latents.device());
    li.eta = o_.eta;
    li.clip_range = o_.clip_range;
    li.adv_clip_max = o_.adv_clip_max;
    auto res = sdpo::sdpo_loss(li);
    sums.add("loss", sdpo::backward_micro_batch(res.loss, accumulation, ctx, "sdpo", "position " + std::to_string(j)));
    sums.add("clipfrac", res.clipfrac);
    sums.add("adv_clipfrac", res.adv_clipfrac);
    sums.next_term();
  }

  SDPOOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Algorithm, SDPOOptions>(
      "sdpo", "Stepwise Diffusion Policy Optimization: dense reward differences of paired trajectories",
      &SDPOOptions::read, [](const SDPOOptions& o, const sdpo::ComponentConfig& cfg) {
        // The one disagreement read() cannot see: update 'step_shuffled' given explicitly next to
        // shuffle_timestep false (alone, that flag is the legacy spelling of stepwise_ordered).
        if (o.update_from_shuffle_timestep && cfg.options.contains("update")) {
          sdpo::OptionReader(cfg).fail(
              "shuffle_timestep",
              "false disagrees with update 'step_shuffled' (which shuffles the steps); "
              "use update 'stepwise_ordered' or remove shuffle_timestep");
        }
        return std::make_shared<SDPOAlgorithm>(o);
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("sdpo", "0.1.0", register_plugin)
