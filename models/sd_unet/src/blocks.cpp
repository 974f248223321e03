#include "sdpo/models/sd_unet/blocks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <memory>
#include <string>

namespace sdpo::sd_unet {
namespace {

bool is_half(const at::Tensor& x) { return x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16; }

// A parameterless container, so that children get diffusers' dotted names ("to_out.0", "ff.net.2").
std::shared_ptr<torch::nn::Module> container(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

}  // namespace

at::Tensor timestep_features(const at::Tensor& t, std::int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  TORCH_CHECK(t.dim() == 1, "timestep_features: expected timesteps of shape (B,), got ", t.sizes());
  TORCH_CHECK(dim >= 2, "timestep_features: dim must be >= 2, got ", dim);
  const std::int64_t half = dim / 2;
  TORCH_CHECK(static_cast<double>(half) != freq_shift, "timestep_features: freq_shift equals half the dim");
  // models.md 2.4: computed in fp32 whatever the UNet's dtype; the caller casts afterwards.
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(t.device());
  at::Tensor exponent = at::arange(0, half, f32) * (-std::log(10000.0) / (static_cast<double>(half) - freq_shift));
  at::Tensor arg = t.to(at::kFloat).unsqueeze(1) * exponent.exp().unsqueeze(0);
  at::Tensor emb = flip_sin_to_cos ? at::cat({arg.cos(), arg.sin()}, 1) : at::cat({arg.sin(), arg.cos()}, 1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(
    std::int64_t in, std::int64_t out, std::int64_t cond_dim, const at::TensorOptions& options) {
  linear_1_ = register_module("linear_1", nn::Linear(in, out, true, options));
  linear_2_ = register_module("linear_2", nn::Linear(out, out, true, options));
  // models.md 8.3: LCM's guidance embedding enters through a bias-free projection.
  if (cond_dim > 0) cond_proj_ = register_module("cond_proj", nn::Linear(cond_dim, in, false, options));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& features, const at::Tensor& cond) {
  at::Tensor x = features;
  if (cond.defined()) {
    TORCH_CHECK(
        !cond_proj_.is_empty(), "sd_unet: a timestep_cond was given but the UNet config has no time_cond_proj_dim");
    x = x + cond_proj_->forward(cond);
  }
  return linear_2_->forward(at::silu(linear_1_->forward(x)));
}

ResnetBlock2DImpl::ResnetBlock2DImpl(
    std::int64_t in,
    std::int64_t out,
    std::int64_t temb_dim,
    std::int64_t groups,
    double eps,
    double output_scale_factor,
    const at::TensorOptions& options)
    : output_scale_factor_(output_scale_factor) {
  norm1_ = register_module("norm1", nn::GroupNorm(groups, in, eps, options));
  conv1_ = register_module("conv1", nn::Conv2d(in, out, 3, 1, 1, options));
  time_emb_proj_ = register_module("time_emb_proj", nn::Linear(temb_dim, out, true, options));
  norm2_ = register_module("norm2", nn::GroupNorm(groups, out, eps, options));
  conv2_ = register_module("conv2", nn::Conv2d(out, out, 3, 1, 1, options));
  // models.md 2.3: a 1x1 shortcut (with bias) exactly when the width changes.
  if (in != out) conv_shortcut_ = register_module("conv_shortcut", nn::Conv2d(in, out, 1, 1, 0, options));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = conv1_->forward(at::silu(norm1_->forward(x)));
  // models.md 2.4: SiLU on temb inside every resnet, then a per-channel shift.
  h = h + time_emb_proj_->forward(at::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  h = conv2_->forward(at::silu(norm2_->forward(h)));  // dropout p = 0 (config dropout 0.0)
  at::Tensor shortcut = conv_shortcut_.is_empty() ? x : conv_shortcut_->forward(x);
  at::Tensor out = shortcut + h;
  return output_scale_factor_ == 1.0 ? out : out / output_scale_factor_;
}

AttentionImpl::AttentionImpl(
    std::int64_t dim, std::int64_t kv_dim, std::int64_t heads, bool upcast, const at::TensorOptions& options)
    : heads_(heads), upcast_(upcast) {
  TORCH_CHECK(heads >= 1 && dim % heads == 0, "Attention: ", heads, " heads do not divide width ", dim);
  // models.md 2.4: q/k/v without bias (attention_bias false), the output projection with bias.
  to_q_ = register_module("to_q", nn::Linear(dim, dim, false, options));
  to_k_ = register_module("to_k", nn::Linear(kv_dim, dim, false, options));
  to_v_ = register_module("to_v", nn::Linear(kv_dim, dim, false, options));
  to_out_ = container(*this, "to_out")->register_module("0", nn::Linear(dim, dim, true, options));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const at::Tensor& kv = context.defined() ? context : x;
  at::Tensor q = to_q_->forward(x), k = to_k_->forward(kv), v = to_v_->forward(kv);
  at::Tensor out;
  if (upcast_ && is_half(q)) {
    out = nn::multi_head_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), heads_).to(q.scalar_type());
  } else {
    out = nn::multi_head_attention(q, k, v, heads_);
  }
  return to_out_->forward(out);  // to_out.1 is Dropout(0): nothing to do
}

GEGLUImpl::GEGLUImpl(std::int64_t in, std::int64_t out, const at::TensorOptions& options) {
  proj_ = register_module("proj", nn::Linear(in, 2 * out, true, options));
}

at::Tensor GEGLUImpl::forward(const at::Tensor& x) {
  // models.md 2.4 / 8A: value half times exact (erf) GELU of the gate half; the gate is the
  // second half.
  auto halves = proj_->forward(x).chunk(2, -1);
  return halves[0] * at::gelu(halves[1]);
}

FeedForwardImpl::FeedForwardImpl(std::int64_t dim, const at::TensorOptions& options) {
  auto net = container(*this, "net");
  geglu_ = net->register_module("0", GEGLU(dim, 4 * dim, options));
  out_ = net->register_module("2", nn::Linear(4 * dim, dim, true, options));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) { return out_->forward(geglu_->forward(x)); }

BasicTransformerBlockImpl::BasicTransformerBlockImpl(
    std::int64_t dim, std::int64_t heads, std::int64_t cross_dim, bool upcast, const at::TensorOptions& options) {
  norm1_ = register_module("norm1", nn::LayerNorm(dim, 1e-5, options));
  attn1_ = register_module("attn1", Attention(dim, dim, heads, upcast, options));
  norm2_ = register_module("norm2", nn::LayerNorm(dim, 1e-5, options));
  attn2_ = register_module("attn2", Attention(dim, cross_dim, heads, upcast, options));
  norm3_ = register_module("norm3", nn::LayerNorm(dim, 1e-5, options));
  ff_ = register_module("ff", FeedForward(dim, options));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  at::Tensor h = attn1_->forward(norm1_->forward(x), at::Tensor()) + x;
  h = attn2_->forward(norm2_->forward(h), context) + h;
  return ff_->forward(norm3_->forward(h)) + h;
}

Transformer2DImpl::Transformer2DImpl(
    std::int64_t channels,
    std::int64_t heads,
    std::int64_t layers,
    std::int64_t cross_dim,
    std::int64_t groups,
    bool linear_projection,
    bool upcast,
    const at::TensorOptions& options)
    : linear_projection_(linear_projection) {
  // models.md 2.4 / 8A: this GroupNorm uses eps 1e-6, not the config's norm_eps.
  norm_ = register_module("norm", nn::GroupNorm(groups, channels, 1e-6, options));
  if (linear_projection) {
    proj_in_linear_ = register_module("proj_in", nn::Linear(channels, channels, true, options));
  } else {
    proj_in_conv_ = register_module("proj_in", nn::Conv2d(channels, channels, 1, 1, 0, options));
  }
  block_list_ = register_module("transformer_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < layers; ++i) {
    blocks_.push_back(BasicTransformerBlock(channels, heads, cross_dim, upcast, options));
    block_list_->push_back(blocks_.back());
  }
  if (linear_projection) {
    proj_out_linear_ = register_module("proj_out", nn::Linear(channels, channels, true, options));
  } else {
    proj_out_conv_ = register_module("proj_out", nn::Conv2d(channels, channels, 1, 1, 0, options));
  }
}

at::Tensor Transformer2DImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const std::int64_t b = x.size(0), c = x.size(1), hgt = x.size(2), wid = x.size(3);
  at::Tensor h = norm_->forward(x);
  // models.md 2.4: the linear projection acts on tokens, the conv projection before flattening.
  if (linear_projection_) {
    h = proj_in_linear_->forward(h.permute({0, 2, 3, 1}).reshape({b, hgt * wid, c}));
  } else {
    h = proj_in_conv_->forward(h).permute({0, 2, 3, 1}).reshape({b, hgt * wid, c});
  }
  for (auto& block : blocks_) h = block->forward(h, context);
  if (linear_projection_) {
    h = proj_out_linear_->forward(h).reshape({b, hgt, wid, c}).permute({0, 3, 1, 2});
  } else {
    h = proj_out_conv_->forward(h.reshape({b, hgt, wid, c}).permute({0, 3, 1, 2}).contiguous());
  }
  return h + x;
}

Downsample2DImpl::Downsample2DImpl(std::int64_t channels, std::int64_t padding, const at::TensorOptions& options)
    : padding_(padding) {
  conv_ = register_module("conv", nn::Conv2d(channels, channels, 3, 2, padding, options));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  // models.md 2.3: downsample_padding 1 is a symmetric pad; diffusers pads bottom/right by one
  // when it is 0.
  return conv_->forward(padding_ == 0 ? at::constant_pad_nd(x, {0, 1, 0, 1}) : x);
}

Upsample2DImpl::Upsample2DImpl(std::int64_t channels, const at::TensorOptions& options) {
  conv_ = register_module("conv", nn::Conv2d(channels, channels, 3, 1, 1, options));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, at::IntArrayRef size) {
  TORCH_CHECK(size.size() == 2, "Upsample2D: expected an output size (H, W)");
  // Nearest resizing copies values, so going through fp32 for bf16 (which older CPU kernels lack)
  // is exact.
  at::Tensor h = x.scalar_type() == at::kBFloat16 ? x.to(at::kFloat) : x;
  h = at::upsample_nearest2d(h, size).to(x.scalar_type());
  return conv_->forward(h);
}

}  // namespace sdpo::sd_unet
