#include "support/tiny_clip.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "sdpo/safetensors.h"

namespace sdpo::test {
namespace {

constexpr std::int64_t kTextWidth = 16, kTextMLP = 32, kTextVocab = 64, kTextPositions = 77;

struct Filler {
  at::Generator gen;
  TensorMap* out;
  at::Tensor normal(at::IntArrayRef shape, double std, double mean = 0.0) {
    return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)) * std + mean;
  }
  void linear(const std::string& k, std::int64_t in, std::int64_t outs, bool bias) {
    (*out)[k + ".weight"] = normal({outs, in}, 1.0 / std::sqrt(static_cast<double>(in)));
    if (bias) (*out)[k + ".bias"] = normal({outs}, 0.1);
  }
  void norm(const std::string& k, std::int64_t dim) {
    (*out)[k + ".weight"] = normal({dim}, 0.2, 1.0);
    (*out)[k + ".bias"] = normal({dim}, 0.2);
  }
  // The layer keys of models.md 3.4 / 7 under `prefix` ("vision_model.encoder.layers.0.").
  void layer(const std::string& prefix, std::int64_t d, std::int64_t m) {
    for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"}) linear(prefix + "self_attn." + p, d, d, true);
    norm(prefix + "layer_norm1", d);
    linear(prefix + "mlp.fc1", d, m, true);
    linear(prefix + "mlp.fc2", m, d, true);
    norm(prefix + "layer_norm2", d);
  }
};

}  // namespace

TensorMap tiny_clip_weights(const TinyCLIPSpec& s, std::uint64_t seed) {
  TensorMap w;
  Filler f{at::make_generator<at::CPUGeneratorImpl>(seed), &w};
  const std::int64_t d = s.hidden;
  w["vision_model.embeddings.class_embedding"] = f.normal({d}, 0.5);
  w["vision_model.embeddings.patch_embedding.weight"] =
      f.normal({d, 3, s.patch, s.patch}, 1.0 / std::sqrt(static_cast<double>(3 * s.patch * s.patch)));
  w["vision_model.embeddings.position_embedding.weight"] = f.normal({s.tokens(), d}, 0.5);
  f.norm("vision_model.pre_layrnorm", d);
  for (std::int64_t i = 0; i < s.layers; ++i)
    f.layer("vision_model.encoder.layers." + std::to_string(i) + ".", d, s.mlp);
  f.norm("vision_model.post_layernorm", d);
  f.linear("visual_projection", d, s.projection, false);

  w["text_model.embeddings.token_embedding.weight"] = f.normal({kTextVocab, kTextWidth}, 0.5);
  w["text_model.embeddings.position_embedding.weight"] = f.normal({kTextPositions, kTextWidth}, 0.5);
  f.layer("text_model.encoder.layers.0.", kTextWidth, kTextMLP);
  f.norm("text_model.final_layer_norm", kTextWidth);
  f.linear("text_projection", kTextWidth, s.projection, false);
  w["logit_scale"] = at::scalar_tensor(2.6592, at::kFloat);
  if (s.position_ids) {
    w["vision_model.embeddings.position_ids"] = at::arange(s.tokens(), at::kLong).view({1, -1});
    w["text_model.embeddings.position_ids"] = at::arange(kTextPositions, at::kLong).view({1, -1});
  }
  return w;
}

std::string tiny_clip_config(const TinyCLIPSpec& s) {
  boost::json::object vision{
      {"hidden_size", s.hidden},
      {"intermediate_size", s.mlp},
      {"num_hidden_layers", s.layers},
      {"num_attention_heads", s.heads},
      {"num_channels", 3},
      {"image_size", s.image},
      {"patch_size", s.patch},
      {"hidden_act", s.act},
      {"layer_norm_eps", 1e-5},
      {"projection_dim", s.projection},
      {"model_type", "clip_vision_model"}};
  boost::json::object text{{"hidden_size", kTextWidth}, {"intermediate_size", kTextMLP},
                           {"num_hidden_layers", 1},    {"num_attention_heads", 2},
                           {"vocab_size", kTextVocab},  {"max_position_embeddings", kTextPositions},
                           {"hidden_act", s.act},       {"model_type", "clip_text_model"}};
  boost::json::object config{
      {"architectures", boost::json::array{"CLIPModel"}},
      {"model_type", "clip"},
      {"projection_dim", s.projection},
      {"logit_scale_init_value", 2.6592},
      {"text_config", text},
      {"vision_config", vision}};
  return boost::json::serialize(config);
}

TensorMap write_tiny_clip(const std::string& dir, const TinyCLIPSpec& spec, std::uint64_t seed) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << tiny_clip_config(spec);
  TensorMap w = tiny_clip_weights(spec, seed);
  safetensors_save(dir + "/model.safetensors", w, {{"format", "pt"}});
  return w;
}

TensorMap aesthetic_head_weights(std::int64_t in, std::uint64_t seed) {
  TensorMap w;
  Filler f{at::make_generator<at::CPUGeneratorImpl>(seed), &w};
  const std::int64_t index[] = {0, 2, 4, 6, 7};
  const std::int64_t width[] = {in, 1024, 128, 64, 16, 1};
  for (int i = 0; i < 5; ++i) f.linear("layers." + std::to_string(index[i]), width[i], width[i + 1], true);
  return w;
}

TensorMap write_aesthetic_head(const std::string& path, std::int64_t in, std::uint64_t seed) {
  TensorMap w = aesthetic_head_weights(in, seed);
  safetensors_save(path, w, {{"format", "pt"}});
  return w;
}

TensorMap vision_side(const TensorMap& weights) {
  TensorMap out;
  for (const auto& [k, t] : weights) {
    const bool vision = k.rfind("vision_model.", 0) == 0 || k == "visual_projection.weight";
    if (vision && k != "vision_model.embeddings.position_ids") out[k] = t;
  }
  return out;
}

}  // namespace sdpo::test
