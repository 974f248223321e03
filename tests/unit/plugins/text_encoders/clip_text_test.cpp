// The `clip_text` text encoder: the CLIP BPE tokenizer (hand-checkable merges and the known token
// ids of research/models.md 3.5 item 8), the text transformer (real parameter counts on the meta
// device, a hand-written reference forward, causality, pooling) and the plugin reached through the
// registry on a tiny pipeline folder written here.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"
#include "sdpo/models/tokenizers/unicode.h"
#include "support/test_support.h"

namespace sdpo::clip_text {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<std::int64_t>;

constexpr std::int64_t kBOS = 49406, kEOS = 49407;

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string utf8(char32_t cp) {
  std::string s;
  utf8_append(cp, s);
  return s;
}

// ---------------------------------------------------------------------------------------------
// A test vocabulary with the real ids the test vectors need (models.md 3.5 items 1, 2, 8).

// Ids 0..255: the byte symbols in the layout order of models.md 3.5 items 1-2, written here from
// the rule (not from the implementation's table): printable bytes first, then the other 68 bytes
// as U+0100, U+0101, ...; ids 256..511: the same with "</w>".
std::map<std::string, std::int64_t> byte_vocab() {
  std::vector<std::string> symbols;  // in id order
  std::vector<int> other;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (printable) {
      symbols.push_back(utf8(static_cast<char32_t>(b)));
    } else {
      other.push_back(b);
    }
  }
  for (std::size_t n = 0; n < other.size(); ++n) symbols.push_back(utf8(static_cast<char32_t>(256 + n)));
  std::map<std::string, std::int64_t> v;
  for (std::size_t i = 0; i < symbols.size(); ++i) {
    v[symbols[i]] = static_cast<std::int64_t>(i);
    v[symbols[i] + "</w>"] = static_cast<std::int64_t>(256 + i);
  }
  return v;
}

// Whole words with their ids in the real CLIP vocabulary (models.md 3.5 item 8).
const std::vector<std::pair<std::string, std::int64_t>>& real_words() {
  static const std::vector<std::pair<std::string, std::int64_t>> w{
      {"photo", 1125}, {"of", 539},           {"cat", 2368}, {"dog", 1929},  {"hello", 3306},
      {"world", 1002}, {"don", 847},          {"'t", 713},   {"stop", 1691}, {"times", 1661},
      {"mm", 2848},    {"photography", 2108}, {"test", 1628}};
  return w;
}

struct TestTokenizerFiles {
  std::map<std::string, std::int64_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
};

// Merges that build each word into one symbol: while BPE with the merges so far leaves a word in
// several symbols, its first two are merged next (so "photography" gets "ph" then "pho", ...,
// "photogra ph"). A new merge ranks below every earlier one, so it never changes how an earlier
// word merges. Intermediate symbols get free ids from 40000.
TestTokenizerFiles real_id_tokenizer() {
  TestTokenizerFiles t;
  t.vocab = byte_vocab();
  for (const auto& [word, id] : real_words()) t.vocab[word + "</w>"] = id;
  t.vocab["<|startoftext|>"] = kBOS;
  t.vocab["<|endoftext|>"] = kEOS;
  std::int64_t next = 40000;
  for (const auto& [word, id] : real_words()) {
    for (;;) {
      const std::unordered_map<std::string, std::int64_t> vocab(t.vocab.begin(), t.vocab.end());
      const auto symbols = CLIPTokenizer(vocab, t.merges, "", "<test>").bpe(word);
      if (symbols.size() == 1) break;
      t.merges.emplace_back(symbols[0], symbols[1]);
      if (!t.vocab.count(symbols[0] + symbols[1])) t.vocab[symbols[0] + symbols[1]] = next++;
    }
  }
  return t;
}

// Writes vocab.json, merges.txt (with the "#version" header) and, if `special` is not empty,
// special_tokens_map.json into `dir`.
void write_tokenizer(const std::string& dir, const TestTokenizerFiles& t, const std::string& special) {
  boost::json::object v;
  for (const auto& [tok, id] : t.vocab) v[tok] = id;
  write_text(dir + "/vocab.json", boost::json::serialize(v));
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : t.merges) merges += a + " " + b + "\n";
  write_text(dir + "/merges.txt", merges);
  if (!special.empty()) write_text(dir + "/special_tokens_map.json", special);
}

