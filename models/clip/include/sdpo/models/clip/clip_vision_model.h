#pragma once
// CLIP's vision transformer in transformers' layout (research/models.md 7), the image side of the
// CLIP reward models (the aesthetic predictor's ViT-L/14, PickScore's and HPSv2's ViT-H/14). It
// reuses clip_text's CLIPEncoder, run without the causal mask.
//
// Parameter paths are transformers' state-dict names: CLIPVisionModelWithProjection holds the
// tower under "vision_model." and the projection as "visual_projection.weight", which are also the
// vision half of a CLIPModel file ("vision_model.embeddings.patch_embedding.weight", ...,
// "vision_model.post_layernorm.bias", "visual_projection.weight").
//
// Shapes: pixel_values (B, C, S, S) with S = image_size (what clip_image.h's clip_preprocess
// makes); tokens N = (S / patch_size)^2 + 1 (the class token first); hidden states (B, N, D);
// image features (B, projection_dim).
//
// Example:
//   auto cfg = CLIPVisionConfig::load(folder + "/config.json");   // CLIPModel or CLIPVisionModel
//   CLIPVisionModelWithProjection clip(cfg, at::TensorOptions().dtype(at::kFloat));
//   at::Tensor features = clip->get_image_features(clip_preprocess(images));   // (B, P)
//
// Thread safety: modules are not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"

namespace sdpo::clip_text {

/// transformers' CLIPVisionConfig fields that shape the tower, plus the projection width. The
/// defaults are that class's defaults (a key absent from config.json takes them; recent re-saves
/// of openai/clip-vit-large-patch14 list only the keys that differ). ViT-L/14: 1024 / 24 layers /
/// 16 heads / 4096 / patch 14 / image 224 / "quick_gelu" / projection 768 (models.md 7).
struct CLIPVisionConfig {
  std::int64_t hidden_size = 768;
  std::int64_t intermediate_size = 3072;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t num_channels = 3;
  std::int64_t image_size = 224;
  std::int64_t patch_size = 32;
  std::string hidden_act = "quick_gelu";  ///< "gelu" (erf) or "quick_gelu"
  double layer_norm_eps = 1e-5;
  std::int64_t projection_dim = 512;  ///< visual_projection: hidden_size -> projection_dim

  /// Reads and validates either a CLIPModel config (the "vision_config" object, overlaid by a
  /// legacy "vision_config_dict" as transformers does, and the top-level "projection_dim") or a
  /// CLIPVisionModel / CLIPVisionModelWithProjection config (the same keys at the top level).
  /// Unsupported values throw sdpo::ManifestError naming the file and key.
  static CLIPVisionConfig from_hf(const nn::HFConfig& cfg);
  /// from_hf(HFConfig::load(path)).
  static CLIPVisionConfig load(const std::string& path);

  CLIPEncoderConfig encoder() const;
  std::int64_t grid() const { return image_size / patch_size; }       ///< patches per side
  std::int64_t num_positions() const { return grid() * grid() + 1; }  ///< patches + class token
};

/// Class token + patch embeddings + position embeddings: (B, C, S, S) -> (B, N, D). Keys:
/// "class_embedding" [D], "patch_embedding.weight" [D, C, p, p] (no bias),
/// "position_embedding.weight" [N, D].
class CLIPVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  CLIPVisionEmbeddingsImpl(const CLIPVisionConfig& cfg, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& pixel_values);

  at::Tensor class_embedding;

 private:
  std::int64_t image_size_, channels_;
  nn::Conv2d patch_embedding_{nullptr};
  nn::Embedding position_embedding_{nullptr};
};
TORCH_MODULE(CLIPVisionEmbeddings);

struct CLIPVisionOutput {
  at::Tensor last_hidden_state;  ///< (B, N, D): the encoder's output (no final norm), as transformers
  at::Tensor pooled;             ///< (B, D): post_layernorm of the class token
};

/// transformers' CLIPVisionTransformer: embeddings, pre_layrnorm (sic), encoder (not causal),
/// post_layernorm on the class token. Keys relative to it: "embeddings.*", "pre_layrnorm.*",
/// "encoder.layers.{i}.*", "post_layernorm.*".
class CLIPVisionTransformerImpl : public torch::nn::Module {
 public:
  CLIPVisionTransformerImpl(const CLIPVisionConfig& cfg, const at::TensorOptions& options);
  /// pixel_values: (B, num_channels, image_size, image_size), any floating dtype (cast to the
  /// parameters'), on the parameters' device.
  CLIPVisionOutput forward(const at::Tensor& pixel_values);
  const CLIPVisionConfig& config() const { return cfg_; }

 private:
  CLIPVisionConfig cfg_;
  CLIPVisionEmbeddings embeddings_{nullptr};
  nn::LayerNorm pre_layrnorm_{nullptr};
  CLIPEncoder encoder_{nullptr};
  nn::LayerNorm post_layernorm_{nullptr};
};
TORCH_MODULE(CLIPVisionTransformer);

/// The tower under "vision_model." and "visual_projection" (Linear D -> P, no bias): transformers'
/// CLIPVisionModelWithProjection, and the keys of a CLIPModel that get_image_features reads.
class CLIPVisionModelWithProjectionImpl : public torch::nn::Module {
 public:
  CLIPVisionModelWithProjectionImpl(const CLIPVisionConfig& cfg, const at::TensorOptions& options);
  CLIPVisionOutput forward(const at::Tensor& pixel_values) { return vision_model_->forward(pixel_values); }
  /// CLIPModel.get_image_features: visual_projection(pooled), (B, P) in the parameters' dtype.
  at::Tensor get_image_features(const at::Tensor& pixel_values);
  CLIPVisionTransformer& vision_model() { return vision_model_; }
  const CLIPVisionConfig& config() const { return vision_model_->config(); }

 private:
  CLIPVisionTransformer vision_model_{nullptr};
  nn::Linear visual_projection_{nullptr};
};
TORCH_MODULE(CLIPVisionModelWithProjection);

/// Whether `key` belongs to the text half of a CLIPModel file ("text_model.*",
/// "text_projection.weight") or is its "logit_scale": what an image-only consumer skips.
bool is_clip_text_side_key(const std::string& key);

}  // namespace sdpo::clip_text
