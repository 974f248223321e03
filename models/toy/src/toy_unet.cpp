#include "sdpo/models/toy/toy_unet.h"

#include <ATen/ATen.h>

#include <cmath>

namespace sdpo::toy_unet {

namespace nn = torch::nn;

namespace {

/// A "same"-padded convolution (odd kernel) with stride `stride`. On CPU float tensors it calls
/// oneDNN directly: libtorch 1.13's dispatcher sends 1x1 kernels below batch 16 (single-threaded)
/// and small inputs to its im2col + BLAS path, which on Debian's reference BLAS runs several
/// times slower (a batch-1 forward spent 90% of its time there).
at::Tensor conv2d_same(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, std::int64_t stride = 1) {
  const std::int64_t pad = weight.size(-1) / 2;
  if (x.is_cpu() && x.scalar_type() == at::kFloat && at::hasMKLDNN()) {
    return at::mkldnn_convolution(x, weight, bias, {pad, pad}, {stride, stride}, {1, 1}, 1);
  }
  return at::conv2d(x, weight, bias, {stride, stride}, {pad, pad});
}

at::Tensor conv2d_same(const nn::Conv2d& conv, const at::Tensor& x, std::int64_t stride = 1) {
  return conv2d_same(x, conv->weight, conv->bias, stride);
}

}  // namespace

ResBlockImpl::ResBlockImpl(std::int64_t in, std::int64_t out, std::int64_t time_dim, std::int64_t groups) {
  norm1_ = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(groups, in)));
  conv1_ = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1)));
  time_proj_ = register_module("time_proj", nn::Linear(time_dim, out));
  norm2_ = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(groups, out)));
  conv2_ = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(out, out, 3).padding(1)));
  if (in != out) skip_ = register_module("skip", nn::Conv2d(nn::Conv2dOptions(in, out, 1)));
}

at::Tensor ResBlockImpl::forward(const at::Tensor& x, const at::Tensor& time_act) {
  at::Tensor h = conv2d_same(conv1_, at::silu(norm1_(x)));
  // (B, out) -> (B, out, 1, 1): the timestep shifts every channel, broadcast over positions.
  h = h + time_proj_(time_act).unsqueeze(-1).unsqueeze(-1);
  h = conv2d_same(conv2_, at::silu(norm2_(h)));
  return (skip_ ? conv2d_same(skip_, x) : x) + h;
}

CrossAttentionImpl::CrossAttentionImpl(
    std::int64_t channels, std::int64_t cond_dim, std::int64_t heads, std::int64_t groups)
    : heads_(heads) {
  norm_ = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(groups, channels)));
  to_q_ = register_module("to_q", nn::Linear(nn::LinearOptions(channels, channels).bias(false)));
  to_k_ = register_module("to_k", nn::Linear(nn::LinearOptions(cond_dim, channels).bias(false)));
  to_v_ = register_module("to_v", nn::Linear(nn::LinearOptions(cond_dim, channels).bias(false)));
  to_out_ = register_module("to_out", nn::Linear(channels, channels));
}

at::Tensor CrossAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cond) {
  const std::int64_t b = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3), n = hh * ww;
  const std::int64_t l = cond.size(1), d = c / heads_;
  // The per-position projections are 1x1 convolutions (oneDNN) rather than linears (BLAS): the
  // image side is the large one, and Debian's libtorch may sit on the slow reference BLAS.
  // Channels-last storage makes (B, C, H, W) a (B, N, C) token array: the views below are free.
  at::Tensor q = conv2d_same(norm_(x), to_q_->weight.view({c, c, 1, 1}), at::Tensor())
                     .permute({0, 2, 3, 1})
                     .reshape({b, n, heads_, d})
                     .transpose(1, 2);  // (B, h, N, d)
  // 1/sqrt(d) goes on k: it is the smaller tensor (L ~ 12 tokens).
  at::Tensor k = (at::linear(cond, to_k_->weight) * (1.0 / std::sqrt(static_cast<double>(d))))
                     .view({b, l, heads_, d})
                     .permute({0, 2, 3, 1});                                               // (B, h, d, L)
  at::Tensor v = at::linear(cond, to_v_->weight).view({b, l, heads_, d}).transpose(1, 2);  // (B, h, L, d)
  at::Tensor attn = at::softmax(at::matmul(q, k), /*dim=*/-1);                             // (B, h, N, L)
  at::Tensor o = at::matmul(attn, v).transpose(1, 2).reshape({b, hh, ww, c}).permute({0, 3, 1, 2});
  return x + conv2d_same(o, to_out_->weight.view({c, c, 1, 1}), to_out_->bias);
}

