#pragma once
// The building blocks of diffusers' UNet2DConditionModel (research/models.md section 2.4), with
// diffusers' state-dict names: time embedding, ResnetBlock2D, Attention, GEGLU feed-forward,
// BasicTransformerBlock, Transformer2DModel and the 2x resamplers. Part of the static library
// `sdpo_models_sd_unet` (models/sd_unet) (README.md beside this file); unet.h assembles them into the UNet.
//
// Every module creates its parameters with caller-given TensorOptions (sdpo/models/nn/layers.h), so the
// whole UNet can be built on the meta device or directly in half precision. Activations are NCHW
// (B, C, H, W) for image features and (B, N, C) for token sequences; `temb` is the (B, T) output
// of the time embedding MLP (T = 4 * block_out_channels[0] = 1280 for SD-Turbo).

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "sdpo/models/nn/layers.h"

namespace sdpo::sd_unet {

/// Sinusoidal timestep features (diffusers' get_timestep_embedding with scale 1, max period
/// 10000): with half = dim / 2, freq_i = exp(-ln(10000) * i / (half - freq_shift)),
/// arg = t * freq_i, features = [sin(arg), cos(arg)], or [cos(arg), sin(arg)] when
/// `flip_sin_to_cos`; an odd `dim` gets a zero last column.
/// t: (B,) any numeric dtype -> (B, dim) float32 on t's device.
at::Tensor timestep_features(const at::Tensor& t, std::int64_t dim, bool flip_sin_to_cos, double freq_shift);

/// The time MLP `time_embedding`: linear_1 (in -> out), SiLU, linear_2 (out -> out); with
/// `cond_dim` > 0 also `cond_proj` (cond_dim -> in, no bias), whose output is added to the
/// sinusoidal features before linear_1 (LCM's guidance embedding, models.md 8.3).
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(std::int64_t in, std::int64_t out, std::int64_t cond_dim, const at::TensorOptions& options);
  /// features: (B, in); cond: undefined or (B, cond_dim). Returns (B, out).
  at::Tensor forward(const at::Tensor& features, const at::Tensor& cond);

 private:
  nn::Linear linear_1_{nullptr}, linear_2_{nullptr}, cond_proj_{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

/// ResnetBlock2D (pre-norm, time shift "default"):
/// out = (shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb)))))) / scale,
/// where shortcut is a 1x1 conv (`conv_shortcut`) when in != out, else identity.
class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  ResnetBlock2DImpl(
      std::int64_t in,
      std::int64_t out,
      std::int64_t temb_dim,
      std::int64_t groups,
      double eps,
      double output_scale_factor,
      const at::TensorOptions& options);
  /// x: (B, in, H, W); temb: (B, temb_dim). Returns (B, out, H, W).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb);

 private:
  double output_scale_factor_;
  nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv_shortcut_{nullptr};
  nn::Linear time_emb_proj_{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

/// diffusers' Attention: to_q (dim -> dim), to_k / to_v (kv_dim -> dim), all without bias, then
/// multi-head softmax(Q K^T / sqrt(dim / heads)) V and `to_out.0` (dim -> dim, with bias).
/// `upcast`: q, k, v in fp32 for half-precision inputs (the config's upcast_attention).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(
      std::int64_t dim, std::int64_t kv_dim, std::int64_t heads, bool upcast, const at::TensorOptions& options);
  /// x: (B, N, dim); context: (B, L, kv_dim), or undefined for self-attention. Returns (B, N, dim).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);

 private:
  std::int64_t heads_;
  bool upcast_;
  nn::Linear to_q_{nullptr}, to_k_{nullptr}, to_v_{nullptr}, to_out_{nullptr};
};
TORCH_MODULE(Attention);

/// GEGLU: `proj` (in -> 2 * out, bias); y = a * GELU_erf(g) with a the first and g the second
/// half of the projection's last dimension.
class GEGLUImpl : public torch::nn::Module {
 public:
  GEGLUImpl(std::int64_t in, std::int64_t out, const at::TensorOptions& options);
  /// x: (..., in) -> (..., out).
  at::Tensor forward(const at::Tensor& x);

 private:
  nn::Linear proj_{nullptr};
};
TORCH_MODULE(GEGLU);

/// FeedForward: `net.0` = GEGLU(dim -> 4 dim), `net.1` dropout (no parameters, p = 0),
/// `net.2` = Linear(4 dim -> dim, bias).
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(std::int64_t dim, const at::TensorOptions& options);
  /// x: (B, N, dim) -> (B, N, dim).
  at::Tensor forward(const at::Tensor& x);

 private:
  GEGLU geglu_{nullptr};
  nn::Linear out_{nullptr};
};
TORCH_MODULE(FeedForward);

/// BasicTransformerBlock (norm_type "layer_norm", LayerNorm eps 1e-5):
/// x += attn1(norm1(x)); x += attn2(norm2(x), context); x += ff(norm3(x)).
class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(
      std::int64_t dim, std::int64_t heads, std::int64_t cross_dim, bool upcast, const at::TensorOptions& options);
  /// x: (B, N, dim); context: (B, L, cross_dim). Returns (B, N, dim).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);

 private:
  nn::LayerNorm norm1_{nullptr}, norm2_{nullptr}, norm3_{nullptr};
  Attention attn1_{nullptr}, attn2_{nullptr};
  FeedForward ff_{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

/// Transformer2DModel on continuous inputs: GroupNorm(groups, C, eps 1e-6) `norm`, `proj_in`,
/// `layers` BasicTransformerBlocks over the H*W tokens, `proj_out`, plus the input as residual.
/// The projections are Linear (C, C) with `linear_projection` (SD 2.x) or 1x1 convs (C, C, 1, 1)
/// without (SD 1.x).
class Transformer2DImpl : public torch::nn::Module {
 public:
  Transformer2DImpl(
      std::int64_t channels,
      std::int64_t heads,
      std::int64_t layers,
      std::int64_t cross_dim,
      std::int64_t groups,
      bool linear_projection,
      bool upcast,
      const at::TensorOptions& options);
  /// x: (B, C, H, W); context: (B, L, cross_dim). Returns (B, C, H, W).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);

 private:
  bool linear_projection_;
  nn::GroupNorm norm_{nullptr};
  nn::Linear proj_in_linear_{nullptr}, proj_out_linear_{nullptr};
  nn::Conv2d proj_in_conv_{nullptr}, proj_out_conv_{nullptr};
  torch::nn::ModuleList block_list_{nullptr};
  std::vector<BasicTransformerBlock> blocks_;
};
TORCH_MODULE(Transformer2D);

/// Downsample2D: `conv` 3x3 stride 2 with symmetric zero padding `padding`; padding 0 means the
/// input is first padded by one row and column at the bottom and right. (B, C, H, W) ->
/// (B, C, ceil(H / 2), ceil(W / 2)) for padding 1.
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(std::int64_t channels, std::int64_t padding, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::int64_t padding_;
  nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Downsample2D);

/// Upsample2D: nearest-neighbour resize to `size` (H', W') (twice the input when the latent is
/// divisible by the UNet's total downsampling), then `conv` 3x3 pad 1. (B, C, H, W) -> (B, C, H', W').
class Upsample2DImpl : public torch::nn::Module {
 public:
  Upsample2DImpl(std::int64_t channels, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, at::IntArrayRef size);

 private:
  nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace sdpo::sd_unet
