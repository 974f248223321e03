// CLIP text transformer (research/models.md 3.3 forward, 3.4 key names, 8A numerics).

#include "sdpo/models/clip/clip_text_model.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace sdpo::clip_text {

CLIPTextConfig CLIPTextConfig::from_hf(const nn::HFConfig& hf) {
  CLIPTextConfig c;
  c.vocab_size = hf.positive_integer("vocab_size", c.vocab_size);
  c.hidden_size = hf.positive_integer("hidden_size", c.hidden_size);
  c.intermediate_size = hf.positive_integer("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = hf.positive_integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = hf.positive_integer("num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = hf.positive_integer("max_position_embeddings", c.max_position_embeddings);
  c.hidden_act = hf.string("hidden_act", c.hidden_act, {"gelu", "quick_gelu"});
  c.layer_norm_eps = hf.number("layer_norm_eps", c.layer_norm_eps);
  c.eos_token_id = hf.integer("eos_token_id", c.eos_token_id);
  if (c.hidden_size % c.num_attention_heads != 0) {
    hf.fail(
        "num_attention_heads",
        std::to_string(c.num_attention_heads) + " heads do not divide hidden_size " + std::to_string(c.hidden_size));
  }
  if (!(c.layer_norm_eps > 0.0)) hf.fail("layer_norm_eps", "expected a positive number");
  return c;
}

CLIPTextConfig CLIPTextConfig::load(const std::string& path) { return from_hf(nn::HFConfig::load(path)); }

CLIPEncoderConfig CLIPTextConfig::encoder() const { return CLIPEncoderConfig::of(*this); }

at::Tensor clip_activation(const at::Tensor& x, const std::string& name) {
  if (name == "quick_gelu") return x * at::sigmoid(x * 1.702);
  TORCH_CHECK(name == "gelu", "CLIP: unsupported activation '", name, "' (expected gelu or quick_gelu)");
  return at::gelu(x);  // exact erf form (models.md 8A)
}

CLIPAttentionImpl::CLIPAttentionImpl(std::int64_t dim, std::int64_t heads, const at::TensorOptions& options)
    : heads_(heads) {
  q_proj_ = register_module("q_proj", nn::Linear(dim, dim, true, options));
  k_proj_ = register_module("k_proj", nn::Linear(dim, dim, true, options));
  v_proj_ = register_module("v_proj", nn::Linear(dim, dim, true, options));
  out_proj_ = register_module("out_proj", nn::Linear(dim, dim, true, options));
}

at::Tensor CLIPAttentionImpl::forward(const at::Tensor& x, bool causal) {
  return out_proj_(nn::multi_head_attention(q_proj_(x), k_proj_(x), v_proj_(x), heads_, causal));
}

CLIPMLPImpl::CLIPMLPImpl(
    std::int64_t dim, std::int64_t hidden, std::string activation, const at::TensorOptions& options)
    : activation_(std::move(activation)) {
  fc1_ = register_module("fc1", nn::Linear(dim, hidden, true, options));
  fc2_ = register_module("fc2", nn::Linear(hidden, dim, true, options));
}

at::Tensor CLIPMLPImpl::forward(const at::Tensor& x) { return fc2_(clip_activation(fc1_(x), activation_)); }

CLIPEncoderLayerImpl::CLIPEncoderLayerImpl(const CLIPEncoderConfig& cfg, const at::TensorOptions& options) {
  const std::int64_t d = cfg.hidden_size;
  self_attn_ = register_module("self_attn", CLIPAttention(d, cfg.num_attention_heads, options));
  layer_norm1_ = register_module("layer_norm1", nn::LayerNorm(d, cfg.layer_norm_eps, options));
  mlp_ = register_module("mlp", CLIPMLP(d, cfg.intermediate_size, cfg.hidden_act, options));
  layer_norm2_ = register_module("layer_norm2", nn::LayerNorm(d, cfg.layer_norm_eps, options));
}

at::Tensor CLIPEncoderLayerImpl::forward(const at::Tensor& x, bool causal) {
  at::Tensor h = x + self_attn_->forward(layer_norm1_(x), causal);
  return h + mlp_(layer_norm2_(h));
}

CLIPEncoderImpl::CLIPEncoderImpl(const CLIPEncoderConfig& cfg, const at::TensorOptions& options) {
  layer_list_ = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    layers_.emplace_back(cfg, options);
    layer_list_->push_back(layers_.back());
  }
}

