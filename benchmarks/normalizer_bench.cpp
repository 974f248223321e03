// The per_step_prompt normalizer (SDPO's per-(prompt, step) running statistics) in its steady
// state (buffers full): one epoch's returns, 32 trajectories of 16 prompts (pairs), T = 8 and 50,
// with the quickstart's options (buffer_size 32, min_count 16).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "sdpo/core/normalizer.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"

namespace {

void BM_NormalizerPerStepPrompt(benchmark::State& state) {
  const std::int64_t steps = state.range(0), n = 32;
  sdpo::ComponentConfig cfg;
  cfg.name = "per_step_prompt";
  cfg.options = {{"buffer_size", 32}, {"min_count", 16}};
  cfg.file = "<benchmark>";
  cfg.json_path = "normalizer.options";
  auto normalizer = sdpo::Registry::global().create<sdpo::Normalizer>(cfg);
  std::vector<std::string> prompts;
  for (std::int64_t i = 0; i < n; ++i) prompts.push_back("prompt " + std::to_string(i % (n / 2)));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const auto returns = at::randn({n, steps}, gen);
  for (int i = 0; i < 20; ++i) normalizer->normalize(returns, prompts);  // fill the buffers
  for (auto _ : state) {
    auto adv = normalizer->normalize(returns, prompts);
    benchmark::DoNotOptimize(adv.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_NormalizerPerStepPrompt)->ArgName("T")->Arg(8)->Arg(50)->Unit(benchmark::kMicrosecond);

}  // namespace
