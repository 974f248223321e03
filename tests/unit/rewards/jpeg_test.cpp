// The `jpeg_compressibility` and `jpeg_incompressibility` rewards (DDPO's definition).

#include <ATen/CPUGeneratorImpl.h>

#include <boost/json/parse.hpp>
#include <string>

#include "sdpo/core/error.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::Reward> make_reward(const std::string& name, const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::Reward>(
      sdpo::ComponentConfig{"reward", name, boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

// A deterministic textured image whose bytes are exactly representable: value / 255 in [0, 1].
at::Tensor pattern(std::int64_t h, std::int64_t w) {
  const at::Tensor i = at::arange(h, at::kLong).view({h, 1, 1});
  const at::Tensor j = at::arange(w, at::kLong).view({1, w, 1});
  const at::Tensor c = at::arange(3, at::kLong).view({1, 1, 3});
  const at::Tensor v = (i * 7 + j * 13 + c * 50 + (i * j).remainder(17) * 9).remainder(256);  // (H, W, 3)
  return (v.to(at::kDouble) / 255.0).to(at::kFloat).permute({2, 0, 1}).unsqueeze(0);
}

TEST(JpegReward, FlatImageMoreCompressibleThanNoise) {
  auto compress = make_reward("jpeg_compressibility");
  auto incompress = make_reward("jpeg_incompressibility");
  EXPECT_FALSE(compress->needs_prompts());
  EXPECT_FALSE(incompress->needs_prompts());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor images = at::cat({at::full({1, 3, 32, 32}, 0.4f), at::rand({1, 3, 32, 32}, gen)});
  const at::Tensor c = compress->score(images, {});
  const at::Tensor u = incompress->score(images, {"ignored", "ignored"});
  ASSERT_EQ(c.sizes(), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(c.scalar_type(), at::kFloat);
  EXPECT_GT(c[0].item<float>(), c[1].item<float>());
  EXPECT_LT(u[0].item<float>(), u[1].item<float>());
  sdpo::test::expect_close(c, -u, 0, 0, "compressibility = -incompressibility");
  EXPECT_GT(u[0].item<float>(), 0.1f) << "even a flat image has JPEG headers";
}

// Golden sizes from DDPO's own code path (ddpo_pytorch/rewards.py): PIL 9.4 on Debian 12's
// libjpeg62-turbo 2.1.5,
//   i, j, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
//   a = ((i*7 + j*13 + c*50 + (i*j) % 17 * 9) % 256).astype(np.uint8)
//   buf = io.BytesIO(); Image.fromarray(a).save(buf, format="JPEG", quality=95); buf.tell()
// gives 1826 bytes for 32x32 and 1919 bytes for 24x40 (h x w).
TEST(JpegReward, MatchesPilEncodedSize) {
  auto incompress = make_reward("jpeg_incompressibility");
  EXPECT_NEAR(incompress->score(pattern(32, 32), {}).item<float>(), 1.826f, 1e-6);
  EXPECT_NEAR(incompress->score(pattern(24, 40), {}).item<float>(), 1.919f, 1e-6);
  EXPECT_NEAR(make_reward("jpeg_compressibility")->score(pattern(32, 32), {}).item<float>(), -1.826f, 1e-6);
}

TEST(JpegReward, QuantizesLikeDdpo) {
  // round(x * 255) after clamping: values off by less than half a level, or out of [0, 1],
  // encode to the same bytes.
  auto incompress = make_reward("jpeg_incompressibility");
  const at::Tensor x = pattern(32, 32);
  const at::Tensor nudged = x + (at::rand_like(x) - 0.5) * (0.9 / 255.0);
  EXPECT_EQ(incompress->score(x, {}).item<float>(), incompress->score(nudged, {}).item<float>());
  const at::Tensor over = at::full({1, 3, 16, 16}, 1.0f);
  EXPECT_EQ(incompress->score(over, {}).item<float>(), incompress->score(over * 3.0, {}).item<float>());
}

TEST(JpegReward, QualityOption) {
  const at::Tensor x = pattern(32, 32);
  const float q95 = make_reward("jpeg_incompressibility")->score(x, {}).item<float>();
  const float q50 = make_reward("jpeg_incompressibility", R"({"quality": 50})")->score(x, {}).item<float>();
  EXPECT_LT(q50, q95);
  EXPECT_THROW(make_reward("jpeg_compressibility", R"({"quality": 0})"), sdpo::ManifestError);
  EXPECT_THROW(make_reward("jpeg_compressibility", R"({"qualty": 90})"), sdpo::ManifestError);
}

TEST(JpegReward, RejectsNonImages) {
  EXPECT_THROW(make_reward("jpeg_compressibility")->score(at::zeros({3, 8, 8}), {}), sdpo::Error);
  EXPECT_THROW(make_reward("jpeg_compressibility")->score(at::zeros({1, 1, 8, 8}), {}), sdpo::Error);
}

}  // namespace
