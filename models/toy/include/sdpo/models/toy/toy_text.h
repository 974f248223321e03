#pragma once
// The toy text encoder: a word-level tokenizer over a fixed vocabulary, learned token and
// position embeddings, and a few small pre-norm transformer encoder layers. Internal to the
// `toy_text` plugin; the framework sees it only as an sdpo::TextEncoder.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace sdpo::toy_text {

/// Options of the `toy_text` encoder (read and validated by read_options in plugin.cpp).
struct ToyTextOptions {
  std::int64_t dim = 64;                ///< D of the (B, L, D) output
  std::int64_t max_words = 12;          ///< L: prompts are padded (or cut) to this many words
  std::int64_t layers = 1;              ///< transformer encoder layers
  std::int64_t heads = 4;               ///< self-attention heads
  std::vector<std::string> vocabulary;  ///< known words (ids 2...; 0 = <pad>, 1 = <unk>)
  std::string checkpoint;               ///< safetensors file; empty: random init from seed
  std::int64_t seed = 0;                ///< random init seed (without checkpoint)
};

/// The default word list: every word of the toy world's prompts (sdpo::toy::vocabulary()).
const std::vector<std::string>& default_vocabulary();

/// Lower-cases `prompt`, splits it at anything that is not a letter or a digit, and maps each
/// word to its id (unknown words to <unk> = 1). The result has exactly `max_words` ids: longer
/// prompts are cut (as CLIP's tokenizer truncates at 77 tokens), shorter ones padded with 0.
class WordTokenizer {
 public:
  static constexpr std::int64_t kPad = 0;
  static constexpr std::int64_t kUnknown = 1;

  WordTokenizer(const std::vector<std::string>& vocabulary, std::int64_t max_words);
  std::vector<std::int64_t> encode(const std::string& prompt) const;
  /// Words + the two special tokens.
  std::int64_t size() const { return static_cast<std::int64_t>(ids_.size()) + 2; }

 private:
  std::unordered_map<std::string, std::int64_t> ids_;
  std::int64_t max_words_;
};

/// Pre-norm transformer encoder layer: x + attn(LN(x)), then x + MLP(LN(x)) with GELU.
/// No padding mask: <pad> is a learned token like any other, which keeps an empty prompt
/// well-defined (all padding) and the output independent of batch composition.
class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(std::int64_t dim, std::int64_t heads);
  /// x: (B, L, D) -> (B, L, D).
  at::Tensor forward(const at::Tensor& x);

 private:
  std::int64_t heads_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(EncoderLayer);

/// Token ids (B, L) -> features (B, L, D), layer-normalized.
class ToyTextNetImpl : public torch::nn::Module {
 public:
  ToyTextNetImpl(const ToyTextOptions& o, std::int64_t vocabulary_size);
  at::Tensor forward(const at::Tensor& ids);

 private:
  torch::nn::Embedding token_embedding_{nullptr};
  at::Tensor position_embedding_;
  torch::nn::ModuleList layer_list_{nullptr};
  std::vector<EncoderLayer> layers_;
  torch::nn::LayerNorm final_norm_{nullptr};
};
TORCH_MODULE(ToyTextNet);

}  // namespace sdpo::toy_text
