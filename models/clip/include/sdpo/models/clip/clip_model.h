#pragma once
// transformers' CLIPModel (research/models.md 6.2, 7): the text tower (clip_text_model.h) and the
// vision tower (clip_vision_model.h) side by side, each with its projection, and the learned
// temperature `logit_scale`. The image-text reward models (PickScore, HPSv2) score with it; the
// towers are the shared ones, not copies.
//
// Parameter paths are transformers' CLIPModel state-dict names, so a full CLIPModel file (both
// towers, both projections, logit_scale) loads strictly: "text_model.*" (CLIPTextTransformer),
// "vision_model.*" (CLIPVisionTransformer), "visual_projection.weight" [P, Dv],
// "text_projection.weight" [P, Dt] (both Linear without bias), "logit_scale" [] (a scalar).
//
// Shapes: ids (B, L) int64; pixel_values (B, C, S, S); features (B, P) in the parameters' dtype.
//
// Example:
//   auto cfg = CLIPConfig::load(folder + "/config.json");
//   CLIPModel clip(cfg, at::TensorOptions().dtype(at::kFloat));
//   at::Tensor cos = paired_cosine(clip->get_image_features(pixels), clip->get_text_features(ids));
//
// Thread safety: modules are not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/clip/clip_vision_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"

namespace sdpo::clip_text {

/// transformers' CLIPConfig: both towers' configs and the shared projection width
/// (vision.projection_dim, also text_projection's output width).
struct CLIPConfig {
  CLIPTextConfig text;
  CLIPVisionConfig vision;
  /// logit_scale's value before a file overwrites it: ln(1 / 0.07) (models.md 7).
  double logit_scale_init_value = 2.6592;

  std::int64_t projection_dim() const { return vision.projection_dim; }

  /// Reads a CLIPModel config.json: "text_config" (a legacy "text_config_dict" overriding it),
  /// "vision_config" (likewise "vision_config_dict"), the top-level "projection_dim" and
  /// "logit_scale_init_value". Both tower objects are required (a tower-only config is refused
  /// naming the missing key). Errors are sdpo::ManifestError naming the file and key.
  static CLIPConfig from_hf(const nn::HFConfig& cfg);
  /// from_hf(HFConfig::load(path)).
  static CLIPConfig load(const std::string& path);
};

/// transformers' CLIPModel (see the file comment for the keys).
class CLIPModelImpl : public torch::nn::Module {
 public:
  CLIPModelImpl(const CLIPConfig& cfg, const at::TensorOptions& options);

  /// get_text_features: text_projection(pooled), the pooled state being the final-layer-normed
  /// hidden state at each row's end-of-text token (models.md 3.3, 6.2). ids: (B, L) int64 on the
  /// parameters' device, L <= text.max_position_embeddings. Returns (B, P).
  at::Tensor get_text_features(const at::Tensor& ids);
  /// get_image_features: visual_projection(post_layernorm(CLS)) (models.md 7). pixel_values:
  /// (B, C, S, S), any floating dtype, on the parameters' device. Returns (B, P).
  at::Tensor get_image_features(const at::Tensor& pixel_values);

  const CLIPConfig& config() const { return cfg_; }
  CLIPTextTransformer& text_model() { return text_model_; }
  CLIPVisionTransformer& vision_model() { return vision_model_; }

  /// The learned log temperature, a 0-dimensional parameter; CLIP's logits are
  /// exp(logit_scale) * cosine.
  at::Tensor logit_scale;

 private:
  CLIPConfig cfg_;
  CLIPTextTransformer text_model_{nullptr};
  CLIPVisionTransformer vision_model_{nullptr};
  nn::Linear visual_projection_{nullptr}, text_projection_{nullptr};
};
TORCH_MODULE(CLIPModel);

/// Cosine similarity of row i of `image_features` with row i of `text_features`: the diagonal
/// of normalize(img) @ normalize(txt)^T, computed in float32. (B, P), (B, P) -> (B,) float32.
at::Tensor paired_cosine(const at::Tensor& image_features, const at::Tensor& text_features);

/// The image-text score the reward models share (models.md 6.0, 6.2, 6.3), without a logit
/// scale: in chunks of `batch_size` rows, images (B, 3, H, W) float in [0, 1] (any device) ->
/// clip_preprocess to the vision tower's image_size (224 for the real towers: the CLIP-L
/// processor) -> image features; ids (B, L) int64 (any device) -> text features; paired_cosine.
/// The ids' columns after a chunk's last end-of-text token are not run (the pooled states, taken
/// at that token under causal attention, do not depend on them). Runs on the device of the
/// model's parameters and in their dtype; returns (B,) float32 there. No gradient is recorded.
at::Tensor clip_paired_scores(
    CLIPModelImpl& model, const at::Tensor& images, const at::Tensor& ids, std::int64_t batch_size);

}  // namespace sdpo::clip_text
