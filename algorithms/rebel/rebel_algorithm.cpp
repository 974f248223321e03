// Algorithm `rebel`: REBEL for few-step diffusion (research/algorithms.md section 5), in the two
// forms of 5.5: the SDPO paper's per-step Eq. 7 and RLCM's trajectory-level regression.
//
// Notation map: T = buffer.num_steps; pairs b = 0..B-1 are rows b (member a) and b+B (member b);
// ρ^m(k) = ℓ_θ^m(k) − ℓ_old^m(k); A^m = the per-prompt normalized final reward (buffer advantages,
// identical columns, read at step 0); c = 1/eta; G_acc = optimizer accumulation.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>
#include <vector>

#include "rebel_loss.h"
#include "sdpo/core/algorithm.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"

namespace {

struct RebelOptions {
  std::string form = "per_step";
  double eta = 1.0;
  bool shared_noise = true;
  bool shuffle_batch = true;

  static RebelOptions read(sdpo::OptionReader& r) {
    RebelOptions o;
    o.form = r.string(
        "form", o.form, "per_step: paper Eq. 7, sum of squares over steps; trajectory: RLCM, square of the step sum",
        {"per_step", "trajectory"});
    o.eta = r.number("eta", o.eta, 1e-12, 1e12, "log-ratio scale: the loss regresses (1/eta) * delta log-ratio");
    o.shared_noise = r.boolean("shared_noise", o.shared_noise, "the pair shares its initial noise (RLCM: false)");
    o.shuffle_batch = r.boolean("shuffle_batch", o.shuffle_batch, "permute the pairs before rebatching");
    return o;
  }
};

// One mini-batch of pairs: the rows of both members (a rows, then b rows) on the model's device.
struct MiniBatch {
  int64_t size = 0;                     // pairs b
  at::Tensor rows;                      // (2b,) buffer rows
  at::Tensor latents;                   // (2b, T, C, H, W)
  at::Tensor next_latents;              // (2b, T, C, H, W)
  at::Tensor timesteps;                 // (2b, T)
  at::Tensor old_log_probs;             // (2b, T)
  at::Tensor cond;                      // (2b, L, D)
  at::Tensor advantage_a, advantage_b;  // (b,)
};

class RebelAlgorithm final : public sdpo::Algorithm {
 public:
  explicit RebelAlgorithm(const RebelOptions& o) : o_(o) {}

  sdpo::RolloutSpec spec() const override {
    sdpo::RolloutSpec s;
    s.paired = true;
    s.shared_noise = o_.shared_noise;  // 5.5 [PROPOSAL]: shared, for parity with SDPO and D3PO
    s.gamma = 0.0;                     // 5.3: no discounting
    s.final_image_reward = true;       // 5.5: sparse reward of the final sample, scored once
    return s;
  }

  sdpo::Metrics update(sdpo::RolloutBuffer& buf, sdpo::UpdateContext& ctx) override {
    if (!buf.paired || !buf.advantages.defined()) {
      throw sdpo::Error("algorithm 'rebel': needs a paired buffer with advantages");
    }
    const int64_t pairs = buf.groups(), T = buf.num_steps;
    const int64_t batch = std::max<int64_t>(1, ctx.train_batch_size);
    auto device = buf.latents.device();
    // 5.4: one permutation of the pair axis shared by a and b. Per-pair time permutations are
    // immaterial (both forms sum over all T steps before the optimizer steps) and are not drawn.
    const auto order = sdpo::draw_update_order(pairs, T, o_.shuffle_batch, false, ctx.generator).rows;
    // 5.3: the advantage has no time axis; with a final-image reward every column is the same.
    auto advantage = buf.advantages.select(1, 0);

    sdpo::MetricSums sums;
    for (int64_t start = 0; start < pairs; start += batch) {
      auto mb = mini_batch(buf, order.slice(0, start, std::min(pairs, start + batch)), pairs, advantage, device);
      if (o_.form == "per_step") {
        update_per_step(mb, T, ctx, sums);
      } else {
        update_trajectory(mb, T, ctx, sums);
      }
    }
    return sums.means();
  }

 private:
  static MiniBatch mini_batch(
      const sdpo::RolloutBuffer& buf,
      const at::Tensor& pair_idx,
      int64_t pairs,
      const at::Tensor& advantage,
      c10::Device device) {
    MiniBatch mb;
    mb.size = pair_idx.size(0);
    mb.rows = at::cat({pair_idx, pair_idx + pairs}).to(device);
    mb.latents = buf.latents.index_select(0, mb.rows);
    mb.next_latents = buf.next_latents.index_select(0, mb.rows);
    mb.timesteps = buf.timesteps.index_select(0, mb.rows);
    mb.old_log_probs = buf.log_probs.index_select(0, mb.rows);
    mb.cond = buf.cond.index_select(0, mb.rows);
    auto adv = advantage.index_select(0, mb.rows.to(advantage.device())).to(device);
    mb.advantage_a = adv.slice(0, 0, mb.size);
    mb.advantage_b = adv.slice(0, mb.size, 2 * mb.size);
    return mb;
  }

