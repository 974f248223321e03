// open_clip's CLIP as transformers' CLIPModel (models/clip/include/sdpo/models/clip/open_clip.h) and the `hpsv2`
// reward (research/models.md 6.3): ViT-H-14 on the meta device in open_clip's names; the key
// mapping against an inverse written independently in tests/support/tiny_clip.cpp (fused q/k/v
// rows, transposed projections), giving the same features as loading transformers' names; errors
// naming the open_clip key and the file; the architecture config; zero-padded tokenization; the
// reward's score against plain-tensor features and against `pickscore`'s cosine on the same
// weights; options.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/clip/clip_image.h"
#include "sdpo/models/clip/clip_model.h"
#include "sdpo/models/clip/open_clip.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"
#include "support/test_support.h"
#include "support/tiny_clip.h"

namespace sdpo {
namespace {

namespace fs = std::filesystem;
namespace ct = clip_text;
using Shape = std::vector<std::int64_t>;

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);

using test::expect_error_names;

nn::HFConfig hf(const std::string& json) { return nn::HFConfig(boost::json::parse(json).as_object(), "<vit.json>"); }

// HPSv2's open_clip state dict with models.md 6.3's names and shapes, on the meta device.
TensorMap vit_h_14_open_clip_meta() {
  TensorMap o;
  auto put = [&](const std::string& k, Shape s) { o[k] = at::empty(s, kMeta); };
  auto blocks = [&](const std::string& prefix, std::int64_t layers, std::int64_t w) {
    for (std::int64_t i = 0; i < layers; ++i) {
      const std::string p = prefix + "transformer.resblocks." + std::to_string(i) + ".";
      for (const char* n : {"ln_1", "ln_2"}) {
        put(p + n + ".weight", {w});
        put(p + n + ".bias", {w});
      }
      put(p + "attn.in_proj_weight", {3 * w, w});
      put(p + "attn.in_proj_bias", {3 * w});
      put(p + "attn.out_proj.weight", {w, w});
      put(p + "attn.out_proj.bias", {w});
      put(p + "mlp.c_fc.weight", {4 * w, w});
      put(p + "mlp.c_fc.bias", {4 * w});
      put(p + "mlp.c_proj.weight", {w, 4 * w});
      put(p + "mlp.c_proj.bias", {w});
    }
  };
  put("visual.conv1.weight", {1280, 3, 14, 14});
  put("visual.class_embedding", {1280});
  put("visual.positional_embedding", {257, 1280});
  for (const char* n : {"visual.ln_pre", "visual.ln_post", "ln_final"}) {
    const std::int64_t w = std::string(n) == "ln_final" ? 1024 : 1280;
    put(std::string(n) + ".weight", {w});
    put(std::string(n) + ".bias", {w});
  }
  put("visual.proj", {1280, 1024});
  blocks("visual.", 32, 1280);
  put("token_embedding.weight", {49408, 1024});
  put("positional_embedding", {77, 1024});
  blocks("", 24, 1024);
  put("text_projection", {1024, 1024});
  put("logit_scale", {});
  return o;
}

// ---------------------------------------------------------------------------------------------
// The mapping on the real architecture.

TEST(OpenCLIPKeys, ViTH14OnTheMetaDeviceMapsOntoCLIPModel) {
  const ct::CLIPConfig cfg = ct::open_clip_vit_h_14();
  ct::CLIPModel clip(cfg, kMeta);
  EXPECT_EQ(nn::parameter_count(*clip), 986109441);  // the CLIP-H total of models.md 6.2
  const TensorMap model = module_state_dict(*clip);
  EXPECT_EQ(model.size(), 910u);
  const TensorMap open = vit_h_14_open_clip_meta();
  EXPECT_EQ(open.size(), 686u);  // 910 - 4 * (32 + 24): in_proj fuses q/k/v weights and biases
  const TensorMap mapped = ct::open_clip_to_hf(open, "<meta>");
  ASSERT_EQ(mapped.size(), model.size());
  for (const auto& [k, t] : model) {
    ASSERT_TRUE(mapped.count(k)) << k;
    EXPECT_EQ(mapped.at(k).sizes(), t.sizes()) << k;
  }
  // The name inverse covers every CLIPModel key and lands on the 686 open_clip names.
  std::set<std::string> sources;
  for (const auto& kv : model) sources.insert(ct::open_clip_key(kv.first));
  EXPECT_EQ(sources.size(), open.size());
  for (const auto& s : sources) EXPECT_TRUE(open.count(s)) << s;
  EXPECT_EQ(
      ct::open_clip_key("vision_model.encoder.layers.3.self_attn.k_proj.bias"),
      "visual.transformer.resblocks.3.attn.in_proj_bias");
  EXPECT_EQ(
      ct::open_clip_key("text_model.encoder.layers.23.mlp.fc2.weight"), "transformer.resblocks.23.mlp.c_proj.weight");
  EXPECT_EQ(ct::open_clip_key("vision_model.pre_layrnorm.bias"), "visual.ln_pre.bias");
  EXPECT_EQ(ct::open_clip_key("text_projection.weight"), "text_projection");
  EXPECT_EQ(ct::open_clip_key("visual_projection.weight"), "visual.proj");
  EXPECT_EQ(ct::open_clip_key("text_model.embeddings.position_ids"), "");
  EXPECT_EQ(ct::open_clip_key("text_model.encoder.layers.x.mlp.fc1.weight"), "");
  // And the whole map loads (meta tensors: the checks, no data).
  EXPECT_NO_THROW(ct::load_open_clip_state_dict(*clip, open, "<meta>", "test"));
}

TEST(OpenCLIPConfig, ViTH14DefaultsOverridesAndErrors) {
  const ct::CLIPConfig h = ct::open_clip_vit_h_14();
  EXPECT_EQ(h.vision.hidden_size, 1280);
  EXPECT_EQ(h.vision.num_hidden_layers, 32);
  EXPECT_EQ(h.vision.num_attention_heads, 16);
  EXPECT_EQ(h.vision.intermediate_size, 5120);
  EXPECT_EQ(h.vision.patch_size, 14);
  EXPECT_EQ(h.vision.image_size, 224);
  EXPECT_EQ(h.text.hidden_size, 1024);
  EXPECT_EQ(h.text.num_hidden_layers, 24);
  EXPECT_EQ(h.text.num_attention_heads, 16);
  EXPECT_EQ(h.text.intermediate_size, 4096);
  EXPECT_EQ(h.text.max_position_embeddings, 77);
  EXPECT_EQ(h.text.vocab_size, 49408);
  EXPECT_EQ(h.projection_dim(), 1024);
  EXPECT_EQ(h.vision.hidden_act, "gelu");
  EXPECT_EQ(h.text.hidden_act, "gelu");
  EXPECT_EQ(h.text.eos_token_id, 2);  // argmax(ids) pooling, as open_clip
  // open_clip's ViT-H-14.json itself (models.md 6.3) reproduces the defaults.
  const ct::CLIPConfig same = ct::open_clip_config(
      hf(R"({"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
             "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16,
             "layers": 24}})"),
      h);
  EXPECT_EQ(same.vision.num_attention_heads, 16);
  EXPECT_EQ(same.vision.intermediate_size, 5120);
  EXPECT_EQ(same.text.intermediate_size, 4096);
  ct::CLIPModel clip(same, kMeta);
  EXPECT_EQ(nn::parameter_count(*clip), 986109441);
  // Partial overrides keep the rest; mlp_ratio and quick_gelu.
  const ct::CLIPConfig part = ct::open_clip_config(
      hf(R"({"quick_gelu": true, "text_cfg": {"layers": 12, "mlp_ratio": 2.5}, "vision_cfg": {"width": 640}})"), h);
  EXPECT_EQ(part.text.num_hidden_layers, 12);
  EXPECT_EQ(part.text.intermediate_size, 2560);
  EXPECT_EQ(part.text.hidden_size, 1024);
  EXPECT_EQ(part.vision.hidden_size, 640);
  EXPECT_EQ(part.vision.num_attention_heads, 8);   // head width 80 kept
  EXPECT_EQ(part.vision.intermediate_size, 2560);  // mlp ratio 4 kept
  EXPECT_EQ(part.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(part.text.hidden_act, "quick_gelu");
  // Null values are absent values (open_clip writes e.g. "timm_model_name": null).
  EXPECT_EQ(ct::open_clip_config(hf(R"({"vision_cfg": {"timm_model_name": null}})"), h).vision.hidden_size, 1280);

  auto json_path_of = [&](const std::string& json) {
    try {
      ct::open_clip_config(hf(json), h);
    } catch (const ManifestError& e) {
      EXPECT_EQ(e.file(), "<vit.json>");
      return e.json_path();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(json_path_of(R"({"vision_cfg": {"timm_model_name": "vit_base"}})"), "vision_cfg.timm_model_name");
  EXPECT_EQ(json_path_of(R"({"text_cfg": {"hf_model_name": "roberta"}})"), "text_cfg.hf_model_name");
  EXPECT_EQ(json_path_of(R"({"custom_text": true})"), "custom_text");
  EXPECT_EQ(json_path_of(R"({"vision_cfg": {"head_width": 96}})"), "vision_cfg.head_width");
  EXPECT_EQ(json_path_of(R"({"vision_cfg": {"patch_size": 15}})"), "vision_cfg.patch_size");
  EXPECT_EQ(json_path_of(R"({"text_cfg": {"heads": 3}})"), "text_cfg.heads");
  EXPECT_EQ(json_path_of(R"({"text_cfg": {"mlp_ratio": 0}})"), "text_cfg.mlp_ratio");
  EXPECT_EQ(json_path_of(R"({"text_cfg": {"layers": 0}})"), "text_cfg.layers");
  EXPECT_EQ(json_path_of(R"({"vision_cfg": {"image_size": [224, 224]}})"), "vision_cfg.image_size");
  EXPECT_EQ(json_path_of(R"({"embed_dim": -4})"), "embed_dim");
  EXPECT_EQ(json_path_of(R"({"quick_gelu": "yes"})"), "quick_gelu");
}

// ---------------------------------------------------------------------------------------------
// The mapping on tiny weights.

test::TinyCLIPSpec gelu_spec() {
  test::TinyCLIPSpec s;
  s.act = "gelu";  // open_clip ViT-H-14's activation (quick_gelu off)
  s.text_layers = 2;
  return s;
}

ct::CLIPConfig tiny_config(const test::TinyCLIPSpec& s) {
  return ct::open_clip_config(hf(test::tiny_open_clip_config(s)), ct::open_clip_vit_h_14());
}

TEST(OpenCLIPKeys, TinyWeightsMapBackExactlyAndGiveTheSameFeatures) {
  const test::TinyCLIPSpec spec = gelu_spec();
  const TensorMap w = test::tiny_clip_weights(spec, 21);
  const TensorMap open = test::to_open_clip(w, spec);
  // The test's inverse fused 6 tensors per block into 2: 4 fewer per layer, no position_ids.
  EXPECT_EQ(open.size(), w.size() - 2 - 4 * static_cast<std::size_t>(spec.layers + spec.text_layers));
  const TensorMap mapped = ct::open_clip_to_hf(open, "<tiny>");
  EXPECT_EQ(mapped.size(), open.size() + 4 * static_cast<std::size_t>(spec.layers + spec.text_layers));
  for (const auto& [k, t] : mapped) {
    ASSERT_TRUE(w.count(k)) << k;
    EXPECT_TRUE(t.equal(w.at(k))) << k;  // bit-exact: rows split, projections transposed back
  }
  // The CLIPModel from the open_clip config, loaded through the mapping, and the one from the
  // transformers config, loaded by name: identical features, equal to the plain-tensor ones.
  ct::CLIPModel from_open(tiny_config(spec), at::TensorOptions());
  ct::load_open_clip_state_dict(*from_open, open, "<tiny>", "test");
  ct::CLIPModel from_hf(ct::CLIPConfig::from_hf(hf(test::tiny_clip_config(spec))), at::TensorOptions());
  TensorMap named = w;
  ct::erase_position_ids(named);
  module_load_state_dict(*from_hf, named, /*strict=*/true, "<tiny hf>", "test");
  at::NoGradGuard g;
  const at::Tensor pixels = at::randn({3, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  std::vector<std::int64_t> flat;
  for (const char* p : {"a red circle", "two cats", "dog"}) {
    const auto row = test::tiny_token_ids(p, 77, 0);
    flat.insert(flat.end(), row.begin(), row.end());
  }
  const at::Tensor ids = at::tensor(flat, at::kLong).view({3, 77});
  const at::Tensor img = from_open->get_image_features(pixels), txt = from_open->get_text_features(ids);
  EXPECT_TRUE(img.equal(from_hf->get_image_features(pixels)));
  EXPECT_TRUE(txt.equal(from_hf->get_text_features(ids)));
  test::expect_close(img, test::reference_image_features(w, pixels, spec), 1e-4, 1e-4, "image features");
  test::expect_close(txt, test::reference_text_features(w, ids, spec), 1e-4, 1e-4, "text features");
  EXPECT_FLOAT_EQ(from_open->logit_scale.item<float>(), static_cast<float>(spec.logit_scale));
}

TEST(OpenCLIPKeys, BadKeysAndShapesNameTheOpenCLIPKeyAndTheFile) {
  const test::TinyCLIPSpec spec = gelu_spec();
  const TensorMap open = test::to_open_clip(test::tiny_clip_weights(spec, 22), spec);
  const std::string file = "/models/hpsv2.safetensors";
  ct::CLIPModel clip(tiny_config(spec), at::TensorOptions());
  auto load = [&](const TensorMap& m) { ct::load_open_clip_state_dict(*clip, m, file, "reward 'hpsv2'"); };
  EXPECT_NO_THROW(load(open));
  auto with = [&](const std::string& key, const at::Tensor& t) {
    TensorMap m = open;
    m[key] = t;
    return m;
  };
  auto without = [&](const std::string& key) {
    TensorMap m = open;
    EXPECT_EQ(m.erase(key), 1u) << key;
    return m;
  };
  // Keys outside open_clip's CLIP.
  for (const std::string key :
       {"visual.attn_pool.query", "module.logit_scale", "transformer.resblocks.01.ln_1.weight",
        "visual.transformer.resblocks.0.attn.in_proj.weight", "attn_mask"}) {
    expect_error_names([&] { load(with(key, at::zeros({2}))); }, {"'" + key + "'", file});
    EXPECT_THROW(ct::open_clip_to_hf(with(key, at::zeros({2})), file), FileError) << key;
  }
  // Tensors the mapping cannot split or transpose.
  expect_error_names(
      [&] {
        load(with("transformer.resblocks.0.attn.in_proj_weight", at::zeros({47, 16})));
      },
      {"transformer.resblocks.0.attn.in_proj_weight", file, "[47, 16]"});
  expect_error_names(
      [&] {
        load(with("visual.transformer.resblocks.1.attn.in_proj_bias", at::zeros({96, 1})));
      },
      {"visual.transformer.resblocks.1.attn.in_proj_bias", file});
  expect_error_names([&] { load(with("text_projection", at::zeros({16}))); }, {"'text_projection'", file});
  // Shapes that map but do not fit the model: named in open_clip's layout.
  expect_error_names(
      [&] {
        load(with("visual.proj", at::zeros({16, 32})));
      },
      {"'visual.proj'", file, "[16, 32]", "[32, 16]"});
  expect_error_names(
      [&] {
        load(with("transformer.resblocks.1.attn.in_proj_weight", at::zeros({51, 17})));
      },
      {"'transformer.resblocks.1.attn.in_proj_weight'", file, "[51, 17]", "[48, 16]"});
  expect_error_names(
      [&] {
        load(with("visual.positional_embedding", at::zeros({16, 32})));
      },
      {"'visual.positional_embedding'", file, "[17, 32]"});
  // Missing and surplus tensors.
  expect_error_names(
      [&] { load(without("transformer.resblocks.0.attn.in_proj_bias")); },
      {"missing key 'transformer.resblocks.0.attn.in_proj_bias'", file, "[48]"});
  expect_error_names([&] { load(without("visual.proj")); }, {"missing key 'visual.proj'", file, "[32, 16]"});
  expect_error_names([&] { load(without("logit_scale")); }, {"missing key 'logit_scale'", file});
  expect_error_names(
      [&] { load(with("transformer.resblocks.2.ln_1.weight", at::zeros({16}))); },
      {"unexpected key 'transformer.resblocks.2.ln_1.weight'", file});
  // A refused file leaves the model as it was.
  ct::CLIPModel fresh(tiny_config(spec), at::TensorOptions());
  ct::load_open_clip_state_dict(*fresh, open, file, "test");
  EXPECT_THROW(load(without("ln_final.bias")), Error);
  EXPECT_TRUE(module_state_dict(*clip)
                  .at("visual_projection.weight")
                  .equal(module_state_dict(*fresh).at("visual_projection.weight")));
}

TEST(OpenCLIPTokenize, ZeroPadsAfterTheEndTokenAndTruncatesKeepingIt) {
  const std::string dir = test::temp_dir("open_clip_tokenize");
  test::write_tiny_clip_tokenizer(dir, "<|endoftext|>");  // the tokenizer's own pad is not used
  const auto tok = ct::CLIPTokenizer::load(dir);
  const at::Tensor ids = ct::open_clip_tokenize(tok, {"a red circle", "", "two cats"}, 77);
  ASSERT_EQ(ids.sizes(), (Shape{3, 77}));
  for (std::int64_t i = 0; i < 3; ++i) {
    const std::string p = i == 0 ? "a red circle" : i == 1 ? "" : "two cats";
    EXPECT_TRUE(ids[i].equal(at::tensor(test::tiny_token_ids(p, 77, 0), at::kLong))) << p;
  }
  EXPECT_EQ(ids[1][0].item<std::int64_t>(), 512);
  EXPECT_EQ(ids[1][1].item<std::int64_t>(), 513);
  EXPECT_EQ(ids[1][2].item<std::int64_t>(), 0);
  // "abcdefghij" is 10 content ids: at context 8, six are kept and the end token is last.
  const at::Tensor cut = ct::open_clip_tokenize(tok, {"abcdefghij"}, 8);
  const std::vector<std::int64_t> want{512, 'a' - 33, 'b' - 33, 'c' - 33, 'd' - 33, 'e' - 33, 'f' - 33, 513};
  EXPECT_TRUE(cut[0].equal(at::tensor(want, at::kLong)));
  EXPECT_EQ(ct::open_clip_tokenize(tok, {}, 77).sizes(), (Shape{0, 77}));
}

// ---------------------------------------------------------------------------------------------
// The reward.

struct TinyHPSv2 {
  std::string dir;
  TensorMap weights;  // transformers' names
  test::TinyCLIPSpec spec;
};

TinyHPSv2 write_tiny(std::uint64_t seed, const test::TinyCLIPSpec& spec = gelu_spec()) {
  TinyHPSv2 t;
  t.spec = spec;
  t.dir = test::temp_dir("hpsv2");
  t.weights = test::write_tiny_hpsv2(t.dir, spec, seed);
  return t;
}

std::string options(const TinyHPSv2& t, const std::string& extra = "") {
  return R"({"checkpoint": ")" + t.dir + R"(/hpsv2.safetensors", "tokenizer": ")" + t.dir + R"(", "config": ")" +
         t.dir + "/open_clip_config.json\"" + extra + "}";
}

std::shared_ptr<Reward> make_reward(const std::string& name, const std::string& options_json) {
  return Registry::global().create<Reward>(
      ComponentConfig{"reward", name, boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

const std::vector<std::string> kPrompts{"a red circle", "a blue square", "two cats", "a dog on the left"};

// cosine(normalize(image features), normalize(text features)) from plain-tensor features, the
// text zero-padded as open_clip pads it (models.md 6.3).
at::Tensor expected_scores(const TinyHPSv2& t, const at::Tensor& images, const std::vector<std::string>& prompts) {
  const at::Tensor pixels = ct::clip_preprocess(images, t.spec.image, t.spec.image);
  std::vector<std::int64_t> flat;
  for (const auto& p : prompts) {
    const auto row = test::tiny_token_ids(p, 77, 0);
    flat.insert(flat.end(), row.begin(), row.end());
  }
  const at::Tensor ids = at::tensor(flat, at::kLong).view({static_cast<std::int64_t>(prompts.size()), 77});
  const at::Tensor img = test::reference_image_features(t.weights, pixels, t.spec).to(at::kDouble);
  const at::Tensor txt = test::reference_text_features(t.weights, ids, t.spec).to(at::kDouble);
  return ((img / img.norm(2, {-1}, true)) * (txt / txt.norm(2, {-1}, true))).sum(-1).to(at::kFloat);
}

TEST(HPSv2Reward, ScoreIsTheCosineAndEqualsPickScoresOnTheSameWeights) {
  const TinyHPSv2 t = write_tiny(31);
  auto reward = make_reward("hpsv2", options(t));
  EXPECT_TRUE(reward->needs_prompts());
  const at::Tensor images = at::rand({4, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(3));
  const at::Tensor s = reward->score(images, kPrompts);
  ASSERT_EQ(s.sizes(), (Shape{4}));
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_FALSE(s.requires_grad());
  test::expect_close(s, expected_scores(t, images, kPrompts), 1e-5, 1e-5, "plain-tensor cosine");
  EXPECT_GT((s - s.mean()).abs().max().item<double>(), 1e-3);
  // The same weights as a transformers CLIPModel folder, scored by `pickscore` (cosine): the same
  // scores (only the pad id differs, which the pooled state never sees).
  const std::string hf_dir = t.dir + "/hf";
  test::write_tiny_clip(hf_dir, t.spec, 31);
  auto pick = make_reward("pickscore", R"({"clip": ")" + hf_dir + "\"}");
  test::expect_close(pick->score(images, kPrompts), s, 1e-5, 1e-6, "pickscore on the transformers names");
  // Batching and one by one.
  test::expect_close(
      make_reward("hpsv2", options(t, R"(, "batch_size": 3)"))->score(images, kPrompts), s, 1e-5, 1e-6, "batch_size 3");
  for (std::int64_t i = 0; i < 4; ++i) {
    test::expect_close(
        reward->score(images.slice(0, i, i + 1), {kPrompts[static_cast<std::size_t>(i)]}), s.slice(0, i, i + 1), 1e-5,
        1e-6, "alone " + std::to_string(i));
  }
  EXPECT_EQ(reward->score(images.slice(0, 0, 0), {}).sizes(), (Shape{0}));
}

TEST(HPSv2Reward, PromptsMatter) {
  const TinyHPSv2 t = write_tiny(32);
  auto reward = make_reward("hpsv2", options(t));
  const at::Tensor image = at::rand({1, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(4));
  const at::Tensor images = image.expand({4, 3, 32, 32}).contiguous();
  const at::Tensor s = reward->score(images, kPrompts);
  for (std::int64_t i = 1; i < 4; ++i) EXPECT_GT(std::abs((s[i] - s[0]).item<double>()), 1e-4) << i;
  test::expect_close(s, expected_scores(t, images, kPrompts), 1e-5, 1e-5, "one image, four prompts");
  expect_error_names([&] { reward->score(images, {"a"}); }, {"4 images but 1 prompts"});
}

TEST(HPSv2Reward, FilesAndOptionsAreChecked) {
  TinyHPSv2 t = write_tiny(33);
  const std::string file = t.dir + "/hpsv2.safetensors";
  // A key outside open_clip's CLIP, and a tensor of the wrong shape: named with the file.
  TensorMap open = test::to_open_clip(t.weights, t.spec);
  TensorMap bad = open;
  bad["visual.attn_pool.query"] = at::zeros({4});
  safetensors_save(file, bad);
  expect_error_names([&] { make_reward("hpsv2", options(t)); }, {"visual.attn_pool.query", file});
  bad = open;
  bad["text_projection"] = at::zeros({16, 8});
  safetensors_save(file, bad);
  expect_error_names([&] { make_reward("hpsv2", options(t)); }, {"'text_projection'", file, "[16, 8]"});
  safetensors_save(file, open);
  // A config that does not match the checkpoint: the first missing tensor is named.
  auto cfg = boost::json::parse(test::tiny_open_clip_config(t.spec)).as_object();
  cfg["vision_cfg"].as_object()["layers"] = 3;
  std::ofstream(t.dir + "/open_clip_config.json") << boost::json::serialize(cfg);
  expect_error_names([&] { make_reward("hpsv2", options(t)); }, {"missing key 'visual.transformer.resblocks.2.", file});
  cfg["vision_cfg"].as_object()["layers"] = 2;
  cfg["vision_cfg"].as_object()["ls_init_value"] = 0.1;
  std::ofstream(t.dir + "/open_clip_config.json") << boost::json::serialize(cfg);
  expect_error_names([&] { make_reward("hpsv2", options(t)); }, {"vision_cfg.ls_init_value", "open_clip_config.json"});
  cfg["vision_cfg"].as_object().erase("ls_init_value");
  cfg["text_cfg"].as_object()["vocab_size"] = 300;  // smaller than the tokenizer's special ids
  std::ofstream(t.dir + "/open_clip_config.json") << boost::json::serialize(cfg);
  expect_error_names([&] { make_reward("hpsv2", options(t)); }, {"text_cfg.vocab_size", "512"});
  std::ofstream(t.dir + "/open_clip_config.json") << test::tiny_open_clip_config(t.spec);
  EXPECT_NO_THROW(make_reward("hpsv2", options(t)));

  // The .pt itself is refused with the conversion; missing files are FileErrors.
  const std::string tok = R"(, "tokenizer": ")" + t.dir + "\"";
  expect_error_names(
      [&] { make_reward("hpsv2", R"({"checkpoint": "HPS_v2_compressed.pt")" + tok + "}"); },
      {"reward.options.checkpoint", "convert_checkpoint.py"});
  EXPECT_THROW(
      make_reward(
          "hpsv2", R"({"checkpoint": "/nonexistent/hps.safetensors", "config": ")" + t.dir +
                       "/open_clip_config.json\"" + tok + "}"),
      FileError);
  std::string no_config = options(t);
  no_config.replace(no_config.find("open_clip_config.json"), 21, "missing.json");
  EXPECT_THROW(make_reward("hpsv2", no_config), FileError);
  fs::rename(t.dir + "/merges.txt", t.dir + "/merges.off");
  expect_error_names([&] { make_reward("hpsv2", options(t)); }, {"merges.txt"});
  fs::rename(t.dir + "/merges.off", t.dir + "/merges.txt");

  EXPECT_THROW(make_reward("hpsv2", R"({"checkpoint": ")" + file + "\"}"), ManifestError);  // tokenizer required
  EXPECT_THROW(make_reward("hpsv2", "{" + tok.substr(2) + "}"), ManifestError);             // checkpoint required
  EXPECT_THROW(make_reward("hpsv2", options(t, R"(, "dtype": "float64")")), ManifestError);
  EXPECT_THROW(make_reward("hpsv2", options(t, R"(, "batch_size": 0)")), ManifestError);
  EXPECT_THROW(make_reward("hpsv2", options(t, R"(, "scale": "logit")")), ManifestError);  // no logit scale here
  const at::Tensor images = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  const std::vector<std::string> prompts{"a red circle", "two cats"};
  const at::Tensor s = make_reward("hpsv2", options(t))->score(images, prompts);
  const at::Tensor bf = make_reward("hpsv2", options(t, R"(, "dtype": "bfloat16")"))->score(images, prompts);
  test::expect_close(bf, s, 0.05, 0.05, "bfloat16");
  try {
    make_reward("hpsv2", options(t, R"(, "dtype": "float16")"))->score(images, prompts);
    ADD_FAILURE() << "float16 on the CPU must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "reward.options.dtype");
  }
  EXPECT_THROW(make_reward("hpsv2", options(t))->score(at::rand({2, 4, 32, 32}), prompts), Error);
}

// CUDA: skipped where no GPU is present (run by scripts/gpu_check.sh).
TEST(HPSv2Reward, CUDAScoresMatchTheCPU) {
  if (!at::hasCUDA()) GTEST_SKIP() << "CUDA not available";
  const TinyHPSv2 t = write_tiny(34);
  const at::Tensor images = at::rand({4, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(6));
  const at::Tensor cpu = make_reward("hpsv2", options(t))->score(images, kPrompts);
  for (const std::string dtype : {"float32", "float16", "bfloat16"}) {
    auto reward = make_reward("hpsv2", options(t, R"(, "dtype": ")" + dtype + "\""));
    reward->to(at::Device(at::kCUDA));
    const at::Tensor s = reward->score(images.to(at::kCUDA), kPrompts);
    EXPECT_TRUE(s.is_cuda()) << dtype;
    EXPECT_EQ(s.scalar_type(), at::kFloat) << dtype;
    const double tol = dtype == "float32" ? 2e-3 : 0.05;
    test::expect_close(s.cpu(), cpu, tol, tol, "CUDA " + dtype);
    EXPECT_TRUE(reward->score(images, kPrompts).device().is_cpu()) << dtype;
  }
}

}  // namespace
}  // namespace sdpo
