// The pure DDIM step with its Gaussian log-prob (sdpo/math/ddim.h), at the toy world's latent size
// (3x32x32, batch 32: one quickstart sampling batch) and SD's (4x64x64, batch 8), on the CPU.
//   sample:  prev_sample drawn (what sampling does at every step)
//   logprob: prev_sample given (what every algorithm's update recomputes)
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include "sdpo/math/ddim.h"

namespace {

void BM_DdimStep(benchmark::State& state) {
  const std::int64_t batch = state.range(0), channels = state.range(1), size = state.range(2);
  const bool given_prev = state.range(3) != 0;
  const sdpo::DDIMSchedule schedule;
  const auto alphas = sdpo::ddim_alphas_cumprod(schedule);
  const std::int64_t steps = 8;
  const auto ts = sdpo::ddim_timesteps(schedule, steps);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const auto x = at::randn({batch, channels, size, size}, gen);
  const auto eps = at::randn({batch, channels, size, size}, gen);
  const auto t = at::full({batch}, ts[3], at::TensorOptions().dtype(at::kLong));
  const auto prev = given_prev ? at::randn({batch, channels, size, size}, gen) : at::Tensor();
  for (auto _ : state) {
    auto r = sdpo::ddim_step(alphas, eps, t, x, steps, 1.0, "epsilon", prev, gen);
    benchmark::DoNotOptimize(r.log_prob.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_DdimStep)
    ->ArgNames({"batch", "C", "HW", "logprob"})
    ->Args({32, 3, 32, 0})
    ->Args({32, 3, 32, 1})
    ->Args({8, 4, 64, 0})
    ->Args({8, 4, 64, 1})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