const std::string kSDTurboSpecial =
    R"({"bos_token": {"content": "<|startoftext|>"}, "eos_token": "<|endoftext|>", "pad_token": "!",
        "unk_token": "<|endoftext|>"})";

CLIPTokenizer load_real_id_tokenizer(const std::string& special = kSDTurboSpecial) {
  const std::string dir = test::temp_dir("clip_tok");
  write_tokenizer(dir, real_id_tokenizer(), special);
  return CLIPTokenizer::load(dir);
}

Ids framed(Ids content) {
  content.insert(content.begin(), kBOS);
  content.push_back(kEOS);
  return content;
}

Ids content_of(const CLIPTokenizer& tok, const std::string& prompt) {
  Ids row = tok.encode(prompt, 77);
  const auto eos = std::find(row.begin(), row.end(), kEOS);
  return Ids(row.begin(), eos + 1);
}

TEST(CLIPTokenizer, ByteTableFollowsTheLayoutRule) {
  const auto& t = byte_symbols();
  EXPECT_EQ(t['!'], "!");
  EXPECT_EQ(t['~'], "~");
  EXPECT_EQ(t[0], utf8(0x100));
  EXPECT_EQ(t[' '], utf8(0x120));  // the 33rd non-printable byte
  EXPECT_EQ(t[127], utf8(0x121));
  EXPECT_EQ(t[173], utf8(0x143));  // the last of the 68
  EXPECT_EQ(t[0xE9], utf8(0xE9));  // printable Latin-1 maps to itself
  const auto v = byte_vocab();     // the rule: printable ASCII c has id c - 33 and c + 223 with </w>
  EXPECT_EQ(v.at("!"), 0);
  EXPECT_EQ(v.at("a</w>"), 320);
  EXPECT_EQ(v.at(t[' ']), 188 + 32);
}

TEST(CLIPTokenizer, NormalizationCollapsesWhitespaceStripsAndLowercases) {
  EXPECT_EQ(normalize_text("  A PHOTO\tof \n\n a  Cat!  "), "a photo of a cat!");
  EXPECT_EQ(normalize_text(""), "");
  EXPECT_EQ(normalize_text(" \t "), "");
  // Unicode whitespace (NBSP, ideographic space) and case (Latin-1, Greek, Cyrillic, U+0130).
  EXPECT_EQ(
      normalize_text("\xC3\x80\xC3\x89\xC2\xA0\xCE\xA3\xE3\x80\x80\xD0\x96"), "\xC3\xA0\xC3\xA9 \xCF\x83 \xD0\xB6");
  EXPECT_EQ(normalize_text("\xC4\xB0"), "i\xCC\x87");
  EXPECT_THROW(normalize_text("bad \xC3"), c10::Error);
}

TEST(CLIPTokenizer, PreTokenizerSplitsLikeThePattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pre_tokenize("don't stop 42 times"), (V{"don", "'t", "stop", "4", "2", "times"}));
  EXPECT_EQ(
      pre_tokenize("hello-world, 3.14 (test)"), (V{"hello", "-", "world", ",", "3", ".", "1", "4", "(", "test", ")"}));
  // Contractions in the pattern's order, even in front of letters; a lone quote is punctuation.
  EXPECT_EQ(pre_tokenize("they'll've 'sam x'y"), (V{"they", "'ll", "'ve", "'s", "am", "x", "'", "y"}));
  // Punctuation runs stay together (quotes included); letters and digits end them.
  EXPECT_EQ(pre_tokenize("wow...!!'a ?!"), (V{"wow", "...!!'", "a", "?!"}));
  // Special tokens where a match starts.
  EXPECT_EQ(pre_tokenize("<|startoftext|>a<|endoftext|>"), (V{"<|startoftext|>", "a", "<|endoftext|>"}));
  // Unicode letters (accented, CJK) are one run; Unicode numbers (superscripts, Arabic-Indic) one each.
  EXPECT_EQ(
      pre_tokenize("na\xC3\xAFve caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC"),
      (V{"na\xC3\xAFve", "caf\xC3\xA9", "\xE6\x9D\xB1\xE4\xBA\xAC"}));
  EXPECT_EQ(pre_tokenize("x\xC2\xB2\xD9\xA3"), (V{"x", "\xC2\xB2", "\xD9\xA3"}));
  EXPECT_TRUE(is_letter(0x4E00) && is_number(0x2163) && !is_letter(0x2163) && is_space(0x3000));
  EXPECT_FALSE(is_letter('_') || is_number('_') || is_space('_'));
}

