#pragma once
// Tiny ImageReward folders for the `imagereward` tests and the reward conformance suite: the
// published ImageReward.pt key names and shapes spelled out from research/models.md 6.4 (key
// pattern, ITC projections and the position_ids buffer the published file also holds),
// independently of models/blip/src/blip_model.cpp, so that loading them checks that code; a
// med_config.json, a vision-size JSON and a small bert-style vocab.txt.
//
// Header-only (inline) because tests/CMakeLists.txt compiles a fixed list of support sources.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "sdpo/core/safetensors.h"
#include "sdpo/core/tensor_map.h"

namespace sdpo::test {

/// Sizes of an ImageReward network: the vision tower (BLIP ViT) and the text tower (med BERT).
struct TinyImageRewardSpec {
  std::int64_t image = 32, patch = 8, width = 32, depth = 2, heads = 4, mlp = 64;
  std::int64_t hidden = 16, layers = 2, text_heads = 2, intermediate = 32, positions = 40, vocab = 30;
  std::int64_t tokens() const { return (image / patch) * (image / patch) + 1; }
  /// ImageReward's published sizes (models.md 6.4): ViT-L/16 at 224, BERT-base with vocab 30524.
  static TinyImageRewardSpec published() {
    TinyImageRewardSpec s;
    s.image = 224, s.patch = 16, s.width = 1024, s.depth = 24, s.heads = 16, s.mlp = 4096;
    s.hidden = 768, s.layers = 12, s.text_heads = 12, s.intermediate = 3072, s.positions = 512, s.vocab = 30524;
    return s;
  }
};

using KeyShapes = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;

/// Every tensor the score reads, in the published names (models.md 6.4 key pattern).
inline KeyShapes imagereward_key_shapes(const TinyImageRewardSpec& s) {
  KeyShapes k;
  auto put = [&](const std::string& name, std::vector<std::int64_t> shape) { k.emplace_back(name, std::move(shape)); };
  auto linear = [&](const std::string& name, std::int64_t in, std::int64_t out) {
    put(name + ".weight", {out, in});
    put(name + ".bias", {out});
  };
  auto norm = [&](const std::string& name, std::int64_t d) {
    put(name + ".weight", {d});
    put(name + ".bias", {d});
  };
  const std::string v = "blip.visual_encoder.";
  put(v + "cls_token", {1, 1, s.width});
  put(v + "pos_embed", {1, s.tokens(), s.width});
  put(v + "patch_embed.proj.weight", {s.width, 3, s.patch, s.patch});
  put(v + "patch_embed.proj.bias", {s.width});
  for (std::int64_t i = 0; i < s.depth; ++i) {
    const std::string b = v + "blocks." + std::to_string(i) + ".";
    norm(b + "norm1", s.width);
    linear(b + "attn.qkv", s.width, 3 * s.width);
    linear(b + "attn.proj", s.width, s.width);
    norm(b + "norm2", s.width);
    linear(b + "mlp.fc1", s.width, s.mlp);
    linear(b + "mlp.fc2", s.mlp, s.width);
  }
  norm(v + "norm", s.width);
  const std::string t = "blip.text_encoder.";
  put(t + "embeddings.word_embeddings.weight", {s.vocab, s.hidden});
  put(t + "embeddings.position_embeddings.weight", {s.positions, s.hidden});
  norm(t + "embeddings.LayerNorm", s.hidden);
  for (std::int64_t i = 0; i < s.layers; ++i) {
    const std::string l = t + "encoder.layer." + std::to_string(i) + ".";
    for (const char* a : {"attention", "crossattention"}) {
      const std::int64_t kv = std::string(a) == "attention" ? s.hidden : s.width;
      linear(l + a + ".self.query", s.hidden, s.hidden);
      linear(l + a + ".self.key", kv, s.hidden);
      linear(l + a + ".self.value", kv, s.hidden);
      linear(l + a + ".output.dense", s.hidden, s.hidden);
      norm(l + a + ".output.LayerNorm", s.hidden);
    }
    linear(l + "intermediate.dense", s.hidden, s.intermediate);
    linear(l + "output.dense", s.intermediate, s.hidden);
    norm(l + "output.LayerNorm", s.hidden);
  }
  const std::int64_t head_in[] = {s.hidden, 1024, 128, 64, 16}, head_out[] = {1024, 128, 64, 16, 1};
  const int head_index[] = {0, 2, 4, 6, 7};
  for (int i = 0; i < 5; ++i) linear("mlp.layers." + std::to_string(head_index[i]), head_in[i], head_out[i]);
  return k;
}

/// The tiny vocabulary (id = position): BERT's special tokens, then the words of the tests' and
/// the conformance suite's prompts ("circles" = circle ##s).
inline const std::vector<std::string>& tiny_bert_vocab() {
  static const std::vector<std::string> v{"[PAD]", "[UNK]",  "[CLS]",  "[SEP]",  "[MASK]",   "a",   "red",   "blue",
                                          "green", "yellow", "circle", "square", "triangle", "two", "cat",   "##s",
                                          "dog",   "on",     "the",    "left",   ",",        ".",   "photo", "of"};
  return v;
}

/// Random float32 weights for imagereward_key_shapes(s): linear weights ~ N(0, 1/in), biases and
/// norm shifts ~ N(0, 0.1^2), norm scales near 1, embeddings and class/position tokens ~ N(0, 0.5^2).
inline TensorMap tiny_imagereward_weights(const TinyImageRewardSpec& s, std::uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  TensorMap w;
  for (const auto& [name, shape] : imagereward_key_shapes(s)) {
    at::Tensor r = at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
    const bool norm = name.find("norm") != std::string::npos || name.find("LayerNorm") != std::string::npos;
    if (norm && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
      r = 1.0 + 0.2 * r;
    } else if (shape.size() == 2 && name.find("embeddings") == std::string::npos) {
      r = r / std::sqrt(static_cast<double>(shape[1]));
    } else if (shape.size() == 4) {
      r = r / std::sqrt(static_cast<double>(shape[1] * shape[2] * shape[3]));
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      r = 0.1 * r;
    } else {
      r = 0.5 * r;
    }
    w[name] = r.contiguous();
  }
  return w;
}

/// med_config.json in the published layout (models.md 6.4 "Text"), with `s`'s sizes.
inline std::string tiny_med_config(const TinyImageRewardSpec& s) {
  return R"({"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": )" +
         std::to_string(s.hidden) + R"(, "initializer_range": 0.02, "intermediate_size": )" +
         std::to_string(s.intermediate) + R"(, "layer_norm_eps": 1e-12, "max_position_embeddings": )" +
         std::to_string(s.positions) + R"(, "model_type": "bert", "num_attention_heads": )" +
         std::to_string(s.text_heads) + R"(, "num_hidden_layers": )" + std::to_string(s.layers) +
         R"(, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": )" + std::to_string(s.vocab) +
         R"(, "encoder_width": 768, "add_cross_attention": true})";
}

