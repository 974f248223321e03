// One full training epoch of the quickstart configuration (experiments/toy/quickstart.json: SDPO,
// 16 pairs, T = 8, the shipped toy model), through the Trainer (sdpo::run_bench: one warm-up
// epoch, then the timed one), against a bare libtorch loop doing the same model forwards and
// backwards on the same inputs, in this same process. The iteration time is the epoch's
// (manual time; building the trainer and the bare loop are not in it); the counters are the
// ratios of sdpo/commands/bench.h, averaged over the iterations.
#include <benchmark/benchmark.h>

#include <string>

#include "sdpo/commands/bench.h"
#include "sdpo/train/manifest.h"

namespace {

void BM_ToyEpochQuickstart(benchmark::State& state) {
  const std::string src = SDPO_SOURCE_DIR;
  const auto manifest = sdpo::Manifest::load(
      src + "/experiments/toy/quickstart.json",
      {"model.options.checkpoint=" + src + "/experiments/assets/toy_unet.safetensors",
       "text_encoder.options.checkpoint=" + src + "/experiments/assets/toy_text.safetensors"});
  double ratio = 0, ratio_without_reward = 0, bare = 0, forwards = 0, backwards = 0, device = 0;
  for (auto _ : state) {
    const auto r = sdpo::run_bench(manifest, sdpo::BenchOptions{});
    state.SetIterationTime(r.times.epoch);
    ratio += r.overhead_ratio();
    ratio_without_reward += r.overhead_ratio_without_reward();
    bare += r.bare_seconds;
    forwards += static_cast<double>(r.forwards);
    backwards += static_cast<double>(r.backwards);
    device += r.device_seconds;
  }
  const auto avg = benchmark::Counter::kAvgIterations;
  state.counters["overhead_ratio"] = benchmark::Counter(ratio, avg);
  state.counters["ratio_wo_reward"] = benchmark::Counter(ratio_without_reward, avg);
  state.counters["bare_s"] = benchmark::Counter(bare, avg);
  state.counters["device_s"] = benchmark::Counter(device, avg);
  state.counters["forwards"] = benchmark::Counter(forwards, avg);
  state.counters["backwards"] = benchmark::Counter(backwards, avg);
}
BENCHMARK(BM_ToyEpochQuickstart)->UseManualTime()->Iterations(2)->Unit(benchmark::kSecond);

}  // namespace
