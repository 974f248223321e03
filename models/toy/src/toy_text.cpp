#include "sdpo/models/toy/toy_text.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cmath>

#include "sdpo/models/toy/world.h"

namespace sdpo::toy_text {

namespace nn = torch::nn;

// NOTE: the default follows the toy world, so a word added there is known here at once. It sets
// the token embedding's shape: shipped checkpoints must be regenerated when it changes (a strict
// load then names `token_embedding.weight`).
const std::vector<std::string>& default_vocabulary() { return sdpo::toy::vocabulary(); }

WordTokenizer::WordTokenizer(const std::vector<std::string>& vocabulary, std::int64_t max_words)
    : max_words_(max_words) {
  for (const auto& w : vocabulary) ids_.emplace(w, static_cast<std::int64_t>(ids_.size()) + 2);
}

std::vector<std::int64_t> WordTokenizer::encode(const std::string& prompt) const {
  std::vector<std::int64_t> ids;
  ids.reserve(static_cast<std::size_t>(max_words_));
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    if (static_cast<std::int64_t>(ids.size()) < max_words_) {
      auto it = ids_.find(word);
      ids.push_back(it == ids_.end() ? kUnknown : it->second);
    }
    word.clear();
  };
  for (char ch : prompt) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u)) {
      word.push_back(static_cast<char>(std::tolower(u)));
    } else {
      flush();
    }
  }
  flush();
  ids.resize(static_cast<std::size_t>(max_words_), kPad);
  return ids;
}

EncoderLayerImpl::EncoderLayerImpl(std::int64_t dim, std::int64_t heads) : heads_(heads) {
  norm1_ = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({dim})));
  qkv_ = register_module("qkv", nn::Linear(dim, 3 * dim));
  proj_ = register_module("proj", nn::Linear(dim, dim));
  norm2_ = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({dim})));
  fc1_ = register_module("fc1", nn::Linear(dim, 4 * dim));
  fc2_ = register_module("fc2", nn::Linear(4 * dim, dim));
}

at::Tensor EncoderLayerImpl::forward(const at::Tensor& x) {
  const std::int64_t b = x.size(0), l = x.size(1), dim = x.size(2), d = dim / heads_;
  // (B, L, 3, h, d) -> (3, B, h, L, d)
  at::Tensor qkv = qkv_(norm1_(x)).view({b, l, 3, heads_, d}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0] * (1.0 / std::sqrt(static_cast<double>(d)));
  at::Tensor attn = at::softmax(at::matmul(q, qkv[1].transpose(-2, -1)), -1);  // (B, h, L, L)
  at::Tensor o = at::matmul(attn, qkv[2]).transpose(1, 2).reshape({b, l, dim});
  at::Tensor h = x + proj_(o);
  return h + fc2_(at::gelu(fc1_(norm2_(h))));
}

ToyTextNetImpl::ToyTextNetImpl(const ToyTextOptions& o, std::int64_t vocabulary_size) {
  token_embedding_ = register_module("token_embedding", nn::Embedding(vocabulary_size, o.dim));
  // Same N(0, 1) scale as the token embedding, so word order is as visible as word identity
  // ("a red circle and a blue square" vs. "a blue circle and a red square").
  position_embedding_ = register_parameter("position_embedding", at::randn({o.max_words, o.dim}));
  layer_list_ = register_module("layers", nn::ModuleList());
  for (std::int64_t i = 0; i < o.layers; ++i) {
    layers_.emplace_back(o.dim, o.heads);
    layer_list_->push_back(layers_.back());
  }
  final_norm_ = register_module("final_norm", nn::LayerNorm(nn::LayerNormOptions({o.dim})));
}

at::Tensor ToyTextNetImpl::forward(const at::Tensor& ids) {
  at::Tensor x = token_embedding_(ids) + position_embedding_.unsqueeze(0);
  for (auto& layer : layers_) x = layer(x);
  return final_norm_(x);
}

}  // namespace sdpo::toy_text
