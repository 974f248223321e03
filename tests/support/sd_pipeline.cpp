#include "support/sd_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "sdpo/core/module_state.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/tensor_map.h"
#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/sd_unet/unet.h"
#include "sdpo/models/sd_vae/vae_decoder.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"

namespace sdpo::test {
namespace {

namespace fs = std::filesystem;

// research/models.md 1.3: the pipeline's index and SD-Turbo's scheduler.
const char* const kModelIndex = R"({"_class_name": "StableDiffusionPipeline",
  "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]})";
const char* const kScheduler = R"({"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000,
  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
  "timestep_spacing": "trailing", "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": false})";

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream f(path);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

nn::HFConfig config(const std::string& json, const fs::path& file) {
  write_text(file, json);
  return nn::HFConfig::load(file.string());
}

// The caller builds the module under the same ScopedSeed, so the file depends on the seed only,
// not on whatever drew from the global generator before. The tests add noise scaled so that
// activations stay O(1) through the tiny networks.
void save(
    const std::string& component,
    torch::nn::Module& m,
    double noise,
    const fs::path& file,
    const SDPipelineProgress& progress) {
  std::int64_t n = 0;
  {
    at::NoGradGuard no_grad;
    for (auto& p : m.parameters()) {
      if (noise != 0.0) p.add_(at::randn_like(p) * noise);
      n += p.numel();
    }
  }
  safetensors_save(file.string(), module_state_dict(m));
  if (progress) progress(component, n, file.string());
}

}  // namespace

const SDPipelineConfigs& sd_turbo_configs() {
  static const SDPipelineConfigs c{
      R"({
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.24.0.dev0",
  "act_fn": "silu", "addition_embed_type": null, "addition_embed_type_num_heads": 64,
  "addition_time_embed_dim": null, "attention_head_dim": [5, 10, 20, 20], "attention_type": "default",
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "class_embed_type": null,
  "class_embeddings_concat": false, "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_dim": 1024,
  "cross_attention_norm": null,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "dropout": 0.0, "dual_cross_attention": false, "encoder_hid_dim": null,
  "encoder_hid_dim_type": null, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_only_cross_attention": null, "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn",
  "norm_eps": 1e-05, "norm_num_groups": 32, "num_attention_heads": null, "num_class_embeds": null,
  "only_cross_attention": false, "out_channels": 4, "projection_class_embeddings_input_dim": null,
  "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": false, "resnet_time_scale_shift": "default",
  "reverse_transformer_layers_per_block": null, "sample_size": 64, "time_cond_proj_dim": null,
  "time_embedding_act_fn": null, "time_embedding_dim": null, "time_embedding_type": "positional",
  "timestep_post_act": null, "transformer_layers_per_block": 1,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": null, "use_linear_projection": true
})",
      R"({
  "architectures": ["CLIPTextModel"], "hidden_size": 1024, "num_hidden_layers": 23, "num_attention_heads": 16,
  "intermediate_size": 4096, "hidden_act": "gelu", "max_position_embeddings": 77, "vocab_size": 49408,
  "layer_norm_eps": 1e-05, "attention_dropout": 0.0, "dropout": 0.0, "projection_dim": 512,
  "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float32"
})",
      R"({"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
  "latent_channels": 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "act_fn": "silu", "norm_num_groups": 32, "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": true})"};
  return c;
}

const SDPipelineConfigs& tiny_sd_configs() {
  static const SDPipelineConfigs c{
      R"({
  "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": [2, 2],
  "cross_attention_dim": 16, "sample_size": 8, "norm_num_groups": 8, "use_linear_projection": true,
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]
})",
      R"({
  "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
  "max_position_embeddings": 77, "vocab_size": 514, "hidden_act": "gelu"
})",
      R"({
  "block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "scaling_factor": 0.18215
})"};
  return c;
}

void write_sd_pipeline(
    const std::string& root_dir,
    const SDPipelineConfigs& configs,
    unsigned seed,
    double noise,
    const SDPipelineProgress& progress) {
  const fs::path root(root_dir);
  write_text(root / "model_index.json", kModelIndex);
  write_text(root / "scheduler" / "scheduler_config.json", kScheduler);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  {
    auto cfg = sd_unet::SDUNetConfig::from_hf(config(configs.unet, root / "unet" / "config.json"));
    ScopedSeed scoped(seed);
    sd_unet::SDUNet unet(cfg, f32);
    save("unet", *unet, noise, root / "unet" / "diffusion_pytorch_model.safetensors", progress);
  }
  {
    auto cfg = clip_text::CLIPTextConfig::from_hf(config(configs.text_encoder, root / "text_encoder" / "config.json"));
    ScopedSeed scoped(seed + 1);
    clip_text::CLIPTextModel text(cfg, f32);
    save("text_encoder", *text, noise, root / "text_encoder" / "model.safetensors", progress);
  }
  {
    // Byte-level vocabulary without merges: every character is one token.
    boost::json::object vocab;
    const auto& symbols = clip_text::byte_symbols();
    for (int b = 0; b < 256; ++b) {
      vocab[symbols[b]] = b;
      vocab[symbols[b] + "</w>"] = 256 + b;
    }
    vocab["<|startoftext|>"] = 512;
    vocab["<|endoftext|>"] = 513;
    write_text(root / "tokenizer" / "vocab.json", boost::json::serialize(vocab));
    write_text(root / "tokenizer" / "merges.txt", "#version: 0.2\n");
    write_text(root / "tokenizer" / "special_tokens_map.json", R"({"pad_token": "!"})");
  }
  {
    auto cfg = sd_vae::SDVAEConfig::from_hf(config(configs.vae, root / "vae" / "config.json"));
    ScopedSeed scoped(seed + 2);
    sd_vae::SDVAEDecoder vae(cfg, f32);
    save("vae", *vae, noise, root / "vae" / "diffusion_pytorch_model.safetensors", progress);
  }
}

}  // namespace sdpo::test
