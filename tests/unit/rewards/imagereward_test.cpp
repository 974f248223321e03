// The `imagereward` reward (research/models.md 6.4): the published network on the meta device
// (parameter count, every key name and shape); the configs and their errors; BERT's WordPiece
// tokenizer on a hand-made vocabulary with hand-computed ids; the preprocessing against
// hand-computed values; tiny weights in the published names against a plain-tensor float64
// forward written here; the reward through the registry (raw and standardized scores, batching,
// one pair at a time, safetensors round trip, file and option errors naming file and key).

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/blip/blip_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/tokenizers/wordpiece.h"
#include "support/test_support.h"
#include "support/tiny_imagereward.h"

namespace sdpo {
namespace {

namespace fs = std::filesystem;
namespace ir = imagereward;
using Shape = std::vector<std::int64_t>;
using test::expect_error_names;

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);

nn::HFConfig hf(const std::string& json, const std::string& file = "<config.json>") {
  return nn::HFConfig(boost::json::parse(json).as_object(), file);
}

ir::BLIPVisionConfig vision_of(const test::TinyImageRewardSpec& s) {
  return ir::BLIPVisionConfig::from_hf(hf(test::tiny_vision_config(s)));
}
ir::MedConfig med_of(const test::TinyImageRewardSpec& s) {
  return ir::MedConfig::from_hf(hf(test::tiny_med_config(s)));
}

// ---------------------------------------------------------------------------------------------
// The published network.

TEST(ImageRewardModel, PublishedSizesOnTheMetaDeviceHaveTheRealParameterCountAndKeys) {
  // Defaults = ImageReward's create_vit('large', 224) and the published med_config.json.
  ir::ImageRewardModel model(ir::BLIPVisionConfig{}, ir::MedConfig{}, kMeta);
  // models.md 6.4 "Sizes (computed)": 446,206,689 parameters over 620 tensors.
  EXPECT_EQ(nn::parameter_count(*model), 446206689);
  // The same by hand from the architecture. ViT-L/16: patch conv 1024*3*16*16 + 1024, class token
  // 1024, positions 197*1024, per block 2 norms (2*2048) + qkv (3072*1024 + 3072) + proj
  // (1024*1024 + 1024) + fc1 (4096*1024 + 4096) + fc2 (1024*4096 + 1024), final norm 2048.
  const std::int64_t block =
      2 * 2048 + (3072 * 1024 + 3072) + (1024 * 1024 + 1024) + (4096 * 1024 + 4096) + (1024 * 4096 + 1024);
  const std::int64_t vit = (1024 * 3 * 16 * 16 + 1024) + 1024 + 197 * 1024 + 24 * block + 2048;
  EXPECT_EQ(vit, 303301632);  // models.md 6.4
  EXPECT_EQ(nn::parameter_count(*model->visual_encoder), vit);
  // BERT: word 30524*768, positions 512*768, LayerNorm 1536; per layer self-attention (3 linears
  // 768->768, dense, LayerNorm), cross-attention (query 768->768, key/value 1024->768, dense,
  // LayerNorm), MLP (768->3072, 3072->768, LayerNorm).
  const std::int64_t lin768 = 768 * 768 + 768, lin1024 = 1024 * 768 + 768;
  const std::int64_t layer =
      (4 * lin768 + 1536) + (2 * lin768 + 2 * lin1024 + 1536) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 1536;
  const std::int64_t bert = 30524 * 768 + 512 * 768 + 1536 + 12 * layer;
  EXPECT_EQ(bert, 141977088);  // models.md 6.4
  EXPECT_EQ(nn::parameter_count(*model->text_encoder), bert);
  const std::int64_t head = (768 * 1024 + 1024) + (1024 * 128 + 128) + (128 * 64 + 64) + (64 * 16 + 16) + (16 + 1);
  EXPECT_EQ(vit + bert + head, 446206689);

  // Every key and shape of models.md 6.4's pattern, and nothing else (no buffers either).
  const TensorMap state = module_state_dict(*model);
  const test::KeyShapes expected = test::imagereward_key_shapes(test::TinyImageRewardSpec::published());
  EXPECT_EQ(expected.size(), 620u);
  ASSERT_EQ(state.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(state.count(name)) << name;
    EXPECT_EQ(state.at(name).sizes(), at::IntArrayRef(shape)) << name;
  }
  EXPECT_EQ(state.at("blip.text_encoder.encoder.layer.11.crossattention.self.key.weight").sizes(), (Shape{768, 1024}));
  EXPECT_EQ(state.at("blip.visual_encoder.pos_embed").sizes(), (Shape{1, 197, 1024}));
  // The head is float32 whatever the towers' dtype (ImageReward's .float() before its mlp).
  ir::ImageRewardModel half(ir::BLIPVisionConfig{}, ir::MedConfig{}, kMeta.dtype(at::kBFloat16));
  const TensorMap hs = module_state_dict(*half);
  EXPECT_EQ(hs.at("mlp.layers.0.weight").scalar_type(), at::kFloat);
  EXPECT_EQ(hs.at("blip.visual_encoder.norm.weight").scalar_type(), at::kBFloat16);

  EXPECT_TRUE(ir::unused_checkpoint_key("blip.vision_proj.weight"));
  EXPECT_TRUE(ir::unused_checkpoint_key("blip.text_proj.bias"));
  EXPECT_TRUE(ir::unused_checkpoint_key("blip.text_encoder.embeddings.position_ids"));
  EXPECT_FALSE(ir::unused_checkpoint_key("blip.itm_head.weight"));
  EXPECT_FALSE(ir::unused_checkpoint_key("mlp.layers.0.weight"));
}

TEST(ImageRewardConfig, PublishedValuesAndErrorsNamingFileAndKey) {
  const ir::MedConfig m = ir::MedConfig::from_hf(hf(test::tiny_med_config(test::TinyImageRewardSpec::published())));
  EXPECT_EQ(m.hidden_size, 768);
  EXPECT_EQ(m.num_hidden_layers, 12);
  EXPECT_EQ(m.num_attention_heads, 12);
  EXPECT_EQ(m.intermediate_size, 3072);
  EXPECT_EQ(m.max_position_embeddings, 512);
  EXPECT_EQ(m.vocab_size, 30524);
  EXPECT_DOUBLE_EQ(m.layer_norm_eps, 1e-12);
  const ir::BLIPVisionConfig v = vision_of(test::TinyImageRewardSpec::published());
  EXPECT_EQ(v.img_size, 224);
  EXPECT_EQ(v.tokens(), 197);
  EXPECT_EQ(v.mlp_hidden(), 4096);
  EXPECT_EQ(ir::BLIPVisionConfig::from_hf(hf(R"({"depth": 2})")).embed_dim, 1024);  // absent keys keep ViT-L

  auto med_key = [](const std::string& json) {
    try {
      ir::MedConfig::from_hf(hf(json, "/m/med_config.json"));
    } catch (const ManifestError& e) {
      EXPECT_EQ(e.file(), "/m/med_config.json");
      return e.json_path();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(med_key(R"({"hidden_act": "relu"})"), "hidden_act");
  EXPECT_EQ(med_key(R"({"add_cross_attention": false})"), "add_cross_attention");
  EXPECT_EQ(med_key(R"({"position_embedding_type": "relative_key"})"), "position_embedding_type");
  EXPECT_EQ(med_key(R"({"num_attention_heads": 5})"), "num_attention_heads");
  EXPECT_EQ(med_key(R"({"vocab_size": 0})"), "vocab_size");
  EXPECT_EQ(med_key(R"({"layer_norm_eps": "small"})"), "layer_norm_eps");
  EXPECT_EQ(med_key(R"({"encoder_width": 1})"), "<accepted>");  // BLIP overwrites it

  auto vit_key = [](const std::string& json) {
    try {
      ir::BLIPVisionConfig::from_hf(hf(json, "/m/vit.json"));
    } catch (const ManifestError& e) {
      EXPECT_EQ(e.file(), "/m/vit.json");
      return e.json_path();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(vit_key(R"({"qkv_bias": false})"), "qkv_bias");
  EXPECT_EQ(vit_key(R"({"patch_size": 15})"), "patch_size");
  EXPECT_EQ(vit_key(R"({"num_heads": 3})"), "num_heads");
  EXPECT_EQ(vit_key(R"({"mlp_ratio": 0})"), "mlp_ratio");
  EXPECT_EQ(vit_key(R"({"depth": -1})"), "depth");
}

// ---------------------------------------------------------------------------------------------
// WordPiece on a hand-made vocabulary.

// ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, a 5, photo 6, of 7, cat 8, ##s 9, play 10,
// ##ing 11, "," 12, "!" 13, un 14, ##aff 15, ##able 16, cafe 17, "." 18, ##a 19, 中 20, $ 21, 5 22.
const std::vector<std::string> kHandVocab{"[PAD]",  "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of",
                                          "cat",    "##s",   "play",  "##ing", ",",      "!", "un",    "##aff",
                                          "##able", "cafe",  ".",     "##a",   "中",     "$", "5"};

std::string write_vocab(const std::vector<std::string>& tokens, const std::string& tag = "wordpiece") {
  const std::string path = test::temp_dir(tag) + "/vocab.txt";
  std::string text;
  for (const auto& t : tokens) text += t + "\n";
  test::write_text_file(path, text);
  return path;
}

TEST(WordPieceBasic, CleansLowerCasesStripsAccentsAndSplitsPunctuation) {
  using V = std::vector<std::string>;
  EXPECT_EQ(ir::bert_basic_tokenize("Héllo, WORLD!"), (V{"hello", ",", "world", "!"}));
  // Tab, newline, no-break space (Zs) separate; a control character (BEL) is dropped in place.
  EXPECT_EQ(ir::bert_basic_tokenize("  A\tphoto\xC2\xA0of\ncats "), (V{"a", "photo", "of", "cats"}));
  EXPECT_EQ(ir::bert_basic_tokenize("ca\x07ts"), (V{"cats"}));
  // CJK ideographs become words of their own; decomposed and precomposed accents both go.
  EXPECT_EQ(
      ir::bert_basic_tokenize("a\xE4\xB8\xAD"
                              "cat"),
      (V{"a", "\xE4\xB8\xAD", "cat"}));
  EXPECT_EQ(ir::bert_basic_tokenize("CAFÉ cafe\xCC\x81 \xC3\x85ngstr\xC3\xB6m"), (V{"cafe", "cafe", "angstrom"}));
  // ASCII symbols count as punctuation ("$", "^", "`"), as do Unicode P* ("«" U+00AB).
  EXPECT_EQ(ir::bert_basic_tokenize("$5^x`y \xC2\xAByes"), (V{"$", "5", "^", "x", "`", "y", "\xC2\xAB", "yes"}));
  EXPECT_EQ(ir::bert_basic_tokenize("don't stop..."), (V{"don", "'", "t", "stop", ".", ".", "."}));
  EXPECT_TRUE(ir::bert_basic_tokenize(" \t\n").empty());
  EXPECT_FALSE(std::string(ir::wordpiece_unicode_version()).empty());
}

TEST(WordPieceTokenizer, HandComputedIdsUnknownWordsAndTruncation) {
  const std::string path = write_vocab(kHandVocab);
  const auto tok = ir::WordPieceTokenizer::load(path);
  EXPECT_EQ(tok.cls_id(), 2);
  EXPECT_EQ(tok.sep_id(), 3);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 1);
  EXPECT_EQ(tok.max_id(), 22);
  using V = std::vector<std::string>;
  using I = std::vector<std::int64_t>;
  EXPECT_EQ(tok.wordpiece("cats"), (V{"cat", "##s"}));
  EXPECT_EQ(tok.wordpiece("playing"), (V{"play", "##ing"}));
  EXPECT_EQ(tok.wordpiece("unaffable"), (V{"un", "##aff", "##able"}));  // ##aff, not ##a: longest first
  EXPECT_EQ(tok.wordpiece("dog"), (V{"[UNK]"}));
  EXPECT_EQ(tok.wordpiece("catz"), (V{"[UNK]"}));  // "cat" fits, "##z" does not: the whole word
  // 100 code points are split; 101 are one [UNK] (max_input_chars_per_word).
  EXPECT_EQ(tok.wordpiece(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(tok.wordpiece(std::string(101, 'a')), (V{"[UNK]"}));

  EXPECT_EQ(tok.tokenize("A photo of cats!"), (I{5, 6, 7, 8, 9, 13}));
  EXPECT_EQ(tok.tokenize("Café, unaffable dogs."), (I{17, 12, 14, 15, 16, 1, 18}));
  EXPECT_EQ(tok.tokenize("$5 \xE4\xB8\xAD"), (I{21, 22, 20}));
  std::int64_t length = 0;
  EXPECT_EQ(tok.encode("A photo of cats!", 10, &length), (I{2, 5, 6, 7, 8, 9, 13, 3, 0, 0}));
  EXPECT_EQ(length, 8);
  // Truncation keeps max_length - 2 content ids and the [SEP]: 7 content ids cut to 4.
  EXPECT_EQ(tok.encode("a photo of cats playing", 6, &length), (I{2, 5, 6, 7, 8, 3}));
  EXPECT_EQ(length, 6);
  EXPECT_EQ(tok.encode("", 4), (I{2, 3, 0, 0}));
  EXPECT_EQ(tok.encode("a dog", 5), (I{2, 5, 1, 3, 0}));

  const ir::BertEncoding enc = tok.encode_batch({"a photo", "", "cats playing with a cat"}, 6);
  ASSERT_EQ(enc.ids.sizes(), (Shape{3, 6}));
  EXPECT_TRUE(
      enc.ids.equal(at::tensor(I{2, 5, 6, 3, 0, 0, 2, 3, 0, 0, 0, 0, 2, 8, 9, 10, 11, 3}, at::kLong).view({3, 6})));
  EXPECT_TRUE(enc.attention_mask.equal(
      at::tensor(I{1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}, at::kLong).view({3, 6})));
  EXPECT_EQ(tok.encode_batch({}, 35).ids.sizes(), (Shape{0, 35}));
}

TEST(WordPieceTokenizer, VocabularyFileRules) {
  // A repeated token keeps its last line, as transformers' load_vocab.
  std::vector<std::string> repeated = kHandVocab;
  repeated.push_back("cat");
  EXPECT_EQ(
      ir::WordPieceTokenizer::load(write_vocab(repeated, "wordpiece_repeat")).tokenize("cat"),
      (std::vector<std::int64_t>{23}));
  std::vector<std::string> no_cls = kHandVocab;
  no_cls[2] = "[CLX]";
  const std::string path = write_vocab(no_cls, "wordpiece_nocls");
  expect_error_names([&] { ir::WordPieceTokenizer::load(path); }, {path, "[CLS]"});
  EXPECT_THROW(ir::WordPieceTokenizer::load("/nonexistent/vocab.txt"), FileError);
}

// ---------------------------------------------------------------------------------------------
// Preprocessing by hand.

TEST(ImageRewardPreprocess, MatchesHandComputedValues) {
  const double mean[] = {0.48145466, 0.4578275, 0.40821073}, std_[] = {0.26862954, 0.26130258, 0.27577711};
  // A 4 x 6 image at size 4: no resize (the short edge is 4), the crop drops column 0 and 5
  // ((6 - 4) / 2 = 1 on the left). Levels chosen as exact multiples of 1/255 plus three edge cases.
  at::Tensor img = at::empty({1, 3, 4, 6}, at::kDouble);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 6; ++j) img[0][c][i][j] = (40.0 * c + 10.0 * i + 3.0 * j) / 255.0;
    }
  }
  img[0][0][1][1] = 0.5;   // 127.5 rounds half to even: level 128
  img[0][1][2][2] = 1.7;   // clamped to 255
  img[0][2][3][4] = -0.2;  // clamped to 0
  const at::Tensor px = ir::imagereward_preprocess(img.to(at::kFloat), 4);
  ASSERT_EQ(px.sizes(), (Shape{1, 3, 4, 4}));
  EXPECT_EQ(px.scalar_type(), at::kFloat);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        double level = 40.0 * c + 10.0 * i + 3.0 * (j + 1);
        if (c == 0 && i == 1 && j == 0) level = 128;
        if (c == 1 && i == 2 && j == 1) level = 255;
        if (c == 2 && i == 3 && j == 3) level = 0;
        const double want = (level / 255.0 - mean[c]) / std_[c];
        EXPECT_NEAR(px[0][c][i][j].item<double>(), want, 1e-5) << c << " " << i << " " << j;
      }
    }
  }
  // A constant 8 x 8 image downscaled to 4: the bicubic weights sum to one, so the level (round(0.25
  // * 255) = 64) survives the resize.
  const at::Tensor flat = ir::imagereward_preprocess(at::full({2, 3, 8, 8}, 0.25), 4);
  ASSERT_EQ(flat.sizes(), (Shape{2, 3, 4, 4}));
  for (int c = 0; c < 3; ++c) {
    const double want = (64.0 / 255.0 - mean[c]) / std_[c];
    EXPECT_NEAR(flat.select(1, c).min().item<double>(), want, 1e-5);
    EXPECT_NEAR(flat.select(1, c).max().item<double>(), want, 1e-5);
  }
}

