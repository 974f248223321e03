// Dense-reward predictor `copy_1`: the ablation "1 query & copy" (research/algorithms.md 9.1,
// [PROPOSAL]): only the last step's predicted x0 is scored, and its reward is copied to every
// step, R̂_k = q(T-1). This is the sparse final reward (for T = 1 the only step is the last one).
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct Copy1Options {
  static Copy1Options read(sdpo::OptionReader&) { return {}; }
};

class Copy1 final : public sdpo::DenseRewardPredictor {
 public:
  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override {
    TORCH_CHECK(num_steps >= 1, "dense_reward 'copy_1': a trajectory needs at least one step, got T = ", num_steps);
    return 1;
  }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator&) const override {
    TORCH_CHECK(
        pred_x0.dim() >= 2 && pred_x0.size(1) >= 1,
        "dense_reward 'copy_1': pred_x0 must be (N, T, ...) with T >= 1, got ", pred_x0.sizes());
    const std::int64_t n = pred_x0.size(0), t = pred_x0.size(1);
    sdpo::QueryPlan p;
    p.num_steps = t;
    p.steps = at::full({n, 1}, t - 1, at::TensorOptions().dtype(at::kLong).device(pred_x0.device()));
    return p;  // 9.1: no similarities, no anchor
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    sdpo::check_queried(plan, queried, "copy_1");
    TORCH_CHECK(queried.size(1) == 1, "dense_reward 'copy_1': expects one query per trajectory, got ", queried.size(1));
    // 9.1: R̂_k = q(T-1) for every k.
    return queried.to(at::kFloat).expand({queried.size(0), plan.num_steps}).contiguous();
  }
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, Copy1Options>(
      "copy_1", "1 query (the last step), its reward copied to every step (the sparse final reward)",
      &Copy1Options::read, [](const Copy1Options&, const sdpo::ComponentConfig&) { return std::make_shared<Copy1>(); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("copy_1", "0.1.0", register_plugin)
