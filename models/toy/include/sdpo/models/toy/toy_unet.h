#pragma once
// The toy conditional UNet (README.md beside this file): an epsilon predictor for small
// pixel-space images, conditioned on a timestep and on text features through cross-attention.
// Internal to the `toy_unet` plugin; the framework sees it only as an sdpo::Model.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sdpo::toy_unet {

/// Options of the `toy_unet` model (read and validated by read_options in plugin.cpp).
struct ToyUNetOptions {
  std::int64_t image_size = 32;                    ///< height = width of the latents, in pixels
  std::int64_t in_channels = 3;                    ///< latent channels (3: RGB scaled to [-1, 1])
  std::vector<std::int64_t> channels{32, 64, 64};  ///< feature channels per resolution level
  std::int64_t cond_dim = 64;                      ///< D of the (B, L, D) text conditioning
  std::int64_t heads = 4;                          ///< cross-attention heads
  std::int64_t norm_groups = 8;                    ///< GroupNorm groups (must divide every width)
  std::string checkpoint;                          ///< safetensors file; empty: random init
  std::int64_t seed = 0;                           ///< random init seed (ignored with a checkpoint)
  std::string prediction_type = "epsilon";         ///< what forward() predicts (the training target)
};

/// GroupNorm -> SiLU -> conv3x3 -> + time projection -> GroupNorm -> SiLU -> conv3x3, plus a
/// (1x1 conv when the width changes) skip connection.
class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(std::int64_t in, std::int64_t out, std::int64_t time_dim, std::int64_t groups);
  /// x: (B, in, H, W); time_act: (B, time_dim), the already SiLU-activated time embedding.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& time_act);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  torch::nn::Linear time_proj_{nullptr};
};
TORCH_MODULE(ResBlock);

/// Multi-head cross-attention from image positions (queries) to text tokens (keys, values),
/// with a GroupNorm on the image features and a residual connection. Plain batched matmuls
/// (libtorch 1.13 has no fused attention); the image-side projections are 1x1 convolutions.
class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(std::int64_t channels, std::int64_t cond_dim, std::int64_t heads, std::int64_t groups);
  /// x: (B, C, H, W); cond: (B, L, cond_dim). Returns (B, C, H, W).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cond);

 private:
  std::int64_t heads_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Linear to_q_{nullptr}, to_k_{nullptr}, to_v_{nullptr}, to_out_{nullptr};
};
TORCH_MODULE(CrossAttention);

/// One resolution level of the encoder: a res block, cross-attention (levels >= 1), and a
/// stride-2 conv to the next level (all but the last level).
class DownLevelImpl : public torch::nn::Module {
 public:
  DownLevelImpl(const ToyUNetOptions& o, std::int64_t level, std::int64_t in, std::int64_t time_dim);
  ResBlock res{nullptr};
  CrossAttention attn{nullptr};
  torch::nn::Conv2d downsample{nullptr};
};
TORCH_MODULE(DownLevel);

/// One resolution level of the decoder: a res block over [features, skip] (the last level takes
/// no skip: it continues straight from the encoder's bottom), cross-attention (levels >= 1), and
/// a 1x1 conv to the next finer level's width followed by nearest x2 upsampling (levels >= 1).
class UpLevelImpl : public torch::nn::Module {
 public:
  UpLevelImpl(const ToyUNetOptions& o, std::int64_t level, std::int64_t time_dim);
  ResBlock res{nullptr};
  CrossAttention attn{nullptr};
  torch::nn::Conv2d upsample{nullptr};
};
TORCH_MODULE(UpLevel);

/// The whole network: eps = net(x_t, t, cond).
class ToyUNetImpl : public torch::nn::Module {
 public:
  explicit ToyUNetImpl(const ToyUNetOptions& o);
  /// x_t: (B, in_channels, S, S) float; t: (B,) timesteps (any numeric dtype); cond: (B, L, D).
  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond);

 private:
  /// Sinusoidal embedding of t (cos half, then sin half, as diffusers' flip_sin_to_cos).
  at::Tensor timestep_embedding(const at::Tensor& t) const;

  std::int64_t sinusoid_dim_;
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  torch::nn::Linear time_linear1_{nullptr}, time_linear2_{nullptr};
  torch::nn::ModuleList down_list_{nullptr}, up_list_{nullptr};
  std::vector<DownLevel> down_;
  std::vector<UpLevel> up_;
  torch::nn::GroupNorm norm_out_{nullptr};
};
TORCH_MODULE(ToyUNet);

}  // namespace sdpo::toy_unet
