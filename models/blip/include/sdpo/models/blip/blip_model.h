#pragma once
// ImageReward's network (research/models.md 6.4): BLIP's ViT image encoder, BLIP's BERT text
// encoder with cross-attention to the image tokens (med.py, no pooler), and the 5-Linear head.
//
//   image_embeds = visual_encoder(pixels)                          (B, N, W)   all N tokens
//   h            = text_encoder(ids, mask, image_embeds)           (B, L, H)
//   raw reward   = mlp(h[:, 0])                                    (B,)        the [CLS] output
//
// Parameter paths are the published ImageReward.pt state-dict names (models.md 6.4 key pattern):
//   blip.visual_encoder.{cls_token, pos_embed, patch_embed.proj.*, blocks.{i}.*, norm.*}
//   blip.text_encoder.{embeddings.*, encoder.layer.{i}.*}
//   mlp.layers.{0,2,4,6,7}.{weight,bias}
// The checkpoint's other tensors (blip.vision_proj / blip.text_proj, unused by the score, and
// the int64 position_ids buffer) are named by unused_checkpoint_key().
//
// Example:
//   ImageRewardModel m(BLIPVisionConfig{}, MedConfig::load(dir + "/med_config.json"), {});
//   at::Tensor r = m->forward(imagereward_preprocess(images, 224), enc.ids, enc.attention_mask);
//
// Thread safety: modules are not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"

namespace sdpo::imagereward {

/// BLIP's VisionTransformer arguments (models.md 6.4 "Vision"); the defaults are ImageReward's
/// create_vit('large', 224): ViT-L/16, 1024 wide, 24 blocks, 16 heads, MLP ratio 4. LayerNorm
/// eps is fixed at 1e-6 and the activation is exact GELU, as in BLIP.
struct BLIPVisionConfig {
  std::int64_t img_size = 224;
  std::int64_t patch_size = 16;
  std::int64_t embed_dim = 1024;
  std::int64_t depth = 24;
  std::int64_t num_heads = 16;
  double mlp_ratio = 4.0;

  /// Overrides from a JSON object with those keys (absent keys keep ViT-L's values); any other
  /// key, a non-positive size, heads that do not divide embed_dim or a patch that does not divide
  /// img_size is a ManifestError naming the file and key.
  static BLIPVisionConfig from_hf(const nn::HFConfig& cfg);
  std::int64_t mlp_hidden() const { return static_cast<std::int64_t>(static_cast<double>(embed_dim) * mlp_ratio); }
  std::int64_t grid() const { return img_size / patch_size; }
  std::int64_t tokens() const { return grid() * grid() + 1; }  ///< patches + class token
};

/// The BertConfig keys of med_config.json that shape BLIP's text encoder; the defaults are the
/// published med_config.json's values (models.md 6.4 "Text"). `encoder_width` is not read: BLIP
/// overwrites it with the vision width.
struct MedConfig {
  std::int64_t hidden_size = 768;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t intermediate_size = 3072;
  std::int64_t max_position_embeddings = 512;
  std::int64_t vocab_size = 30524;
  double layer_norm_eps = 1e-12;

  /// Reads and validates a med_config.json. hidden_act must be "gelu", add_cross_attention true
  /// (ImageReward's layers all have cross-attention), position_embedding_type absent or
  /// "absolute"; errors name the file and key.
  static MedConfig from_hf(const nn::HFConfig& cfg);
  static MedConfig load(const std::string& path);
};

/// BLIP's ViT: (B, 3, S, S) -> (B, N, W), the final norm applied to every token.
class BLIPViTImpl : public torch::nn::Module {
 public:
  BLIPViTImpl(const BLIPVisionConfig& cfg, const at::TensorOptions& options);
  /// pixels: (B, 3, img_size, img_size), cast to the parameters' dtype.
  at::Tensor forward(const at::Tensor& pixels);
  const BLIPVisionConfig& config() const { return cfg_; }

