// Every algorithm's pure loss (algorithms/*/*_loss.h), forward + backward on fixed tensors:
// B pairs (or trajectories) of one trained step; B = 4 (the quickstart's micro-batch) and 64.
// The REBEL trajectory form uses (B, T = 8) log-probs. Gradients are reset every iteration.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

#include "algorithms/d3po/d3po_loss.h"
#include "algorithms/ddpo/ddpo_loss.h"
#include "algorithms/rebel/rebel_loss.h"
#include "algorithms/sdpo/sdpo_loss.h"

namespace {

struct Inputs {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  // Per-dimension-mean log-probs are small numbers around one value; the ratios near 1.
  at::Tensor leaf(at::IntArrayRef shape) { return (at::randn(shape, gen) * 1e-3).requires_grad_(true); }
  at::Tensor constant(at::IntArrayRef shape, double scale = 1e-3) { return at::randn(shape, gen) * scale; }
};

void reset(std::initializer_list<at::Tensor> leaves) {
  for (auto t : leaves) t.mutable_grad() = at::Tensor();
}

void BM_LossSdpo(benchmark::State& state) {
  const std::int64_t b = state.range(0);
  Inputs in;
  sdpo::SDPOLossInput x;
  x.log_prob_a = in.leaf({b});
  x.log_prob_b = in.leaf({b});
  x.old_log_prob_a = in.constant({b});
  x.old_log_prob_b = in.constant({b});
  x.advantage_a = in.constant({b}, 1.0);
  x.advantage_b = in.constant({b}, 1.0);
  x.weight = at::full({b}, 0.99);
  x.clip_range = 1e-4;
  for (auto _ : state) {
    auto out = sdpo::sdpo_loss(x);
    out.loss.backward();
    reset({x.log_prob_a, x.log_prob_b});
  }
  state.SetItemsProcessed(state.iterations() * b);
}

void BM_LossDdpoIs(benchmark::State& state) {
  const std::int64_t b = state.range(0);
  Inputs in;
  auto lp = in.leaf({b}), old = in.constant({b}), adv = in.constant({b}, 1.0);
  for (auto _ : state) {
    auto out = sdpo::ddpo_is_loss(lp, old, adv, 1e-4, 5.0);
    out.loss.backward();
    reset({lp});
  }
  state.SetItemsProcessed(state.iterations() * b);
}

void BM_LossDdpoSf(benchmark::State& state) {
  const std::int64_t b = state.range(0);
  Inputs in;
  auto lp = in.leaf({b}), adv = in.constant({b}, 1.0);
  for (auto _ : state) {
    auto out = sdpo::ddpo_sf_loss(lp, adv, 5.0);
    out.loss.backward();
    reset({lp});
  }
  state.SetItemsProcessed(state.iterations() * b);
}

sdpo::RebelLossInput rebel_input(Inputs& in, at::IntArrayRef shape, std::int64_t b) {
  sdpo::RebelLossInput x;
  x.log_prob_a = in.leaf(shape);
  x.log_prob_b = in.leaf(shape);
  x.old_log_prob_a = in.constant(shape);
  x.old_log_prob_b = in.constant(shape);
  x.advantage_a = in.constant({b}, 1.0);
  x.advantage_b = in.constant({b}, 1.0);
  return x;
}

void BM_LossRebelPerStep(benchmark::State& state) {
  const std::int64_t b = state.range(0);
  Inputs in;
  auto x = rebel_input(in, {b}, b);
  for (auto _ : state) {
    auto loss = sdpo::rebel_per_step_loss(x);
    loss.backward();
    reset({x.log_prob_a, x.log_prob_b});
  }
  state.SetItemsProcessed(state.iterations() * b);
}

// The trajectory form as the trainer runs it: the residual, then one surrogate per step.
void BM_LossRebelTrajectory(benchmark::State& state) {
  const std::int64_t b = state.range(0), steps = 8;
  Inputs in;
  auto x = rebel_input(in, {b, steps}, b);
  for (auto _ : state) {
    const auto residual = sdpo::rebel_trajectory_residual(x);
    for (std::int64_t k = 0; k < steps; ++k) {
      sdpo::RebelLossInput step = x;
      step.log_prob_a = x.log_prob_a.select(1, k);
      step.log_prob_b = x.log_prob_b.select(1, k);
      step.old_log_prob_a = x.old_log_prob_a.select(1, k);
      step.old_log_prob_b = x.old_log_prob_b.select(1, k);
      sdpo::rebel_trajectory_step_surrogate(step, residual).backward();
    }
    reset({x.log_prob_a, x.log_prob_b});
  }
  state.SetItemsProcessed(state.iterations() * b);
}

void BM_LossD3po(benchmark::State& state) {
  const std::int64_t b = state.range(0);
  Inputs in;
  const auto labels = sdpo::d3po_preference_labels(in.constant({b}, 1.0), in.constant({b}, 1.0));
  sdpo::D3POLossInput x;
  x.log_prob_a = in.leaf({b});
  x.log_prob_b = in.leaf({b});
  x.ref_log_prob_a = in.constant({b});
  x.ref_log_prob_b = in.constant({b});
  x.label_a = labels.label_a;
  x.label_b = labels.label_b;
  for (auto _ : state) {
    auto out = sdpo::d3po_loss(x);
    out.loss.backward();
    reset({x.log_prob_a, x.log_prob_b});
  }
  state.SetItemsProcessed(state.iterations() * b);
}

BENCHMARK(BM_LossSdpo)->ArgName("B")->Arg(4)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LossDdpoIs)->ArgName("B")->Arg(4)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LossDdpoSf)->ArgName("B")->Arg(4)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LossRebelPerStep)->ArgName("B")->Arg(4)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LossRebelTrajectory)->ArgName("B")->Arg(4)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LossD3po)->ArgName("B")->Arg(4)->Arg(64)->Unit(benchmark::kMicrosecond);

}  // namespace
