// The optimizer service: libtorch's AdamW/Adam with accelerate-style gradient accumulation and
// global-norm clipping at each update (research/algorithms.md 4.4, 7.5).
#include "sdpo/core/optimizer.h"

#include <ATen/ATen.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <sstream>
#include <type_traits>

#include "sdpo/core/error.h"

namespace sdpo {

struct Optimizer::Impl {
  std::vector<at::Tensor> params;
  std::unique_ptr<torch::optim::Optimizer> opt;
};

Optimizer::Optimizer(std::vector<at::Tensor> parameters, const OptimizerOptions& o)
    : impl_(std::make_unique<Impl>()), options_(o), scaler_(o.loss_scaling) {
  TORCH_CHECK(!parameters.empty(), "optimizer: the model has no trainable parameters");
  TORCH_CHECK(o.gradient_accumulation >= 1, "optimizer: gradient_accumulation must be >= 1");
  impl_->params = parameters;
  if (o.name == "adamw") {
    impl_->opt = std::make_unique<torch::optim::AdamW>(
        parameters,
        torch::optim::AdamWOptions(o.learning_rate).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  } else if (o.name == "adam") {
    impl_->opt = std::make_unique<torch::optim::Adam>(
        parameters,
        torch::optim::AdamOptions(o.learning_rate).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  } else {
    throw Error("optimizer: name must be 'adamw' or 'adam', got '" + o.name + "'");
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (auto& p : impl_->params) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

void Optimizer::set_gradient_hook(std::function<void(const std::vector<at::Tensor>&)> hook) {
  gradient_hook_ = std::move(hook);
}

void Optimizer::backward(const at::Tensor& loss) {
  if (scaler_.enabled()) {
    (loss * scaler_.scale()).backward();
  } else {
    loss.backward();
  }
}

bool Optimizer::micro_step() { return micro_step(options_.gradient_accumulation); }

bool Optimizer::flush() {
  if (pending_ == 0) return false;
  return micro_step(pending_);
}

bool Optimizer::micro_step(std::int64_t accumulation) {
  if (++pending_ < accumulation) return false;
  pending_ = 0;
  if (gradient_hook_) gradient_hook_(impl_->params);
  // Unscaled before the norm is taken (GradScaler's unscale_ before clip_grad_norm_), after the
  // all-reduce: an overflow on any rank reaches every rank's sum, so all ranks skip together.
  scaler_.unscale(impl_->params);
  // Global L2 norm over all gradients, then one scale factor (torch.nn.utils.clip_grad_norm_).
  std::vector<at::Tensor> norms;
  for (auto& p : impl_->params) {
    if (p.grad().defined()) norms.push_back(p.grad().detach().to(at::kDouble).norm());
  }
  last_grad_norm_ = norms.empty() ? 0.0 : at::stack(norms).norm().item<double>();
  if (options_.max_grad_norm > 0 && std::isfinite(last_grad_norm_)) {
    double coef = options_.max_grad_norm / (last_grad_norm_ + 1e-6);
    if (coef < 1.0) {
      for (auto& p : impl_->params) {
        if (p.grad().defined()) p.mutable_grad().mul_(coef);
      }
    }
  }
  if (!std::isfinite(last_grad_norm_) && scaler_.enabled()) {
    // GradScaler's skipped step: no optimizer step, no moment update; the scale backs off.
    zero_grad();
    scaler_.update(false);
    return false;
  }
  if (!std::isfinite(last_grad_norm_)) {
    throw NumericError(
        "optimizer: the gradient norm is " + std::to_string(last_grad_norm_) +
        " (NaN or Inf); the update was not applied");
  }
  impl_->opt->step();
  zero_grad();
  ++updates_;
  scaler_.update(true);
  return true;
}

namespace {

// libtorch keys optimizer state by the parameter's TensorImpl: a string of its address in 1.x,
// the address itself in 2.x. Build whichever key type this libtorch uses.
template <class Key>
Key state_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << static_cast<const void*>(p.unsafeGetTensorImpl());
    return s.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

template <class Map>
auto state_key_for(const Map&, const at::Tensor& p) {
  return state_key<typename Map::key_type>(p);
}

template <class State>
void save_state(const torch::optim::Optimizer& opt, const std::vector<at::Tensor>& params, TensorMap& out) {
  const auto& states = opt.state();
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto it = states.find(state_key_for(states, params[i]));
    if (it == states.end()) continue;
    const auto& s = static_cast<const State&>(*it->second);
    std::string k = "param." + std::to_string(i) + ".";
    out[k + "step"] = at::scalar_tensor(static_cast<std::int64_t>(s.step()), at::kLong);
    out[k + "exp_avg"] = s.exp_avg();
    out[k + "exp_avg_sq"] = s.exp_avg_sq();
    if (s.max_exp_avg_sq().defined()) out[k + "max_exp_avg_sq"] = s.max_exp_avg_sq();
  }
}

template <class State>
void load_state(
    torch::optim::Optimizer& opt,
    const std::vector<at::Tensor>& params,
    const TensorMap& in,
    const std::string& source) {
  auto& states = opt.state();
  states.clear();
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::string k = "param." + std::to_string(i) + ".";
    auto step = in.find(k + "step");
    if (step == in.end()) continue;  // this parameter had not been updated yet
    auto get = [&](const std::string& name) {
      auto it = in.find(k + name);
      if (it == in.end()) throw FileError(source, "optimizer state lacks '" + k + name + "'");
      if (it->second.sizes() != params[i].sizes()) {
        throw FileError(source, "optimizer state '" + k + name + "' has the wrong shape");
      }
      return it->second.to(params[i].options()).clone();
    };
    auto s = std::make_unique<State>();
    s->step(step->second.item<std::int64_t>());
    s->exp_avg(get("exp_avg"));
    s->exp_avg_sq(get("exp_avg_sq"));
    if (in.count(k + "max_exp_avg_sq")) s->max_exp_avg_sq(get("max_exp_avg_sq"));
    states[state_key_for(states, params[i])] = std::move(s);
  }
}

}  // namespace

TensorMap Optimizer::state_dict() const {
  TensorMap out;
  if (options_.name == "adamw") {
    save_state<torch::optim::AdamWParamState>(*impl_->opt, impl_->params, out);
  } else {
    save_state<torch::optim::AdamParamState>(*impl_->opt, impl_->params, out);
  }
  out["updates"] = at::scalar_tensor(updates_, at::kLong);
  scaler_.save(out);
  return out;
}

void Optimizer::load_state_dict(const TensorMap& state, const std::string& source) {
  if (options_.name == "adamw") {
    load_state<torch::optim::AdamWParamState>(*impl_->opt, impl_->params, state, source);
  } else {
    load_state<torch::optim::AdamParamState>(*impl_->opt, impl_->params, state, source);
  }
  auto it = state.find("updates");
  updates_ = it == state.end() ? 0 : it->second.item<std::int64_t>();
  scaler_.load(state);
  pending_ = 0;
}

}  // namespace sdpo