// ---------------------------------------------------------------------------------------------
// Plain-tensor reference (float64) of models.md 6.4's forward, from the weights by name.

struct Ref {
  std::map<std::string, at::Tensor> w;
  explicit Ref(const TensorMap& weights) {
    for (const auto& [k, t] : weights) w[k] = t.to(at::kDouble);
  }
  at::Tensor lin(const at::Tensor& x, const std::string& k) const {
    return at::matmul(x, w.at(k + ".weight").t()) + w.at(k + ".bias");
  }
  at::Tensor ln(const at::Tensor& x, const std::string& k, double eps) const {
    const at::Tensor mu = x.mean(-1, true), var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / at::sqrt(var + eps) * w.at(k + ".weight") + w.at(k + ".bias");
  }
  // Per head: softmax(q k^T / sqrt(d) + mask) v.
  static at::Tensor attend(
      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t heads, const at::Tensor& mask) {
    const std::int64_t b = q.size(0), d = q.size(2) / heads;
    std::vector<at::Tensor> outs;
    for (std::int64_t h = 0; h < heads; ++h) {
      const at::Tensor qh = q.narrow(2, h * d, d), kh = k.narrow(2, h * d, d), vh = v.narrow(2, h * d, d);
      at::Tensor s = at::bmm(qh, kh.transpose(1, 2)) / std::sqrt(static_cast<double>(d));
      if (mask.defined()) s = s + mask.view({b, 1, -1});
      outs.push_back(at::bmm(at::softmax(s, -1), vh));
    }
    return at::cat(outs, 2);
  }
  at::Tensor forward(
      const at::Tensor& pixels,
      const at::Tensor& ids,
      const at::Tensor& mask,
      const test::TinyImageRewardSpec& s) const {
    const std::string v = "blip.visual_encoder.";
    const std::int64_t b = pixels.size(0), W = s.width;
    at::Tensor x = at::conv2d(
        pixels.to(at::kDouble), w.at(v + "patch_embed.proj.weight"), w.at(v + "patch_embed.proj.bias"),
        {s.patch, s.patch});
    x = at::cat({w.at(v + "cls_token").expand({b, 1, W}), x.flatten(2).transpose(1, 2)}, 1) + w.at(v + "pos_embed");
    for (std::int64_t i = 0; i < s.depth; ++i) {
      const std::string p = v + "blocks." + std::to_string(i) + ".";
      const at::Tensor qkv = lin(ln(x, p + "norm1", 1e-6), p + "attn.qkv");
      x = x +
          lin(attend(qkv.narrow(2, 0, W), qkv.narrow(2, W, W), qkv.narrow(2, 2 * W, W), s.heads, {}), p + "attn.proj");
      x = x + lin(at::gelu(lin(ln(x, p + "norm2", 1e-6), p + "mlp.fc1")), p + "mlp.fc2");
    }
    const at::Tensor image = ln(x, v + "norm", 1e-6);
    const std::string t = "blip.text_encoder.";
    const std::int64_t len = ids.size(1);
    at::Tensor h = at::embedding(w.at(t + "embeddings.word_embeddings.weight"), ids) +
                   w.at(t + "embeddings.position_embeddings.weight").narrow(0, 0, len);
    h = ln(h, t + "embeddings.LayerNorm", 1e-12);
    const at::Tensor additive = (1.0 - mask.to(at::kDouble)) * -10000.0;
    for (std::int64_t i = 0; i < s.layers; ++i) {
      const std::string p = t + "encoder.layer." + std::to_string(i) + ".";
      std::string a = p + "attention.";
      h =
          ln(h + lin(attend(
                         lin(h, a + "self.query"), lin(h, a + "self.key"), lin(h, a + "self.value"), s.text_heads,
                         additive),
                     a + "output.dense"),
             a + "output.LayerNorm", 1e-12);
      a = p + "crossattention.";
      h =
          ln(h + lin(attend(
                         lin(h, a + "self.query"), lin(image, a + "self.key"), lin(image, a + "self.value"),
                         s.text_heads, {}),
                     a + "output.dense"),
             a + "output.LayerNorm", 1e-12);
      h = ln(h + lin(at::gelu(lin(h, p + "intermediate.dense")), p + "output.dense"), p + "output.LayerNorm", 1e-12);
    }
    at::Tensor r = h.select(1, 0);
    for (const char* i : {"0", "2", "4", "6", "7"}) r = lin(r, std::string("mlp.layers.") + i);
    return r.squeeze(1);
  }
};

