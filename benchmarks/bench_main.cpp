// The benchmark binary's entry point: loads the build's plugins (the dense-reward predictors and
// the normalizer are reached through the registry), registers one benchmark per registered
// dense-reward predictor, then runs Google Benchmark as usual (--benchmark_filter, ...).
#include <benchmark/benchmark.h>

#include "benchmarks/bench_registry.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/registry.h"

int main(int argc, char** argv) {
  sdpo::PluginLoader(sdpo::Registry::global()).load_default();
  sdpo::bench::register_dense_reward_benchmarks();
  sdpo::bench::register_sampling_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
