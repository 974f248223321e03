#include "support/tiny_clip.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "sdpo/core/safetensors.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"

namespace sdpo::test {
namespace {

constexpr std::int64_t kTinyBOS = 512, kTinyEOS = 513;

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

  const std::int64_t t = s.text_hidden;
  w["text_model.embeddings.token_embedding.weight"] = f.normal({s.vocab, t}, 0.5);
  w["text_model.embeddings.position_embedding.weight"] = f.normal({s.positions, t}, 0.5);
  for (std::int64_t i = 0; i < s.text_layers; ++i)
    f.layer("text_model.encoder.layers." + std::to_string(i) + ".", t, s.text_mlp);
  f.norm("text_model.final_layer_norm", t);
  f.linear("text_projection", t, s.projection, false);
  w["logit_scale"] = at::scalar_tensor(s.logit_scale, at::kFloat);
  if (s.position_ids) {
    w["vision_model.embeddings.position_ids"] = at::arange(s.tokens(), at::kLong).view({1, -1});
    w["text_model.embeddings.position_ids"] = at::arange(s.positions, at::kLong).view({1, -1});
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
  boost::json::object text{
      {"hidden_size", s.text_hidden},
      {"intermediate_size", s.text_mlp},
      {"num_hidden_layers", s.text_layers},
      {"num_attention_heads", s.text_heads},
      {"vocab_size", s.vocab},
      {"max_position_embeddings", s.positions},
      {"hidden_act", s.act},
      {"model_type", "clip_text_model"}};
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
  write_tiny_clip_tokenizer(dir, spec.pad_token);
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

void write_tiny_clip_tokenizer(const std::string& dir, const std::string& pad_token) {
  std::filesystem::create_directories(dir);
  // models.md 3.5 items 1-2: printable bytes (33-126, 161-172, 174-255) first, then the others.
  std::vector<int> order;
  for (int pass = 0; pass < 2; ++pass) {
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      if (printable == (pass == 0)) order.push_back(b);
    }
  }
  const auto& symbols = clip_text::byte_symbols();  // the symbol strings (byte -> UTF-8)
  boost::json::object vocab;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::string& sym = symbols[static_cast<std::size_t>(order[i])];
    vocab[sym] = static_cast<std::int64_t>(i);
    vocab[sym + "</w>"] = static_cast<std::int64_t>(256 + i);
  }
  vocab["<|startoftext|>"] = kTinyBOS;
  vocab["<|endoftext|>"] = kTinyEOS;
  std::ofstream(dir + "/vocab.json") << boost::json::serialize(vocab);
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\n";
  if (!pad_token.empty()) {
    boost::json::object special{
        {"bos_token", "<|startoftext|>"},
        {"eos_token", "<|endoftext|>"},
        {"pad_token", pad_token},
        {"unk_token", "<|endoftext|>"}};
    std::ofstream(dir + "/special_tokens_map.json") << boost::json::serialize(special);
  }
}

std::vector<std::int64_t> tiny_token_ids(const std::string& prompt, std::int64_t length, std::int64_t pad) {
  std::vector<std::int64_t> ids{kTinyBOS};
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    const char c = prompt[i];
    if (c == ' ') continue;
    const bool last = i + 1 == prompt.size() || prompt[i + 1] == ' ';
    ids.push_back(last ? c + 223 : c - 33);
  }
  // Overlong: <start>, the first length - 2 content ids, <end> (models.md 3.5 item 6).
  if (static_cast<std::int64_t>(ids.size()) > length - 1) ids.resize(static_cast<std::size_t>(length - 1));
  ids.push_back(kTinyEOS);
  ids.resize(static_cast<std::size_t>(length), pad);
  return ids;
}

