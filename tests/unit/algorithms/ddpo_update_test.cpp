// The `ddpo` plugin's update loop (research/algorithms.md 4.3, 4.4) observed on a model whose
// parameters tell which transitions were trained: the mini-batch and position order, the number
// of optimizer updates the accumulation gives, and which advantage column each trained step reads.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <set>
#include <string>
#include <utility>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"
#include "support/component_config.h"
#include "support/test_support.h"
#include "support/transition_bias_model.h"

namespace {

sdpo::ComponentConfig config(const std::string& kind, const std::string& name, const std::string& options) {
  return sdpo::test::component_config(kind, name, options, "ddpo_update.json");
}

struct Update {
  std::int64_t updates = 0;
  std::vector<sdpo::test::TransitionBiasModel::Call> calls;
  at::Tensor moved;      ///< (N, T): the transitions whose parameters changed
  at::Tensor timesteps;  ///< (T,) of every row
};

// One DDPO update on n trajectories of T steps, micro-batches of `batch`, accumulation `g_acc`;
// `advantages` (n, T) as given.
Update run(
    const std::string& options,
    std::int64_t n,
    std::int64_t T,
    std::int64_t batch,
    std::int64_t g_acc,
    const at::Tensor& advantages) {
  sdpo::test::load_plugins_once();
  auto algorithm = sdpo::Registry::global().create<sdpo::Algorithm>(config("algorithm", "ddpo", options));
  auto sampler = sdpo::Registry::global().create<sdpo::Sampler>(config("sampler", "ddim", "{}"));
  sdpo::test::TransitionBiasModel model(n);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  sdpo::RolloutBuffer buf = sdpo::test::sampled_buffer(model, *sampler, n, T, false, false, gen);
  buf.advantages = advantages;
  sdpo::OptimizerOptions oo;
  oo.learning_rate = 1e-3;
  oo.gradient_accumulation = g_acc;
  sdpo::Optimizer optimizer(model.trainable_parameters(), oo);
  sdpo::UpdateContext ctx{model, *sampler, optimizer, gen, 1, batch, nullptr};
  const auto metrics = sdpo::run_update_phase(*algorithm, buf, ctx);
  Update u;
  u.updates = optimizer.updates();
  EXPECT_EQ(metrics.at("updates"), static_cast<double>(u.updates));
  u.calls = model.calls;
  u.timesteps = buf.timesteps[0];
  const at::Tensor moved = model.moved();  // (n, 1000)
  u.moved = moved.index_select(1, u.timesteps.to(at::kLong));
  return u;
}

std::vector<std::int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

TEST(DDPOUpdate, UnshuffledOrderIsMiniBatchesOuterPositionsInner) {
  // 5 trajectories, micro-batches of 2 (the last one short), T = 3, every step trained in order.
  const auto u = run(R"({"shuffle_batch": false, "shuffle_timestep": false})", 5, 3, 2, 1, at::ones({5, 3}));
  ASSERT_EQ(u.calls.size(), 9u);  // 3 mini-batches x 3 positions
  const std::vector<std::vector<std::int64_t>> rows{{0, 1}, {2, 3}, {4}};
  const auto ts = to_vector(u.timesteps);
  for (std::size_t m = 0; m < 3; ++m)
    for (std::size_t j = 0; j < 3; ++j) {
      const auto& call = u.calls[3 * m + j];
      EXPECT_EQ(to_vector(call.rows), rows[m]) << "mini-batch " << m << ", position " << j;
      for (std::int64_t t : to_vector(call.timesteps)) EXPECT_EQ(t, ts[j]) << "mini-batch " << m << ", position " << j;
    }
}

TEST(DDPOUpdate, ShuffledOrderTrainsEveryTransitionOnceWithinItsMiniBatch) {
  const auto u = run("{}", 6, 4, 2, 1, at::ones({6, 4}));
  ASSERT_EQ(u.calls.size(), 12u);  // 3 mini-batches x 4 positions
  std::set<std::pair<std::int64_t, std::int64_t>> seen;
  for (std::size_t m = 0; m < 3; ++m) {
    const auto first = to_vector(u.calls[4 * m].rows);
    for (std::size_t j = 0; j < 4; ++j) {
      const auto& call = u.calls[4 * m + j];
      EXPECT_EQ(to_vector(call.rows), first) << "a mini-batch keeps its rows through its positions";
      const auto r = to_vector(call.rows);
      const auto t = to_vector(call.timesteps);
      for (std::size_t i = 0; i < r.size(); ++i) EXPECT_TRUE(seen.insert({r[i], t[i]}).second) << r[i] << " " << t[i];
    }
  }
  EXPECT_EQ(seen.size(), 24u);  // every (row, step) once
  EXPECT_TRUE(u.moved.all().item<bool>());
}

TEST(DDPOUpdate, AccumulationCountsTrainedPositionsAndSfUpdatesOnce) {
  // 6 trajectories in micro-batches of 2 (3 mini-batches), T = 4 with timestep_fraction 0.5: 2
  // trained positions per mini-batch, 6 backwards. IS with G_acc = 2 accumulates 2 x 2 = 4
  // backwards per optimizer step: one full step and the flushed remainder, 2 updates. G_acc = 1:
  // 6 / 2 = 3 updates. SF: one update per round of sampling, whatever G_acc.
  const at::Tensor adv = at::ones({6, 4});
  EXPECT_EQ(run(R"({"timestep_fraction": 0.5})", 6, 4, 2, 2, adv).updates, 2);
  EXPECT_EQ(run(R"({"timestep_fraction": 0.5})", 6, 4, 2, 1, adv).updates, 3);
  EXPECT_EQ(run(R"({"timestep_fraction": 0.5, "estimator": "sf"})", 6, 4, 2, 2, adv).updates, 1);
  const auto half = run(R"({"timestep_fraction": 0.5})", 6, 4, 2, 1, adv);
  EXPECT_EQ(half.calls.size(), 6u);
  EXPECT_EQ(half.moved.sum().item<std::int64_t>(), 12);  // 2 of the 4 steps of each of 6 rows
}

TEST(DDPOUpdate, EachTrainedStepReadsItsOwnAdvantageColumn) {
  // Advantages are zero except at step 2 of every row: only the transitions at step 2 may move
  // (a loop that read column 0, or a fixed column, would move none or the wrong ones).
  for (const std::string options : {"{}", R"({"estimator": "sf"})"}) {
    at::Tensor adv = at::zeros({4, 3});
    adv.select(1, 2).fill_(1.0);
    const auto u = run(options, 4, 3, 2, 1, adv);
    for (std::int64_t i = 0; i < 4; ++i)
      for (std::int64_t k = 0; k < 3; ++k)
        EXPECT_EQ(u.moved[i][k].item<bool>(), k == 2) << options << ": row " << i << ", step " << k;
  }
}

}  // namespace
