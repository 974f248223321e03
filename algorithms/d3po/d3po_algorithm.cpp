// Algorithm `d3po`: Direct Preference for Denoising Diffusion Policy Optimization
// (research/algorithms.md section 6).
//
// Notation map: T = buffer.num_steps; pairs b = 0..B-1 are rows b (member a) and b+B (member b);
// π_b = the step permutation of pair b (shared by a and b); j = position; k = π_b(j) = the trained
// step; h = preference labels from the raw final rewards; ℓ_ref = the frozen pretrained model
// (ctx.reference), not the sampling policy; G_acc = optimizer accumulation.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>
#include <vector>

#include "d3po_loss.h"
#include "sdpo/core/algorithm.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/rollout_ops.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"

namespace {

struct D3POOptions {
  double beta = 0.1;
  double eps = 0.1;
  double timestep_fraction = 1.0;
  bool shuffle_batch = true;
  bool shuffle_timestep = true;

  static D3POOptions read(sdpo::OptionReader& r) {
    D3POOptions o;
    o.beta = r.number("beta", o.beta, 1e-12, 1e12, "preference temperature: -log sigmoid(beta * delta log q)");
    o.eps = r.number("eps", o.eps, 0.0, 0.999, "ratio clip: q = clip(p_theta / p_ref, 1 - eps, 1 + eps)");
    o.timestep_fraction =
        r.number("timestep_fraction", o.timestep_fraction, 1e-6, 1.0, "fraction of the T steps trained");
    o.shuffle_batch = r.boolean("shuffle_batch", o.shuffle_batch, "permute the pairs before rebatching");
    o.shuffle_timestep = r.boolean("shuffle_timestep", o.shuffle_timestep, "independent step permutation per pair");
    return o;
  }
};

class D3POAlgorithm final : public sdpo::Algorithm {
 public:
  explicit D3POAlgorithm(const D3POOptions& o) : o_(o) {}

  sdpo::RolloutSpec spec() const override {
    sdpo::RolloutSpec s;
    s.paired = true;
    s.shared_noise = true;           // 6.1: b reuses a's initial noise
    s.gamma = 0.0;                   // 6.2: no discounting, no normalization (advantages unused)
    s.final_image_reward = true;     // 6.1: the final latent of each trajectory is scored
    s.needs_reference_model = true;  // 6.3: the reference is the frozen pretrained model
    return s;
  }

  sdpo::Metrics update(sdpo::RolloutBuffer& buf, sdpo::UpdateContext& ctx) override {
    if (!buf.paired || !buf.final_rewards.defined()) {
      throw sdpo::Error("algorithm 'd3po': needs a paired buffer with final rewards");
    }
    if (ctx.reference == nullptr) {
      throw sdpo::Error("algorithm 'd3po': needs the frozen reference model (spec().needs_reference_model)");
    }
    sdpo::Model& reference = *ctx.reference;
    const int64_t pairs = buf.groups(), T = buf.num_steps;
    const int64_t batch = std::max<int64_t>(1, ctx.train_batch_size);
    const int64_t trained = sdpo::trained_steps(T, o_.timestep_fraction);
    // 6.4: accelerate accumulation G_acc·num_train_timesteps (one optimizer step per G_acc mini-batches).
    const int64_t accumulation = ctx.optimizer.options().gradient_accumulation * trained;
    auto device = buf.latents.device();

    // 6.2: labels from the raw final rewards (the stored log-probs and the advantages are unused).
    auto rewards = buf.final_rewards.to(at::kDouble).cpu();
    auto labels = sdpo::d3po_preference_labels(rewards.slice(0, 0, pairs), rewards.slice(0, pairs, 2 * pairs));

    // 6.4: permute the pair axis, then one step permutation per pair shared by both members.
    const auto order = sdpo::draw_update_order(pairs, T, o_.shuffle_batch, o_.shuffle_timestep, ctx.generator);

    sdpo::MetricSums sums;
    sums.set("tie_fraction", (labels.label_a == 0).to(at::kDouble).mean().item<double>());
    // 6.4: mini-batches outer, positions inner; one backward per (mini-batch, position).
    for (int64_t start = 0; start < pairs; start += batch) {
      const int64_t end = std::min(pairs, start + batch), b = end - start;
      auto pair_idx = order.rows.slice(0, start, end);
      auto rows = at::cat({pair_idx, pair_idx + pairs});  // a rows then b rows
      auto label_a = labels.label_a.index_select(0, pair_idx).to(device);
      auto label_b = labels.label_b.index_select(0, pair_idx).to(device);
      auto pair_perm = order.steps.index_select(0, pair_idx);  // (b, T)

      for (int64_t j = 0; j < trained; ++j) {
        auto k = pair_perm.select(1, j);
        auto kk = at::cat({k, k});  // both members train the same step
        auto lp = sdpo::rollout_log_prob(ctx.model, ctx.sampler, buf, rows, kk);
        at::Tensor ref_lp;
        {
          at::NoGradGuard no_grad;  // 6.3: the reference outputs are constants
          ref_lp = sdpo::rollout_log_prob(reference, ctx.sampler, buf, rows, kk);
        }
        sdpo::D3POLossInput li;
        li.log_prob_a = lp.slice(0, 0, b);
        li.log_prob_b = lp.slice(0, b, 2 * b);
        li.ref_log_prob_a = ref_lp.slice(0, 0, b);
        li.ref_log_prob_b = ref_lp.slice(0, b, 2 * b);
        li.label_a = label_a;
        li.label_b = label_b;
        li.beta = o_.beta;
        li.eps = o_.eps;
        auto res = sdpo::d3po_loss(li);
        sums.add(
            "loss", sdpo::backward_micro_batch(res.loss, accumulation, ctx, "d3po", "position " + std::to_string(j)));
        sums.add("mean_abs_log_q", res.mean_abs_log_q);
        sums.add("mean_abs_log_ratio", res.mean_abs_log_ratio);
        sums.add("clampfrac", res.clampfrac);
        sums.next_term();
      }
    }
    return sums.means();
  }

 private:
  D3POOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Algorithm, D3POOptions>(
      "d3po", "D3PO: per-step DPO on pairs ranked by their final reward, against the frozen pretrained model",
      &D3POOptions::read,
      [](const D3POOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<D3POAlgorithm>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("d3po", "0.1.0", register_plugin)