DownLevelImpl::DownLevelImpl(const ToyUNetOptions& o, std::int64_t level, std::int64_t in, std::int64_t time_dim) {
  const std::int64_t c = o.channels[level];
  const auto levels = static_cast<std::int64_t>(o.channels.size());
  res = register_module("res", ResBlock(in, c, time_dim, o.norm_groups));
  if (level >= 1) attn = register_module("attn", CrossAttention(c, o.cond_dim, o.heads, o.norm_groups));
  if (level + 1 < levels) {
    downsample = register_module("downsample", nn::Conv2d(nn::Conv2dOptions(c, c, 3).stride(2).padding(1)));
  }
}

UpLevelImpl::UpLevelImpl(const ToyUNetOptions& o, std::int64_t level, std::int64_t time_dim) {
  const std::int64_t c = o.channels[level];
  const auto levels = static_cast<std::int64_t>(o.channels.size());
  // The bottom level continues from the encoder's output, which *is* its skip: concatenating it
  // with itself would only double the width.
  const std::int64_t in = level + 1 == levels ? c : 2 * c;
  res = register_module("res", ResBlock(in, c, time_dim, o.norm_groups));
  if (level >= 1) {
    attn = register_module("attn", CrossAttention(c, o.cond_dim, o.heads, o.norm_groups));
    // 1x1 conv at the coarse resolution, then nearest x2: a quarter of the cost of a 3x3 conv at
    // the fine resolution; the next res block's 3x3 convs do the spatial mixing.
    upsample = register_module("upsample", nn::Conv2d(nn::Conv2dOptions(c, o.channels[level - 1], 1)));
  }
}

ToyUNetImpl::ToyUNetImpl(const ToyUNetOptions& o) {
  const std::int64_t c0 = o.channels.front();
  sinusoid_dim_ = c0 + (c0 % 2);
  const std::int64_t time_dim = 4 * c0;
  conv_in_ = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(o.in_channels, c0, 3).padding(1)));
  time_linear1_ = register_module("time_linear1", nn::Linear(sinusoid_dim_, time_dim));
  time_linear2_ = register_module("time_linear2", nn::Linear(time_dim, time_dim));
  down_list_ = register_module("down", nn::ModuleList());
  up_list_ = register_module("up", nn::ModuleList());
  std::int64_t in = c0;
  for (std::size_t level = 0; level < o.channels.size(); ++level) {
    down_.emplace_back(o, static_cast<std::int64_t>(level), in, time_dim);
    down_list_->push_back(down_.back());
    in = o.channels[level];
  }
  // up.<l> works at the same resolution as down.<l> (registered finest first, run coarsest first).
  for (std::size_t level = 0; level < o.channels.size(); ++level) {
    up_.emplace_back(o, static_cast<std::int64_t>(level), time_dim);
    up_list_->push_back(up_.back());
  }
  norm_out_ = register_module("norm_out", nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, c0)));
  conv_out_ = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(c0, o.in_channels, 3).padding(1)));
}

at::Tensor ToyUNetImpl::timestep_embedding(const at::Tensor& t) const {
  const std::int64_t half = sinusoid_dim_ / 2;
  at::Tensor exponent = at::arange(half, t.options().dtype(at::kFloat)) * (-std::log(10000.0) / half);
  at::Tensor args = t.to(at::kFloat).reshape({-1, 1}) * at::exp(exponent).unsqueeze(0);
  return at::cat({at::cos(args), at::sin(args)}, 1);
}

at::Tensor ToyUNetImpl::forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) {
  // One SiLU of the time embedding serves every res block's projection.
  at::Tensor time_act = at::silu(time_linear2_(at::silu(time_linear1_(timestep_embedding(t)))));
  // Channels-last throughout: the no-grad forward that sampling repeats thousands of times is
  // about 10% faster than NCHW (CPU time, libtorch 1.13, batch 64; forward+backward is even,
  // because GroupNorm's backward copies to NCHW), and the attention's token view is free.
  at::Tensor h = conv2d_same(conv_in_, x_t.contiguous(at::MemoryFormat::ChannelsLast));
  std::vector<at::Tensor> skips;
  skips.reserve(down_.size());
  for (auto& level : down_) {
    h = level->res(h, time_act);
    if (level->attn) h = level->attn(h, cond);
    skips.push_back(h);
    if (level->downsample) h = conv2d_same(level->downsample, h, /*stride=*/2);
  }
  for (std::size_t i = up_.size(); i-- > 0;) {
    auto& level = up_[i];
    if (i + 1 < up_.size()) h = at::cat({h, skips[i]}, 1);
    h = level->res(h, time_act);
    if (level->attn) h = level->attn(h, cond);
    if (level->upsample) {
      h = conv2d_same(level->upsample, h);
      h = at::upsample_nearest2d(h, {2 * h.size(2), 2 * h.size(3)});
    }
  }
  return conv2d_same(conv_out_, at::silu(norm_out_(h))).contiguous();
}

}  // namespace sdpo::toy_unet