at::Tensor CLIPEncoderImpl::forward(const at::Tensor& x, bool causal) {
  at::Tensor h = x;
  for (auto& layer : layers_) h = layer->forward(h, causal);
  return h;
}

CLIPTextEmbeddingsImpl::CLIPTextEmbeddingsImpl(const CLIPTextConfig& cfg, const at::TensorOptions& options) {
  token_embedding_ = register_module("token_embedding", nn::Embedding(cfg.vocab_size, cfg.hidden_size, options));
  position_embedding_ =
      register_module("position_embedding", nn::Embedding(cfg.max_position_embeddings, cfg.hidden_size, options));
}

at::Tensor CLIPTextEmbeddingsImpl::forward(const at::Tensor& ids) {
  const std::int64_t length = ids.size(1);
  TORCH_CHECK(
      length <= position_embedding_->weight.size(0), "CLIP text: ", length,
      " tokens exceed max_position_embeddings = ", position_embedding_->weight.size(0));
  // (B, L, D) + (1, L, D)
  return token_embedding_(ids) + position_embedding_->weight.narrow(0, 0, length).unsqueeze(0);
}

at::Tensor eos_positions(const at::Tensor& ids, std::int64_t eos_token_id) {
  // argmax returns the first maximal index, so both rules give the first end-of-text token.
  if (eos_token_id == 2) return ids.argmax(-1);
  return ids.eq(eos_token_id).to(at::kLong).argmax(-1);
}

CLIPTextTransformerImpl::CLIPTextTransformerImpl(const CLIPTextConfig& cfg, const at::TensorOptions& options)
    : cfg_(cfg) {
  embeddings_ = register_module("embeddings", CLIPTextEmbeddings(cfg, options));
  encoder_ = register_module("encoder", CLIPEncoder(cfg.encoder(), options));
  final_layer_norm_ = register_module("final_layer_norm", nn::LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, options));
}

CLIPTextOutput CLIPTextTransformerImpl::forward(const at::Tensor& ids) {
  TORCH_CHECK(
      ids.dim() == 2 && ids.scalar_type() == at::kLong, "CLIP text: expected (B, L) int64 ids, got ", ids.sizes(), " ",
      ids.scalar_type());
  // No padding mask: SD pipelines pass none, and with causal attention the positions up to the
  // first EOS never see the padding after it (models.md 3.3).
  at::Tensor h = encoder_->forward(embeddings_->forward(ids), /*causal=*/true);
  CLIPTextOutput out;
  out.last_hidden_state = final_layer_norm_(h);
  const at::Tensor rows = at::arange(ids.size(0), ids.options());
  out.pooled = out.last_hidden_state.index({rows, eos_positions(ids, cfg_.eos_token_id)});
  return out;
}

CLIPTextModelImpl::CLIPTextModelImpl(const CLIPTextConfig& cfg, const at::TensorOptions& options) {
  text_model_ = register_module("text_model", CLIPTextTransformer(cfg, options));
}

std::size_t erase_position_ids(TensorMap& weights) {
  static const std::string kSuffix = "embeddings.position_ids";
  std::size_t erased = 0;
  for (auto it = weights.begin(); it != weights.end();) {
    const std::string& k = it->first;
    const bool match = k.size() >= kSuffix.size() && k.compare(k.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
    it = match ? (++erased, weights.erase(it)) : std::next(it);
  }
  return erased;
}

}  // namespace sdpo::clip_text
