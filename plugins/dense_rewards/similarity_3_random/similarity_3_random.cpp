// Dense-reward predictor `similarity_3_random`: the ablation "3 queries & similarity & random
// anchor" (research/algorithms.md 9.1, [PROPOSAL] on the range and independence): the default
// formula of 7.2 with anchor_n ~ Uniform{1, ..., T-2}, drawn independently for every trajectory
// (a and b of a pair separately) from the generator the trainer passes to plan().
// T = 2 has no interior step: both steps are queried (2 queries), no anchor and no draw. T = 1:
// one query.
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct Similarity3RandomOptions {
  static Similarity3RandomOptions read(sdpo::OptionReader&) { return {}; }
};

class Similarity3Random final : public sdpo::DenseRewardPredictor {
 public:
  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override {
    TORCH_CHECK(
        num_steps >= 1,
        "dense_reward 'similarity_3_random': a trajectory needs at least one step, got T = ", num_steps);
    return num_steps >= 3 ? 3 : num_steps;
  }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator& generator) const override {
    TORCH_CHECK(
        pred_x0.dim() >= 2, "dense_reward 'similarity_3_random': pred_x0 must be (N, T, ...), got ", pred_x0.sizes());
    const std::int64_t n = pred_x0.size(0), t = pred_x0.size(1);
    at::Tensor anchor;
    if (t >= 3) anchor = sdpo::random_anchors(n, t, generator);
    // Steps (first, last, anchor) and their similarities (N, 3, T); (first, last) when T = 2.
    return sdpo::similarity_plan(pred_x0, anchor);
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    sdpo::check_queried(plan, queried, "similarity_3_random");
    return sdpo::similarity_predict(plan, queried);
  }
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, Similarity3RandomOptions>(
      "similarity_3_random",
      "3 queries (first, random anchor in {1..T-2} per trajectory, last) spread by latent cosine similarity",
      &Similarity3RandomOptions::read, [](const Similarity3RandomOptions&, const sdpo::ComponentConfig&) {
        return std::make_shared<Similarity3Random>();
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("similarity_3_random", "0.1.0", register_plugin)