/// The `vision_config` JSON of the reward for `s` (BLIP VisionTransformer argument names).
inline std::string tiny_vision_config(const TinyImageRewardSpec& s) {
  return R"({"img_size": )" + std::to_string(s.image) + R"(, "patch_size": )" + std::to_string(s.patch) +
         R"(, "embed_dim": )" + std::to_string(s.width) + R"(, "depth": )" + std::to_string(s.depth) +
         R"(, "num_heads": )" + std::to_string(s.heads) + R"(, "mlp_ratio": )" +
         std::to_string(static_cast<double>(s.mlp) / static_cast<double>(s.width)) + "}";
}

inline void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// Writes `dir`/ImageReward.safetensors (the weights plus, like the published file, the unused
/// blip.vision_proj / blip.text_proj and the int64 position_ids buffer), med_config.json,
/// vocab.txt (tiny_bert_vocab) and vision_config.json; returns the weights the score reads.
inline TensorMap write_tiny_imagereward(const std::string& dir, const TinyImageRewardSpec& s, std::uint64_t seed) {
  std::filesystem::create_directories(dir);
  TensorMap w = tiny_imagereward_weights(s, seed);
  TensorMap file = w;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1000);
  file["blip.vision_proj.weight"] = at::randn({8, s.width}, gen);
  file["blip.vision_proj.bias"] = at::zeros({8});
  file["blip.text_proj.weight"] = at::randn({8, s.hidden}, gen);
  file["blip.text_proj.bias"] = at::zeros({8});
  file["blip.text_encoder.embeddings.position_ids"] = at::arange(s.positions, at::kLong).unsqueeze(0);
  safetensors_save(dir + "/ImageReward.safetensors", file);
  write_text_file(dir + "/med_config.json", tiny_med_config(s));
  write_text_file(dir + "/vision_config.json", tiny_vision_config(s));
  std::string vocab;
  for (const auto& token : tiny_bert_vocab()) vocab += token + "\n";
  write_text_file(dir + "/vocab.txt", vocab);
  return w;
}

}  // namespace sdpo::test
