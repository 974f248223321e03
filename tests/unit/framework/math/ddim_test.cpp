// DDIM schedule, spacing and step against the golden reference vectors (computed by the
// official SDPO ddim_with_logprob step) and against hand-computed values.
#include "sdpo/math/ddim.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "sdpo/core/error.h"
#include "support/test_support.h"

namespace {

using sdpo::test::golden;
using sdpo::test::json_tensor;

TEST(DDIMSchedule, AlphasCumprodMatchReference) {
  auto ac = sdpo::ddim_alphas_cumprod({}).to(at::kDouble);
  for (const auto& kv : golden().at("schedule").at("alphas_cumprod_at").as_object()) {
    int64_t t = std::stoll(std::string(kv.key()));
    EXPECT_NEAR(ac[t].item<double>(), kv.value().to_number<double>(), 1e-6) << "t = " << t;
  }
}

TEST(DDIMSchedule, TrailingTimestepsMatchReference) {
  for (const auto& kv : golden().at("schedule").at("trailing_timesteps").as_object()) {
    int64_t n = std::stoll(std::string(kv.key()));
    std::vector<int64_t> expected;
    for (const auto& v : kv.value().as_array()) expected.push_back(v.to_number<int64_t>());
    EXPECT_EQ(sdpo::ddim_timesteps({}, n), expected) << "n = " << n;
  }
}

TEST(DDIMSchedule, LeadingSpacingAddsOffset) {
  sdpo::DDIMSchedule s;
  s.spacing = "leading";
  EXPECT_EQ(sdpo::ddim_timesteps(s, 4), (std::vector<int64_t>{751, 501, 251, 1}));
  EXPECT_EQ(sdpo::ddim_timesteps(s, 1), (std::vector<int64_t>{1}));
}

TEST(DDIMStep, MatchesReferenceVectors) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  for (const auto& c : golden().at("ddim_steps").as_array()) {
    auto x_t = json_tensor(c.at("x_t")).to(at::kFloat);
    auto out = json_tensor(c.at("model_output")).to(at::kFloat);
    auto x_prev = json_tensor(c.at("x_prev")).to(at::kFloat);
    int64_t t = c.at("timestep").to_number<int64_t>();
    int64_t n = c.at("num_steps").to_number<int64_t>();
    auto r = sdpo::ddim_step(
        ac, out, at::full({x_t.size(0)}, t, at::kLong), x_t, n, c.at("eta").to_number<double>(),
        std::string(c.at("prediction").as_string()), x_prev, c10::nullopt);
    std::string what = "n=" + std::to_string(n) + " t=" + std::to_string(t);
    sdpo::test::expect_close(r.pred_x0, json_tensor(c.at("pred_x0")), 1e-4, 1e-5, what + " pred_x0");
    sdpo::test::expect_close(r.log_prob, json_tensor(c.at("log_prob")), 1e-4, 1e-5, what + " log_prob");
    sdpo::test::expect_close(r.prev_sample, x_prev, 0, 0, what + " given prev_sample is returned");
  }
}

// One step for a one-element sample with hand-picked numbers: t = 999 of a 2-step trajectory
// (t_prev = 499), epsilon prediction, eta = 1. Every quantity below is written out by hand.
TEST(DDIMStep, HandComputedStepAndDensity) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  const double ab_t = ac[999].item<double>(), ab_p = ac[499].item<double>();
  const double x = 0.3, eps = -0.8, x_prev = 0.1;
  const double x0 = (x - std::sqrt(1 - ab_t) * eps) / std::sqrt(ab_t);
  const double var = (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p);
  const double sd = std::sqrt(var);
  const double mean = std::sqrt(ab_p) * x0 + std::sqrt(1 - ab_p - var) * eps;
  const double logp = -(x_prev - mean) * (x_prev - mean) / (2 * var) - std::log(sd) - 0.5 * std::log(2 * M_PI);
  auto r = sdpo::ddim_step(
      ac, at::full({1, 1}, eps), at::full({1}, 999, at::kLong), at::full({1, 1}, x), 2, 1.0, "epsilon",
      at::full({1, 1}, x_prev), c10::nullopt);
  EXPECT_NEAR(r.pred_x0.item<double>(), x0, 1e-4 * std::abs(x0));
  EXPECT_NEAR(r.log_prob.item<double>(), logp, 1e-4 * std::abs(logp));
}