TEST(CLIPTokenizer, BPEMergesByRankAtEveryOccurrence) {
  std::unordered_map<std::string, std::int64_t> vocab{
      {"<|startoftext|>", 10}, {"<|endoftext|>", 11}, {"aa", 1}, {"a</w>", 2}, {"a", 3}, {"aa</w>", 4}, {"ab", 5}};
  using V = std::vector<std::string>;
  // "a a" outranks "a a</w>": merged left to right, the last "a</w>" stays alone.
  CLIPTokenizer first(vocab, {{"a", "a"}, {"a", "a</w>"}}, "", "<test>");
  EXPECT_EQ(first.bpe("aaa"), (V{"aa", "a</w>"}));
  EXPECT_EQ(first.tokenize("aaa"), (Ids{1, 2}));
  // The other order merges the end first.
  CLIPTokenizer second(vocab, {{"a", "a</w>"}, {"a", "a"}}, "", "<test>");
  EXPECT_EQ(second.bpe("aaa"), (V{"a", "aa</w>"}));
  // Every occurrence of the best pair merges; "</w>" marks the word's last symbol only.
  CLIPTokenizer ab(vocab, {{"a", "b"}}, "", "<test>");
  EXPECT_EQ(ab.bpe("ababa"), (V{"ab", "ab", "a</w>"}));
  EXPECT_EQ(ab.bpe("abab"), (V{"ab", "a", "b</w>"}));
  // Symbols missing from the vocabulary map to <|endoftext|>, transformers' unknown token.
  EXPECT_EQ(ab.tokenize("abab"), (Ids{5, 3, 11}));
  // A pre-token is a whole word: "aa aa" is two words.
  EXPECT_EQ(first.tokenize("AA  aa"), (Ids{4, 4}));
  EXPECT_EQ(first.encode("aaa", 6), (Ids{10, 1, 2, 11, 11, 11})) << "no pad token: pad with <|endoftext|>";
}

TEST(CLIPTokenizer, KnownTokenIdsOfTheRealVocabulary) {
  const CLIPTokenizer tok = load_real_id_tokenizer();
  EXPECT_EQ(content_of(tok, "a photo of a cat"), framed({320, 1125, 539, 320, 2368}));
  EXPECT_EQ(content_of(tok, "a photo of a dog"), framed({320, 1125, 539, 320, 1929}));
  EXPECT_EQ(content_of(tok, "Hello, world!"), framed({3306, 267, 1002, 256}));
  EXPECT_EQ(content_of(tok, "don't stop"), framed({847, 713, 1691}));
  EXPECT_EQ(content_of(tok, ""), framed({}));
  EXPECT_EQ(content_of(tok, "A PHOTO of  a Cat!"), framed({320, 1125, 539, 320, 2368, 256}));
  EXPECT_EQ(content_of(tok, "don't stop 42 times"), framed({847, 713, 1691, 275, 273, 1661}));
  EXPECT_EQ(content_of(tok, "35mm photography"), framed({274, 276, 2848, 2108}));
  EXPECT_EQ(
      content_of(tok, "hello-world, 3.14 (test)"), framed({3306, 268, 1002, 267, 274, 269, 272, 275, 263, 1628, 264}));
  // The empty prompt, padded with "!" (id 0) as SD-Turbo's tokenizer pads (models.md 3.5 item 7).
  Ids empty(77, 0);
  empty[0] = kBOS, empty[1] = kEOS;
  EXPECT_EQ(tok.encode("", 77), empty);
  EXPECT_EQ(tok.pad_id(), 0);
}

