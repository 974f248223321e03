// The `shape_alignment` reward: a small classifier of the toy world's attributes.

#include <ATen/CPUGeneratorImpl.h>

#include <boost/json/parse.hpp>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/toy/world.h"
#include "support/test_support.h"

namespace {

namespace toy = sdpo::toy;

std::shared_ptr<sdpo::Reward> make_reward(const std::string& checkpoint) {
  boost::json::object options;
  options["checkpoint"] = checkpoint;
  return sdpo::Registry::global().create<sdpo::Reward>(
      sdpo::ComponentConfig{"reward", "shape_alignment", options, "<test>", "reward.options"});
}

std::shared_ptr<sdpo::PromptSource> make_shapes() {
  return sdpo::Registry::global().create<sdpo::PromptSource>(
      sdpo::ComponentConfig{"prompts", "shapes", {}, "<test>", "prompts.options"});
}

// Expects `f` to throw sdpo::Error whose message contains every one of `parts`.
template <class F>
void expect_error_naming(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const sdpo::Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// One classifier fitted briefly for the whole suite (a few seconds on 2 cores).
class ShapeAlignment : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(sdpo::test::temp_dir("shape_alignment"));
    checkpoint_ = new std::string(*dir_ + "/classifier.safetensors");
    reward_ = new std::shared_ptr<sdpo::Reward>(make_reward(*dir_ + "/not_there.safetensors"));
    source_ = new std::shared_ptr<sdpo::PromptSource>(make_shapes());
    sdpo::RewardFitContext ctx{**source_, at::make_generator<at::CPUGeneratorImpl>(42), 300, 32, 3e-3, *checkpoint_};
    fitted_ = (*reward_)->fit(ctx);
  }
  static void TearDownTestSuite() {
    delete reward_;
    delete source_;
    delete checkpoint_;
    delete dir_;
  }

  static std::string* dir_;
  static std::string* checkpoint_;
  static std::shared_ptr<sdpo::Reward>* reward_;
  static std::shared_ptr<sdpo::PromptSource>* source_;
  static bool fitted_;
};
std::string* ShapeAlignment::dir_ = nullptr;
std::string* ShapeAlignment::checkpoint_ = nullptr;
std::shared_ptr<sdpo::Reward>* ShapeAlignment::reward_ = nullptr;
std::shared_ptr<sdpo::PromptSource>* ShapeAlignment::source_ = nullptr;
bool ShapeAlignment::fitted_ = false;

// Renders one image per prompt.
at::Tensor render_prompts(const std::vector<std::string>& prompts, std::uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<toy::Scene> scenes;
  for (const auto& p : prompts) scenes.push_back(*toy::parse(p));
  return toy::render_batch(scenes, gen);
}

TEST_F(ShapeAlignment, MatchingPromptsScoreHigherThanMismatched) {
  ASSERT_TRUE(fitted_);
  EXPECT_TRUE((*reward_)->needs_prompts());
  std::vector<std::string> prompts = toy::evaluation_prompts();
  prompts.insert(prompts.end(), toy::unseen_prompts().begin(), toy::unseen_prompts().end());
  const at::Tensor images = render_prompts(prompts, 5);
  // Each image paired with another image's prompt: everything about it may be wrong or only
  // one attribute (colour, count, place, second object).
  std::vector<std::string> shifted(prompts.begin() + 1, prompts.end());
  shifted.push_back(prompts.front());
  const at::Tensor match = (*reward_)->score(images, prompts);
  const at::Tensor mismatch = (*reward_)->score(images, shifted);
  ASSERT_EQ(match.sizes(), (std::vector<std::int64_t>{static_cast<std::int64_t>(prompts.size())}));
  EXPECT_GE(match.min().item<float>(), 0.0f);
  EXPECT_LE(match.max().item<float>(), 1.0f);
  EXPECT_GT(match.mean().item<float>(), mismatch.mean().item<float>() + 0.25f)
      << "match " << match << " mismatch " << mismatch;
  EXPECT_GE(match.gt(mismatch).sum().item<std::int64_t>(), static_cast<std::int64_t>(prompts.size()) * 3 / 4);
}

