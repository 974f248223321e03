// One sampling step, taken apart (issue 17 item 2), at the toy SDPO epoch's shape: 8 pairs, so a
// batch of 16 latents of 3x32x32, T = 20, DDIM eta 1, conditioning (16, 12, 64).
//   trajectory:   sdpo::sample_trajectories, the T steps with their stores (time per trajectory)
//   model:        the model call alone, under NoGradGuard (what sampling does)
//   model_inference: the same call under c10::InferenceMode
//   model_chunk:n: the batch as 16 / n calls of n (n = 8 is what the Python loops do: one pipeline
//                 call per pair member)
//   ddim:         the sampler's step alone: DDIM mean, the noise draw, the log-prob
//   noise:        the noise draw alone
//   stack:        stacking the three (16, 3, 32, 32) stores of T steps into (16, T, ...) tensors
//                 (once per trajectory; the time is per trajectory)
// The models: the shipped toy_unet, and a TorchScript file when SDPO_BENCH_TORCHSCRIPT names one
// (e.g. benchmarks/python_reference/toy_policy.py's, the Python peer's model).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmarks/bench_registry.h"
#include "sdpo/core/model.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/sampler.h"
#include "sdpo/train/sampling.h"

namespace sdpo::bench {
namespace {

constexpr std::int64_t kBatch = 16, kSteps = 20, kTokens = 12, kCondDim = 64;

struct StepSetup {
  std::shared_ptr<Model> model;
  std::shared_ptr<Sampler> sampler;
  at::Tensor x, t, cond, eps;
  std::vector<std::int64_t> timesteps;
};

StepSetup make_setup(const std::string& model_name, const boost::json::object& model_options) {
  StepSetup s;
  ComponentConfig mc;
  mc.kind = "model";
  mc.name = model_name;
  mc.options = model_options;
  mc.file = "<benchmark>";
  mc.json_path = "model.options";
  s.model = Registry::global().create<Model>(mc);
  s.model->set_training(false);
  ComponentConfig sc;
  sc.kind = "sampler";
  sc.name = "ddim";
  sc.file = "<benchmark>";
  sc.json_path = "sampler.options";
  s.sampler = Registry::global().create<Sampler>(sc);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  std::vector<std::int64_t> shape{kBatch};
  for (auto d : s.model->latent_shape()) shape.push_back(d);
  s.x = at::randn(shape, gen);
  s.eps = at::randn(shape, gen);
  s.cond = at::randn({kBatch, kTokens, kCondDim}, gen);
  s.timesteps = s.sampler->timesteps(kSteps);
  s.t = at::full({kBatch}, s.timesteps[kSteps / 2], at::TensorOptions().dtype(at::kLong));
  return s;
}

void run_part(benchmark::State& state, StepSetup& s, const std::string& part) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  if (part == "trajectory") {
    for (auto _ : state) {
      auto tr = sample_trajectories(*s.model, *s.sampler, s.cond, s.x, kSteps, gen, true);
      benchmark::DoNotOptimize(tr.final_sample.data_ptr());
    }
    return;
  }
  for (auto _ : state) {
    at::Tensor out;
    if (part == "model") {
      at::NoGradGuard no_grad;
      out = s.model->forward(s.x, s.t, s.cond);
    } else if (part == "model_inference") {
      c10::InferenceMode guard;
      out = s.model->forward(s.x, s.t, s.cond);
    } else if (part.rfind("model_chunk", 0) == 0) {
      at::NoGradGuard no_grad;
      const std::int64_t chunk = std::stoll(part.substr(part.find(':') + 1));
      std::vector<at::Tensor> outs;
      for (std::int64_t i = 0; i < kBatch; i += chunk) {
        const auto n = std::min(chunk, kBatch - i);
        outs.push_back(s.model->forward(s.x.narrow(0, i, n), s.t.narrow(0, i, n), s.cond.narrow(0, i, n)));
      }
      out = at::cat(outs, 0);
    } else if (part == "ddim") {
      at::NoGradGuard no_grad;
      SamplerStepInput in{s.eps, s.t, s.x, kSteps, at::Tensor(), gen, s.model->prediction_type()};
      out = s.sampler->step(in).log_prob;
    } else if (part == "noise") {
      out = at::randn(s.x.sizes(), gen, s.x.options());
    } else if (part == "stack") {
      state.PauseTiming();
      std::vector<at::Tensor> stores;
      for (std::int64_t k = 0; k < kSteps; ++k) stores.push_back(s.x.clone());
      state.ResumeTiming();
      for (int i = 0; i < 3; ++i) out = at::stack(stores, 1);
    }
    benchmark::DoNotOptimize(out.data_ptr());
  }
}

void register_model(const std::string& label, const std::string& model_name, const boost::json::object& options) {
  // One setup per model, shared by its parts and built on first use (the registry is loaded by then).
  auto setup = std::make_shared<std::unique_ptr<StepSetup>>();
  for (const char* part :
       {"trajectory", "model", "model_inference", "model_chunk:2", "model_chunk:4", "model_chunk:8", "ddim", "noise",
        "stack"}) {
    const std::string p = part;
    benchmark::RegisterBenchmark(
        ("BM_SamplingStep/" + label + "/part:" + p).c_str(),
        [setup, model_name, options, p](benchmark::State& state) {
          if (!*setup) *setup = std::make_unique<StepSetup>(make_setup(model_name, options));
          run_part(state, **setup, p);
        })
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

void register_sampling_benchmarks() {
  const std::string src = SDPO_SOURCE_DIR;
  register_model("toy_unet", "toy_unet", {{"checkpoint", src + "/experiments/assets/toy_unet.safetensors"}});
  if (const char* file = std::getenv("SDPO_BENCH_TORCHSCRIPT"); file != nullptr && *file != '\0') {
    register_model(
        "torchscript", "torchscript",
        {{"file", file}, {"prediction_type", "epsilon"}, {"latent_shape", boost::json::array{3, 32, 32}}});
  }
}

}  // namespace sdpo::bench