  at::Tensor cls_token, pos_embed;

 private:
  struct Block {
    nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  };
  BLIPVisionConfig cfg_;
  nn::Conv2d patch_proj_{nullptr};
  std::vector<Block> blocks_;
  nn::LayerNorm norm_{nullptr};
};
TORCH_MODULE(BLIPViT);

/// med.py's BertModel(add_pooling_layer=False) with cross-attention in every layer (the
/// 'multimodal' mode ImageReward runs): post-LN layers of self-attention over the text (padded
/// keys masked), cross-attention to `image_embeds` (K/V Linear from `encoder_width`), GELU MLP.
class BertCrossEncoderImpl : public torch::nn::Module {
 public:
  BertCrossEncoderImpl(const MedConfig& cfg, std::int64_t encoder_width, const at::TensorOptions& options);
  /// ids, attention_mask: (B, L) int64 with L <= max_position_embeddings; image_embeds (B, N,
  /// encoder_width). Returns last_hidden_state (B, L, hidden_size).
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& image_embeds);
  const MedConfig& config() const { return cfg_; }

 private:
  struct Attention {
    nn::Linear query{nullptr}, key{nullptr}, value{nullptr}, dense{nullptr};
    nn::LayerNorm norm{nullptr};
  };
  struct Layer {
    Attention self_attention, cross_attention;
    nn::Linear intermediate{nullptr}, output{nullptr};
    nn::LayerNorm output_norm{nullptr};
  };
  MedConfig cfg_;
  nn::Embedding word_embeddings_{nullptr}, position_embeddings_{nullptr};
  nn::LayerNorm embeddings_norm_{nullptr};
  std::vector<Layer> layers_;
};
TORCH_MODULE(BertCrossEncoder);

/// The whole scorer under the published names. The head is always float32 (ImageReward casts the
/// [CLS] feature with .float() before its mlp); the towers take `options`.
class ImageRewardModelImpl : public torch::nn::Module {
 public:
  ImageRewardModelImpl(const BLIPVisionConfig& vision, const MedConfig& text, const at::TensorOptions& options);
  /// pixels (B, 3, S, S) preprocessed; ids / attention_mask (B, L). Returns the raw reward (B,)
  /// float32, before ImageReward's standardization.
  at::Tensor forward(const at::Tensor& pixels, const at::Tensor& ids, const at::Tensor& attention_mask);

  BLIPViT visual_encoder{nullptr};
  BertCrossEncoder text_encoder{nullptr};

 private:
  std::vector<nn::Linear> head_;
};
TORCH_MODULE(ImageRewardModel);

/// Published ImageReward.pt keys the score does not read (skipped when loading): the ITC
/// projections "blip.vision_proj.*" / "blip.text_proj.*" and the persistent buffer
/// "blip.text_encoder.embeddings.position_ids".
bool unused_checkpoint_key(const std::string& key);

/// The image preprocessing ImageReward is scored with in SDPO (models.md 6.0): the CLIP-L
/// CLIPProcessor chain of models/clip/include/sdpo/models/clip/clip_image.h (quantize to uint8 levels, PIL-style
/// bicubic resize of the short edge to `image_size`, center crop, OpenAI CLIP mean/std, which are
/// also ImageReward's own constants). (B, 3, H, W) in [0, 1] -> (B, 3, S, S) float32, same device.
at::Tensor imagereward_preprocess(const at::Tensor& images, std::int64_t image_size);

/// ImageReward's published standardization (models.md 6.4 "Score"): (raw - mean) / std.
inline constexpr double kRewardMean = 0.16717362830052426;
inline constexpr double kRewardStd = 1.0333394966054072;

/// ImageReward's tokenizer call: padding='max_length', truncation=True, max_length=35.
inline constexpr std::int64_t kMaxTextLength = 35;

}  // namespace sdpo::imagereward