TEST(CLIPTokenizer, TruncationKeepsEOSAndPaddingFollowsSpecialTokensMap) {
  const CLIPTokenizer tok = load_real_id_tokenizer();
  EXPECT_EQ(tok.encode("a photo of a cat", 5), (Ids{kBOS, 320, 1125, 539, kEOS}));
  EXPECT_EQ(tok.encode("a photo of a cat", 2), (Ids{kBOS, kEOS}));
  EXPECT_EQ(tok.encode("a cat", 6), (Ids{kBOS, 320, 2368, kEOS, 0, 0}));
  EXPECT_THROW(tok.encode("a", 1), c10::Error);
  at::Tensor batch = tok.encode_batch({"a cat", "a photo of a dog"}, 8);
  EXPECT_EQ(batch.sizes(), (std::vector<std::int64_t>{2, 8}));
  EXPECT_EQ(batch.scalar_type(), at::kLong);
  EXPECT_EQ(batch[1][5].item<std::int64_t>(), 1929);

  // pad_token as an object with "content", as some tokenizer folders write it.
  EXPECT_EQ(load_real_id_tokenizer(R"({"pad_token": {"content": "a</w>", "lstrip": false}})").pad_id(), 320);
  // Without special_tokens_map.json, or without pad_token in it: <|endoftext|>.
  EXPECT_EQ(load_real_id_tokenizer("").encode("a", 4), (Ids{kBOS, 320, kEOS, kEOS}));
  EXPECT_EQ(load_real_id_tokenizer(R"({"eos_token": "<|endoftext|>"})").pad_id(), kEOS);
  // A pad token the vocabulary lacks is refused, naming the file and key.
  try {
    load_real_id_tokenizer(R"({"pad_token": "<pad>"})");
    ADD_FAILURE() << "expected a ManifestError";
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("special_tokens_map.json"), std::string::npos) << e.what();
    EXPECT_EQ(e.json_path(), "pad_token");
  }
  EXPECT_THROW(load_real_id_tokenizer(R"({"pad_token": 3})"), ManifestError);
}

TEST(CLIPTokenizer, BadFilesAreRefusedNamingTheFile) {
  const std::string dir = test::temp_dir("clip_tok_bad");
  TestTokenizerFiles t = real_id_tokenizer();
  write_tokenizer(dir, t, "");
  fs::remove(dir + "/merges.txt");
  EXPECT_THROW(CLIPTokenizer::load(dir), FileError);
  write_text(dir + "/merges.txt", "#version: 0.2\np h\nph o x\n");
  try {
    CLIPTokenizer::load(dir);
    ADD_FAILURE() << "expected a FileError";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
    EXPECT_NE(e.path().find("merges.txt"), std::string::npos);
  }
  t.vocab.erase("<|endoftext|>");
  write_tokenizer(dir, t, "");
  try {
    CLIPTokenizer::load(dir);
    ADD_FAILURE() << "expected a ManifestError";
  } catch (const ManifestError& e) {
    EXPECT_NE(e.file().find("vocab.json"), std::string::npos) << e.what();
    EXPECT_EQ(e.json_path(), "<|endoftext|>");
  }
}

// ---------------------------------------------------------------------------------------------
// The transformer.

CLIPTextConfig config_from_json(const std::string& json) {
  return CLIPTextConfig::from_hf(nn::HFConfig(boost::json::parse(json).as_object(), "<test config>"));
}

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);

