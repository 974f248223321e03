// open_clip's CLIP as transformers' CLIPModel (research/models.md 6.3: ViT-H-14 config, open_clip
// key names and their mapping to CLIPModel names, tokenizer zero padding; 8A numerics).

#include "sdpo/models/clip/open_clip.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"

namespace sdpo::clip_text {
namespace {

using NamePair = std::pair<const char*, const char*>;  // {open_clip name, CLIPModel name}

// Names inside one tower, relative to "visual." / "vision_model." and "" / "text_model."
// (models.md 6.3 mapping list).
const NamePair kVisionNames[] = {
    {"conv1.weight", "embeddings.patch_embedding.weight"},
    {"class_embedding", "embeddings.class_embedding"},
    {"positional_embedding", "embeddings.position_embedding.weight"},
    {"ln_pre.weight", "pre_layrnorm.weight"},
    {"ln_pre.bias", "pre_layrnorm.bias"},
    {"ln_post.weight", "post_layernorm.weight"},
    {"ln_post.bias", "post_layernorm.bias"},
};
const NamePair kTextNames[] = {
    {"token_embedding.weight", "embeddings.token_embedding.weight"},
    {"positional_embedding", "embeddings.position_embedding.weight"},
    {"ln_final.weight", "final_layer_norm.weight"},
    {"ln_final.bias", "final_layer_norm.bias"},
};
// Names inside one residual block, relative to "transformer.resblocks.{i}." / "encoder.layers.{i}.".
const NamePair kBlockNames[] = {
    {"ln_1.weight", "layer_norm1.weight"},
    {"ln_1.bias", "layer_norm1.bias"},
    {"ln_2.weight", "layer_norm2.weight"},
    {"ln_2.bias", "layer_norm2.bias"},
    {"attn.out_proj.weight", "self_attn.out_proj.weight"},
    {"attn.out_proj.bias", "self_attn.out_proj.bias"},
    {"mlp.c_fc.weight", "mlp.fc1.weight"},
    {"mlp.c_fc.bias", "mlp.fc1.bias"},
    {"mlp.c_proj.weight", "mlp.fc2.weight"},
    {"mlp.c_proj.bias", "mlp.fc2.bias"},
};
const char* const kQKV[] = {"q_proj", "k_proj", "v_proj"};

constexpr const char* kOpenBlocks = "transformer.resblocks.";
constexpr const char* kHFLayers = "encoder.layers.";

bool has_prefix(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

// "<digits>.<rest>" -> (digits, rest); false if `s` does not have that form.
bool split_index(const std::string& s, std::string& index, std::string& rest) {
  const std::size_t dot = s.find('.');
  if (dot == 0 || dot == std::string::npos) return false;
  for (std::size_t i = 0; i < dot; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  if (dot > 1 && s[0] == '0') return false;  // "01" is not a module index
  index = s.substr(0, dot);
  rest = s.substr(dot + 1);
  return true;
}

// `rest` looked up in the `from` column of `table`, returning the other column; "" if absent.
template <std::size_t N>
std::string lookup(const NamePair (&table)[N], const std::string& rest, bool open_to_hf) {
  for (const auto& [open, hf] : table) {
    if (rest == (open_to_hf ? open : hf)) return open_to_hf ? hf : open;
  }
  return "";
}

[[noreturn]] void bad_key(const std::string& source, const std::string& key, const std::string& what) {
  throw FileError(source, "open_clip key '" + key + "': " + what);
}

// One open_clip block tensor (`rest` relative to the block) into `out` under `hf_prefix`
// ("vision_model.encoder.layers.3.").
void map_block_tensor(
    const std::string& source,
    const std::string& key,
    const std::string& rest,
    const at::Tensor& t,
    const std::string& hf_prefix,
    TensorMap& out) {
  if (rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias") {
    // Rows q | k | v (models.md 6.3).
    const bool weight = rest == "attn.in_proj_weight";
    if (t.dim() != (weight ? 2 : 1) || t.size(0) % 3 != 0) {
      bad_key(
          source, key,
          "shape " + shape_text(t.sizes()) + " cannot be split into q, k and v (expected " +
              (weight ? "[3 * width, width]" : "[3 * width]") + ")");
    }
    const std::int64_t w = t.size(0) / 3;
    for (std::int64_t i = 0; i < 3; ++i) {
      out[hf_prefix + "self_attn." + kQKV[i] + (weight ? ".weight" : ".bias")] = t.narrow(0, i * w, w).contiguous();
    }
    return;
  }
  const std::string hf = lookup(kBlockNames, rest, true);
  if (hf.empty()) bad_key(source, key, "not a key of open_clip's CLIP (models.md 6.3)");
  out[hf_prefix + hf] = t;
}

at::Tensor transposed(const std::string& source, const std::string& key, const at::Tensor& t) {
  if (t.dim() != 2) bad_key(source, key, "expected a matrix [width, embed_dim], got shape " + shape_text(t.sizes()));
  return t.t().contiguous();
}

// The open_clip layout of a CLIPModel tensor's shape (for error messages).
std::vector<std::int64_t> open_clip_shape(const std::string& hf_key, at::IntArrayRef hf_shape) {
  std::vector<std::int64_t> s = hf_shape.vec();
  if (hf_key == "visual_projection.weight" || hf_key == "text_projection.weight") std::reverse(s.begin(), s.end());
  for (const char* p : kQKV) {
    if (hf_key.find(std::string("self_attn.") + p + ".") != std::string::npos && !s.empty()) s[0] *= 3;
  }
  return s;
}

[[noreturn]] void refuse(const std::string& source, const std::string& component, const std::string& what) {
  throw Error(source + ": " + component + ": " + what);
}

}  // namespace

CLIPConfig open_clip_vit_h_14() {
  CLIPConfig c;
  c.vision.hidden_size = 1280;
  c.vision.intermediate_size = 5120;
  c.vision.num_hidden_layers = 32;
  c.vision.num_attention_heads = 16;  // head width 80
  c.vision.num_channels = 3;
  c.vision.image_size = 224;
  c.vision.patch_size = 14;
  c.vision.hidden_act = "gelu";
  c.vision.layer_norm_eps = 1e-5;
  c.vision.projection_dim = 1024;
  c.text.vocab_size = 49408;
  c.text.hidden_size = 1024;
  c.text.intermediate_size = 4096;
  c.text.num_hidden_layers = 24;
  c.text.num_attention_heads = 16;
  c.text.max_position_embeddings = 77;
  c.text.hidden_act = "gelu";
  c.text.layer_norm_eps = 1e-5;
  c.text.eos_token_id = 2;  // open_clip pools at argmax(ids), the legacy rule
  c.logit_scale_init_value = std::log(1.0 / 0.07);
  return c;
}

CLIPConfig open_clip_config(const nn::HFConfig& hf, const CLIPConfig& base) {
  auto only = [](const nn::HFConfig& cfg, std::initializer_list<const char*> keys) {
    for (const auto& kv : cfg.object()) {
      const std::string key(kv.key());
      if (kv.value().is_null()) continue;
      const bool known = std::any_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; });
      if (!known) {
        std::string list;
        for (const char* k : keys) list += std::string(list.empty() ? "" : ", ") + k;
        cfg.fail(key, "not supported by this CLIP implementation (accepted keys: " + list + ")");
      }
    }
  };
  auto mlp_width = [](const nn::HFConfig& cfg, std::int64_t width, double fallback_ratio) {
    const double ratio = cfg.number("mlp_ratio", fallback_ratio);
    if (!(ratio > 0.0 && ratio < 1e4)) cfg.fail("mlp_ratio", "expected a positive ratio (below 1e4)");
    const auto m = static_cast<std::int64_t>(static_cast<double>(width) * ratio);  // open_clip: int(width * ratio)
    if (m < 1) cfg.fail("mlp_ratio", "gives an MLP width of 0");
    return m;
  };

