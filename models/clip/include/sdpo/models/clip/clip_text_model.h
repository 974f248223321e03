#pragma once
// CLIP's text transformer in transformers' layout (research/models.md 3.3-3.4), built on the
// shared layers of nn/. Parameter paths are transformers' state-dict names: CLIPTextModel holds
// the tower under "text_model." ("text_model.encoder.layers.0.self_attn.q_proj.weight"); a
// CLIPModel (the reward models, models.md 7) registers a CLIPTextTransformer as "text_model"
// beside its vision tower and projections, and reuses CLIPEncoder (non-causal) for the image side.
//
// Shapes: ids (B, L) int64 with L <= max_position_embeddings; hidden states (B, L, D).
//
// Example:
//   auto cfg = CLIPTextConfig::load(pipeline + "/text_encoder/config.json");
//   CLIPTextModel model(cfg, at::TensorOptions().dtype(at::kFloat));
//   CLIPTextOutput out = model->forward(ids);   // out.last_hidden_state: (B, L, D)
//
// Thread safety: modules are not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/tensor_map.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"

namespace sdpo::clip_text {

/// The sizes of a stack of CLIP encoder layers, shared by the text tower (causal) and the vision
/// tower (clip_vision_model.h, not causal).
struct CLIPEncoderConfig {
  std::int64_t hidden_size = 512;
  std::int64_t intermediate_size = 2048;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 8;
  std::string hidden_act = "quick_gelu";  ///< "gelu" (erf) or "quick_gelu" (x * sigmoid(1.702 x))
  double layer_norm_eps = 1e-5;

  /// The encoder sizes of a tower config (CLIPTextConfig, CLIPVisionConfig: transformers gives
  /// both towers the same field names).
  template <class TowerConfig>
  static CLIPEncoderConfig of(const TowerConfig& c) {
    return {c.hidden_size,         c.intermediate_size, c.num_hidden_layers,
            c.num_attention_heads, c.hidden_act,        c.layer_norm_eps};
  }
};

/// transformers' CLIPTextConfig fields that shape the tower; the defaults are that class's
/// defaults (a key absent from config.json takes them). SD-Turbo (OpenCLIP ViT-H text tower, 23
/// of 24 layers): 1024 / 23 layers / 16 heads / 4096 / "gelu" (models.md 3.1).
struct CLIPTextConfig {
  std::int64_t vocab_size = 49408;
  std::int64_t hidden_size = 512;
  std::int64_t intermediate_size = 2048;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 8;
  std::int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  ///< "gelu" (erf) or "quick_gelu" (x * sigmoid(1.702 x))
  double layer_norm_eps = 1e-5;
  /// 2 (the legacy value in the sd-turbo and OpenAI configs): pool at argmax(ids); any other
  /// value: pool at the first position holding that id (models.md 3.3).
  std::int64_t eos_token_id = 2;

  /// Reads and validates a transformers text config (a CLIPModel's "text_config" object too).
  /// Unsupported values throw sdpo::ManifestError naming the file and key.
  static CLIPTextConfig from_hf(const nn::HFConfig& cfg);
  /// from_hf(HFConfig::load(path)).
  static CLIPTextConfig load(const std::string& path);
  /// The encoder's sizes (hidden, intermediate, layers, heads, activation, eps).
  CLIPEncoderConfig encoder() const;
};

/// hidden_act by name: "gelu" (exact erf form) or "quick_gelu".
at::Tensor clip_activation(const at::Tensor& x, const std::string& name);

/// Multi-head self-attention with q/k/v/out projections (all with bias), scale head_dim^-0.5.
class CLIPAttentionImpl : public torch::nn::Module {
 public:
  CLIPAttentionImpl(std::int64_t dim, std::int64_t heads, const at::TensorOptions& options);
  /// x: (B, L, D) -> (B, L, D); `causal`: position i attends to j <= i only.
  at::Tensor forward(const at::Tensor& x, bool causal);

