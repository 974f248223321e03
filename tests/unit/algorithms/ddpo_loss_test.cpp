// The DDPO losses (research/algorithms.md 4.3) against values computed by hand, including both
// clipped branches of the PPO objective, and one gradient step on a two-parameter policy.
#include "algorithms/ddpo/ddpo_loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "support/test_support.h"

namespace {

at::Tensor doubles(std::vector<double> v) { return at::tensor(v, at::kDouble); }

TEST(DDPOLoss, ImportanceSampledMatchesHandValuesOnEveryBranch) {
  // eps = 0.1, old log-probs -1, ratios r and advantages A (5 clipped to 6 -> 5):
  //   0: r 1.5,  A  2: -A r = -3,    -A clip = -2.2 -> max -2.2 (clipped above, zero gradient)
  //   1: r 0.5,  A -1: -A r =  0.5,  -A clip =  0.9 -> max  0.9 (clipped below, zero gradient)
  //   2: r 1.05, A  6->5: both -5.25 (inside the clip range) -> gradient -A r = -5.25
  //   3: r 0.5,  A  1: -0.5 vs -0.9 -> max -0.5 (unclipped side keeps its gradient -A r = -0.5)
  //   4: r 1.5,  A -1:  1.5 vs  1.1 -> max  1.5 (unclipped side, gradient -A r = 1.5)
  const std::vector<double> r{1.5, 0.5, 1.05, 0.5, 1.5};
  std::vector<double> lp_v;
  for (double x : r) lp_v.push_back(-1.0 + std::log(x));
  auto lp = doubles(lp_v).requires_grad_(true);
  auto old = at::full({5}, -1.0, at::kDouble);
  auto adv = doubles({2, -1, 6, 1, -1});
  auto out = sdpo::ddpo_is_loss(lp, old, adv, 0.1, 5.0);
  EXPECT_NEAR(out.loss.item<double>(), (-2.2 + 0.9 - 5.25 - 0.5 + 1.5) / 5.0, 1e-12);
  EXPECT_NEAR(out.clipfrac, 4.0 / 5.0, 1e-12);
  double kl = 0;
  for (double x : r) kl += std::log(x) * std::log(x);
  EXPECT_NEAR(out.approx_kl, 0.5 * kl / 5.0, 1e-12);
  out.loss.backward();
  // d/d lp of -A exp(lp - old) = -A r, divided by the batch size 5.
  sdpo::test::expect_close(
      lp.grad(), doubles({0.0, 0.0, -5.25 / 5, -0.5 / 5, 1.5 / 5}), 1e-12, 1e-12, "d loss / d log_prob");
}

TEST(DDPOLoss, ImportanceSampledAtTheSamplingPolicyIsTheScoreFunction) {
  // ratio 1 (theta = theta_old): the clip is inactive and the gradient is -A / B, like SF's.
  auto lp = doubles({-0.3, 0.2}).requires_grad_(true);
  auto out = sdpo::ddpo_is_loss(lp, doubles({-0.3, 0.2}), doubles({1.5, -0.5}), 1e-4, 5.0);
  EXPECT_NEAR(out.loss.item<double>(), (-1.5 + 0.5) / 2.0, 1e-12);
  EXPECT_EQ(out.clipfrac, 0.0);
  EXPECT_EQ(out.approx_kl, 0.0);
  out.loss.backward();
  sdpo::test::expect_close(lp.grad(), doubles({-0.75, 0.25}), 1e-12, 1e-12);
}

TEST(DDPOLoss, ScoreFunctionMatchesHandValues) {
  // A = [2, -7 -> -5, 0.5]; L = mean(-A lp) = mean(-0.6, -1.0, -0.5) = -0.7; dL/dlp = -A / 3.
  auto lp = doubles({0.3, -0.2, 1.0}).requires_grad_(true);
  auto out = sdpo::ddpo_sf_loss(lp, doubles({2, -7, 0.5}), 5.0);
  EXPECT_NEAR(out.loss.item<double>(), -0.7, 1e-12);
  out.loss.backward();
  sdpo::test::expect_close(lp.grad(), doubles({-2.0 / 3, 5.0 / 3, -0.5 / 3}), 1e-12, 1e-12);
}

// A 1-D Gaussian policy N(mu, exp(s)^2) with parameters (mu, s), two fixed actions: x = +1 has
// advantage +1, x = -1 advantage -1. One SGD step on either loss must raise log p(+1).
at::Tensor gaussian_log_prob(const at::Tensor& mu, const at::Tensor& s, const at::Tensor& x) {
  return -0.5 * ((x - mu) / s.exp()).pow(2) - s - 0.5 * std::log(2 * M_PI);
}

TEST(DDPOLoss, OneGradientStepRaisesTheLogProbOfThePositiveAdvantageSample) {
  auto x = doubles({1.0, -1.0});
  auto adv = doubles({1.0, -1.0});
  for (const bool sf : {false, true}) {
    SCOPED_TRACE(sf ? "sf" : "is");
    auto mu = at::full({}, 0.2, at::kDouble).requires_grad_(true);
    auto s = at::full({}, 0.1, at::kDouble).requires_grad_(true);
    auto before = gaussian_log_prob(mu, s, x).detach();
    auto lp = gaussian_log_prob(mu, s, x);
    auto out = sf ? sdpo::ddpo_sf_loss(lp, adv, 5.0) : sdpo::ddpo_is_loss(lp, before, adv, 0.2, 5.0);
    out.loss.backward();
    {
      at::NoGradGuard no_grad;
      mu.sub_(0.05 * mu.grad());
      s.sub_(0.05 * s.grad());
    }
    auto after = gaussian_log_prob(mu, s, x).detach();
    EXPECT_GT(after[0].item<double>(), before[0].item<double>());
    EXPECT_LT(after[1].item<double>(), before[1].item<double>());
    EXPECT_GT(mu.item<double>(), 0.2) << "the mean moves toward the positive-advantage action";
  }
}

}  // namespace