  CLIPConfig c = base;
  only(hf, {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"});
  c.vision.projection_dim = hf.positive_integer("embed_dim", base.projection_dim());
  if (hf.has("quick_gelu")) {
    const std::string act = hf.boolean("quick_gelu", false) ? "quick_gelu" : "gelu";
    c.vision.hidden_act = act;
    c.text.hidden_act = act;
  }

  if (std::optional<nn::HFConfig> v = hf.child("vision_cfg")) {
    only(*v, {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio"});
    const auto& b = base.vision;
    c.vision.image_size = v->positive_integer("image_size", b.image_size);
    c.vision.num_hidden_layers = v->positive_integer("layers", b.num_hidden_layers);
    c.vision.hidden_size = v->positive_integer("width", b.hidden_size);
    const std::int64_t head_width = v->positive_integer("head_width", b.hidden_size / b.num_attention_heads);
    if (c.vision.hidden_size % head_width != 0) {
      v->fail(
          "head_width", std::to_string(head_width) + " does not divide width " + std::to_string(c.vision.hidden_size));
    }
    c.vision.num_attention_heads = c.vision.hidden_size / head_width;
    c.vision.patch_size = v->positive_integer("patch_size", b.patch_size);
    if (c.vision.image_size % c.vision.patch_size != 0) {
      v->fail(
          "patch_size",
          std::to_string(c.vision.patch_size) + " does not divide image_size " + std::to_string(c.vision.image_size));
    }
    c.vision.intermediate_size = mlp_width(
        *v, c.vision.hidden_size, static_cast<double>(b.intermediate_size) / static_cast<double>(b.hidden_size));
  }

  if (std::optional<nn::HFConfig> t = hf.child("text_cfg")) {
    only(*t, {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"});
    const auto& b = base.text;
    c.text.max_position_embeddings = t->positive_integer("context_length", b.max_position_embeddings);
    if (c.text.max_position_embeddings < 2) t->fail("context_length", "expected at least 2 (start and end tokens)");
    c.text.vocab_size = t->positive_integer("vocab_size", b.vocab_size);
    c.text.hidden_size = t->positive_integer("width", b.hidden_size);
    c.text.num_attention_heads = t->positive_integer("heads", b.num_attention_heads);
    if (c.text.hidden_size % c.text.num_attention_heads != 0) {
      t->fail(
          "heads", std::to_string(c.text.num_attention_heads) + " heads do not divide width " +
                       std::to_string(c.text.hidden_size));
    }
    c.text.num_hidden_layers = t->positive_integer("layers", b.num_hidden_layers);
    c.text.intermediate_size = mlp_width(
        *t, c.text.hidden_size, static_cast<double>(b.intermediate_size) / static_cast<double>(b.hidden_size));
  }
  return c;
}

TensorMap open_clip_to_hf(const TensorMap& open_clip, const std::string& source) {
  TensorMap out;
  for (const auto& [key, t] : open_clip) {
    if (!t.defined()) bad_key(source, key, "holds no tensor");
    if (key == "logit_scale") {
      out["logit_scale"] = t;
      continue;
    }
    if (key == "text_projection") {
      out["text_projection.weight"] = transposed(source, key, t);
      continue;
    }
    if (key == "visual.proj") {
      out["visual_projection.weight"] = transposed(source, key, t);
      continue;
    }
    const bool vision = has_prefix(key, "visual.");
    const std::string rest = vision ? key.substr(std::strlen("visual.")) : key;
    const std::string hf_tower = vision ? "vision_model." : "text_model.";
    std::string index, inner;
    if (has_prefix(rest, kOpenBlocks) && split_index(rest.substr(std::strlen(kOpenBlocks)), index, inner)) {
      map_block_tensor(source, key, inner, t, hf_tower + kHFLayers + index + ".", out);
      continue;
    }
    const std::string hf = vision ? lookup(kVisionNames, rest, true) : lookup(kTextNames, rest, true);
    if (hf.empty()) bad_key(source, key, "not a key of open_clip's CLIP (models.md 6.3)");
    out[hf_tower + hf] = t;
  }
  return out;
}

std::string open_clip_key(const std::string& hf_key) {
  if (hf_key == "logit_scale") return "logit_scale";
  if (hf_key == "text_projection.weight") return "text_projection";
  if (hf_key == "visual_projection.weight") return "visual.proj";
  const bool vision = has_prefix(hf_key, "vision_model.");
  if (!vision && !has_prefix(hf_key, "text_model.")) return "";
  const std::string open_tower = vision ? "visual." : "";
  const std::string rest = hf_key.substr(std::strlen(vision ? "vision_model." : "text_model."));
  std::string index, inner;
  if (has_prefix(rest, kHFLayers) && split_index(rest.substr(std::strlen(kHFLayers)), index, inner)) {
    std::string open;
    for (const char* p : kQKV) {
      if (inner == std::string("self_attn.") + p + ".weight") open = "attn.in_proj_weight";
      if (inner == std::string("self_attn.") + p + ".bias") open = "attn.in_proj_bias";
    }
    if (open.empty()) open = lookup(kBlockNames, inner, false);
    return open.empty() ? "" : open_tower + kOpenBlocks + index + "." + open;
  }
  const std::string open = vision ? lookup(kVisionNames, rest, false) : lookup(kTextNames, rest, false);
  return open.empty() ? "" : open_tower + open;
}

void load_open_clip_state_dict(
    CLIPModelImpl& model, const TensorMap& open_clip, const std::string& source, const std::string& component) {
  const TensorMap weights = open_clip_to_hf(open_clip, source);
  const TensorMap targets = module_state_dict(model);
  // Every check names the open_clip key, the one the file holds.
  for (const auto& [key, target] : targets) {
    const std::string open = open_clip_key(key);
    auto it = weights.find(key);
    if (it == weights.end()) {
      refuse(
          source, component,
          "missing key '" + open + "' (shape " + shape_text(open_clip_shape(key, target.sizes())) + "; CLIPModel's '" +
              key + "')");
    }
    if (it->second.sizes() != target.sizes()) {
      const auto found = open_clip.find(open);
      const std::string actual = found != open_clip.end() ? shape_text(found->second.sizes()) : "?";
      refuse(
          source, component,
          "key '" + open + "' has shape " + actual + " but the configured model expects " +
              shape_text(open_clip_shape(key, target.sizes())) + " (CLIPModel's '" + key +
              "'; does the architecture config match the checkpoint?)");
    }
  }
  for (const auto& kv : weights) {
    if (!targets.count(kv.first)) {
      refuse(
          source, component,
          "unexpected key '" + open_clip_key(kv.first) + "' (CLIPModel's '" + kv.first +
              "', which the configured model does not have; does the architecture config match the checkpoint?)");
    }
  }
  module_load_state_dict(model, weights, /*strict=*/true, source, component);
}

at::Tensor open_clip_tokenize(
    const CLIPTokenizer& tokenizer, const std::vector<std::string>& prompts, std::int64_t context_length) {
  TORCH_CHECK(context_length >= 2, "open_clip_tokenize: context_length must be >= 2, got ", context_length);
  const auto b = static_cast<std::int64_t>(prompts.size());
  at::Tensor ids = at::zeros({b, context_length}, at::kLong);  // zero padding (models.md 6.3)
  auto* out = ids.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < b; ++i) {
    const std::vector<std::int64_t> content = tokenizer.tokenize(prompts[static_cast<std::size_t>(i)]);
    // open_clip truncates <start> + content + <end> to context_length and writes <end> last:
    // the same as keeping context_length - 2 content ids (models.md 3.5 item 6).
    const auto keep = std::min<std::int64_t>(static_cast<std::int64_t>(content.size()), context_length - 2);
    std::int64_t* row = out + i * context_length;
    row[0] = tokenizer.bos_id();
    std::copy(content.begin(), content.begin() + keep, row + 1);
    row[keep + 1] = tokenizer.eos_id();
  }
  return ids;
}

}  // namespace sdpo::clip_text