TEST(CLIPTextModel, RealConfigsOnTheMetaDevice) {
  // SD-Turbo's text_encoder/config.json values (models.md 3.1).
  const CLIPTextConfig h = config_from_json(
      R"({"architectures": ["CLIPTextModel"], "hidden_size": 1024, "num_hidden_layers": 23, "num_attention_heads": 16,
          "intermediate_size": 4096, "hidden_act": "gelu", "max_position_embeddings": 77, "vocab_size": 49408,
          "layer_norm_eps": 1e-05, "projection_dim": 512, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})");
  CLIPTextModel model(h, kMeta);
  EXPECT_EQ(nn::parameter_count(*model), 340387840);
  const TensorMap sd = module_state_dict(*model);
  EXPECT_EQ(sd.size(), 372u);
  auto shape = [&](const std::string& k) { return sd.count(k) ? sd.at(k).sizes().vec() : std::vector<std::int64_t>{}; };
  EXPECT_EQ(shape("text_model.embeddings.token_embedding.weight"), (std::vector<std::int64_t>{49408, 1024}));
  EXPECT_EQ(shape("text_model.embeddings.position_embedding.weight"), (std::vector<std::int64_t>{77, 1024}));
  EXPECT_EQ(shape("text_model.encoder.layers.22.self_attn.out_proj.weight"), (std::vector<std::int64_t>{1024, 1024}));
  EXPECT_EQ(shape("text_model.encoder.layers.0.mlp.fc1.weight"), (std::vector<std::int64_t>{4096, 1024}));
  EXPECT_EQ(shape("text_model.encoder.layers.22.mlp.fc2.weight"), (std::vector<std::int64_t>{1024, 4096}));
  EXPECT_EQ(shape("text_model.encoder.layers.5.layer_norm2.bias"), (std::vector<std::int64_t>{1024}));
  EXPECT_EQ(shape("text_model.final_layer_norm.weight"), (std::vector<std::int64_t>{1024}));
  EXPECT_EQ(sd.count("text_model.encoder.layers.23.mlp.fc1.weight"), 0u);

  // OpenAI CLIP ViT-L/14's text tower (models.md 7: 768 wide, 12 layers, 12 heads, 3072,
  // quick_gelu): 427,616,513 (CLIPModel) - 303,966,208 (vision + projection) - 768*768
  // (text_projection) - 1 (logit_scale) = 123,060,480.
  const CLIPTextConfig l = config_from_json(
      R"({"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
          "hidden_act": "quick_gelu"})");
  CLIPTextModel large(l, kMeta);
  EXPECT_EQ(nn::parameter_count(*large), 427616513 - 303966208 - 768 * 768 - 1);
  EXPECT_EQ(module_state_dict(*large).size(), 196u);
}

TEST(CLIPTextModel, ConfigValuesAreValidated) {
  EXPECT_THROW(config_from_json(R"({"hidden_act": "relu"})"), ManifestError);
  EXPECT_THROW(config_from_json(R"({"hidden_size": 30, "num_attention_heads": 4})"), ManifestError);
  EXPECT_THROW(config_from_json(R"({"num_hidden_layers": 0})"), ManifestError);
  try {
    config_from_json(R"({"hidden_act": "gelu_new"})");
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "hidden_act");
  }
  const CLIPTextConfig defaults = config_from_json("{}");  // transformers' CLIPTextConfig defaults
  EXPECT_EQ(defaults.hidden_size, 512);
  EXPECT_EQ(defaults.hidden_act, "quick_gelu");
}

const std::string kTinyConfig =
    R"({"architectures": ["CLIPTextModel"], "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "hidden_act": "gelu", "max_position_embeddings": 77, "vocab_size": 49408,
        "layer_norm_eps": 1e-05, "eos_token_id": 2})";

std::string with_act(const std::string& act) {
  auto o = boost::json::parse(kTinyConfig).as_object();
  o["hidden_act"] = act;
  return boost::json::serialize(o);
}

// Random values in every tensor (norms included), so a weight that fails to load shows.
TensorMap random_weights(torch::nn::Module& m, std::uint64_t seed) {
  ScopedSeed s(seed);
  TensorMap sd = module_state_dict(m);
  at::NoGradGuard g;
  for (auto& [k, t] : sd) {
    const bool norm = k.find("norm") != std::string::npos;
    const double mean = norm && k.find("weight") != std::string::npos ? 1.0 : 0.0;
    t.copy_(at::randn(t.sizes()) * (norm ? 0.2 : 0.3) + mean);
  }
  return sd;
}