TEST_F(ShapeAlignment, SingleAttributeChangesLowerTheScore) {
  ASSERT_TRUE(fitted_);
  const at::Tensor images = render_prompts({"a red circle", "a red circle", "a red circle", "a red circle"}, 9);
  const at::Tensor s =
      (*reward_)->score(images, {"a red circle", "a blue circle", "a red triangle", "a red circle on the left"});
  EXPECT_GT(s[0].item<float>(), s[1].item<float>());
  EXPECT_GT(s[0].item<float>(), s[2].item<float>());
  EXPECT_GT(s[0].item<float>(), s[3].item<float>());
}

TEST_F(ShapeAlignment, CheckpointRoundTrip) {
  ASSERT_TRUE(fitted_);
  sdpo::StringMap meta;
  sdpo::safetensors_load(*checkpoint_, &meta);
  EXPECT_EQ(meta["format"], "sdpo.shape_alignment.v1");
  auto loaded = make_reward(*checkpoint_);
  const std::vector<std::string> prompts{"two blue squares on the left", "a red circle and a yellow square"};
  const at::Tensor images = render_prompts(prompts, 3);
  sdpo::test::expect_close(loaded->score(images, prompts), (*reward_)->score(images, prompts), 0, 1e-6);
}

TEST_F(ShapeAlignment, ToleratesOtherImageSizesAndNoise) {
  ASSERT_TRUE(fitted_);
  const std::vector<std::string> prompts{"a green triangle", "three white circles"};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  std::vector<toy::Scene> scenes{*toy::parse(prompts[0]), *toy::parse(prompts[1])};
  const at::Tensor big = toy::render_batch(scenes, gen, toy::RenderOptions{64, true, 0.1, 0.04});
  const at::Tensor noisy = (big + 0.05 * at::randn(big.sizes(), gen)).clamp(0, 1);
  const at::Tensor s = (*reward_)->score(noisy, prompts);
  const at::Tensor wrong = (*reward_)->score(noisy, {prompts[1], prompts[0]});
  EXPECT_GT(s.min().item<float>(), wrong.max().item<float>());
}

TEST(ShapeAlignmentErrors, UnparseablePromptThrows) {
  auto reward = make_reward("/nonexistent/classifier.safetensors");
  expect_error_naming(
      [&] {
        reward->score(at::zeros({1, 3, 32, 32}), {"a pink elephant"});
      },
      {"a pink elephant", "shape_alignment"});
  expect_error_naming(
      [&] {
        reward->score(at::zeros({2, 3, 32, 32}), {"a red circle"});
      },
      {"shape_alignment", "1 prompts for 2 images"});
}

TEST(ShapeAlignmentErrors, LoadErrorsNameTheFile) {
  const std::string dir = sdpo::test::temp_dir("shape_alignment_errors");
  const at::Tensor images = at::zeros({1, 3, 32, 32});
  const std::vector<std::string> prompts{"a red circle"};

  const std::string missing = dir + "/missing.safetensors";
  EXPECT_THROW(make_reward(missing)->score(images, prompts), sdpo::FileError);
  expect_error_naming([&] { make_reward(missing)->score(images, prompts); }, {missing});

  const std::string truncated = dir + "/truncated.safetensors";
  std::ofstream(truncated, std::ios::binary) << "\x40\x00\x00\x00\x00\x00\x00\x00{\"conv1.weight\":";
  expect_error_naming([&] { make_reward(truncated)->score(images, prompts); }, {truncated});

  const std::string wrong_keys = dir + "/wrong_keys.safetensors";
  sdpo::safetensors_save(wrong_keys, {{"conv1.weight", at::zeros({16, 3, 3, 3})}});
  expect_error_naming([&] { make_reward(wrong_keys)->score(images, prompts); }, {wrong_keys, "conv1.bias"});

  const std::string wrong_shape = dir + "/wrong_shape.safetensors";
  sdpo::safetensors_save(wrong_shape, {{"conv1.weight", at::zeros({8, 3, 3, 3})}});
  expect_error_naming([&] { make_reward(wrong_shape)->score(images, prompts); }, {wrong_shape, "conv1.weight"});
}

}  // namespace
