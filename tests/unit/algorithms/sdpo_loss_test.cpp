// The SDPO loss and its gradient against the golden vectors, and the clipped branch by hand.
#include "algorithms/sdpo/sdpo_loss.h"

#include <ATen/ATen.h>

#include "support/test_support.h"

namespace {

using sdpo::test::golden;
using sdpo::test::json_tensor;

TEST(SDPOLoss, MatchesReferenceLossAndGradient) {
  const auto& g = golden().at("loss");
  sdpo::SDPOLossInput in;
  auto lpa = json_tensor(g.at("log_prob_a")).requires_grad_(true);
  auto lpb = json_tensor(g.at("log_prob_b")).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = lpb;
  in.old_log_prob_a = json_tensor(g.at("old_log_prob_a"));
  in.old_log_prob_b = json_tensor(g.at("old_log_prob_b"));
  in.advantage_a = json_tensor(g.at("advantage_a"));
  in.advantage_b = json_tensor(g.at("advantage_b"));
  in.weight = json_tensor(g.at("weight_lambda_pow_k"));
  in.eta = g.at("eta_log_scale").to_number<double>();
  in.clip_range = g.at("clip_range").to_number<double>();
  in.adv_clip_max = g.at("adv_clip_max").to_number<double>();
  auto out = sdpo::sdpo_loss(in);
  EXPECT_NEAR(out.loss.item<double>(), g.at("loss").to_number<double>(), 1e-5 * g.at("loss").to_number<double>());
  out.loss.backward();
  sdpo::test::expect_close(lpa.grad(), json_tensor(g.at("grad_log_prob_a")), 1e-5, 1e-9, "d loss / d log_prob_a");
  sdpo::test::expect_close(lpb.grad(), json_tensor(g.at("grad_log_prob_b")), 1e-5, 1e-9, "d loss / d log_prob_b");
  // Pair 2 has advantages 6 and -7: both clipped to +-5.
  EXPECT_NEAR(out.adv_clipfrac, 2.0 / 8.0, 1e-12);
}

TEST(SDPOLoss, ClippedBranchHasZeroGradient) {
  // One pair, rho_a = 0.01 >> eps = 1e-4, rho_b = 0, w = 1, dA = 1:
  // unclipped (0.01 - 1)^2 = 0.9801 < clipped (1e-4 - 1)^2 = 0.99980001 -> clipped branch,
  // whose gradient is zero because rho_a is outside (-eps, eps).
  sdpo::SDPOLossInput in;
  auto lpa = at::full({1}, 0.01, at::kDouble).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = at::zeros({1}, at::kDouble);
  in.old_log_prob_a = at::zeros({1}, at::kDouble);
  in.old_log_prob_b = at::zeros({1}, at::kDouble);
  in.advantage_a = at::full({1}, 0.5, at::kDouble);
  in.advantage_b = at::full({1}, -0.5, at::kDouble);
  in.weight = at::ones({1}, at::kDouble);
  auto out = sdpo::sdpo_loss(in);
  EXPECT_NEAR(out.loss.item<double>(), (1e-4 - 1) * (1e-4 - 1), 1e-12);
  EXPECT_EQ(out.clipfrac, 1.0);
  out.loss.backward();
  EXPECT_EQ(lpa.grad().item<double>(), 0.0);
}

TEST(SDPOLoss, UnclippedWhenClipRangeIsZero) {
  // eps = 0: plain squared error; d/d lp_a of (w (lp_a - old_a) / eta - dA)^2 = 2 (w*0.5/2 - 1) * w/2.
  sdpo::SDPOLossInput in;
  auto lpa = at::full({1}, 0.5, at::kDouble).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = at::zeros({1}, at::kDouble);
  in.old_log_prob_a = at::zeros({1}, at::kDouble);
  in.old_log_prob_b = at::zeros({1}, at::kDouble);
  in.advantage_a = at::ones({1}, at::kDouble);
  in.advantage_b = at::zeros({1}, at::kDouble);
  in.weight = at::full({1}, 0.8, at::kDouble);
  in.eta = 2.0;
  in.clip_range = 0;
  auto out = sdpo::sdpo_loss(in);
  const double r = 0.8 * 0.5 / 2.0 - 1.0;
  EXPECT_NEAR(out.loss.item<double>(), r * r, 1e-12);
  out.loss.backward();
  EXPECT_NEAR(lpa.grad().item<double>(), 2 * r * 0.4, 1e-12);
}

}  // namespace

