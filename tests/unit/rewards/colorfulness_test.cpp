// The `colorfulness` reward (Hasler and Suesstrunk 2003).

#include <boost/json/parse.hpp>
#include <cmath>
#include <string>

#include "sdpo/core/error.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::Reward> make_reward(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::Reward>(sdpo::ComponentConfig{
      "reward", "colorfulness", boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

// One (1, 3, 2, 2) image from four RGB pixels given on the 0..255 scale.
at::Tensor image_2x2(std::vector<double> pixels) {
  return at::tensor(pixels, at::kDouble).view({2, 2, 3}).permute({2, 0, 1}).unsqueeze(0).div(255.0).to(at::kFloat);
}

TEST(ColorfulnessReward, GrayImagesScoreZero) {
  auto reward = make_reward();
  EXPECT_FALSE(reward->needs_prompts());
  at::Tensor gray = at::linspace(0, 1, 16, at::kFloat).view({1, 1, 4, 4}).expand({1, 3, 4, 4});
  const at::Tensor images = at::cat({at::zeros({1, 3, 4, 4}), at::full({1, 3, 4, 4}, 0.37f), gray});
  const at::Tensor s = reward->score(images, {});
  ASSERT_EQ(s.sizes(), (std::vector<std::int64_t>{3}));
  sdpo::test::expect_close(s, at::zeros({3}), 0, 1e-4);
}

TEST(ColorfulnessReward, HandComputedTwoByTwo) {
  // Pixels red (255,0,0), red, black (0,0,0), yellow (255,255,0):
  //   rg = R - G           = 255, 255, 0, 0         mean 127.5  variance 127.5^2 = 16256.25
  //   yb = (R + G)/2 - B   = 127.5, 127.5, 0, 255   mean 127.5  variance (2 * 127.5^2)/4 = 8128.125
  //   M  = sqrt(16256.25 + 8128.125) + 0.3 * sqrt(127.5^2 + 127.5^2) = 156.155 + 54.094 = 210.249
  const double expected = std::sqrt(16256.25 + 8128.125) + 0.3 * std::sqrt(127.5 * 127.5 * 2);
  // Pixels (255,0,0), (0,255,0), (0,0,255), (255,255,255): both means vanish, so only the
  // spread term is left: rg = 255, -255, 0, 0 (variance 32512.5); yb = 127.5, 127.5, -255, 0
  // (variance 24384.375); M = sqrt(56896.875) = 238.531.
  const double spread_only = std::sqrt(32512.5 + 24384.375);
  const at::Tensor images = at::cat(
      {image_2x2({255, 0, 0, 255, 0, 0, 0, 0, 0, 255, 255, 0}),
       image_2x2({255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255})});
  const at::Tensor s = make_reward()->score(images, {});
  EXPECT_NEAR(s[0].item<double>(), expected, 1e-3);
  EXPECT_NEAR(s[1].item<double>(), spread_only, 1e-3);
  EXPECT_NEAR(make_reward(R"({"scale": 0.01})")->score(images, {})[0].item<double>(), expected * 0.01, 1e-5);
}

TEST(ColorfulnessReward, SaturatedBeatsPastel) {
  const at::Tensor saturated = image_2x2({255, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 255});
  const at::Tensor pastel = image_2x2({200, 150, 150, 150, 150, 200, 200, 150, 150, 150, 150, 200});
  const at::Tensor s = make_reward()->score(at::cat({saturated, pastel}), {});
  EXPECT_GT(s[0].item<float>(), 2 * s[1].item<float>());
}

TEST(ColorfulnessReward, OptionsAndInputsChecked) {
  EXPECT_THROW(make_reward(R"({"scale": 0})"), sdpo::ManifestError);
  EXPECT_THROW(make_reward(R"({"gain": 1})"), sdpo::ManifestError);
  EXPECT_THROW(make_reward()->score(at::zeros({2, 4, 4}), {}), sdpo::Error);
}

}  // namespace
