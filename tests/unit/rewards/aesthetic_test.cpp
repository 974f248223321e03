// The `aesthetic` reward (LAION aesthetic predictor v2 on CLIP image features, research/models.md
// 6.1), through the registry on a tiny CLIPModel folder and head written here: the score is the
// head's affine map (composed by hand) of the L2-normalized image feature of a model loaded
// independently from the same file; strict key handling; options.

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
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/clip/clip_image.h"
#include "sdpo/models/clip/clip_vision_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "support/test_support.h"
#include "support/tiny_clip.h"

namespace sdpo {
namespace {

namespace fs = std::filesystem;

struct TinyAesthetic {
  std::string clip_dir, head_file;
  TensorMap clip, head;
  test::TinyCLIPSpec spec;
};

TinyAesthetic write_tiny(std::uint64_t seed = 31, const test::TinyCLIPSpec& spec = {}) {
  TinyAesthetic t;
  t.spec = spec;
  const std::string dir = test::temp_dir("aesthetic");
  t.clip_dir = dir + "/clip-vit-large-patch14";
  t.head_file = dir + "/aesthetic_head.safetensors";
  t.clip = test::write_tiny_clip(t.clip_dir, spec, seed);
  t.head = test::write_aesthetic_head(t.head_file, spec.projection, seed + 1);
  return t;
}

std::string options(const TinyAesthetic& t, const std::string& extra = "") {
  return R"({"clip": ")" + t.clip_dir + R"(", "head": ")" + t.head_file + "\"" + extra + "}";
}

std::shared_ptr<Reward> make_reward(const std::string& options_json) {
  return Registry::global().create<Reward>(
      ComponentConfig{"reward", "aesthetic", boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

// The head by hand: y = W7 (W6 (W4 (W2 (W0 x + b0) + b2) + b4) + b6) + b7 = A x + c with
// A = W7 W6 W4 W2 W0 (1 x in) and c = W7 (W6 (W4 (W2 b0 + b2) + b4) + b6) + b7.
at::Tensor composed_head(const TensorMap& h, const at::Tensor& x) {
  auto W = [&](int i) { return h.at("layers." + std::to_string(i) + ".weight").to(at::kDouble); };
  auto B = [&](int i) { return h.at("layers." + std::to_string(i) + ".bias").to(at::kDouble); };
  const at::Tensor a = at::matmul(W(7), at::matmul(W(6), at::matmul(W(4), at::matmul(W(2), W(0)))));
  const at::Tensor c =
      at::matmul(W(7), at::matmul(W(6), at::matmul(W(4), at::matmul(W(2), B(0)) + B(2)) + B(4)) + B(6)) + B(7);
  return (at::matmul(x.to(at::kDouble), a.t()) + c).squeeze(1);
}

// The expected score of `images`: a CLIPVisionModelWithProjection built and loaded here from the
// file's vision keys, fed clip_preprocess at the tower's size; feature / ||feature||; the head.
at::Tensor expected_scores(const TinyAesthetic& t, const at::Tensor& images) {
  const auto config = clip_text::CLIPVisionConfig::from_hf(nn::HFConfig::load(t.clip_dir + "/config.json"));
  clip_text::CLIPVisionModelWithProjection model(config, at::TensorOptions());
  module_load_state_dict(*model, test::vision_side(t.clip), true, "<expected>", "test");
  at::NoGradGuard g;
  const at::Tensor f =
      model->get_image_features(clip_text::clip_preprocess(images, config.image_size, config.image_size));
  return composed_head(t.head, f / f.norm(2, {-1}, true));
}

using test::expect_error_names;

TEST(AestheticReward, ScoreIsTheComposedAffineHeadOfTheNormalizedFeature) {
  const TinyAesthetic t = write_tiny();
  auto reward = make_reward(options(t));
  EXPECT_FALSE(reward->needs_prompts());
  // 48 x 64 images: the short edge resized to 32 (the tiny tower's image_size), 32 x 42 cropped.
  const at::Tensor images = at::rand({5, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(3));
  const at::Tensor s = reward->score(images, {});
  ASSERT_EQ(s.sizes(), (std::vector<std::int64_t>{5}));
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_FALSE(s.requires_grad());
  test::expect_close(s, expected_scores(t, images), 1e-5, 1e-5, "hand-composed head");
  EXPECT_GT((s - s.mean()).abs().max().item<double>(), 1e-4) << "different images score differently";
  // A second instance reads the same files into a fresh model: identical scores; and chunked
  // forwards (batch_size 2) give the same scores as one forward.
  test::expect_close(make_reward(options(t))->score(images, {}), s, 0, 0, "fresh instance");
  test::expect_close(make_reward(options(t, R"(, "batch_size": 2)"))->score(images, {}), s, 1e-6, 1e-6, "batch_size 2");
  EXPECT_EQ(reward->score(images.slice(0, 0, 0), {}).sizes(), (std::vector<std::int64_t>{0}));
}

TEST(AestheticReward, FeatureScaleDoesNotMatterButItsDirectionDoes) {
  TinyAesthetic t = write_tiny(41);
  const at::Tensor images = at::rand({3, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(4));
  const at::Tensor base = make_reward(options(t))->score(images, {});
  // visual_projection scaled by 7.5: every feature scales by 7.5, the normalized one does not.
  TensorMap scaled = t.clip;
  scaled["visual_projection.weight"] = scaled["visual_projection.weight"] * 7.5;
  safetensors_save(t.clip_dir + "/model.safetensors", scaled);
  test::expect_close(make_reward(options(t))->score(images, {}), base, 1e-5, 1e-5, "scaled features");
  // Negated features are a different direction: the scores change.
  TensorMap negated = t.clip;
  negated["visual_projection.weight"] = -negated["visual_projection.weight"];
  safetensors_save(t.clip_dir + "/model.safetensors", negated);
  EXPECT_GT((make_reward(options(t))->score(images, {}) - base).abs().max().item<double>(), 1e-3);
}

TEST(AestheticReward, TextTowerKeysAreSkippedAndVisionOnlyFilesLoad) {
  // write_tiny's file holds the text tower, text_projection, logit_scale and position_ids buffers.
  TinyAesthetic t = write_tiny(51);
  ASSERT_TRUE(t.clip.count("text_model.encoder.layers.0.mlp.fc1.weight"));
  ASSERT_TRUE(t.clip.count("logit_scale"));
  const at::Tensor images = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  const at::Tensor s = make_reward(options(t))->score(images, {});
  // The same vision weights as a CLIPVisionModelWithProjection folder: keys at the top level of
  // config.json, no text side in the file.
  auto config = boost::json::parse(test::tiny_clip_config(t.spec)).as_object();
  boost::json::object vision = config["vision_config"].as_object();
  vision["architectures"] = boost::json::array{"CLIPVisionModelWithProjection"};
  std::ofstream(t.clip_dir + "/config.json") << boost::json::serialize(vision);
  safetensors_save(t.clip_dir + "/model.safetensors", test::vision_side(t.clip));
  test::expect_close(make_reward(options(t))->score(images, {}), s, 0, 0, "vision-only file");
}

TEST(AestheticReward, MissingOrUnexpectedKeysAreRefusedNamingKeyAndFile) {
  TinyAesthetic t = write_tiny(61);
  const std::string file = t.clip_dir + "/model.safetensors";
  TensorMap missing = t.clip;
  missing.erase("vision_model.encoder.layers.1.mlp.fc2.bias");
  safetensors_save(file, missing);
  expect_error_names([&] { make_reward(options(t)); }, {"vision_model.encoder.layers.1.mlp.fc2.bias", file});
  TensorMap extra = t.clip;
  extra["vision_model.embeddings.patch_embedding.bias"] = at::zeros({32});
  safetensors_save(file, extra);
  expect_error_names([&] { make_reward(options(t)); }, {"vision_model.embeddings.patch_embedding.bias", file});
  TensorMap stray = t.clip;
  stray["text_encoder.weight"] = at::zeros({2});  // not CLIPModel's text side: refused too
  safetensors_save(file, stray);
  expect_error_names([&] { make_reward(options(t)); }, {"text_encoder.weight", file});
  safetensors_save(file, t.clip);

  TensorMap head = t.head;
  head.erase("layers.6.bias");
  safetensors_save(t.head_file, head);
  expect_error_names([&] { make_reward(options(t)); }, {"layers.6.bias", t.head_file});
  head = t.head;
  head["layers.1.weight"] = at::zeros({1});  // a dropout has no weights
  safetensors_save(t.head_file, head);
  expect_error_names([&] { make_reward(options(t)); }, {"layers.1.weight", t.head_file});
  // A head for 768-wide features on a 16-wide projection: a shape error naming the key.
  test::write_aesthetic_head(t.head_file, 768, 3);
  expect_error_names([&] { make_reward(options(t)); }, {"layers.0.weight", t.head_file, "768"});
  test::write_aesthetic_head(t.head_file, t.spec.projection, 3);

  // Only a PyTorch pickle: refused with how to convert it.
  fs::rename(file, t.clip_dir + "/pytorch_model.bin");
  expect_error_names([&] { make_reward(options(t)); }, {"pytorch_model.bin", "save_file"});
  EXPECT_THROW(make_reward(options(t)), FileError);
}

TEST(AestheticReward, OptionsAndInputsAreChecked) {
  const TinyAesthetic t = write_tiny(71);
  EXPECT_THROW(make_reward(R"({"head": ")" + t.head_file + "\"}"), ManifestError);  // clip is required
  EXPECT_THROW(make_reward(R"({"clip": ")" + t.clip_dir + "\"}"), ManifestError);   // head is required
  EXPECT_THROW(make_reward(options(t, R"(, "dtype": "float64")")), ManifestError);
  EXPECT_THROW(make_reward(options(t, R"(, "batch_size": 0)")), ManifestError);
  EXPECT_THROW(make_reward(options(t, R"(, "gain": 1)")), ManifestError);
  EXPECT_THROW(make_reward(R"({"clip": "/nonexistent/clip", "head": ")" + t.head_file + "\"}"), FileError);
  // bfloat16 towers run on the CPU and stay close to float32; float16 needs CUDA.
  const at::Tensor images = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(6));
  const at::Tensor s = make_reward(options(t))->score(images, {});
  const at::Tensor bf = make_reward(options(t, R"(, "dtype": "bfloat16")"))->score(images, {});
  EXPECT_EQ(bf.scalar_type(), at::kFloat);
  test::expect_close(bf, s, 0.05, 0.05, "bfloat16");
  try {
    make_reward(options(t, R"(, "dtype": "float16")"))->score(images, {});
    ADD_FAILURE() << "float16 on the CPU must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "reward.options.dtype");
  }
  EXPECT_THROW(make_reward(options(t))->score(at::rand({2, 1, 32, 32}), {}), Error);
  EXPECT_THROW(make_reward(options(t))->score(at::rand({3, 32, 32}), {}), Error);
}

// CUDA: skipped where no GPU is present (run by scripts/gpu_check.sh).
TEST(AestheticReward, CUDAScoresMatchTheCPU) {
  if (!at::hasCUDA()) GTEST_SKIP() << "CUDA not available";
  const TinyAesthetic t = write_tiny(81);
  const at::Tensor images = at::rand({4, 3, 48, 64}, at::make_generator<at::CPUGeneratorImpl>(7));
  const at::Tensor cpu = make_reward(options(t))->score(images, {});
  // Preprocessing on the device: the same levels up to a rare one-level rounding difference.
  const at::Tensor px_cpu = clip_text::clip_preprocess(images, 32, 32);
  const at::Tensor px_gpu = clip_text::clip_preprocess(images.to(at::kCUDA), 32, 32);
  EXPECT_TRUE(px_gpu.is_cuda());
  EXPECT_LE((px_gpu.cpu() - px_cpu).abs().max().item<double>(), 1.5 / 255.0 / 0.26);
  for (const std::string dtype : {"float32", "float16", "bfloat16"}) {
    auto reward = make_reward(options(t, R"(, "dtype": ")" + dtype + "\""));
    reward->to(at::Device(at::kCUDA));
    const at::Tensor s = reward->score(images.to(at::kCUDA), {});
    EXPECT_TRUE(s.is_cuda()) << dtype;
    EXPECT_EQ(s.scalar_type(), at::kFloat) << dtype;
    const double tol = dtype == "float32" ? 1e-3 : 0.05;
    test::expect_close(s.cpu(), cpu, tol, tol, "CUDA " + dtype);
    // CPU images are scored on the reward's device and come back on the CPU.
    EXPECT_TRUE(reward->score(images, {}).device().is_cpu()) << dtype;
  }
}

}  // namespace
}  // namespace sdpo
