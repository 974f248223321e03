// Dense-reward predictor `interp_2`: the ablation "2 queries & interpolation" (research/
// algorithms.md 9.1, [PROPOSAL]): the first and last steps are scored, and the rewards in between
// are linear in the step index, R̂_k = q(0) + (k/(T-1)) (q(T-1) - q(0)); both ends are exact.
// T = 1: the only step is queried once.
#include <ATen/ATen.h>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/similarity.h"

namespace {

struct Interp2Options {
  static Interp2Options read(sdpo::OptionReader&) { return {}; }
};

class Interp2 final : public sdpo::DenseRewardPredictor {
 public:
  std::int64_t queries_per_trajectory(std::int64_t num_steps) const override {
    TORCH_CHECK(num_steps >= 1, "dense_reward 'interp_2': a trajectory needs at least one step, got T = ", num_steps);
    return num_steps >= 2 ? 2 : 1;
  }

  sdpo::QueryPlan plan(const at::Tensor& pred_x0, at::Generator&) const override {
    TORCH_CHECK(pred_x0.dim() >= 2, "dense_reward 'interp_2': pred_x0 must be (N, T, ...), got ", pred_x0.sizes());
    sdpo::QueryPlan p;
    p.num_steps = pred_x0.size(1);
    // Steps (0, T-1), or (0) when T = 1; no similarities are used (9.1).
    p.steps =
        sdpo::end_steps(pred_x0.size(0), p.num_steps, at::TensorOptions().dtype(at::kLong).device(pred_x0.device()));
    return p;
  }

  at::Tensor predict(const sdpo::QueryPlan& plan, const at::Tensor& queried) const override {
    sdpo::check_queried(plan, queried, "interp_2");
    auto first = queried.select(1, 0), last = queried.select(1, queried.size(1) - 1);
    auto dense = sdpo::dense_linear_interpolation(first, last, plan.num_steps);
    return sdpo::dense_keep_exact(dense, queried, plan.steps);  // the ends keep their exact queries
  }
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::DenseRewardPredictor, Interp2Options>(
      "interp_2", "2 queries (first, last step), linear in the step index in between", &Interp2Options::read,
      [](const Interp2Options&, const sdpo::ComponentConfig&) { return std::make_shared<Interp2>(); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("interp_2", "0.1.0", register_plugin)
