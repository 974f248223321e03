// Plugin `toy_text`: the toy world's word-level transformer text encoder as an sdpo::TextEncoder.

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <cctype>
#include <memory>
#include <set>
#include <sstream>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/models/toy/toy_text.h"

namespace sdpo::toy_text {
namespace {

constexpr const char* kName = "toy_text";

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

ToyTextOptions read_options(OptionReader& r) {
  ToyTextOptions o;
  o.dim = r.integer("dim", o.dim, 4, 4096, "width D of the (B, L, D) output (the model's cond_dim)");
  o.max_words = r.integer("max_words", o.max_words, 1, 1024, "L: prompts are padded (or cut) to this many words");
  o.layers = r.integer("layers", o.layers, 0, 16, "transformer encoder layers");
  o.heads = r.integer("heads", o.heads, 1, 64, "self-attention heads");
  const std::string words = r.string(
      "vocabulary", join_words(default_vocabulary()), "space-separated known words (lower case); others map to <unk>");
  o.checkpoint = r.string("checkpoint", o.checkpoint, "safetensors weights; empty: random init from seed");
  o.seed = r.integer("seed", o.seed, 0, std::int64_t{1} << 62, "random init seed (without checkpoint)");

  if (o.dim % o.heads != 0) {
    r.fail("heads", std::to_string(o.heads) + " does not divide dim = " + std::to_string(o.dim));
  }
  std::istringstream in(words);
  std::set<std::string> seen;
  for (std::string w; in >> w;) {
    for (char ch : w) {
      const auto u = static_cast<unsigned char>(ch);
      // The tokenizer lower-cases and splits at non-alphanumerics: such a word could never match.
      if (!std::isalnum(u) || std::isupper(u)) {
        r.fail("vocabulary", "word '" + w + "' must be lower-case letters and digits only");
      }
    }
    if (!seen.insert(w).second) r.fail("vocabulary", "word '" + w + "' is listed twice");
    o.vocabulary.push_back(w);
  }
  if (o.vocabulary.empty()) r.fail("vocabulary", "expected at least one word");
  return o;
}

class ToyTextEncoder final : public TextEncoder {
 public:
  explicit ToyTextEncoder(const ToyTextOptions& o) : tokenizer_(o.vocabulary, o.max_words), max_words_(o.max_words) {
    ScopedSeed seed(static_cast<std::uint64_t>(o.seed));
    net_ = ToyTextNet(o, tokenizer_.size());
  }

  at::Tensor encode(const std::vector<std::string>& prompts) override {
    const auto b = static_cast<std::int64_t>(prompts.size());
    at::Tensor ids = at::empty({b, max_words_}, at::kLong);
    auto* out = ids.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < b; ++i) {
      const auto row = tokenizer_.encode(prompts[static_cast<std::size_t>(i)]);
      std::copy(row.begin(), row.end(), out + i * max_words_);
    }
    return net_->forward(ids.to(device_));
  }

  std::vector<at::Tensor> trainable_parameters() override { return net_->parameters(); }
  TensorMap state_dict() const override { return module_state_dict(*net_); }

  void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) override {
    module_load_state_dict(*net_, weights, strict, source, std::string("text_encoder '") + kName + "'");
  }

  void set_training(bool training) override { net_->train(training); }

  void to(c10::Device device) override {
    net_->to(device);
    device_ = device;
  }

 private:
  WordTokenizer tokenizer_;
  std::int64_t max_words_;
  ToyTextNet net_{nullptr};
  c10::Device device_{c10::kCPU};
};

std::shared_ptr<TextEncoder> make_encoder(const ToyTextOptions& o, const ComponentConfig& cfg) {
  auto encoder = std::make_shared<ToyTextEncoder>(o);
  if (!o.checkpoint.empty()) encoder->load_state_dict(safetensors_load(o.checkpoint), true, o.checkpoint);
  return encoder;
}

void register_toy_text(Registry& r) {
  r.add<TextEncoder, ToyTextOptions>(
      kName, "word-level transformer text encoder over the toy world's vocabulary", &read_options, &make_encoder);
}

}  // namespace
}  // namespace sdpo::toy_text

SDPO_DECLARE_PLUGIN("toy_text", "0.1.0", sdpo::toy_text::register_toy_text)
