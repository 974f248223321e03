// Every registered dense-reward predictor: plan (similarities, anchors) + predict, on predicted
// x0 of the toy world's size (32 trajectories of 3x32x32) at T = 8 (quickstart) and T = 50.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <string>

#include "benchmarks/bench_registry.h"
#include "sdpo/core/dense_reward.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"

namespace sdpo::bench {
namespace {

void plan_and_predict(benchmark::State& state, const std::string& name, std::int64_t steps) {
  ComponentConfig cfg;
  cfg.name = name;
  cfg.file = "<benchmark>";
  cfg.json_path = "dense_reward.options";
  auto predictor = Registry::global().create<DenseRewardPredictor>(cfg);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const std::int64_t n = 32;
  const auto pred_x0 = at::randn({n, steps, 3, 32, 32}, gen);
  // Queried rewards of the right shape for this predictor's plan.
  const auto q = predictor->plan(pred_x0, gen).steps.size(1);
  const auto queried = at::rand({n, q}, gen);
  for (auto _ : state) {
    auto plan = predictor->plan(pred_x0, gen);
    auto dense = predictor->predict(plan, queried);
    benchmark::DoNotOptimize(dense.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

}  // namespace

void register_dense_reward_benchmarks() {
  for (const auto* e : Registry::global().entries()) {
    if (e->kind != DenseRewardPredictor::kKind) continue;
    for (std::int64_t steps : {8, 50}) {
      const std::string name = e->name;
      benchmark::RegisterBenchmark(
          ("BM_DenseReward/" + name + "/T:" + std::to_string(steps)).c_str(),
          [name, steps](benchmark::State& s) { plan_and_predict(s, name, steps); })
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace sdpo::bench
