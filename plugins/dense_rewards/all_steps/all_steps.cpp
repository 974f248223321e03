// Dense-reward predictor `all_steps`: the ablation "50 queries" (research/algorithms.md 9.1):
// the predicted x0 of every step is decoded and scored, R̂_k = q(k); T queries per trajectory, no
// similarities. These are the target rewards of Table 3 (12.2).
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct AllStepsOptions {
  static AllStepsOptions read(sdpo::OptionReader&) { return {}; }
};

class AllSteps final : public sdpo::DenseRewardPredictor {
 public:
  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override {
    TORCH_CHECK(num_steps >= 1, "dense_reward 'all_steps': a trajectory needs at least one step, got T = ", num_steps);
    return num_steps;
  }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator&) const override {
    TORCH_CHECK(pred_x0.dim() >= 2, "dense_reward 'all_steps': pred_x0 must be (N, T, ...), got ", pred_x0.sizes());
    sdpo::QueryPlan p;
    p.num_steps = pred_x0.size(1);
    p.steps =
        sdpo::every_step(pred_x0.size(0), p.num_steps, at::TensorOptions().dtype(at::kLong).device(pred_x0.device()));
    return p;
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    sdpo::check_queried(plan, queried, "all_steps");
    return sdpo::dense_exact_every_step(queried, plan.steps, plan.num_steps);
  }
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, AllStepsOptions>(
      "all_steps", "T queries: every step's predicted x0 is scored (the exact dense rewards)", &AllStepsOptions::read,
      [](const AllStepsOptions&, const sdpo::ComponentConfig&) { return std::make_shared<AllSteps>(); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("all_steps", "0.1.0", register_plugin)
