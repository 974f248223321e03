// CLIP vision transformer (research/models.md 7 config table, forward and keys; 8A numerics).

#include "sdpo/models/clip/clip_vision_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <boost/json/object.hpp>

namespace sdpo::clip_text {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// The vision keys of `hf` into `c`; errors name `hf`'s prefix ("vision_config.") and key.
void read_vision_keys(const nn::HFConfig& hf, CLIPVisionConfig& c) {
  c.hidden_size = hf.positive_integer("hidden_size", c.hidden_size);
  c.intermediate_size = hf.positive_integer("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = hf.positive_integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = hf.positive_integer("num_attention_heads", c.num_attention_heads);
  c.num_channels = hf.positive_integer("num_channels", c.num_channels);
  c.image_size = hf.positive_integer("image_size", c.image_size);
  c.patch_size = hf.positive_integer("patch_size", c.patch_size);
  c.hidden_act = hf.string("hidden_act", c.hidden_act, {"gelu", "quick_gelu"});
  c.layer_norm_eps = hf.number("layer_norm_eps", c.layer_norm_eps);
  if (c.hidden_size % c.num_attention_heads != 0) {
    hf.fail(
        "num_attention_heads",
        std::to_string(c.num_attention_heads) + " heads do not divide hidden_size " + std::to_string(c.hidden_size));
  }
  if (c.image_size % c.patch_size != 0) {
    hf.fail("patch_size", std::to_string(c.patch_size) + " does not divide image_size " + std::to_string(c.image_size));
  }
  if (!(c.layer_norm_eps > 0.0)) hf.fail("layer_norm_eps", "expected a positive number");
}

}  // namespace

CLIPVisionConfig CLIPVisionConfig::from_hf(const nn::HFConfig& hf) {
  CLIPVisionConfig c;
  if (std::optional<nn::HFConfig> vision = hf.child("vision_config")) {
    // A CLIPModel config. Older files may also carry "vision_config_dict", whose keys win.
    if (std::optional<nn::HFConfig> legacy = hf.child("vision_config_dict")) {
      boost::json::object merged = vision->object();
      for (const auto& kv : legacy->object()) merged[kv.key()] = kv.value();
      read_vision_keys(nn::HFConfig(std::move(merged), hf.file(), "vision_config."), c);
    } else {
      read_vision_keys(*vision, c);
    }
  } else {
    read_vision_keys(hf, c);  // CLIPVisionModel(WithProjection): the keys at the top level
  }
  // CLIPModel sizes visual_projection by its own projection_dim; CLIPVisionModelWithProjection
  // by the vision config's: in both cases the top-level key.
  c.projection_dim = hf.integer("projection_dim", c.projection_dim);
  if (c.projection_dim < 1) hf.fail("projection_dim", "expected a positive integer");
  return c;
}

CLIPVisionConfig CLIPVisionConfig::load(const std::string& path) { return from_hf(nn::HFConfig::load(path)); }

CLIPEncoderConfig CLIPVisionConfig::encoder() const { return CLIPEncoderConfig::of(*this); }

CLIPVisionEmbeddingsImpl::CLIPVisionEmbeddingsImpl(const CLIPVisionConfig& cfg, const at::TensorOptions& options)
    : image_size_(cfg.image_size), channels_(cfg.num_channels) {
  // transformers draws class_embedding from N(0, 1); real runs overwrite it from the file.
  at::Tensor cls = at::empty({cfg.hidden_size}, options);
  if (options.device().type() != c10::DeviceType::Meta) {
    at::NoGradGuard no_grad;
    cls.normal_(0.0, 1.0);
  }
  class_embedding = register_parameter("class_embedding", cls);
  patch_embedding_ = register_module(
      "patch_embedding", nn::Conv2d(
                             cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size, 0, options,
                             /*bias=*/false));
  position_embedding_ =
      register_module("position_embedding", nn::Embedding(cfg.num_positions(), cfg.hidden_size, options));
}

at::Tensor CLIPVisionEmbeddingsImpl::forward(const at::Tensor& pixel_values) {
  TORCH_CHECK(
      pixel_values.dim() == 4 && pixel_values.size(1) == channels_ && pixel_values.size(2) == image_size_ &&
          pixel_values.size(3) == image_size_,
      "CLIP vision: expected pixel_values (B, ", channels_, ", ", image_size_, ", ", image_size_, "), got ",
      pixel_values.sizes());
  const std::int64_t b = pixel_values.size(0);
  // models.md 7 steps 1-2: (B, D, g, g) -> (B, g*g, D), class token first, plus positions 0..N-1.
  const at::Tensor patches =
      patch_embedding_(pixel_values.to(class_embedding.scalar_type())).flatten(2).transpose(1, 2);
  const at::Tensor cls = class_embedding.view({1, 1, -1}).expand({b, 1, class_embedding.size(0)});
  return at::cat({cls, patches}, 1) + position_embedding_->weight.unsqueeze(0);
}

CLIPVisionTransformerImpl::CLIPVisionTransformerImpl(const CLIPVisionConfig& cfg, const at::TensorOptions& options)
    : cfg_(cfg) {
  embeddings_ = register_module("embeddings", CLIPVisionEmbeddings(cfg, options));
  pre_layrnorm_ = register_module("pre_layrnorm", nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, options));
  encoder_ = register_module("encoder", CLIPEncoder(cfg.encoder(), options));
  post_layernorm_ = register_module("post_layernorm", nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, options));
}

CLIPVisionOutput CLIPVisionTransformerImpl::forward(const at::Tensor& pixel_values) {
  // models.md 7 steps 3-5: pre-LN, the encoder with every token seeing every token, post-LN on
  // the class token only.
  CLIPVisionOutput out;
  out.last_hidden_state = encoder_->forward(pre_layrnorm_(embeddings_->forward(pixel_values)), /*causal=*/false);
  out.pooled = post_layernorm_(out.last_hidden_state.select(1, 0));
  return out;
}

CLIPVisionModelWithProjectionImpl::CLIPVisionModelWithProjectionImpl(
    const CLIPVisionConfig& cfg, const at::TensorOptions& options) {
  vision_model_ = register_module("vision_model", CLIPVisionTransformer(cfg, options));
  visual_projection_ =
      register_module("visual_projection", nn::Linear(cfg.hidden_size, cfg.projection_dim, /*bias=*/false, options));
}

at::Tensor CLIPVisionModelWithProjectionImpl::get_image_features(const at::Tensor& pixel_values) {
  return visual_projection_(vision_model_->forward(pixel_values).pooled);  // models.md 7 step 6
}

bool is_clip_text_side_key(const std::string& key) {
  return starts_with(key, "text_model.") || key == "text_projection.weight" || key == "logit_scale";
}

}  // namespace sdpo::clip_text
