#include "sdpo/core/module_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/irange.h>
#include <torch/nn/module.h>

#include <sstream>
#include <vector>

#include "sdpo/core/error.h"

namespace sdpo {
namespace {

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (const auto i : c10::irange(sizes.size())) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

[[noreturn]] void refuse(const std::string& source, const std::string& component, const std::string& what) {
  throw Error(source + ": " + component + ": " + what);
}

}  // namespace

TensorMap module_state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters()) out.emplace(p.key(), p.value().detach());
  for (const auto& b : module.named_buffers()) out.emplace(b.key(), b.value().detach());
  return out;
}

void module_load_state_dict(
    torch::nn::Module& module,
    const TensorMap& weights,
    bool strict,
    const std::string& source,
    const std::string& component) {
  TensorMap targets = module_state_dict(module);

  // Validate everything first: a refused checkpoint must not leave a half-loaded module behind.
  std::vector<std::string> missing;
  for (const auto& [key, target] : targets) {
    auto it = weights.find(key);
    if (it == weights.end()) {
      missing.push_back(key);
      continue;
    }
    const at::Tensor& w = it->second;
    if (!w.defined()) refuse(source, component, "key '" + key + "' holds no tensor");
    if (w.sizes() != target.sizes()) {
      refuse(
          source, component,
          "key '" + key + "' has shape " + shape_text(w.sizes()) + " but the module expects " +
              shape_text(target.sizes()) + " (was the checkpoint written with other options?)");
    }
    if (at::isFloatingType(target.scalar_type()) && !at::isFloatingType(w.scalar_type())) {
      refuse(
          source, component,
          "key '" + key + "' has dtype " + std::string(c10::toString(w.scalar_type())) +
              ", expected a floating-point tensor");
    }
  }
  if (strict && !missing.empty()) {
    std::string what =
        "missing key '" + missing.front() + "' (shape " + shape_text(targets.at(missing.front()).sizes()) + ")";
    if (missing.size() > 1) what += " and " + std::to_string(missing.size() - 1) + " more";
    refuse(source, component, what);
  }
  if (strict) {
    std::vector<std::string> unexpected;
    for (const auto& kv : weights) {
      if (!targets.count(kv.first)) unexpected.push_back(kv.first);
    }
    if (!unexpected.empty()) {
      std::string what = "unexpected key '" + unexpected.front() + "'";
      if (unexpected.size() > 1) what += " and " + std::to_string(unexpected.size() - 1) + " more";
      what += " (the module has " + std::to_string(targets.size()) + " keys, e.g. '" +
              (targets.empty() ? std::string() : targets.begin()->first) + "')";
      refuse(source, component, what);
    }
  }

  at::NoGradGuard no_grad;
  for (auto& [key, target] : targets) {
    auto it = weights.find(key);
    if (it != weights.end()) target.copy_(it->second);
  }
}

std::int64_t module_parameter_count(const torch::nn::Module& module) {
  std::int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

void module_freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters()) p.requires_grad_(false);
  module.eval();
}

ScopedSeed::ScopedSeed(std::uint64_t seed) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  saved_state_ = gen.get_state();
  gen.set_current_seed(seed);
}

ScopedSeed::~ScopedSeed() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(saved_state_);
}

}  // namespace sdpo
