#pragma once
// diffusers' UNet2DConditionModel for the SD 1.x / 2.x family (SD-Turbo: research/models.md
// section 2; SD 1.5 / LCM layout: section 8.3), with diffusers' state-dict names, so a pipeline's
// unet/diffusion_pytorch_model[.fp16].safetensors loads strictly. Static library
// `sdpo_models_sd_unet` (models/sd_unet); the `sd_unet` plugin (plugin.cpp) wraps it as an sdpo::Model.
//
// Example (shapes only, no memory):
//   auto cfg = SDUNetConfig::from_hf(sdpo::nn::HFConfig::load(dir + "/unet/config.json"));
//   SDUNet unet(cfg, at::TensorOptions().device(at::kMeta));
//   apply_lora(*unet, {"to_q", "to_k", "to_v", "to_out.0"}, 4, 4.0, at::TensorOptions().device(at::kMeta));
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

#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/sd_unet/blocks.h"

namespace sdpo::sd_unet {

/// The subset of a diffusers UNet2DConditionModel config.json this implementation supports.
/// Defaults are diffusers' own defaults, except those noted.
struct SDUNetConfig {
  std::int64_t sample_size = 64;  ///< latent height = width (SD-Turbo 64, SD 1.5 64, LCM 96)
  std::int64_t in_channels = 4;
  std::int64_t out_channels = 4;
  bool center_input_sample = false;  ///< x -> 2x - 1 before conv_in
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  /// Per block, in down order: "CrossAttnDownBlock2D" | "DownBlock2D".
  std::vector<std::string> down_block_types{
      "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
  /// Per block, in up order (deepest first): "UpBlock2D" | "CrossAttnUpBlock2D".
  std::vector<std::string> up_block_types{
      "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  std::vector<std::int64_t> block_out_channels{320, 640, 1280, 1280};
  std::int64_t layers_per_block = 2;  ///< resnets per down block (up blocks have one more)
  std::int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1.0;  ///< output_scale_factor of the mid block's resnets
  std::int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::int64_t cross_attention_dim = 1280;  ///< width of the text states (SD 2.x 1024, SD 1.x 768)
  /// Attention HEAD COUNT per down block (config `num_attention_heads`, or, when that is null,
  /// `attention_head_dim`: diffusers' naming quirk, models.md 2.1). Up blocks use it reversed;
  /// the mid block uses the last entry.
  std::vector<std::int64_t> heads{8, 8, 8, 8};
  /// BasicTransformerBlocks per Transformer2DModel, per down block (reversed for up blocks).
  std::vector<std::int64_t> transformer_layers{1, 1, 1, 1};
  bool use_linear_projection = false;  ///< false: 1x1-conv proj_in/proj_out (SD 1.x)
  bool upcast_attention = false;
  std::int64_t time_embedding_dim = 0;  ///< 0: 4 * block_out_channels[0]
  std::int64_t time_cond_proj_dim = 0;  ///< 0: no time_embedding.cond_proj (LCM: 256)
  std::int64_t conv_in_kernel = 3;
  std::int64_t conv_out_kernel = 3;

  /// Reads unet/config.json. Values this implementation does not support (other block types,
  /// class or addition embeddings, resnet_time_scale_shift other than "default", ...) and
  /// inconsistent ones throw sdpo::ManifestError naming the file and the key.
  static SDUNetConfig from_hf(const nn::HFConfig& cfg);

  std::int64_t blocks() const { return static_cast<std::int64_t>(block_out_channels.size()); }
  std::int64_t time_embed_dim() const {
    return time_embedding_dim > 0 ? time_embedding_dim : 4 * block_out_channels[0];
  }
};

/// CrossAttnDownBlock2D (`attention`) or DownBlock2D: `layers` x (resnet [-> transformer]) at
/// width `out`, then an optional stride-2 `downsamplers.0`. Pushes every layer's output and the
/// downsampler's output onto the skip stack (models.md 2.3).
class DownBlockImpl : public torch::nn::Module {
 public:
  DownBlockImpl(const SDUNetConfig& cfg, std::int64_t index, std::int64_t in, const at::TensorOptions& options);
  /// h: (B, in, H, W) -> (B, out, H', W'); temb (B, T); context (B, L, cross_dim).
  at::Tensor forward(at::Tensor h, const at::Tensor& temb, const at::Tensor& context, std::vector<at::Tensor>& skips);

 private:
  torch::nn::ModuleList resnet_list_{nullptr}, attention_list_{nullptr}, downsampler_list_{nullptr};
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2D> attentions_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(DownBlock);

/// CrossAttnUpBlock2D (`attention`) or UpBlock2D: `layers_per_block + 1` x (concat a popped skip
/// -> resnet [-> transformer]), then an optional `upsamplers.0` to the next skip's size.
class UpBlockImpl : public torch::nn::Module {
 public:
  /// `index` counts up blocks from the deepest; channel bookkeeping as in models.md 2.3.
  UpBlockImpl(const SDUNetConfig& cfg, std::int64_t index, const at::TensorOptions& options);
  /// h: (B, prev_out, H, W); pops its skips from the back of `skips`; the result is upsampled
  /// to the spatial size of the skip then on top of the stack (if it has an upsampler).
  at::Tensor forward(at::Tensor h, const at::Tensor& temb, const at::Tensor& context, std::vector<at::Tensor>& skips);

 private:
  torch::nn::ModuleList resnet_list_{nullptr}, attention_list_{nullptr}, upsampler_list_{nullptr};
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2D> attentions_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UpBlock);

/// UNetMidBlock2DCrossAttn: resnets.0 -> attentions.0 -> resnets.1 at the deepest width.
class MidBlockImpl : public torch::nn::Module {
 public:
  MidBlockImpl(const SDUNetConfig& cfg, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& h, const at::Tensor& temb, const at::Tensor& context);

 private:
  torch::nn::ModuleList resnet_list_{nullptr}, attention_list_{nullptr};
  ResnetBlock2D resnet0_{nullptr}, resnet1_{nullptr};
  Transformer2D attention_{nullptr};
};
TORCH_MODULE(MidBlock);

/// The UNet. Top-level names: conv_in, time_embedding, down_blocks, mid_block, up_blocks,
/// conv_norm_out, conv_out.
class SDUNetImpl : public torch::nn::Module {
 public:
  SDUNetImpl(const SDUNetConfig& cfg, const at::TensorOptions& options);
  /// x: (B, in_channels, h, w) in the parameters' dtype; t: (B,) timesteps (any numeric dtype);
  /// context: (B, L, cross_attention_dim) in the parameters' dtype; timestep_cond: undefined or
  /// (B, time_cond_proj_dim) (LCM's guidance embedding). Returns (B, out_channels, h, w).
  at::Tensor forward(
      const at::Tensor& x,
      const at::Tensor& t,
      const at::Tensor& context,
      const at::Tensor& timestep_cond = at::Tensor());
  const SDUNetConfig& config() const { return cfg_; }

 private:
  SDUNetConfig cfg_;
  nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  TimestepEmbedding time_embedding_{nullptr};
  torch::nn::ModuleList down_list_{nullptr}, up_list_{nullptr};
  std::vector<DownBlock> down_;
  std::vector<UpBlock> up_;
  MidBlock mid_{nullptr};
  nn::GroupNorm conv_norm_out_{nullptr};
};
TORCH_MODULE(SDUNet);

/// Freezes every parameter of `module` (requires_grad false), then adds a trainable LoRA adapter
/// (rank, scale alpha / rank, parameters created with `options`) to every Linear layer whose
/// dotted path equals a target or ends with "." + target (PEFT's target_modules rule, models.md
/// 5.2). Returns the adapted paths in module order. Throws std::invalid_argument naming the first
/// target that matches no Linear layer (before changing anything).
std::vector<std::string> apply_lora(
    torch::nn::Module& module,
    const std::vector<std::string>& targets,
    std::int64_t rank,
    double alpha,
    const at::TensorOptions& options);

}  // namespace sdpo::sd_unet
