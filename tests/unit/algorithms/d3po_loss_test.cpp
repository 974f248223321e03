// The D3PO labels and loss by hand (research/algorithms.md 6.2, 6.3): a preferred pair inside the
// clip, a tie (log 2, zero gradient), a clamped ratio (zero gradient), and one gradient step of a
// two-parameter policy that favours the better member.
#include "algorithms/d3po/d3po_loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "support/test_support.h"

namespace {

at::Tensor vec(std::vector<double> v) { return at::tensor(v, at::kDouble); }
double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double softplus(double z) { return std::log1p(std::exp(z)); }

TEST(D3POLoss, LabelsFromRawRewards) {
  auto labels = sdpo::d3po_preference_labels(vec({2.0, 1.0, 0.5, -3.0}), vec({1.0, 1.0, 0.7, -4.0}));
  sdpo::test::expect_close(labels.label_a.to(at::kDouble), vec({1, 0, -1, 1}), 0, 0, "h_a");
  sdpo::test::expect_close(labels.label_b.to(at::kDouble), vec({-1, 0, 1, -1}), 0, 0, "h_b");
}

TEST(D3POLoss, MatchesHandValuesWithTieAndClamp) {
  // beta = 0.5, eps = 0.1 (log q in [log 0.9, log 1.1] = [-0.10536, 0.09531]).
  // Pair 0: a better, log-ratios 0.05 / -0.02 (inside): z0 = 0.5 * (0.05 + 0.02) = 0.035.
  // Pair 1: tie: z1 = 0, loss log 2, no gradient.
  // Pair 2: b better, log-ratio a = 0.2 -> clamped to log 1.1 (no gradient), b = -0.03 (inside):
  //         z2 = 0.5 * (-log 1.1 - 0.03).
  sdpo::D3POLossInput in;
  auto lpa = vec({-1.0 + 0.05, 0.3, 0.5 + 0.2}).requires_grad_(true);
  auto lpb = vec({-2.0 - 0.02, 0.1, 0.4 - 0.03}).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = lpb;
  in.ref_log_prob_a = vec({-1.0, 0.3, 0.5});
  in.ref_log_prob_b = vec({-2.0, 0.1, 0.4});
  auto labels = sdpo::d3po_preference_labels(vec({1.0, 0.0, 0.0}), vec({0.0, 0.0, 1.0}));
  in.label_a = labels.label_a;
  in.label_b = labels.label_b;
  in.beta = 0.5;
  in.eps = 0.1;
  auto out = sdpo::d3po_loss(in);

  const double z0 = 0.5 * 0.07, z2 = 0.5 * (-std::log(1.1) - 0.03);
  const double expected = (softplus(-z0) + std::log(2.0) + softplus(-z2)) / 3.0;
  EXPECT_NEAR(out.loss.item<double>(), expected, 1e-12);
  EXPECT_NEAR(out.clampfrac, 1.0 / 6.0, 1e-12);
  EXPECT_NEAR(out.mean_abs_log_q, (0.05 + 0.02 + std::log(1.1) + 0.03) / 6.0, 1e-12);
  EXPECT_NEAR(out.mean_abs_log_ratio, (0.05 + 0.02 + 0.2 + 0.03) / 6.0, 1e-12);

  out.loss.backward();
  // d softplus(-z)/dz = -sigmoid(-z); dz/d lp_m = beta * h_m inside the clip, 0 outside; mean over 3.
  const double g0 = -sigmoid(-z0) * 0.5 / 3.0, g2 = -sigmoid(-z2) * 0.5 / 3.0;
  sdpo::test::expect_close(lpa.grad(), vec({g0 * 1, 0.0, 0.0}), 0, 1e-12, "d loss / d log_prob_a");
  sdpo::test::expect_close(lpb.grad(), vec({g0 * -1, 0.0, g2 * 1}), 0, 1e-12, "d loss / d log_prob_b");
}

TEST(D3POLoss, TieIsLogTwoWithZeroGradient) {
  sdpo::D3POLossInput in;
  auto lpa = vec({0.04}).requires_grad_(true);
  auto lpb = vec({-0.01}).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = lpb;
  in.ref_log_prob_a = vec({0.0});
  in.ref_log_prob_b = vec({0.0});
  auto labels = sdpo::d3po_preference_labels(vec({0.25}), vec({0.25}));
  in.label_a = labels.label_a;
  in.label_b = labels.label_b;
  auto out = sdpo::d3po_loss(in);
  EXPECT_NEAR(out.loss.item<double>(), std::log(2.0), 1e-15);
  out.loss.backward();
  EXPECT_EQ(lpa.grad().item<double>(), 0.0);
  EXPECT_EQ(lpb.grad().item<double>(), 0.0);
}

TEST(D3POLoss, RatiosOutsideTheClipOnBothSidesHaveZeroGradient) {
  // q_a = exp(-0.5) < 0.9 and q_b = exp(0.5) > 1.1: both clamped; loss from the clip bounds alone.
  sdpo::D3POLossInput in;
  auto lpa = vec({-0.5}).requires_grad_(true);
  auto lpb = vec({0.5}).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = lpb;
  in.ref_log_prob_a = vec({0.0});
  in.ref_log_prob_b = vec({0.0});
  in.label_a = vec({1.0});
  in.label_b = vec({-1.0});
  auto out = sdpo::d3po_loss(in);
  const double z = 0.1 * (std::log(0.9) - std::log(1.1));
  EXPECT_NEAR(out.loss.item<double>(), softplus(-z), 1e-12);
  EXPECT_EQ(out.clampfrac, 1.0);
  out.loss.backward();
  EXPECT_EQ(lpa.grad().item<double>(), 0.0);
  EXPECT_EQ(lpb.grad().item<double>(), 0.0);
}

TEST(D3POLoss, OneGradientStepFavoursTheBetterMember) {
  // Two parameters θ; member m's log-prob is −(x_m − θ0 − θ1 f_m)²/2 with x_a = 1, f_a = 1,
  // x_b = −0.5, f_b = 0.5; the reference is θ = 0, so both ratios start at 1 (inside the clip).
  auto theta = at::zeros({2}, at::kDouble).requires_grad_(true);
  auto lp = [&](double x, double f) { return -(x - theta[0] - theta[1] * f).pow(2).view({1}) / 2; };
  auto gap = [&] { return (lp(1.0, 1.0) - lp(-0.5, 0.5)).item<double>(); };
  const double before = gap();
  sdpo::D3POLossInput in;
  in.log_prob_a = lp(1.0, 1.0);
  in.log_prob_b = lp(-0.5, 0.5);
  in.ref_log_prob_a = in.log_prob_a.detach().clone();
  in.ref_log_prob_b = in.log_prob_b.detach().clone();
  auto labels = sdpo::d3po_preference_labels(vec({0.8}), vec({0.2}));  // a is better
  in.label_a = labels.label_a;
  in.label_b = labels.label_b;
  auto out = sdpo::d3po_loss(in);
  EXPECT_NEAR(out.loss.item<double>(), std::log(2.0), 1e-12);
  out.loss.backward();
  {
    at::NoGradGuard no_grad;
    theta -= 0.05 * theta.grad();  // small enough to stay inside the clip
  }
  EXPECT_GT(gap(), before);
  // The preferred member's ratio rose above 1 and the other's fell, so the loss fell below log 2.
  in.log_prob_a = lp(1.0, 1.0);
  in.log_prob_b = lp(-0.5, 0.5);
  auto after = sdpo::d3po_loss(in);
  EXPECT_EQ(after.clampfrac, 0.0);
  EXPECT_LT(after.loss.item<double>(), std::log(2.0));
}

}  // namespace