namespace {

// 9.4 on T = 3 with lambda = 0.5, by hand: forward w = (1, 0.5, 0.25), reverse w = (0.25, 0.5, 1).
TEST(SDPOStepWeights, ForwardAndReverseOnThreeSteps) {
  auto fwd = sdpo::sdpo_step_weights(3, 0.5, sdpo::StepWeighting::kForward);
  auto rev = sdpo::sdpo_step_weights(3, 0.5, sdpo::StepWeighting::kReverse);
  sdpo::test::expect_close(fwd, at::tensor({1.0, 0.5, 0.25}, at::kDouble), 0, 1e-15, "forward");
  sdpo::test::expect_close(rev, at::tensor({0.25, 0.5, 1.0}, at::kDouble), 0, 1e-15, "reverse");
  // lambda = 1: no weighting in either direction; T = 1: the single step weighs 1.
  sdpo::test::expect_close(
      sdpo::sdpo_step_weights(3, 1.0, sdpo::StepWeighting::kReverse), at::ones({3}, at::kDouble), 0, 0, "lambda 1");
  sdpo::test::expect_close(
      sdpo::sdpo_step_weights(1, 0.5, sdpo::StepWeighting::kReverse), at::ones({1}, at::kDouble), 0, 0, "T 1");
}

// Three pairs trained at steps k = 0, 1, 2 of a T = 3 trajectory, one per pair, no clipping:
// rho_a - rho_b = (0.2, 0.4, 0.8), dA = 1 for each. With reverse weights (0.25, 0.5, 1):
// w*drho = (0.05, 0.2, 0.8), l = (0.9025, 0.64, 0.04), loss = 1.5825 / 3 = 0.5275; forward
// weights (1, 0.5, 0.25) give w*drho = 0.2 everywhere, loss 0.64. Had the weight also scaled dA,
// the reverse loss would be mean((w (drho - 1))^2) = (0.6^2/16 + 0.6^2/4 + 0.2^2) / 3 = 0.0508.
TEST(SDPOLoss, ReverseWeightsScaleOnlyTheLogRatio) {
  auto run = [](sdpo::StepWeighting weighting) {
    sdpo::SDPOLossInput in;
    auto lpa = at::tensor({0.2, 0.4, 0.8}, at::kDouble).requires_grad_(true);
    in.log_prob_a = lpa;
    in.log_prob_b = at::zeros({3}, at::kDouble);
    in.old_log_prob_a = at::zeros({3}, at::kDouble);
    in.old_log_prob_b = at::zeros({3}, at::kDouble);
    in.advantage_a = at::full({3}, 0.5, at::kDouble);
    in.advantage_b = at::full({3}, -0.5, at::kDouble);
    auto steps = at::tensor({int64_t{0}, int64_t{1}, int64_t{2}});
    in.weight = sdpo::sdpo_step_weights(3, 0.5, weighting).index_select(0, steps);
    in.clip_range = 0;
    auto out = sdpo::sdpo_loss(in);
    out.loss.backward();
    return std::make_pair(out.loss.item<double>(), lpa.grad());
  };
  auto [reverse, reverse_grad] = run(sdpo::StepWeighting::kReverse);
  EXPECT_NEAR(reverse, 1.5825 / 3.0, 1e-12);
  // d loss / d lp_a_k = 2 (w_k drho_k - 1) w_k / 3.
  sdpo::test::expect_close(
      reverse_grad,
      at::tensor({2 * (0.05 - 1) * 0.25 / 3, 2 * (0.2 - 1) * 0.5 / 3, 2 * (0.8 - 1) * 1.0 / 3}, at::kDouble), 1e-12,
      1e-15, "reverse gradient");
  EXPECT_NEAR(run(sdpo::StepWeighting::kForward).first, 0.64, 1e-12);
}

}  // namespace