// The forward of models.md 3.3 written with plain tensor ops from a state dict.
at::Tensor reference_forward(
    const TensorMap& w, const at::Tensor& ids, std::int64_t layers, std::int64_t heads, const std::string& act) {
  auto W = [&](const std::string& k) { return w.at("text_model." + k); };
  const std::int64_t b = ids.size(0), l = ids.size(1);
  at::Tensor x = W("embeddings.token_embedding.weight").index_select(0, ids.flatten()).view({b, l, -1}) +
                 W("embeddings.position_embedding.weight").narrow(0, 0, l);
  const std::int64_t dim = x.size(2), d = dim / heads;
  auto ln = [&](const at::Tensor& t, const std::string& k) {
    return (t - t.mean(-1, true)) / (t.var(-1, false, true) + 1e-5).sqrt() * W(k + ".weight") + W(k + ".bias");
  };
  auto lin = [&](const at::Tensor& t, const std::string& k) {
    return at::matmul(t, W(k + ".weight").t()) + W(k + ".bias");
  };
  const at::Tensor future = at::ones({l, l}, at::kBool).triu(1);
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    at::Tensor h = ln(x, p + "layer_norm1");
    auto split = [&](const at::Tensor& t) { return t.view({b, l, heads, d}).permute({0, 2, 1, 3}); };
    at::Tensor q = split(lin(h, p + "self_attn.q_proj")), k = split(lin(h, p + "self_attn.k_proj")),
               v = split(lin(h, p + "self_attn.v_proj"));
    at::Tensor s = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));
    at::Tensor o = at::matmul(at::softmax(s.masked_fill(future, -INFINITY), -1), v);
    x = x + lin(o.permute({0, 2, 1, 3}).reshape({b, l, dim}), p + "self_attn.out_proj");
    at::Tensor m = lin(ln(x, p + "layer_norm2"), p + "mlp.fc1");
    m = act == "gelu" ? 0.5 * m * (1 + at::erf(m / std::sqrt(2.0))) : m * at::sigmoid(1.702 * m);
    x = x + lin(m, p + "mlp.fc2");
  }
  return ln(x, "final_layer_norm");
}

TEST(CLIPTextModel, MatchesTheReferenceForwardWithTheConfiguredActivation) {
  const at::Tensor ids =
      at::tensor(Ids{kBOS, 320, 1125, 539, 320, 2368, kEOS, 0, 0, kBOS, 1929, kEOS, 0, 0, 0, 0, 0, 0}, at::kLong)
          .view({2, 9});
  at::Tensor outputs[2];
  int i = 0;
  for (const std::string act : {"gelu", "quick_gelu"}) {
    CLIPTextModel model(config_from_json(with_act(act)), at::TensorOptions());
    const TensorMap w = random_weights(*model, 7);  // the same values for both activations
    at::NoGradGuard g;
    outputs[i] = model->forward(ids).last_hidden_state;
    test::expect_close(outputs[i++], reference_forward(w, ids, 2, 2, act), 1e-4, 1e-4, act);
  }
  EXPECT_GT((outputs[0] - outputs[1]).abs().max().item<double>(), 1e-3) << "the activation must matter";
}

TEST(CLIPTextModel, AttentionIsCausal) {
  CLIPTextModel model(config_from_json(kTinyConfig), at::TensorOptions());
  random_weights(*model, 8);
  at::NoGradGuard g;
  at::Tensor ids = at::randint(0, 49408, {1, 12}, at::kLong);
  const at::Tensor before = model->forward(ids).last_hidden_state;
  for (std::int64_t i : {0, 4, 10}) {
    at::Tensor changed = ids.clone();
    changed.narrow(1, i + 1, 12 - i - 1).random_(0, 49408);
    const at::Tensor after = model->forward(changed).last_hidden_state;
    test::expect_close(after.narrow(1, 0, i + 1), before.narrow(1, 0, i + 1), 0, 1e-6, "positions <= i");
    EXPECT_GT((after - before).abs().max().item<double>(), 1e-4) << "later positions must see the change";
  }
}

