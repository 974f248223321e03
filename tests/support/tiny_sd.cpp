#include "support/tiny_sd.h"

#include <ATen/ATen.h>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <filesystem>
#include <fstream>

#include "clip_text/clip_text_model.h"
#include "clip_text/tokenizer.h"
#include "sd_unet/unet.h"
#include "sd_vae/vae_decoder.h"
#include "sdpo/module_state.h"
#include "sdpo/nn/hf_config.h"
#include "sdpo/safetensors.h"
#include "support/test_support.h"

namespace sdpo::test {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

nn::HFConfig config(const std::string& json, const fs::path& file) {
  write_text(file, json);
  return nn::HFConfig::load(file.string());
}

// Random weights scaled so that activations stay O(1) through the tiny networks. The caller builds
// the module under the same ScopedSeed, so the file depends on `seed` only, not on whatever drew
// from the global generator before.
void save_random(torch::nn::Module& m, const fs::path& file) {
  {
    at::NoGradGuard no_grad;
    for (auto& p : m.parameters()) p.add_(at::randn_like(p) * 0.05);
  }
  safetensors_save(file.string(), module_state_dict(m));
}

}  // namespace

std::string write_tiny_sd_pipeline(unsigned seed) {
  const fs::path root = temp_dir("tiny_sd");
  write_text(root / "model_index.json",
             R"({"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                 "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})");
  write_text(root / "scheduler" / "scheduler_config.json",
             R"({"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon", "timestep_spacing": "trailing",
                 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000})");

  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  {
    auto cfg = sd_unet::SDUNetConfig::from_hf(config(R"({
      "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": [2, 2],
      "cross_attention_dim": 16, "sample_size": 8, "norm_num_groups": 8, "use_linear_projection": true,
      "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]
    })", root / "unet" / "config.json"));
    ScopedSeed scoped(seed);
    sd_unet::SDUNet unet(cfg, f32);
    save_random(*unet, root / "unet" / "diffusion_pytorch_model.safetensors");
  }
  {
    auto cfg = clip_text::CLIPTextConfig::from_hf(config(R"({
      "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
      "max_position_embeddings": 77, "vocab_size": 514, "hidden_act": "gelu"
    })", root / "text_encoder" / "config.json"));
    ScopedSeed scoped(seed + 1);
    clip_text::CLIPTextModel text(cfg, f32);
    save_random(*text, root / "text_encoder" / "model.safetensors");
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
    auto cfg = sd_vae::SDVAEConfig::from_hf(config(R"({
      "block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "scaling_factor": 0.18215
    })", root / "vae" / "config.json"));
    ScopedSeed scoped(seed + 2);
    sd_vae::SDVAEDecoder vae(cfg, f32);
    save_random(*vae, root / "vae" / "diffusion_pytorch_model.safetensors");
  }
  return root.string();
}

}  // namespace sdpo::test
