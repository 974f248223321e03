// sdpo_random_pipeline [--tiny] OUT_DIR: writes a diffusers pipeline folder with SD-Turbo's real
// architecture (research/models.md 2.1, 3.1, 4.1: the unet/, text_encoder/ and vae/ config.json
// values) and random float32 weights, loadable by the `sd_unet`, `clip_text` and `sd_vae` plugins,
// so that an SD-Turbo-sized epoch can be timed without downloading anything
// (benchmarks/gpu_check.sh). The images it makes are noise; only the cost is real.
//
// The weights are each module's default initialization under a fixed seed (module_state_dict of
// the same modules the plugins build, so the keys and shapes are theirs by construction):
// about 3.5 GB for the UNet, 1.4 GB for the text encoder, 0.2 GB for the VAE decoder. The
// tokenizer is byte-level (every character one token, ids < 514 of the real 49408-entry
// vocabulary): real prompts tokenize, to different ids than the real BPE. --tiny writes the same
// layout at toy sizes (tests/support/tiny_sd.cpp's: latents (4, 8, 8), images 16x16), to try a
// script's steps on a CPU in seconds.
#include <ATen/ATen.h>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "clip_text/clip_text_model.h"
#include "clip_text/tokenizer.h"
#include "sd_unet/unet.h"
#include "sd_vae/vae_decoder.h"
#include "sdpo/module_state.h"
#include "sdpo/nn/hf_config.h"
#include "sdpo/safetensors.h"

namespace {

namespace fs = std::filesystem;

// models.md 2.1: SD-Turbo's unet/config.json (as tests/unit/plugins/sd_unet_test.cpp).
const char* const kUNetConfig = R"({
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
})";

// models.md 3.1: the OpenCLIP ViT-H/14 text tower as transformers' CLIPTextModel.
const char* const kTextConfig = R"({
  "architectures": ["CLIPTextModel"], "hidden_size": 1024, "num_hidden_layers": 23, "num_attention_heads": 16,
  "intermediate_size": 4096, "hidden_act": "gelu", "max_position_embeddings": 77, "vocab_size": 49408,
  "layer_norm_eps": 1e-05, "attention_dropout": 0.0, "dropout": 0.0, "projection_dim": 512,
  "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float32"
})";

// models.md 4.1.
const char* const kVAEConfig = R"({"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
  "latent_channels": 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "act_fn": "silu", "norm_num_groups": 32, "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": true})";

// models.md 1.3.
const char* const kModelIndex = R"({"_class_name": "StableDiffusionPipeline",
  "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]})";
const char* const kScheduler = R"({"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000,
  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
  "timestep_spacing": "trailing", "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": false})";

// --tiny: tests/support/tiny_sd.cpp's sizes.
const char* const kTinyUNetConfig = R"({
  "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": [2, 2],
  "cross_attention_dim": 16, "sample_size": 8, "norm_num_groups": 8, "use_linear_projection": true,
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]
})";
const char* const kTinyTextConfig = R"({
  "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
  "max_position_embeddings": 77, "vocab_size": 514, "hidden_act": "gelu"
})";
const char* const kTinyVAEConfig = R"({
  "block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "scaling_factor": 0.18215
})";

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream f(path);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

sdpo::nn::HFConfig config(const fs::path& file, const char* json) {
  write_text(file, json);
  return sdpo::nn::HFConfig::load(file.string());
}

template <class Module>
void save(const Module& m, const fs::path& file, const char* what) {
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  sdpo::safetensors_save(file.string(), sdpo::module_state_dict(*m));
  std::cout << "  " << what << ": " << n << " parameters -> " << file.string() << " ("
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s to write)\n";
}

}  // namespace

int main(int argc, char** argv) {
  const bool tiny = argc == 3 && std::string(argv[1]) == "--tiny";
  if (!(argc == 2 || tiny) || std::string(argv[argc - 1]).rfind("-", 0) == 0) {
    std::cerr << "usage: sdpo_random_pipeline [--tiny] OUT_DIR\n"
                 "  writes OUT_DIR/{model_index.json,scheduler,unet,text_encoder,tokenizer,vae}: SD-Turbo's\n"
                 "  architecture with random float32 weights (about 5 GB), for timing only; --tiny: toy sizes\n";
    return 2;
  }
  try {
    const fs::path root(argv[argc - 1]);
    const auto f32 = at::TensorOptions().dtype(at::kFloat);
    at::NoGradGuard no_grad;
    write_text(root / "model_index.json", kModelIndex);
    write_text(root / "scheduler" / "scheduler_config.json", kScheduler);
    {
      auto cfg = sdpo::sd_unet::SDUNetConfig::from_hf(
          config(root / "unet" / "config.json", tiny ? kTinyUNetConfig : kUNetConfig));
      sdpo::ScopedSeed seed(1);
      sdpo::sd_unet::SDUNet unet(cfg, f32);
      save(unet, root / "unet" / "diffusion_pytorch_model.safetensors", "unet");
    }
    {
      auto cfg = sdpo::clip_text::CLIPTextConfig::from_hf(
          config(root / "text_encoder" / "config.json", tiny ? kTinyTextConfig : kTextConfig));
      sdpo::ScopedSeed seed(2);
      sdpo::clip_text::CLIPTextModel text(cfg, f32);
      save(text, root / "text_encoder" / "model.safetensors", "text_encoder");
    }
    {
      boost::json::object vocab;
      const auto& symbols = sdpo::clip_text::byte_symbols();
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
      auto cfg = sdpo::sd_vae::SDVAEConfig::from_hf(
          config(root / "vae" / "config.json", tiny ? kTinyVAEConfig : kVAEConfig));
      sdpo::ScopedSeed seed(3);
      sdpo::sd_vae::SDVAEDecoder vae(cfg, f32);
      save(vae, root / "vae" / "diffusion_pytorch_model.safetensors", "vae decoder");
    }
    std::cout << "sdpo_random_pipeline: wrote " << root.string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "sdpo_random_pipeline: " << e.what() << "\n";
    return 1;
  }
}