TEST(CLIPTextModel, PooledOutputIsTheHiddenStateAtTheFirstEOS) {
  CLIPTextModel model(config_from_json(kTinyConfig), at::TensorOptions());
  random_weights(*model, 9);
  at::NoGradGuard g;
  // SD 2.x padding ("!" = 0) and SD 1.x padding (EOS repeated): both pool at the first EOS.
  const at::Tensor ids =
      at::tensor(
          Ids{kBOS, 320, 2368, kEOS, 0, 0, kBOS, 320, 1125, 539, 320, kEOS, kBOS, kEOS, kEOS, kEOS, kEOS, kEOS},
          at::kLong)
          .view({3, 6});
  const CLIPTextOutput out = model->forward(ids);
  EXPECT_EQ(out.pooled.sizes(), (std::vector<std::int64_t>{3, 16}));
  const std::int64_t eos_at[] = {3, 5, 1};
  for (std::int64_t b = 0; b < 3; ++b) test::expect_close(out.pooled[b], out.last_hidden_state[b][eos_at[b]], 0, 0);
  // A config with a real eos_token_id pools at its first occurrence, not at the largest id.
  EXPECT_EQ(eos_positions(at::tensor(Ids{5, 9, 3, 7, 3}, at::kLong).view({1, 5}), 3).item<std::int64_t>(), 2);
  EXPECT_EQ(eos_positions(at::tensor(Ids{5, 9, 3, 9, 3}, at::kLong).view({1, 5}), 2).item<std::int64_t>(), 1);
}

// ---------------------------------------------------------------------------------------------
// The plugin, through the registry, on a tiny pipeline folder.

std::shared_ptr<TextEncoder> make_encoder(const std::string& options_json) {
  return Registry::global().create<TextEncoder>(ComponentConfig{
      "text_encoder", "clip_text", boost::json::parse(options_json).as_object(), "<test>", "text_encoder.options"});
}

struct TinyPipeline {
  std::string dir;
  TensorMap weights;
};

// text_encoder/{config.json, model.safetensors} with random weights, tokenizer/ with the real-id
// vocabulary and SD-Turbo's special_tokens_map.json.
TinyPipeline write_pipeline(const std::string& config = kTinyConfig, std::uint64_t seed = 11) {
  TinyPipeline p{test::temp_dir("clip_pipe"), {}};
  write_text(p.dir + "/text_encoder/config.json", config);
  CLIPTextModel model(config_from_json(config), at::TensorOptions());
  p.weights = random_weights(*model, seed);
  safetensors_save(p.dir + "/text_encoder/model.safetensors", p.weights, {{"format", "pt"}});
  write_tokenizer(p.dir + "/tokenizer", real_id_tokenizer(), kSDTurboSpecial);
  return p;
}

std::string path_option(const std::string& dir, const std::string& extra = "") {
  return R"({"path": ")" + dir + "\"" + extra + "}";
}

using test::expect_error_names;

TEST(CLIPTextPlugin, EncodesWithTheWeightsOfThePipelineFolder) {
  const TinyPipeline p = write_pipeline();
  auto encoder = make_encoder(path_option(p.dir));
  const std::vector<std::string> prompts{"a photo of a cat", "Hello, world!", ""};
  const at::Tensor out = encoder->encode(prompts);
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{3, 77, 16}));
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  const at::Tensor ids = CLIPTokenizer::load(p.dir + "/tokenizer").encode_batch(prompts, 77);
  EXPECT_EQ(ids[2][2].item<std::int64_t>(), 0) << "padded with '!'";
  test::expect_close(out, reference_forward(p.weights, ids, 2, 2, "gelu"), 1e-4, 1e-4, "reference");
  // All weights came from the file, and they are frozen.
  const TensorMap sd = encoder->state_dict();
  EXPECT_EQ(sd.size(), p.weights.size());
  for (const auto& [k, t] : p.weights) test::expect_close(sd.at(k), t, 0, 0, k);
  const auto params = encoder->trainable_parameters();
  EXPECT_EQ(params.size(), p.weights.size());
  for (const auto& t : params) EXPECT_FALSE(t.requires_grad());
  EXPECT_FALSE(out.requires_grad());
  // A shorter max_length gives the first positions of the same conditioning (causal attention).
  const at::Tensor short_out = make_encoder(path_option(p.dir, R"(, "max_length": 10)"))->encode({prompts[0]});
  EXPECT_EQ(short_out.sizes(), (std::vector<std::int64_t>{1, 10, 16}));
  test::expect_close(short_out[0], out[0].narrow(0, 0, 10), 1e-5, 1e-5, "max_length 10");
}

