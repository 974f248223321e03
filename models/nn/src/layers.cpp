#include "sdpo/models/nn/layers.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <string>

namespace sdpo::nn {
namespace {

bool is_meta(const at::TensorOptions& o) { return o.device().type() == c10::DeviceType::Meta; }

// torch.nn.Linear/Conv2d's default: kaiming_uniform(a = sqrt(5)) on the weight, which is
// uniform(+-1/sqrt(fan_in)), and the same bound for the bias.
at::Tensor uniform_param(at::IntArrayRef shape, std::int64_t fan_in, const at::TensorOptions& o) {
  at::Tensor t = at::empty(shape, o);
  if (!is_meta(o)) {
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    at::NoGradGuard no_grad;
    t.uniform_(-bound, bound);
  }
  return t;
}

at::Tensor filled_param(at::IntArrayRef shape, double value, const at::TensorOptions& o) {
  at::Tensor t = at::empty(shape, o);
  if (!is_meta(o)) {
    at::NoGradGuard no_grad;
    t.fill_(value);
  }
  return t;
}

bool is_half(const at::Tensor& x) { return x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16; }

}  // namespace

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool with_bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", uniform_param({out, in}, in, options));
  if (with_bias) bias = register_parameter("bias", uniform_param({out}, in, options));
}

void LinearImpl::add_lora(std::int64_t rank, double alpha, const at::TensorOptions& options) {
  TORCH_CHECK(!has_lora(), "add_lora: this layer already has an adapter");
  TORCH_CHECK(rank >= 1, "add_lora: rank must be >= 1, got ", rank);
  // A ~ N(0, 1/r), B = 0: diffusers 0.17.1's LoRALinearLayer and PEFT's "gaussian" init
  // (research/models.md 5.1, 5.2); the product is 0, so outputs are unchanged at creation.
  at::Tensor a = at::empty({rank, in_features()}, options);
  if (!is_meta(options)) {
    at::NoGradGuard no_grad;
    a.normal_(0.0, 1.0 / static_cast<double>(rank));
  }
  auto lora_a = register_module("lora_A", std::make_shared<torch::nn::Module>());
  auto lora_b = register_module("lora_B", std::make_shared<torch::nn::Module>());
  lora_a_ = lora_a->register_parameter("weight", a);
  lora_b_ = lora_b->register_parameter("weight", filled_param({out_features(), rank}, 0.0, options));
  lora_scale_ = alpha / static_cast<double>(rank);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::linear(x, weight, bias);
  if (lora_a_.defined() && lora_enabled_) {
    // The adapter runs in its own dtype (fp32 beside an fp16 base) and adds back in the
    // output's dtype, as diffusers' LoRALinearLayer does.
    at::Tensor d = at::linear(at::linear(x.to(lora_a_.scalar_type()), lora_a_), lora_b_);
    y = y + (lora_scale_ == 1.0 ? d : d * lora_scale_).to(y.scalar_type());
  }
  return y;
}

Conv2dImpl::Conv2dImpl(
    std::int64_t in,
    std::int64_t out,
    std::int64_t kernel,
    std::int64_t stride,
    std::int64_t padding,
    const at::TensorOptions& options,
    bool with_bias)
    : stride_(stride), padding_(padding) {
  const std::int64_t fan_in = in * kernel * kernel;
  weight = register_parameter("weight", uniform_param({out, in, kernel, kernel}, fan_in, options));
  if (with_bias) bias = register_parameter("bias", uniform_param({out}, fan_in, options));
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  return at::conv2d(x, weight, bias, {stride_, stride_}, {padding_, padding_});
}

GroupNormImpl::GroupNormImpl(std::int64_t groups, std::int64_t channels, double eps, const at::TensorOptions& options)
    : groups_(groups), eps_(eps) {
  TORCH_CHECK(
      groups >= 1 && channels % groups == 0, "GroupNorm: ", groups, " groups do not divide ", channels, " channels");
  weight = register_parameter("weight", filled_param({channels}, 1.0, options));
  bias = register_parameter("bias", filled_param({channels}, 0.0, options));
}

at::Tensor GroupNormImpl::forward(const at::Tensor& x) {
  if (is_half(x)) {
    return at::group_norm(x.to(at::kFloat), groups_, weight.to(at::kFloat), bias.to(at::kFloat), eps_)
        .to(x.scalar_type());
  }
  return at::group_norm(x, groups_, weight, bias, eps_);
}

LayerNormImpl::LayerNormImpl(std::int64_t dim, double eps, const at::TensorOptions& options) : eps_(eps) {
  weight = register_parameter("weight", filled_param({dim}, 1.0, options));
  bias = register_parameter("bias", filled_param({dim}, 0.0, options));
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  const std::int64_t dim = weight.size(0);
  if (is_half(x)) {
    return at::layer_norm(x.to(at::kFloat), {dim}, weight.to(at::kFloat), bias.to(at::kFloat), eps_)
        .to(x.scalar_type());
  }
  return at::layer_norm(x, {dim}, weight, bias, eps_);
}

EmbeddingImpl::EmbeddingImpl(std::int64_t count, std::int64_t dim, const at::TensorOptions& options) {
  at::Tensor w = at::empty({count, dim}, options);
  if (!is_meta(options)) {
    at::NoGradGuard no_grad;
    w.normal_(0.0, 1.0);
  }
  weight = register_parameter("weight", w);
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

at::Tensor multi_head_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t heads, bool causal) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "multi_head_attention: expected (B, N, C) inputs");
  const std::int64_t b = q.size(0), nq = q.size(1), c = q.size(2), nk = k.size(1);
  TORCH_CHECK(c % heads == 0, "multi_head_attention: ", heads, " heads do not divide width ", c);
  const std::int64_t d = c / heads;
  // (B, N, H*d) -> (B, H, N, d)
  auto split = [&](const at::Tensor& t, std::int64_t n) { return t.reshape({b, n, heads, d}).transpose(1, 2); };
  at::Tensor qh = split(q, nq), kh = split(k, nk), vh = split(v, nk);
  at::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  out = at::scaled_dot_product_attention(qh, kh, vh, {}, 0.0, causal);
#else
  at::Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(d)));
  if (is_half(scores)) scores = scores.to(at::kFloat);
  if (causal) {
    at::Tensor mask = at::ones({nq, nk}, q.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  out = at::matmul(at::softmax(scores, -1).to(vh.scalar_type()), vh);
#endif
  return out.transpose(1, 2).reshape({b, nq, c});
}

std::vector<LinearImpl*> lora_layers(torch::nn::Module& module) {
  std::vector<LinearImpl*> out;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* lin = dynamic_cast<LinearImpl*>(m.get()); lin && lin->has_lora()) out.push_back(lin);
  }
  return out;
}

std::int64_t parameter_count(const torch::nn::Module& module) {
  std::int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

}  // namespace sdpo::nn