 private:
  std::int64_t heads_;
  nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, out_proj_{nullptr};
};
TORCH_MODULE(CLIPAttention);

/// fc2(act(fc1(x))): (B, L, D) -> (B, L, D) through (B, L, intermediate).
class CLIPMLPImpl : public torch::nn::Module {
 public:
  CLIPMLPImpl(std::int64_t dim, std::int64_t hidden, std::string activation, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::string activation_;
  nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(CLIPMLP);

/// Pre-LN layer: h += self_attn(layer_norm1(h)); h += mlp(layer_norm2(h)). (B, L, D) -> (B, L, D).
class CLIPEncoderLayerImpl : public torch::nn::Module {
 public:
  CLIPEncoderLayerImpl(const CLIPEncoderConfig& cfg, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, bool causal);

 private:
  CLIPAttention self_attn_{nullptr};
  nn::LayerNorm layer_norm1_{nullptr}, layer_norm2_{nullptr};
  CLIPMLP mlp_{nullptr};
};
TORCH_MODULE(CLIPEncoderLayer);

/// `layers.{i}`: num_hidden_layers CLIPEncoderLayers applied in order. (B, L, D) -> (B, L, D).
class CLIPEncoderImpl : public torch::nn::Module {
 public:
  CLIPEncoderImpl(const CLIPEncoderConfig& cfg, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, bool causal);

 private:
  torch::nn::ModuleList layer_list_{nullptr};
  std::vector<CLIPEncoderLayer> layers_;
};
TORCH_MODULE(CLIPEncoder);

/// token_embedding[ids] + position_embedding[0 .. L-1]: (B, L) -> (B, L, D).
class CLIPTextEmbeddingsImpl : public torch::nn::Module {
 public:
  CLIPTextEmbeddingsImpl(const CLIPTextConfig& cfg, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& ids);

 private:
  nn::Embedding token_embedding_{nullptr}, position_embedding_{nullptr};
};
TORCH_MODULE(CLIPTextEmbeddings);

struct CLIPTextOutput {
  at::Tensor last_hidden_state;  ///< (B, L, D): final_layer_norm of the last layer's output
  at::Tensor pooled;             ///< (B, D): last_hidden_state at each row's end-of-text position
};

/// Index (B,) int64 of each row's end-of-text token in `ids` (B, L): argmax(ids) when
/// `eos_token_id` == 2 (transformers' legacy rule; 49407 is the largest id, so this is the first
/// EOS), else the first position equal to `eos_token_id`.
at::Tensor eos_positions(const at::Tensor& ids, std::int64_t eos_token_id);

/// transformers' CLIPTextTransformer: embeddings, encoder (causal), final_layer_norm. Keys
/// relative to it: "embeddings.token_embedding.weight", "encoder.layers.{i}....",
/// "final_layer_norm.{weight,bias}".
class CLIPTextTransformerImpl : public torch::nn::Module {
 public:
  CLIPTextTransformerImpl(const CLIPTextConfig& cfg, const at::TensorOptions& options);
  /// ids: (B, L) int64 on the parameters' device, L <= max_position_embeddings.
  CLIPTextOutput forward(const at::Tensor& ids);
  const CLIPTextConfig& config() const { return cfg_; }

 private:
  CLIPTextConfig cfg_;
  CLIPTextEmbeddings embeddings_{nullptr};
  CLIPEncoder encoder_{nullptr};
  nn::LayerNorm final_layer_norm_{nullptr};
};
TORCH_MODULE(CLIPTextTransformer);

/// transformers' CLIPTextModel: the tower under "text_model." (what text_encoder/model.safetensors
/// holds: 372 tensors for SD-Turbo, models.md 3.4).
class CLIPTextModelImpl : public torch::nn::Module {
 public:
  CLIPTextModelImpl(const CLIPTextConfig& cfg, const at::TensorOptions& options);
  CLIPTextOutput forward(const at::Tensor& ids) { return text_model_->forward(ids); }
  CLIPTextTransformer& text_model() { return text_model_; }

 private:
  CLIPTextTransformer text_model_{nullptr};
};
TORCH_MODULE(CLIPTextModel);

/// Older transformers files carry int64 "<prefix>embeddings.position_ids" buffers (0 .. L-1),
/// which are not parameters here (models.md 3.4, 7): erases every key ending in
/// "embeddings.position_ids" from `weights` and returns how many it erased.
std::size_t erase_position_ids(TensorMap& weights);

}  // namespace sdpo::clip_text