TEST(CLIPTextPlugin, QuickGELUConfigAndFP16VariantAndPositionIds) {
  TinyPipeline p = write_pipeline(with_act("quick_gelu"), 12);
  // An fp16 variant file, with the int64 position_ids buffer older transformers files carry.
  TensorMap half;
  for (const auto& [k, t] : p.weights) half[k] = t.to(at::kHalf);
  half["text_model.embeddings.position_ids"] = at::arange(77, at::kLong).view({1, 77});
  safetensors_save(p.dir + "/text_encoder/model.fp16.safetensors", half);
  TensorMap rounded;
  for (const auto& [k, t] : half) rounded[k] = t.to(at::kFloat);
  const at::Tensor ids = CLIPTokenizer::load(p.dir + "/tokenizer").encode_batch({"a photo of a dog"}, 77);
  const at::Tensor out = make_encoder(path_option(p.dir, R"(, "variant": "fp16")"))->encode({"a photo of a dog"});
  test::expect_close(out, reference_forward(rounded, ids, 2, 2, "quick_gelu"), 1e-4, 1e-4, "fp16 file, quick_gelu");
  // bfloat16 parameters run on the CPU and still return float32.
  const at::Tensor bf = make_encoder(path_option(p.dir, R"(, "dtype": "bfloat16")"))->encode({"a photo of a dog"});
  EXPECT_EQ(bf.scalar_type(), at::kFloat);
  test::expect_close(bf, reference_forward(p.weights, ids, 2, 2, "quick_gelu"), 0.1, 0.1, "bfloat16");
}

TEST(CLIPTextPlugin, StrictLoadNamesTheKeyAndTheFile) {
  TinyPipeline p = write_pipeline();
  const std::string file = p.dir + "/text_encoder/model.safetensors";
  TensorMap missing = p.weights;
  missing.erase("text_model.encoder.layers.1.mlp.fc2.bias");
  safetensors_save(file, missing);
  expect_error_names([&] { make_encoder(path_option(p.dir)); }, {"text_model.encoder.layers.1.mlp.fc2.bias", file});
  TensorMap extra = p.weights;
  extra["text_model.text_projection.weight"] = at::zeros({8, 16});
  safetensors_save(file, extra);
  expect_error_names([&] { make_encoder(path_option(p.dir)); }, {"text_model.text_projection.weight", file});
  TensorMap reshaped = p.weights;
  reshaped["text_model.embeddings.position_embedding.weight"] = at::zeros({76, 16});
  safetensors_save(file, reshaped);
  expect_error_names([&] { make_encoder(path_option(p.dir)); }, {"position_embedding", file});
  // The interface's load_state_dict follows the same rules.
  safetensors_save(file, p.weights);
  auto encoder = make_encoder(path_option(p.dir));
  expect_error_names(
      [&] { encoder->load_state_dict(missing, true, "other.safetensors"); },
      {"layers.1.mlp.fc2.bias", "other.safetensors"});
}

TEST(CLIPTextPlugin, OptionsAreChecked) {
  const TinyPipeline p = write_pipeline();
  EXPECT_THROW(make_encoder("{}"), ManifestError);  // path is required
  try {
    make_encoder(path_option(p.dir, R"(, "dtype": "float16")"))->encode({"a cat"});
    ADD_FAILURE() << "float16 on the CPU must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "text_encoder.options.dtype");
  }
  try {
    make_encoder(path_option(p.dir, R"(, "max_length": 78)"));
    ADD_FAILURE() << "max_length above max_position_embeddings must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "text_encoder.options.max_length");
  }
  EXPECT_THROW(make_encoder(path_option(p.dir, R"(, "variant": "fp16")")), FileError);  // no such file
  EXPECT_THROW(make_encoder(path_option(p.dir, R"(, "dtype": "float64")")), ManifestError);
  EXPECT_THROW(make_encoder(path_option(p.dir, R"(, "variant": "bf16")")), ManifestError);
  EXPECT_THROW(make_encoder(path_option(p.dir + "/nowhere")), Error);
}

}  // namespace
}  // namespace sdpo::clip_text
