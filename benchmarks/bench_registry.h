#pragma once
// Benchmarks that are registered at run time, after the plugins are loaded.

namespace sdpo::bench {

/// One benchmark per registered dense_reward predictor and trajectory length (T = 8 and 50).
void register_dense_reward_benchmarks();

/// One sampling step taken apart, per model: the shipped toy_unet, and the TorchScript file that
/// SDPO_BENCH_TORCHSCRIPT names, if any (benchmarks/sampling_bench.cpp).
void register_sampling_benchmarks();

}  // namespace sdpo::bench