TensorMap to_open_clip(const TensorMap& w, const TinyCLIPSpec& s) {
  TensorMap o;
  // One tower's blocks: open_clip prefix ("visual." or ""), transformers prefix, layer count.
  auto blocks = [&](const std::string& open, const std::string& hf, std::int64_t layers) {
    for (std::int64_t i = 0; i < layers; ++i) {
      const std::string a = open + "transformer.resblocks." + std::to_string(i) + ".";
      const std::string b = hf + "encoder.layers." + std::to_string(i) + ".";
      for (const char* kind : {"weight", "bias"}) {
        const std::string k(kind);
        // Rows q | k | v.
        o[a + "attn.in_proj_" + k] = at::cat(
            {w.at(b + "self_attn.q_proj." + k), w.at(b + "self_attn.k_proj." + k), w.at(b + "self_attn.v_proj." + k)},
            0);
        o[a + "attn.out_proj." + k] = w.at(b + "self_attn.out_proj." + k);
        o[a + "ln_1." + k] = w.at(b + "layer_norm1." + k);
        o[a + "ln_2." + k] = w.at(b + "layer_norm2." + k);
        o[a + "mlp.c_fc." + k] = w.at(b + "mlp.fc1." + k);
        o[a + "mlp.c_proj." + k] = w.at(b + "mlp.fc2." + k);
      }
    }
  };
  blocks("visual.", "vision_model.", s.layers);
  blocks("", "text_model.", s.text_layers);
  o["visual.conv1.weight"] = w.at("vision_model.embeddings.patch_embedding.weight");
  o["visual.class_embedding"] = w.at("vision_model.embeddings.class_embedding");
  o["visual.positional_embedding"] = w.at("vision_model.embeddings.position_embedding.weight");
  for (const char* kind : {"weight", "bias"}) {
    const std::string k(kind);
    o["visual.ln_pre." + k] = w.at("vision_model.pre_layrnorm." + k);
    o["visual.ln_post." + k] = w.at("vision_model.post_layernorm." + k);
    o["ln_final." + k] = w.at("text_model.final_layer_norm." + k);
  }
  // open_clip right-multiplies: x @ proj with proj [width, embed_dim].
  o["visual.proj"] = w.at("visual_projection.weight").t().contiguous();
  o["text_projection"] = w.at("text_projection.weight").t().contiguous();
  o["token_embedding.weight"] = w.at("text_model.embeddings.token_embedding.weight");
  o["positional_embedding"] = w.at("text_model.embeddings.position_embedding.weight");
  o["logit_scale"] = w.at("logit_scale");
  return o;
}

std::string tiny_open_clip_config(const TinyCLIPSpec& s) {
  boost::json::object vision{
      {"image_size", s.image}, {"layers", s.layers},
      {"width", s.hidden},     {"head_width", s.hidden / s.heads},
      {"patch_size", s.patch}, {"mlp_ratio", static_cast<double>(s.mlp) / static_cast<double>(s.hidden)}};
  boost::json::object text{{"context_length", s.positions},
                           {"vocab_size", s.vocab},
                           {"width", s.text_hidden},
                           {"heads", s.text_heads},
                           {"layers", s.text_layers},
                           {"mlp_ratio", static_cast<double>(s.text_mlp) / static_cast<double>(s.text_hidden)}};
  boost::json::object config{
      {"embed_dim", s.projection}, {"quick_gelu", s.act == "quick_gelu"}, {"vision_cfg", vision}, {"text_cfg", text}};
  return boost::json::serialize(config);
}

TensorMap write_tiny_hpsv2(const std::string& dir, const TinyCLIPSpec& spec, std::uint64_t seed) {
  std::filesystem::create_directories(dir);
  TensorMap w = tiny_clip_weights(spec, seed);
  safetensors_save(dir + "/hpsv2.safetensors", to_open_clip(w, spec), {{"format", "pt"}});
  std::ofstream(dir + "/open_clip_config.json") << tiny_open_clip_config(spec);
  write_tiny_clip_tokenizer(dir, spec.pad_token);
  return w;
}

