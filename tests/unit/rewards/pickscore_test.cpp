// The `pickscore` reward (PickScore v1, research/models.md 6.2) and the CLIPModel it runs
// (models/clip/include/sdpo/models/clip/clip_model.h): the real CLIP-H CLIPModel on the meta device; through the
// registry on a tiny CLIPModel folder written by the test (tests/support/tiny_clip.h), the score
// equals the cosine (times exp(logit_scale) for "logit") of features computed with plain tensor
// ops; batching, prompts, padding; strict key handling; options.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/clip/clip_image.h"
#include "sdpo/models/clip/clip_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "support/test_support.h"
#include "support/tiny_clip.h"

namespace sdpo {
namespace {

namespace fs = std::filesystem;
using Shape = std::vector<std::int64_t>;

struct TinyPickScore {
  std::string dir;
  TensorMap weights;
  test::TinyCLIPSpec spec;
};

TinyPickScore write_tiny(std::uint64_t seed, const test::TinyCLIPSpec& spec = {}) {
  TinyPickScore t;
  t.spec = spec;
  t.dir = test::temp_dir("pickscore") + "/PickScore_v1";
  t.weights = test::write_tiny_clip(t.dir, spec, seed);
  return t;
}

std::string options(const TinyPickScore& t, const std::string& extra = "") {
  return R"({"clip": ")" + t.dir + "\"" + extra + "}";
}

std::shared_ptr<Reward> make_reward(const std::string& options_json) {
  return Registry::global().create<Reward>(
      ComponentConfig{"reward", "pickscore", boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

const std::vector<std::string> kPrompts{"a red circle", "a blue square", "two cats", "a dog on the left", "x"};

// The cosine of models.md 6.2 from plain-tensor features: the image tower on clip_preprocess's
// pixels (at the tiny tower's size), the text tower on ids tokenized by hand, both normalized.
at::Tensor expected_cosine(const TinyPickScore& t, const at::Tensor& images, const std::vector<std::string>& prompts) {
  const at::Tensor pixels = clip_text::clip_preprocess(images, t.spec.image, t.spec.image);
  std::vector<std::int64_t> flat;
  for (const auto& p : prompts) {
    const auto row = test::tiny_token_ids(p, 77, /*pad=*/513);
    flat.insert(flat.end(), row.begin(), row.end());
  }
  const at::Tensor ids = at::tensor(flat, at::kLong).view({static_cast<std::int64_t>(prompts.size()), 77});
  const at::Tensor img = test::reference_image_features(t.weights, pixels, t.spec).to(at::kDouble);
  const at::Tensor txt = test::reference_text_features(t.weights, ids, t.spec).to(at::kDouble);
  return ((img / img.norm(2, {-1}, true)) * (txt / txt.norm(2, {-1}, true))).sum(-1).to(at::kFloat);
}

using test::expect_error_names;

// ---------------------------------------------------------------------------------------------
// The CLIPModel.

TEST(CLIPModel, RealCLIPHOnTheMetaDevice) {
  // PickScore_v1 / LAION CLIP-ViT-H-14 (models.md 6.2, 7): text 1024 / 24 / 16 / 4096, vision
  // 1280 / 32 / 16 / 5120, patch 14, image 224, gelu, projection 1024.
  const auto cfg = clip_text::CLIPConfig::from_hf(nn::HFConfig(
      boost::json::parse(R"({"architectures": ["CLIPModel"], "projection_dim": 1024, "logit_scale_init_value": 2.6592,
          "text_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                          "num_hidden_layers": 24, "hidden_act": "gelu", "vocab_size": 49408,
                          "max_position_embeddings": 77, "eos_token_id": 2},
          "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16,
                            "num_hidden_layers": 32, "patch_size": 14, "image_size": 224, "hidden_act": "gelu"}})")
          .as_object(),
      "<PickScore config>"));
  clip_text::CLIPModel clip(cfg, at::TensorOptions().device(at::kMeta));
  EXPECT_EQ(nn::parameter_count(*clip), 986109441);  // models.md 6.2
  const TensorMap sd = module_state_dict(*clip);
  EXPECT_EQ(sd.size(), 910u);
  auto shape = [&](const std::string& k) { return sd.count(k) ? sd.at(k).sizes().vec() : Shape{-1}; };
  EXPECT_EQ(shape("logit_scale"), Shape{});
  EXPECT_EQ(shape("text_projection.weight"), (Shape{1024, 1024}));
  EXPECT_EQ(shape("visual_projection.weight"), (Shape{1024, 1280}));
  EXPECT_EQ(shape("text_model.embeddings.token_embedding.weight"), (Shape{49408, 1024}));
  EXPECT_EQ(shape("text_model.encoder.layers.23.mlp.fc2.weight"), (Shape{1024, 4096}));
  EXPECT_EQ(shape("text_model.final_layer_norm.bias"), (Shape{1024}));
  EXPECT_EQ(shape("vision_model.encoder.layers.31.self_attn.q_proj.weight"), (Shape{1280, 1280}));
  EXPECT_EQ(shape("vision_model.embeddings.position_embedding.weight"), (Shape{257, 1280}));
  EXPECT_EQ(sd.count("text_projection.bias") + sd.count("visual_projection.bias"), 0u);
}

TEST(CLIPModel, ConfigNeedsBothTowersAndReadsTheirLegacyOverlays) {
  auto json_path_of = [](const std::string& json) {
    try {
      clip_text::CLIPConfig::from_hf(nn::HFConfig(boost::json::parse(json).as_object(), "<test config>"));
    } catch (const ManifestError& e) {
      return e.json_path();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(json_path_of(R"({"vision_config": {}})"), "text_config");
  EXPECT_EQ(json_path_of(R"({"text_config": {}})"), "vision_config");
  EXPECT_EQ(json_path_of(R"({"text_config": {"hidden_act": "relu"}, "vision_config": {}})"), "text_config.hidden_act");
  EXPECT_EQ(json_path_of(R"({"text_config": {}, "vision_config": {}})"), "<accepted>");
  const auto c = clip_text::CLIPConfig::from_hf(nn::HFConfig(
      boost::json::parse(R"({"text_config": {"hidden_size": 64, "num_attention_heads": 4},
                             "text_config_dict": {"hidden_size": 96},
                             "vision_config": {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1},
                             "projection_dim": 48, "logit_scale_init_value": 1.5})")
          .as_object(),
      "<test config>"));
  EXPECT_EQ(c.text.hidden_size, 96);  // the legacy dict wins, as in transformers
  EXPECT_EQ(c.text.num_attention_heads, 4);
  EXPECT_EQ(c.projection_dim(), 48);
  EXPECT_DOUBLE_EQ(c.logit_scale_init_value, 1.5);
  clip_text::CLIPModel m(c, at::TensorOptions());
  EXPECT_DOUBLE_EQ(m->logit_scale.item<double>(), 1.5);
}

// ---------------------------------------------------------------------------------------------
// The reward.

TEST(PickScoreReward, ScoreIsTheCosineOfThePlainTensorFeatures) {
  test::TinyCLIPSpec spec;
  spec.act = "gelu";        // CLIP-H's activation
  spec.logit_scale = 1.25;  // not the config's init value: the file's value must be used
  const TinyPickScore t = write_tiny(11, spec);
  auto reward = make_reward(options(t));
  EXPECT_TRUE(reward->needs_prompts());
  // 48 x 64 images: the short edge resized to 32 (the tiny tower's image_size), 32 x 42 cropped.
  const at::Tensor images = at::rand({5, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(3));
  // The last prompt has 86 content ids: truncated to 75 and the end token.
  std::vector<std::string> prompts = kPrompts;
  prompts[4] =
      "a photograph of many small things arranged in rows and columns on a long wooden table in a bright kitchen";
  const at::Tensor s = reward->score(images, prompts);
  ASSERT_EQ(s.sizes(), (Shape{5}));
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_FALSE(s.requires_grad());
  const at::Tensor expected = expected_cosine(t, images, prompts);
  test::expect_close(s, expected, 1e-5, 1e-5, "cosine");
  EXPECT_LE(s.abs().max().item<double>(), 1.0 + 1e-6);
  EXPECT_GT((s - s.mean()).abs().max().item<double>(), 1e-3) << "different pairs score differently";
  // The official score: exp(logit_scale) * cosine, logit_scale read from the file.
  const at::Tensor logit = make_reward(options(t, R"(, "scale": "logit")"))->score(images, prompts);
  test::expect_close(logit, expected * std::exp(1.25), 1e-5, 1e-5, "exp(logit_scale) * cosine");
  EXPECT_EQ(reward->score(images.slice(0, 0, 0), {}).sizes(), (Shape{0}));
}

TEST(PickScoreReward, BatchedEqualsOneByOne) {
  const TinyPickScore t = write_tiny(12);
  const at::Tensor images = at::rand({5, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(4));
  auto reward = make_reward(options(t));
  const at::Tensor s = reward->score(images, kPrompts);
  test::expect_close(s, expected_cosine(t, images, kPrompts), 1e-5, 1e-5, "quick_gelu tower");
  for (std::int64_t i = 0; i < 5; ++i) {
    const at::Tensor one = reward->score(images.slice(0, i, i + 1), {kPrompts[static_cast<std::size_t>(i)]});
    test::expect_close(one, s.slice(0, i, i + 1), 1e-5, 1e-6, "image " + std::to_string(i) + " alone");
  }
  test::expect_close(
      make_reward(options(t, R"(, "batch_size": 2)"))->score(images, kPrompts), s, 1e-5, 1e-6, "batch_size 2");
  test::expect_close(make_reward(options(t))->score(images, kPrompts), s, 0, 0, "fresh instance");
}

TEST(PickScoreReward, PromptsMatterButThePadTokenDoesNot) {
  TinyPickScore t = write_tiny(13);
  const at::Tensor image = at::rand({1, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  const at::Tensor images = image.expand({5, 3, 32, 32}).contiguous();
  auto reward = make_reward(options(t));
  // One image, five prompts: five different scores; the same prompt twice: the same score.
  const at::Tensor s = reward->score(images, kPrompts);
  for (std::int64_t i = 1; i < 5; ++i) EXPECT_GT(std::abs((s[i] - s[0]).item<double>()), 1e-4) << i;
  const at::Tensor same = reward->score(images.slice(0, 0, 2), {"a red circle", "a red circle"});
  // Equal up to float round-off, not bit for bit: OpenBLAS's GEMM kernels may round the rows of a
  // 2-row batch differently (its Zen kernels do on an AMD EPYC; its SkylakeX ones do not).
  EXPECT_NEAR(same[0].item<float>(), same[1].item<float>(), 1e-6);
  // Padding with "!" (id 0, the SD 2.x / open_clip choice) or without special_tokens_map.json
  // (<|endoftext|>): the pooled end-of-text state sees no padding under causal attention.
  std::ofstream(t.dir + "/special_tokens_map.json") << R"({"pad_token": "!"})";
  test::expect_close(make_reward(options(t))->score(images, kPrompts), s, 1e-6, 1e-6, "pad '!'");
  fs::remove(t.dir + "/special_tokens_map.json");
  test::expect_close(make_reward(options(t))->score(images, kPrompts), s, 1e-6, 1e-6, "no special_tokens_map.json");
  // One prompt per image.
  expect_error_names([&] { reward->score(images, {"a", "b"}); }, {"5 images but 2 prompts"});
}

TEST(PickScoreReward, MissingOrExtraKeysAreRefusedNamingKeyAndFile) {
  TinyPickScore t = write_tiny(14);
  const std::string file = t.dir + "/model.safetensors";
  for (const std::string key :
       {"text_projection.weight", "logit_scale", "text_model.final_layer_norm.bias",
        "vision_model.encoder.layers.1.mlp.fc2.bias", "visual_projection.weight"}) {
    TensorMap missing = t.weights;
    missing.erase(key);
    safetensors_save(file, missing);
    expect_error_names([&] { make_reward(options(t)); }, {"missing key '" + key + "'", file});
  }
  for (const std::string key : {"text_projection.bias", "text_model.embeddings.token_type_embedding.weight"}) {
    TensorMap extra = t.weights;
    extra[key] = at::zeros({16});
    safetensors_save(file, extra);
    expect_error_names([&] { make_reward(options(t)); }, {"unexpected key '" + key + "'", file});
  }
  TensorMap wrong = t.weights;
  wrong["text_projection.weight"] = at::zeros({16, 24});
  safetensors_save(file, wrong);
  expect_error_names([&] { make_reward(options(t)); }, {"text_projection.weight", file, "[16, 24]"});
  // A text-less file (what the aesthetic reward accepts) is refused here.
  safetensors_save(file, test::vision_side(t.weights));
  expect_error_names([&] { make_reward(options(t)); }, {"missing key 'logit_scale'", file});
  safetensors_save(file, t.weights);
  EXPECT_NO_THROW(make_reward(options(t)));

  // Tokenizer and config files.
  fs::rename(t.dir + "/vocab.json", t.dir + "/vocab.json.off");
  EXPECT_THROW(make_reward(options(t)), FileError);
  expect_error_names([&] { make_reward(options(t)); }, {"vocab.json"});
  fs::rename(t.dir + "/vocab.json.off", t.dir + "/vocab.json");
  auto config = boost::json::parse(test::tiny_clip_config(t.spec)).as_object();
  config["text_config"].as_object()["eos_token_id"] = 7;  // neither 2 nor <|endoftext|> (513)
  std::ofstream(t.dir + "/config.json") << boost::json::serialize(config);
  try {
    make_reward(options(t));
    ADD_FAILURE() << "eos_token_id 7 must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "text_config.eos_token_id");
    EXPECT_EQ(e.file(), t.dir + "/config.json");
  }
  config["text_config"].as_object()["eos_token_id"] = 513;  // the first-EOS rule: the same scores
  std::ofstream(t.dir + "/config.json") << boost::json::serialize(config);
  const at::Tensor images = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(6));
  const std::vector<std::string> prompts{kPrompts[0], kPrompts[3]};
  test::expect_close(
      make_reward(options(t))->score(images, prompts), expected_cosine(t, images, prompts), 1e-5, 1e-5,
      "eos_token_id 513");
  config["text_config"].as_object()["vocab_size"] = 300;  // too small for the tokenizer's ids
  std::ofstream(t.dir + "/config.json") << boost::json::serialize(config);
  expect_error_names([&] { make_reward(options(t)); }, {"text_config.vocab_size", "config.json"});
  config.erase("text_config");
  std::ofstream(t.dir + "/config.json") << boost::json::serialize(config);
  expect_error_names([&] { make_reward(options(t)); }, {"text_config", "config.json"});
  std::ofstream(t.dir + "/config.json") << test::tiny_clip_config(t.spec);
  // Only a PyTorch pickle: refused with how to convert it.
  fs::rename(file, t.dir + "/pytorch_model.bin");
  EXPECT_THROW(make_reward(options(t)), FileError);
}

TEST(PickScoreReward, OptionsAndInputsAreChecked) {
  const TinyPickScore t = write_tiny(15);
  EXPECT_THROW(make_reward("{}"), ManifestError);  // clip is required
  EXPECT_THROW(make_reward(options(t, R"(, "scale": "probability")")), ManifestError);
  EXPECT_THROW(make_reward(options(t, R"(, "dtype": "float64")")), ManifestError);
  EXPECT_THROW(make_reward(options(t, R"(, "batch_size": 0)")), ManifestError);
  EXPECT_THROW(make_reward(options(t, R"(, "head": "x")")), ManifestError);
  EXPECT_THROW(make_reward(R"({"clip": "/nonexistent/PickScore_v1"})"), FileError);
  // The documented default is SDPO's cosine.
  bool found = false;
  for (const auto& d : Registry::global().options("reward", "pickscore")) {
    if (d.key == "scale") {
      found = true;
      EXPECT_EQ(boost::json::serialize(d.default_value), "\"cosine\"");
    }
  }
  EXPECT_TRUE(found);
  // bfloat16 runs on the CPU close to float32; float16 needs CUDA.
  const at::Tensor images = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(7));
  const std::vector<std::string> prompts{"a red circle", "two cats"};
  const at::Tensor s = make_reward(options(t))->score(images, prompts);
  const at::Tensor bf = make_reward(options(t, R"(, "dtype": "bfloat16")"))->score(images, prompts);
  EXPECT_EQ(bf.scalar_type(), at::kFloat);
  test::expect_close(bf, s, 0.05, 0.05, "bfloat16");
  try {
    make_reward(options(t, R"(, "dtype": "float16")"))->score(images, prompts);
    ADD_FAILURE() << "float16 on the CPU must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "reward.options.dtype");
  }
  EXPECT_THROW(make_reward(options(t))->score(at::rand({2, 1, 32, 32}), prompts), Error);
  EXPECT_THROW(make_reward(options(t))->score(at::rand({3, 32, 32}), prompts), Error);
}

// CUDA: skipped where no GPU is present (run by scripts/gpu_check.sh).
TEST(PickScoreReward, CUDAScoresMatchTheCPU) {
  if (!at::hasCUDA()) GTEST_SKIP() << "CUDA not available";
  test::TinyCLIPSpec spec;
  spec.act = "gelu";
  const TinyPickScore t = write_tiny(16, spec);
  const at::Tensor images = at::rand({5, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(8));
  for (const std::string scale : {"cosine", "logit"}) {
    const std::string extra = R"(, "scale": ")" + scale + "\"";
    const at::Tensor cpu = make_reward(options(t, extra))->score(images, kPrompts);
    for (const std::string dtype : {"float32", "float16", "bfloat16"}) {
      auto reward = make_reward(options(t, extra + R"(, "dtype": ")" + dtype + "\""));
      reward->to(at::Device(at::kCUDA));
      const at::Tensor s = reward->score(images.to(at::kCUDA), kPrompts);
      EXPECT_TRUE(s.is_cuda()) << dtype;
      EXPECT_EQ(s.scalar_type(), at::kFloat) << dtype;
      const double tol = (dtype == "float32" ? 2e-3 : 0.05) * (scale == "logit" ? 15.0 : 1.0);
      test::expect_close(s.cpu(), cpu, tol, tol, "CUDA " + scale + " " + dtype);
      EXPECT_TRUE(reward->score(images, kPrompts).device().is_cpu()) << dtype;
    }
  }
}

}  // namespace
}  // namespace sdpo
