// transformers' CLIPModel (research/models.md 7 keys and CLIPModel forward, 6.2 PickScore's use
// of get_text_features / get_image_features, 6.3 HPSv2's cosine; 6.0 preprocessing).

#include "sdpo/models/clip/clip_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <boost/json/object.hpp>
#include <optional>
#include <vector>

#include "sdpo/models/clip/clip_image.h"

namespace sdpo::clip_text {
namespace {

// The tower object `key` of a CLIPModel config, overlaid by its legacy "<key>_dict" twin (whose
// keys win, as transformers merges them). Absent: the error names `key`.
nn::HFConfig tower_config(const nn::HFConfig& hf, const std::string& key) {
  std::optional<nn::HFConfig> tower = hf.child(key);
  if (!tower) hf.fail(key, "missing: a CLIPModel config.json holds both \"text_config\" and \"vision_config\"");
  if (std::optional<nn::HFConfig> legacy = hf.child(key + "_dict")) {
    boost::json::object merged = tower->object();
    for (const auto& kv : legacy->object()) merged[kv.key()] = kv.value();
    return nn::HFConfig(std::move(merged), hf.file(), key + ".");
  }
  return *tower;
}

}  // namespace

CLIPConfig CLIPConfig::from_hf(const nn::HFConfig& hf) {
  CLIPConfig c;
  c.text = CLIPTextConfig::from_hf(tower_config(hf, "text_config"));
  tower_config(hf, "vision_config");  // presence check; CLIPVisionConfig reads it (and its overlay)
  c.vision = CLIPVisionConfig::from_hf(hf);
  c.logit_scale_init_value = hf.number("logit_scale_init_value", c.logit_scale_init_value);
  return c;
}

CLIPConfig CLIPConfig::load(const std::string& path) { return from_hf(nn::HFConfig::load(path)); }

CLIPModelImpl::CLIPModelImpl(const CLIPConfig& cfg, const at::TensorOptions& options) : cfg_(cfg) {
  text_model_ = register_module("text_model", CLIPTextTransformer(cfg.text, options));
  vision_model_ = register_module("vision_model", CLIPVisionTransformer(cfg.vision, options));
  visual_projection_ = register_module(
      "visual_projection", nn::Linear(cfg.vision.hidden_size, cfg.projection_dim(), /*bias=*/false, options));
  text_projection_ = register_module(
      "text_projection", nn::Linear(cfg.text.hidden_size, cfg.projection_dim(), /*bias=*/false, options));
  at::Tensor scale = at::empty({}, options);
  if (options.device().type() != c10::DeviceType::Meta) {
    at::NoGradGuard no_grad;
    scale.fill_(cfg.logit_scale_init_value);
  }
  logit_scale = register_parameter("logit_scale", scale);
}

at::Tensor CLIPModelImpl::get_text_features(const at::Tensor& ids) {
  return text_projection_(text_model_->forward(ids).pooled);  // models.md 6.2 "Text pooling"
}

at::Tensor CLIPModelImpl::get_image_features(const at::Tensor& pixel_values) {
  return visual_projection_(vision_model_->forward(pixel_values).pooled);  // models.md 7 step 6
}

at::Tensor paired_cosine(const at::Tensor& image_features, const at::Tensor& text_features) {
  TORCH_CHECK(
      image_features.dim() == 2 && image_features.sizes() == text_features.sizes(),
      "paired_cosine: expected two (B, P) tensors of one shape, got ", image_features.sizes(), " and ",
      text_features.sizes());
  const at::Tensor img = image_features.to(at::kFloat), txt = text_features.to(at::kFloat);
  // x / ||x||_2, as the reference scorers normalize (no epsilon).
  const at::Tensor img_n = img / at::linalg_vector_norm(img, 2, {-1}, /*keepdim=*/true);
  const at::Tensor txt_n = txt / at::linalg_vector_norm(txt, 2, {-1}, /*keepdim=*/true);
  return (img_n * txt_n).sum(-1);
}

at::Tensor clip_paired_scores(
    CLIPModelImpl& model, const at::Tensor& images, const at::Tensor& ids, std::int64_t batch_size) {
  TORCH_CHECK(batch_size >= 1, "clip_paired_scores: batch_size must be positive");
  TORCH_CHECK(
      images.dim() == 4 && ids.dim() == 2 && images.size(0) == ids.size(0), "clip_paired_scores: expected images ",
      "(B, 3, H, W) and ids (B, L) with one B, got ", images.sizes(), " and ", ids.sizes());
  at::NoGradGuard no_grad;
  const c10::Device device = model.logit_scale.device();
  const at::ScalarType dtype = model.logit_scale.scalar_type();
  const std::int64_t size = model.config().vision.image_size;
  const std::int64_t b = images.size(0);
  std::vector<at::Tensor> scores;
  for (std::int64_t start = 0; start < b; start += batch_size) {
    const std::int64_t end = std::min(b, start + batch_size);
    // models.md 6.0: every scorer preprocesses with the CLIP-L processor (224 = the real towers'
    // image_size; a tiny test tower gets its own size).
    const at::Tensor pixels = clip_preprocess(images.slice(0, start, end).to(device), size, size).to(dtype);
    const at::Tensor image_features = model.get_image_features(pixels);
    // Columns after the chunk's last end-of-text token are dropped: the reference tokenizes with
    // padding=True (to the longest prompt; models.md 6.2), and under causal attention the states
    // up to each row's end-of-text token never see later columns (models.md 3.3).
    const at::Tensor chunk_ids = ids.slice(0, start, end);
    const std::int64_t used = eos_positions(chunk_ids, model.config().text.eos_token_id).max().item<std::int64_t>() + 1;
    const at::Tensor text_features = model.get_text_features(chunk_ids.narrow(1, 0, used).to(device));
    scores.push_back(paired_cosine(image_features, text_features));
  }
  if (scores.empty()) return at::empty({0}, at::TensorOptions().dtype(at::kFloat).device(device));
  return at::cat(scores);
}

}  // namespace sdpo::clip_text
