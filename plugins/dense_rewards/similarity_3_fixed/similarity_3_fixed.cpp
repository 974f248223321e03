// Dense-reward predictor `similarity_3_fixed`: the ablation "3 queries & similarity & fixed
// anchor" (research/algorithms.md 9.1): the default formula of 7.2 with the anchor fixed at
// k = floor(T/2) - 1 clamped to [1, T-2], which is k = 24 (the "25th step") at T = 50.
// T = 2 has no interior step: both steps are queried (2 queries), no anchor. T = 1: one query.
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct Similarity3FixedOptions {
  static Similarity3FixedOptions read(sdpo::OptionReader&) { return {}; }
};

class Similarity3Fixed final : public sdpo::DenseRewardPredictor {
 public:
  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override {
    TORCH_CHECK(
        num_steps >= 1, "dense_reward 'similarity_3_fixed': a trajectory needs at least one step, got T = ", num_steps);
    return num_steps >= 3 ? 3 : num_steps;
  }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator&) const override {
    TORCH_CHECK(
        pred_x0.dim() >= 2, "dense_reward 'similarity_3_fixed': pred_x0 must be (N, T, ...), got ", pred_x0.sizes());
    const std::int64_t n = pred_x0.size(0), t = pred_x0.size(1);
    at::Tensor anchor;
    if (t >= 3) anchor = at::full({n}, sdpo::fixed_anchor(t), at::TensorOptions().dtype(at::kLong));
    // Steps (first, last, anchor) and their similarities (N, 3, T); (first, last) when T = 2.
    return sdpo::similarity_plan(pred_x0, anchor);
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    sdpo::check_queried(plan, queried, "similarity_3_fixed");
    return sdpo::similarity_predict(plan, queried);
  }
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, Similarity3FixedOptions>(
      "similarity_3_fixed",
      "3 queries (first, fixed anchor floor(T/2)-1 = 24 at T = 50, last) spread by latent cosine similarity",
      &Similarity3FixedOptions::read, [](const Similarity3FixedOptions&, const sdpo::ComponentConfig&) {
        return std::make_shared<Similarity3Fixed>();
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("similarity_3_fixed", "0.1.0", register_plugin)