TEST(ImageRewardModel, TinyWeightsInThePublishedNamesMatchThePlainTensorForward) {
  const test::TinyImageRewardSpec s;
  const TensorMap w = test::tiny_imagereward_weights(s, 41);
  ir::ImageRewardModel model(vision_of(s), med_of(s), at::TensorOptions());
  module_load_state_dict(*model, w, /*strict=*/true, "<tiny>", "test");
  at::NoGradGuard g;
  const at::Tensor pixels = at::randn({3, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  const at::Tensor ids =
      at::tensor(
          std::vector<std::int64_t>{2, 5, 6, 10, 3, 0, 0, 2, 13, 14, 15, 16, 19, 3, 2, 3, 0, 0, 0, 0, 0}, at::kLong)
          .view({3, 7});
  const at::Tensor mask = ids.ne(0).to(at::kLong);
  const at::Tensor r = model->forward(pixels, ids, mask);
  ASSERT_EQ(r.sizes(), (Shape{3}));
  EXPECT_EQ(r.scalar_type(), at::kFloat);
  const at::Tensor want = Ref(w).forward(pixels, ids, mask, s);
  test::expect_close(r.to(at::kDouble), want, 1e-4, 1e-5, "plain-tensor forward");
  EXPECT_GT((want - want.mean()).abs().max().item<double>(), 1e-3);  // the inputs matter
  // Padded positions are masked out: other ids there change nothing.
  const at::Tensor other = ids.masked_fill(mask.eq(0), 7);
  test::expect_close(model->forward(pixels, other, mask), r, 1e-6, 1e-6, "padding ids");
}

// ---------------------------------------------------------------------------------------------
// The reward.

std::shared_ptr<Reward> make_reward(const std::string& options_json) {
  return Registry::global().create<Reward>(ComponentConfig{
      "reward", "imagereward", boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

std::string options(const std::string& dir, const std::string& extra = "") {
  return R"({"path": ")" + dir + R"(", "vision_config": ")" + dir + "/vision_config.json\"" + extra + "}";
}

const std::vector<std::string> kPrompts{"a red circle", "a blue square", "two cats on the left", "a dog"};

// The reference scores: the tiny vocabulary's ids by hand ([CLS] 2, [SEP] 3, [PAD] 0 up to 35),
// the preprocessing, the float64 forward.
at::Tensor reference_raw(const TensorMap& w, const at::Tensor& images, const test::TinyImageRewardSpec& s) {
  const std::vector<std::vector<std::int64_t>> content{{5, 6, 10}, {5, 7, 11}, {13, 14, 15, 17, 18, 19}, {5, 16}};
  at::Tensor ids = at::zeros({4, 35}, at::kLong), mask = at::zeros({4, 35}, at::kLong);
  for (std::int64_t i = 0; i < 4; ++i) {
    std::vector<std::int64_t> row{2};
    row.insert(row.end(), content[i].begin(), content[i].end());
    row.push_back(3);
    for (std::size_t j = 0; j < row.size(); ++j) ids[i][static_cast<std::int64_t>(j)] = row[j];
    mask[i].narrow(0, 0, static_cast<std::int64_t>(row.size())).fill_(1);
  }
  return Ref(w).forward(ir::imagereward_preprocess(images, s.image), ids, mask, s);
}

TEST(ImageRewardReward, ScoresAreTheReferenceRawOrStandardizedAndBatchIndependent) {
  const test::TinyImageRewardSpec s;
  const std::string dir = test::temp_dir("imagereward");
  const TensorMap w = test::write_tiny_imagereward(dir, s, 51);  // with the published file's unused extras
  auto reward = make_reward(options(dir));
  EXPECT_TRUE(reward->needs_prompts());
  const at::Tensor images = at::rand({4, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(3));
  const at::Tensor raw = reward->score(images, kPrompts);
  ASSERT_EQ(raw.sizes(), (Shape{4}));
  EXPECT_EQ(raw.scalar_type(), at::kFloat);
  EXPECT_FALSE(raw.requires_grad());
  EXPECT_TRUE(at::isfinite(raw).all().item<bool>());
  const at::Tensor want = reference_raw(w, images, s);
  test::expect_close(raw.to(at::kDouble), want, 1e-4, 1e-5, "raw score");
  const at::Tensor standardized = make_reward(options(dir, R"(, "scale": "standardized")"))->score(images, kPrompts);
  test::expect_close(
      standardized.to(at::kDouble), (want - 0.16717362830052426) / 1.0333394966054072, 1e-4, 1e-5,
      "standardized score");
  // One pair at a time, other chunk sizes, the empty batch.
  for (std::int64_t i = 0; i < 4; ++i) {
    test::expect_close(
        reward->score(images.slice(0, i, i + 1), {kPrompts[static_cast<std::size_t>(i)]}), raw.slice(0, i, i + 1), 1e-5,
        1e-6, "alone " + std::to_string(i));
  }
  test::expect_close(
      make_reward(options(dir, R"(, "batch_size": 3)"))->score(images, kPrompts), raw, 1e-5, 1e-6, "batch_size 3");
  EXPECT_EQ(reward->score(images.slice(0, 0, 0), {}).sizes(), (Shape{0}));
  // Prompts matter: one image, four prompts.
  const at::Tensor same = images.slice(0, 0, 1).expand({4, 3, 48, 64}).contiguous();
  const at::Tensor by_prompt = reward->score(same, kPrompts);
  for (std::int64_t i = 1; i < 4; ++i) EXPECT_GT(std::abs((by_prompt[i] - by_prompt[0]).item<double>()), 1e-5) << i;
  expect_error_names([&] { reward->score(images, {"a"}); }, {"4 images but 1 prompts"});
  EXPECT_THROW(reward->score(at::rand({2, 4, 32, 32}), {"a", "b"}), Error);
}

TEST(ImageRewardReward, WeightsRoundTripThroughSafetensorsWithIdenticalScores) {
  const test::TinyImageRewardSpec s;
  const std::string dir = test::temp_dir("imagereward_rt");
  const TensorMap w = test::write_tiny_imagereward(dir, s, 52);
  const at::Tensor images = at::rand({3, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(4));
  const std::vector<std::string> prompts{"a green triangle", "two yellow circles", "a photo of a cat"};
  const at::Tensor first = make_reward(options(dir))->score(images, prompts);
  // The module's own state dict, saved and loaded again: the published names, bit-identical scores.
  ir::ImageRewardModel model(vision_of(s), med_of(s), at::TensorOptions());
  module_load_state_dict(*model, w, /*strict=*/true, "<tiny>", "test");
  const TensorMap state = module_state_dict(*model);
  EXPECT_EQ(state.size(), w.size());
  const std::string again = test::temp_dir("imagereward_rt2");
  for (const char* f : {"med_config.json", "vocab.txt", "vision_config.json"})
    fs::copy_file(dir + "/" + f, again + "/" + f);
  safetensors_save(again + "/ImageReward.safetensors", state);  // without the unused extras
  const TensorMap back = safetensors_load(again + "/ImageReward.safetensors");
  for (const auto& [k, t] : w) EXPECT_TRUE(back.at(k).equal(t)) << k;
  EXPECT_TRUE(make_reward(options(again))->score(images, prompts).equal(first));
}

TEST(ImageRewardReward, FilesAndOptionsAreChecked) {
  const test::TinyImageRewardSpec s;
  const std::string dir = test::temp_dir("imagereward_err");
  const TensorMap w = test::write_tiny_imagereward(dir, s, 53);
  const std::string file = dir + "/ImageReward.safetensors";
  auto with = [&](const std::string& key, const at::Tensor& t) {
    TensorMap m = w;
    m[key] = t;
    safetensors_save(file, m);
  };
  auto without = [&](const std::string& key) {
    TensorMap m = w;
    EXPECT_EQ(m.erase(key), 1u) << key;
    safetensors_save(file, m);
  };
  const std::string cross_key = "blip.text_encoder.encoder.layer.1.crossattention.self.key.bias";
  without(cross_key);
  expect_error_names([&] { make_reward(options(dir)); }, {"missing key '" + cross_key + "'", file});
  with("blip.itm_head.weight", at::zeros({2, 16}));
  expect_error_names([&] { make_reward(options(dir)); }, {"unexpected key 'blip.itm_head.weight'", file});
  with("blip.visual_encoder.pos_embed", at::zeros({1, 16, 32}));
  expect_error_names([&] { make_reward(options(dir)); }, {"'blip.visual_encoder.pos_embed'", file, "[1, 16, 32]"});
  safetensors_save(file, w);
  EXPECT_NO_THROW(make_reward(options(dir)));

  // A vision config that does not match the file: the first missing block is named.
  test::write_text_file(dir + "/vision_config.json", R"({"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3,
                                                          "num_heads": 4, "mlp_ratio": 2})");
  expect_error_names([&] { make_reward(options(dir)); }, {"missing key 'blip.visual_encoder.blocks.2.", file});
  test::write_text_file(dir + "/vision_config.json", test::tiny_vision_config(s));
  // med_config.json: refused values and a vocabulary the embedding cannot hold name file and key.
  test::write_text_file(dir + "/med_config.json", R"({"hidden_size": 16, "hidden_act": "relu"})");
  expect_error_names([&] { make_reward(options(dir)); }, {dir + "/med_config.json", "hidden_act"});
  test::TinyImageRewardSpec small = s;
  small.vocab = 20;  // the tiny vocab.txt has ids up to 23
  test::write_text_file(dir + "/med_config.json", test::tiny_med_config(small));
  expect_error_names([&] { make_reward(options(dir)); }, {dir + "/med_config.json", "vocab_size", "23"});
  small = s;
  small.positions = 34;  // fewer than ImageReward's 35 tokens
  test::write_text_file(dir + "/med_config.json", test::tiny_med_config(small));
  expect_error_names([&] { make_reward(options(dir)); }, {"max_position_embeddings", "35"});
  test::write_text_file(dir + "/med_config.json", test::tiny_med_config(s));
  EXPECT_NO_THROW(make_reward(options(dir)));

  // Missing files; the unconverted pickle is refused naming the conversion script.
  fs::rename(dir + "/vocab.txt", dir + "/vocab.off");
  expect_error_names([&] { make_reward(options(dir)); }, {"vocab.txt"});
  fs::rename(dir + "/vocab.off", dir + "/vocab.txt");
  fs::rename(file, dir + "/ImageReward.pt");
  expect_error_names([&] { make_reward(options(dir)); }, {"reward.options.path", "convert_checkpoint.py"});
  fs::remove(dir + "/ImageReward.pt");
  expect_error_names([&] { make_reward(options(dir)); }, {"ImageReward.safetensors"});
  safetensors_save(file, w);

  EXPECT_THROW(make_reward("{}"), ManifestError);  // path required
  EXPECT_THROW(make_reward(options(dir, R"(, "scale": "logit")")), ManifestError);
  EXPECT_THROW(make_reward(options(dir, R"(, "dtype": "float64")")), ManifestError);
  EXPECT_THROW(make_reward(options(dir, R"(, "batch_size": 0)")), ManifestError);
  EXPECT_THROW(make_reward(options(dir, R"(, "max_length": 77)")), ManifestError);
  const at::Tensor images = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  const std::vector<std::string> prompts{"a red circle", "two cats"};
  const at::Tensor f32 = make_reward(options(dir))->score(images, prompts);
  test::expect_close(
      make_reward(options(dir, R"(, "dtype": "bfloat16")"))->score(images, prompts), f32, 0.1, 0.1, "bfloat16");
  try {
    make_reward(options(dir, R"(, "dtype": "float16")"))->score(images, prompts);
    ADD_FAILURE() << "float16 on the CPU must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "reward.options.dtype");
  }
}

// CUDA: skipped where no GPU is present (run by scripts/gpu_check.sh).
TEST(ImageRewardReward, CUDAScoresMatchTheCPU) {
  if (!at::hasCUDA()) GTEST_SKIP() << "CUDA not available";
  const std::string dir = test::temp_dir("imagereward_cuda");
  test::write_tiny_imagereward(dir, test::TinyImageRewardSpec{}, 54);
  const at::Tensor images = at::rand({4, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(6));
  const at::Tensor cpu = make_reward(options(dir))->score(images, kPrompts);
  for (const std::string dtype : {"float32", "float16", "bfloat16"}) {
    auto reward = make_reward(options(dir, R"(, "dtype": ")" + dtype + "\""));
    reward->to(at::Device(at::kCUDA));
    const at::Tensor s = reward->score(images.to(at::kCUDA), kPrompts);
    EXPECT_TRUE(s.is_cuda()) << dtype;
    EXPECT_EQ(s.scalar_type(), at::kFloat) << dtype;
    const double tol = dtype == "float32" ? 2e-3 : 0.1;
    test::expect_close(s.cpu(), cpu, tol, tol, "CUDA " + dtype);
    EXPECT_TRUE(reward->score(images, kPrompts).device().is_cpu()) << dtype;
  }
}

}  // namespace
}  // namespace sdpo