// The same step at eta = 0.5: the standard deviation is eta * sigma, and the direction term
// pointing to x_t uses the smaller variance, sqrt(1 - ab_prev - eta^2 sigma^2). A sampler that
// ignored eta in either place (or squared it once too often) would miss both numbers.
TEST(DDIMStep, HandComputedStepAndDensityAtEtaHalf) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  const double ab_t = ac[999].item<double>(), ab_p = ac[499].item<double>();
  const double x = 0.3, eps = -0.8, x_prev = 0.1, eta = 0.5;
  const double x0 = (x - std::sqrt(1 - ab_t) * eps) / std::sqrt(ab_t);
  const double sigma2 = (1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p);
  const double var = eta * eta * sigma2;
  const double mean = std::sqrt(ab_p) * x0 + std::sqrt(1 - ab_p - var) * eps;
  const double logp = -(x_prev - mean) * (x_prev - mean) / (2 * var) - 0.5 * std::log(var) - 0.5 * std::log(2 * M_PI);
  auto r = sdpo::ddim_step(
      ac, at::full({1, 1}, eps), at::full({1}, 999, at::kLong), at::full({1, 1}, x), 2, eta, "epsilon",
      at::full({1, 1}, x_prev), c10::nullopt);
  EXPECT_NEAR(r.log_prob.item<double>(), logp, 1e-4 * std::abs(logp));
  // Sampling (no given x_prev) with noise z: x_prev = mean + sqrt(var) z, z drawn from the generator.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  auto z_gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const double z = at::randn({1, 1}, z_gen).item<double>();
  auto s = sdpo::ddim_step(
      ac, at::full({1, 1}, eps), at::full({1}, 999, at::kLong), at::full({1, 1}, x), 2, eta, "epsilon", at::Tensor(),
      gen);
  EXPECT_NEAR(s.prev_sample.item<double>(), mean + std::sqrt(var) * z, 1e-5);
}

// The log-prob is the Gaussian density averaged over dimensions: for two elements it is the mean
// of the two one-dimensional densities.
TEST(DDIMStep, LogProbIsMeanOverDimensions) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  auto x = at::tensor({0.2f, -0.4f}).view({1, 2});
  auto o = at::tensor({0.5f, 0.1f}).view({1, 2});
  auto prev = at::tensor({0.05f, -0.3f}).view({1, 2});
  auto t = at::full({1}, 519, at::kLong);
  auto both = sdpo::ddim_step(ac, o, t, x, 50, 1.0, "epsilon", prev, c10::nullopt).log_prob.item<double>();
  auto first =
      sdpo::ddim_step(ac, o.slice(1, 0, 1), t, x.slice(1, 0, 1), 50, 1.0, "epsilon", prev.slice(1, 0, 1), c10::nullopt)
          .log_prob.item<double>();
  auto second =
      sdpo::ddim_step(ac, o.slice(1, 1, 2), t, x.slice(1, 1, 2), 50, 1.0, "epsilon", prev.slice(1, 1, 2), c10::nullopt)
          .log_prob.item<double>();
  EXPECT_NEAR(both, 0.5 * (first + second), 1e-5);
}

// The last step of a 50-step trajectory clamps t_prev = -1 to 0 (quirk 11.1): alpha_bar_prev is
// alpha_bar[0], so the returned sample is close to sqrt(ab_0) * x0.
TEST(DDIMStep, LastStepClampsPrevTimestep) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto x = at::randn({1, 3, 4, 4});
  auto o = at::randn({1, 3, 4, 4});
  auto r = sdpo::ddim_step(ac, o, at::full({1}, 19, at::kLong), x, 50, 0.0, "epsilon", at::Tensor(), gen);
  auto ab0 = ac[0].item<double>(), ab19 = ac[19].item<double>();
  auto x0 = (x - std::sqrt(1 - ab19) * o) / std::sqrt(ab19);
  auto expected = std::sqrt(ab0) * x0 + std::sqrt(1 - ab0) * o;
  sdpo::test::expect_close(r.prev_sample, expected, 1e-4, 1e-5, "deterministic last step");
}

TEST(DDIMStep, RejectsUnknownPrediction) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  EXPECT_THROW(
      sdpo::ddim_step(
          ac, at::zeros({1, 1}), at::full({1}, 10, at::kLong), at::zeros({1, 1}), 10, 1.0, "flow", at::zeros({1, 1}),
          c10::nullopt),
      sdpo::Error);
}

}  // namespace
