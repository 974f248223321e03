// Dense-reward predictor `similarity_2`: the ablation "2 queries & similarity" (research/
// algorithms.md 9.1, [PROPOSAL]): the first and last steps are scored and spread over every step
// by latent cosine similarity (7.1), R̂_k = (q(0) sf_k + q(T-1) sl_k) / (sf_k + sl_k), then both
// ends are overwritten with their exact queries (as the 3-query code does, 7.2). Like the
// reference there is no guard on the denominator (11.17). T = 1: the only step is queried once.
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct Similarity2Options {
  static Similarity2Options read(sdpo::OptionReader&) { return {}; }
};

class Similarity2 final : public sdpo::DenseRewardPredictor {
 public:
  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override {
    TORCH_CHECK(
        num_steps >= 1, "dense_reward 'similarity_2': a trajectory needs at least one step, got T = ", num_steps);
    return num_steps >= 2 ? 2 : 1;
  }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator&) const override {
    // Steps (0, T-1) and their similarities (N, 2, T); no anchor.
    return sdpo::similarity_plan(pred_x0, at::Tensor());
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    sdpo::check_queried(plan, queried, "similarity_2");
    return sdpo::similarity_predict(plan, queried);
  }
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, Similarity2Options>(
      "similarity_2", "2 queries (first, last step) spread by latent cosine similarity", &Similarity2Options::read,
      [](const Similarity2Options&, const sdpo::ComponentConfig&) { return std::make_shared<Similarity2>(); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("similarity_2", "0.1.0", register_plugin)