  // ℓ_θ(k) of both members' stored transitions x^(k) -> x^(k+1): (2b,).
  static at::Tensor step_log_prob(const MiniBatch& mb, int64_t k, int64_t T, sdpo::UpdateContext& ctx) {
    auto x = mb.latents.select(1, k), x_next = mb.next_latents.select(1, k), t = mb.timesteps.select(1, k);
    auto out = ctx.model.forward(x, t, mb.cond);
    return ctx.sampler.step({out, t, x, T, x_next, c10::nullopt, ctx.model.prediction_type()}).log_prob;
  }

  sdpo::RebelLossInput loss_input(const MiniBatch& mb, const at::Tensor& lp, const at::Tensor& old_lp) const {
    const int64_t b = mb.size;
    sdpo::RebelLossInput li;
    li.log_prob_a = lp.slice(0, 0, b);
    li.log_prob_b = lp.slice(0, b, 2 * b);
    li.old_log_prob_a = old_lp.slice(0, 0, b);
    li.old_log_prob_b = old_lp.slice(0, b, 2 * b);
    li.advantage_a = mb.advantage_a;
    li.advantage_b = mb.advantage_b;
    li.eta = o_.eta;
    return li;
  }

  // One term of the metrics: the loss, the mean |c·Δρ| (per step, or of the step sum) and the mean |ΔA|.
  void record(const sdpo::RebelLossInput& li, double loss, bool sum_steps, sdpo::MetricSums& sums) const {
    auto d = (li.log_prob_a - li.old_log_prob_a) - (li.log_prob_b - li.old_log_prob_b);
    if (sum_steps) d = d.sum(1);
    sums.add("loss", loss);
    sums.add("abs_log_ratio_diff", (d.detach() / o_.eta).abs().mean().item<double>());
    sums.add("abs_advantage_diff", (li.advantage_a - li.advantage_b).abs().mean().item<double>());
    sums.next_term();
  }

  // Per-step form (Eq. 7, 5.5): one backward per (mini-batch, step), mini-batches outer and steps
  // inner like DDPO (4.4); accumulation G_acc·T, so one optimizer step covers all T steps of G_acc
  // mini-batches and the gradient is the average of the per-step losses.
  void update_per_step(const MiniBatch& mb, int64_t T, sdpo::UpdateContext& ctx, sdpo::MetricSums& sums) const {
    const int64_t accumulation = ctx.optimizer.options().gradient_accumulation * T;
    for (int64_t k = 0; k < T; ++k) {
      auto li = loss_input(mb, step_log_prob(mb, k, T, ctx), mb.old_log_probs.select(1, k));
      const double lv = sdpo::backward_micro_batch(
          sdpo::rebel_per_step_loss(li), accumulation, ctx, "rebel", "step " + std::to_string(k));
      record(li, lv, false, sums);
    }
  }

  // Trajectory form (RLCM, 5.3) with the memory-saving trick of 5.5: a no-grad pass over all T steps
  // gives the residual e; then each step's surrogate 2·e·c·Δρ(k) is backpropagated on its own, so only
  // one step's graph is alive. The gradients summed over k equal those of mean(e²) exactly. One
  // optimizer micro-step per mini-batch with accumulation G_acc (5.4: not multiplied by T).
  void update_trajectory(const MiniBatch& mb, int64_t T, sdpo::UpdateContext& ctx, sdpo::MetricSums& sums) const {
    const int64_t accumulation = ctx.optimizer.options().gradient_accumulation;
    at::Tensor lp_all;
    {
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> steps;
      for (int64_t k = 0; k < T; ++k) steps.push_back(step_log_prob(mb, k, T, ctx));
      lp_all = at::stack(steps, 1);  // (2b, T)
    }
    auto full = loss_input(mb, lp_all, mb.old_log_probs);
    auto residual = sdpo::rebel_trajectory_residual(full);  // (b,)
    const double lv = residual.pow(2).mean().item<double>();
    sdpo::check_loss_finite(
        lv, "rebel", ctx.epoch, "mini-batch of pairs starting at row " + std::to_string(mb.rows[0].item<int64_t>()));
    for (int64_t k = 0; k < T; ++k) {
      auto li = loss_input(mb, step_log_prob(mb, k, T, ctx), mb.old_log_probs.select(1, k));
      auto surrogate = sdpo::rebel_trajectory_step_surrogate(li, residual);
      ctx.optimizer.backward(surrogate / static_cast<double>(accumulation));
    }
    ctx.optimizer.micro_step(accumulation);
    record(full, lv, true, sums);
  }

  RebelOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Algorithm, RebelOptions>(
      "rebel", "REBEL: regression of paired log-ratio differences onto advantage differences (per-step or trajectory)",
      &RebelOptions::read,
      [](const RebelOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<RebelAlgorithm>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("rebel", "0.1.0", register_plugin)
