// Dense-reward predictor `similarity_3_adaptive`: the SDPO paper's default, "3 queries &
// similarity & adaptive anchor" (research/algorithms.md 7.1-7.2). Queries the first step, the
// last step and the anchor (the step least similar to both ends), and spreads the three rewards
// over every step by latent cosine similarity.
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct AdaptiveOptions {
  std::string anchor_range = "interior";

  static AdaptiveOptions read(sdpo::OptionReader& r) {
    AdaptiveOptions o;
    o.anchor_range = r.string(
        "anchor_range", o.anchor_range,
        "where the anchor is searched: 'interior' = {1..T-2} (paper Eq. 10), 'all' = {0..T-1} (reference code)",
        {"interior", "all"});
    return o;
  }
};

class Similarity3Adaptive final : public sdpo::DenseRewardPredictor {
 public:
  explicit Similarity3Adaptive(const AdaptiveOptions& o) : o_(o) {}

  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override { return num_steps >= 3 ? 3 : num_steps; }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator&) const override {
    const std::int64_t n = pred_x0.size(0), t = pred_x0.size(1);
    auto opts = at::TensorOptions().dtype(at::kLong).device(pred_x0.device());
    sdpo::QueryPlan p;
    p.num_steps = t;
    if (t < 3) {
      // Fewer than 3 steps: every step is queried exactly; no anchor exists.
      p.steps = at::arange(t, opts).unsqueeze(0).expand({n, t}).contiguous();
      return p;
    }
    // Query order (first, last, anchor): exact rewards are written in this order, so the anchor
    // wins if it coincides with an end (7.2 step 3).
    auto ends = at::tensor({std::int64_t{0}, t - 1}, opts).unsqueeze(0).expand({n, 2});
    auto sims_ends = sdpo::similarity_to_steps(pred_x0, ends);  // (N, 2, T)
    p.anchor = sdpo::anchor_argmin(sims_ends.select(1, 0), sims_ends.select(1, 1), o_.anchor_range == "interior");
    p.steps = at::cat({ends, p.anchor.unsqueeze(1)}, 1);
    auto sim_anchor = sdpo::similarity_to_steps(pred_x0, p.anchor.unsqueeze(1));
    p.similarities = at::cat({sims_ends, sim_anchor}, 1);  // (N, 3, T)
    return p;
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    if (!plan.similarities.defined()) {
      auto dense = at::zeros({queried.size(0), plan.num_steps}, queried.options().dtype(at::kFloat));
      return sdpo::dense_keep_exact(dense, queried, plan.steps);
    }
    return sdpo::dense_similarity_weighted(queried, plan.similarities, plan.steps);
  }

 private:
  AdaptiveOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, AdaptiveOptions>(
      "similarity_3_adaptive", "3 queries (first, adaptive anchor, last) spread by latent cosine similarity",
      &AdaptiveOptions::read,
      [](const AdaptiveOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<Similarity3Adaptive>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("similarity_3_adaptive", "0.1.0", register_plugin)
