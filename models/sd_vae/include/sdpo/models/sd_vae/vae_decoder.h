#pragma once
// The decoder half of diffusers' AutoencoderKL (research/models.md 4.1-4.3): post_quant_conv and
// decoder.{conv_in, mid_block, up_blocks, conv_norm_out, conv_out}, with diffusers' key names,
// built on the shared layers of nn/. The encoder half is not built (text-to-image sampling never
// encodes; models.md 1.3).
//
// Shapes: z (B, latent_channels, h, w) -> (B, out_channels, h * f, w * f), f = 2^(number of
// blocks - 1) (8 for SD's four blocks). Values roughly in [-1, 1]; the `sd_vae` plugin maps them
// to [0, 1].
//
// Example:
//   SDVAEConfig cfg = SDVAEConfig::load(pipeline + "/vae/config.json");
//   SDVAEDecoder vae(cfg, at::TensorOptions().dtype(at::kFloat));
//   at::Tensor x = vae->forward(latents / cfg.scaling_factor);   // (B, 3, 8h, 8w)
//
// Thread safety: modules are not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/tensor_map.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"

namespace sdpo::sd_vae {

/// The AutoencoderKL config fields the decoder depends on. Defaults are diffusers' defaults for
/// keys absent from config.json; SD-Turbo's values are in models.md 4.1.
struct SDVAEConfig {
  std::int64_t out_channels = 3;
  std::int64_t latent_channels = 4;
  std::vector<std::int64_t> block_out_channels{64};
  std::int64_t layers_per_block = 1;
  std::int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;
  bool force_upcast = true;  ///< diffusers' hint that fp16 overflows: run in fp32 (models.md 4.2)

  /// Reads and validates vae/config.json. Unsupported values (act_fn other than "silu", up blocks
  /// other than UpDecoderBlock2D, a shift_factor or latents_mean/std, channel counts norm_num_groups
  /// does not divide) throw sdpo::ManifestError naming the file and key.
  static SDVAEConfig from_hf(const nn::HFConfig& cfg);
  static SDVAEConfig load(const std::string& path);
  /// Output pixels per latent pixel along each side: 2^(len(block_out_channels) - 1).
  std::int64_t upsampling_factor() const;
};

/// ResnetBlock2D without time embedding (eps 1e-6 in the VAE):
/// x -> conv2(silu(norm2(conv1(silu(norm1(x)))))) + shortcut(x), shortcut = 1x1 conv_shortcut
/// when in != out. (B, in, H, W) -> (B, out, H, W).
class VAEResnetBlockImpl : public torch::nn::Module {
 public:
  VAEResnetBlockImpl(std::int64_t in, std::int64_t out, std::int64_t groups, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv_shortcut_{nullptr};
};
TORCH_MODULE(VAEResnetBlock);

/// Single-head spatial self-attention of the mid block: x + to_out.0(attn(to_q, to_k, to_v of
/// group_norm(x) as (B, HW, C) tokens)), scale 1/sqrt(C), softmax in fp32. (B, C, H, W) -> same.
class VAEAttentionImpl : public torch::nn::Module {
 public:
  VAEAttentionImpl(std::int64_t channels, std::int64_t groups, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  nn::GroupNorm group_norm_{nullptr};
  nn::Linear to_q_{nullptr}, to_k_{nullptr}, to_v_{nullptr}, to_out0_{nullptr};
};
TORCH_MODULE(VAEAttention);

/// UNetMidBlock2D: resnets.0 -> attentions.0 (if add_attention) -> resnets.1. (B, C, H, W) -> same.
class VAEMidBlockImpl : public torch::nn::Module {
 public:
  VAEMidBlockImpl(std::int64_t channels, std::int64_t groups, bool add_attention, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::vector<VAEResnetBlock> resnets_;
  VAEAttention attention_{nullptr};
};
TORCH_MODULE(VAEMidBlock);

/// UpDecoderBlock2D: `layers` resnets (in -> out, then out -> out), then, unless it is the last
/// block, upsamplers.0 = nearest x2 + 3x3 conv. (B, in, H, W) -> (B, out, 2H or H, 2W or W).
class VAEUpBlockImpl : public torch::nn::Module {
 public:
  VAEUpBlockImpl(
      std::int64_t in,
      std::int64_t out,
      std::int64_t layers,
      std::int64_t groups,
      bool add_upsample,
      const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::vector<VAEResnetBlock> resnets_;
  nn::Conv2d upsample_conv_{nullptr};
};
TORCH_MODULE(VAEUpBlock);

/// diffusers' vae.Decoder: conv_in, mid_block, up_blocks (block_out_channels reversed),
/// conv_norm_out (GroupNorm eps 1e-6), SiLU, conv_out.
class VAEDecoderImpl : public torch::nn::Module {
 public:
  VAEDecoderImpl(const SDVAEConfig& cfg, const at::TensorOptions& options);
  /// z: (B, latent_channels, h, w) -> (B, out_channels, h * f, w * f).
  at::Tensor forward(const at::Tensor& z);

 private:
  nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  VAEMidBlock mid_block_{nullptr};
  std::vector<VAEUpBlock> up_blocks_;
  nn::GroupNorm conv_norm_out_{nullptr};
};
TORCH_MODULE(VAEDecoder);

/// post_quant_conv (1x1, if use_post_quant_conv) + decoder: the modules AutoencoderKL._decode
/// runs. Keys: "post_quant_conv.*", "decoder.*" (140 tensors, 49,490,199 parameters for SD).
class SDVAEDecoderImpl : public torch::nn::Module {
 public:
  SDVAEDecoderImpl(const SDVAEConfig& cfg, const at::TensorOptions& options);
  /// z: already divided by scaling_factor, (B, latent_channels, h, w) -> (B, out_channels, fh, fw).
  at::Tensor forward(const at::Tensor& z);
  const SDVAEConfig& config() const { return cfg_; }

 private:
  SDVAEConfig cfg_;
  nn::Conv2d post_quant_conv_{nullptr};
  VAEDecoder decoder_{nullptr};
};
TORCH_MODULE(SDVAEDecoder);

/// Turns an AutoencoderKL state dict (a vae/diffusion_pytorch_model.safetensors) into the
/// decoder's keys: drops the encoder half ("encoder.*", "quant_conv.*"), and renames the legacy
/// mid-attention names (diffusers < 0.14: "query", "key", "value", "proj_attn") to "to_q", "to_k",
/// "to_v", "to_out.0". Throws sdpo::FileError naming `file` and the key when a legacy and a current
/// name are both present.
TensorMap decoder_weights(const TensorMap& vae_weights, const std::string& file);

}  // namespace sdpo::sd_vae