namespace {

at::Tensor ref_layer_norm(const TensorMap& w, const at::Tensor& x, const std::string& k) {
  return (x - x.mean(-1, true)) / (x.var(-1, false, true) + 1e-5).sqrt() * w.at(k + ".weight") + w.at(k + ".bias");
}

// Pre-LN encoder layers of models.md 3.3 under `prefix` ("text_model.encoder.layers."): attention
// with softmax(q k^T / sqrt(d)) (future positions masked when `causal`), then the MLP.
at::Tensor ref_encoder(
    const TensorMap& w,
    at::Tensor x,
    const std::string& prefix,
    std::int64_t layers,
    std::int64_t heads,
    const std::string& act,
    bool causal) {
  const std::int64_t b = x.size(0), n = x.size(1), dim = x.size(2), d = dim / heads;
  auto lin = [&](const at::Tensor& t, const std::string& k) {
    return at::matmul(t, w.at(k + ".weight").t()) + w.at(k + ".bias");
  };
  auto split = [&](const at::Tensor& t) { return t.view({b, n, heads, d}).permute({0, 2, 1, 3}); };
  const at::Tensor future = at::ones({n, n}, at::kBool).triu(1);
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string p = prefix + std::to_string(i) + ".";
    const at::Tensor h = ref_layer_norm(w, x, p + "layer_norm1");
    const at::Tensor q = split(lin(h, p + "self_attn.q_proj")), k = split(lin(h, p + "self_attn.k_proj")),
                     v = split(lin(h, p + "self_attn.v_proj"));
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));
    if (causal) scores = scores.masked_fill(future, -INFINITY);
    const at::Tensor o = at::matmul(at::softmax(scores, -1), v);
    x = x + lin(o.permute({0, 2, 1, 3}).reshape({b, n, dim}), p + "self_attn.out_proj");
    at::Tensor m = lin(ref_layer_norm(w, x, p + "layer_norm2"), p + "mlp.fc1");
    m = act == "gelu" ? 0.5 * m * (1 + at::erf(m / std::sqrt(2.0))) : m * at::sigmoid(1.702 * m);
    x = x + lin(m, p + "mlp.fc2");
  }
  return x;
}

}  // namespace

at::Tensor reference_image_features(const TensorMap& w, const at::Tensor& pixels, const TinyCLIPSpec& s) {
  const std::int64_t b = pixels.size(0), p = s.patch, g = s.image / s.patch, dim = s.hidden;
  // Patches cut out row-major over the grid, times the flattened kernel (a stride-p convolution).
  const at::Tensor patches = pixels.view({b, 3, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}).reshape({b, g * g, 3 * p * p});
  at::Tensor x = at::matmul(patches, w.at("vision_model.embeddings.patch_embedding.weight").view({dim, -1}).t());
  x = at::cat({w.at("vision_model.embeddings.class_embedding").view({1, 1, dim}).expand({b, 1, dim}), x}, 1) +
      w.at("vision_model.embeddings.position_embedding.weight");
  x = ref_layer_norm(w, x, "vision_model.pre_layrnorm");
  x = ref_encoder(w, x, "vision_model.encoder.layers.", s.layers, s.heads, s.act, /*causal=*/false);
  const at::Tensor pooled = ref_layer_norm(w, x.select(1, 0), "vision_model.post_layernorm");
  return at::matmul(pooled, w.at("visual_projection.weight").t());
}

at::Tensor reference_text_features(const TensorMap& w, const at::Tensor& ids, const TinyCLIPSpec& s) {
  const std::int64_t b = ids.size(0), l = ids.size(1);
  at::Tensor x = w.at("text_model.embeddings.token_embedding.weight").index_select(0, ids.flatten()).view({b, l, -1}) +
                 w.at("text_model.embeddings.position_embedding.weight").narrow(0, 0, l);
  x = ref_encoder(w, x, "text_model.encoder.layers.", s.text_layers, s.text_heads, s.act, /*causal=*/true);
  x = ref_layer_norm(w, x, "text_model.final_layer_norm");
  std::vector<at::Tensor> pooled;
  for (std::int64_t i = 0; i < b; ++i) {
    std::int64_t eos = 0;
    while (ids[i][eos].item<std::int64_t>() != kTinyEOS) ++eos;  // the first end-of-text token
    pooled.push_back(x[i][eos]);
  }
  return at::matmul(at::stack(pooled), w.at("text_projection.weight").t());
}

}  // namespace sdpo::test
