// The REBEL losses by hand (research/algorithms.md 5.3, 5.5): the per-step form, the trajectory
// form, the memory-saving residual/surrogate gradient against the direct one, and one gradient step
// of a two-parameter policy that favours the better member.
#include "algorithms/rebel/rebel_loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "support/test_support.h"

namespace {

at::Tensor vec(std::vector<double> v) { return at::tensor(v, at::kDouble); }

TEST(RebelLoss, PerStepMatchesHandValues) {
  // rho_a = [0.3-0.1, -0.1-0] = [0.2, -0.1]; rho_b = [0.2-0.25, 0.4-0.1] = [-0.05, 0.3];
  // c = 1/eta = 0.5: c*drho = [0.125, -0.2]; dA = [2, -1]; residual r = [-1.875, 0.8];
  // loss = (3.515625 + 0.64)/2 = 2.0778125; d/d lp_a = 2*r*c/B = [-0.9375, 0.4]; lp_b: opposite.
  sdpo::RebelLossInput in;
  auto lpa = vec({0.3, -0.1}).requires_grad_(true);
  auto lpb = vec({0.2, 0.4}).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = lpb;
  in.old_log_prob_a = vec({0.1, 0.0});
  in.old_log_prob_b = vec({0.25, 0.1});
  in.advantage_a = vec({1.0, -0.5});
  in.advantage_b = vec({-1.0, 0.5});
  in.eta = 2.0;
  auto loss = sdpo::rebel_per_step_loss(in);
  EXPECT_NEAR(loss.item<double>(), 2.0778125, 1e-12);
  loss.backward();
  sdpo::test::expect_close(lpa.grad(), vec({-0.9375, 0.4}), 0, 1e-12, "d loss / d log_prob_a");
  sdpo::test::expect_close(lpb.grad(), vec({0.9375, -0.4}), 0, 1e-12, "d loss / d log_prob_b");
}

TEST(RebelLoss, TrajectoryMatchesHandValues) {
  // Two pairs, T = 2, c = 1. Pair 0: rho_a = [0.1, 0.2], rho_b = [0.0, -0.1] -> sum drho = 0.4,
  // dA = 1 -> e = -0.6. Pair 1: rho_a = [-0.3, 0.0], rho_b = [0.1, 0.1] -> sum drho = -0.5,
  // dA = -0.2 -> e = -0.3. loss = (0.36 + 0.09)/2 = 0.225; d/d lp_a[i][k] = e_i (same for every k).
  sdpo::RebelLossInput in;
  auto lpa = at::tensor({0.1, 0.2, -0.3, 0.0}, at::kDouble).view({2, 2}).requires_grad_(true);
  auto lpb = at::tensor({0.0, -0.1, 0.1, 0.1}, at::kDouble).view({2, 2}).requires_grad_(true);
  in.log_prob_a = lpa;
  in.log_prob_b = lpb;
  in.old_log_prob_a = at::zeros({2, 2}, at::kDouble);
  in.old_log_prob_b = at::zeros({2, 2}, at::kDouble);
  in.advantage_a = vec({0.5, -0.1});
  in.advantage_b = vec({-0.5, 0.1});
  auto loss = sdpo::rebel_trajectory_loss(in);
  EXPECT_NEAR(loss.item<double>(), 0.225, 1e-12);
  sdpo::test::expect_close(sdpo::rebel_trajectory_residual(in), vec({-0.6, -0.3}), 0, 1e-12, "residual");
  loss.backward();
  auto expected = at::tensor({-0.6, -0.6, -0.3, -0.3}, at::kDouble).view({2, 2});
  sdpo::test::expect_close(lpa.grad(), expected, 0, 1e-12, "d loss / d log_prob_a");
  sdpo::test::expect_close(lpb.grad(), -expected, 0, 1e-12, "d loss / d log_prob_b");
  // The sum over steps sits inside the square: the per-step form of the same batch differs.
  in.log_prob_a = lpa.detach().select(1, 0);
  in.log_prob_b = lpb.detach().select(1, 0);
  in.old_log_prob_a = at::zeros({2}, at::kDouble);
  in.old_log_prob_b = at::zeros({2}, at::kDouble);
  // step 0: drho = [0.1, -0.4], r = [-0.9, -0.2] -> (0.81 + 0.04)/2 = 0.425
  EXPECT_NEAR(sdpo::rebel_per_step_loss(in).item<double>(), 0.425, 1e-12);
}

// Log-probs of a tiny "model": ℓ^m(k) = −(x_mk − θ·φ_mk)² / 2 for 3 parameters θ, B pairs, T steps.
struct TinyPolicy {
  at::Tensor theta = at::tensor({0.3, -0.2, 0.5}, at::kDouble).requires_grad_(true);
  at::Tensor x_a, x_b, phi_a, phi_b;  // (B, T) and (B, T, 3)
  TinyPolicy(int64_t B, int64_t T) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    x_a = at::randn({B, T}, gen, at::kDouble);
    x_b = at::randn({B, T}, gen, at::kDouble);
    phi_a = at::randn({B, T, 3}, gen, at::kDouble);
    phi_b = at::randn({B, T, 3}, gen, at::kDouble);
  }
  at::Tensor log_prob(const at::Tensor& x, const at::Tensor& phi) const {
    return -(x - at::matmul(phi, theta)).pow(2) / 2;
  }
};

TEST(RebelLoss, TrajectoryTrickGradientEqualsDirectGradient) {
  const int64_t B = 3, T = 4;
  TinyPolicy p(B, T);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  sdpo::RebelLossInput in;
  in.old_log_prob_a = at::randn({B, T}, gen, at::kDouble) * 0.1 + p.log_prob(p.x_a, p.phi_a).detach();
  in.old_log_prob_b = at::randn({B, T}, gen, at::kDouble) * 0.1 + p.log_prob(p.x_b, p.phi_b).detach();
  in.advantage_a = at::randn({B}, gen, at::kDouble);
  in.advantage_b = at::randn({B}, gen, at::kDouble);
  in.eta = 0.7;

  // Direct: the whole (B, T) graph at once.
  in.log_prob_a = p.log_prob(p.x_a, p.phi_a);
  in.log_prob_b = p.log_prob(p.x_b, p.phi_b);
  auto direct_loss = sdpo::rebel_trajectory_loss(in);
  direct_loss.backward();
  auto direct_grad = p.theta.grad().clone();
  p.theta.mutable_grad().zero_();

  // Trick (5.5): residual from a no-grad pass, then one backward per step into the same .grad.
  at::Tensor residual;
  {
    at::NoGradGuard no_grad;
    sdpo::RebelLossInput full = in;
    full.log_prob_a = p.log_prob(p.x_a, p.phi_a);
    full.log_prob_b = p.log_prob(p.x_b, p.phi_b);
    residual = sdpo::rebel_trajectory_residual(full);
  }
  EXPECT_NEAR(residual.pow(2).mean().item<double>(), direct_loss.item<double>(), 1e-12);
  for (int64_t k = 0; k < T; ++k) {
    sdpo::RebelLossInput step = in;
    step.log_prob_a = p.log_prob(p.x_a.select(1, k), p.phi_a.select(1, k));
    step.log_prob_b = p.log_prob(p.x_b.select(1, k), p.phi_b.select(1, k));
    step.old_log_prob_a = in.old_log_prob_a.select(1, k);
    step.old_log_prob_b = in.old_log_prob_b.select(1, k);
    sdpo::rebel_trajectory_step_surrogate(step, residual).backward();
  }
  ASSERT_GT(direct_grad.abs().max().item<double>(), 1e-3) << "a degenerate case would prove nothing";
  sdpo::test::expect_close(p.theta.grad(), direct_grad, 1e-10, 1e-12, "trick gradient vs direct gradient");
}

TEST(RebelLoss, OneGradientStepFavoursTheBetterMember) {
  // Two parameters θ = (θ0, θ1); member m's log-prob is −(x_m − θ0 − θ1 f_m)²/2 with x_a = 1,
  // f_a = 1, x_b = −0.5, f_b = 0.5; the sampling policy is θ = 0, so ρ = 0 and the residual is −ΔA < 0.
  for (const bool trajectory : {false, true}) {
    auto theta = at::zeros({2}, at::kDouble).requires_grad_(true);
    auto lp = [&](double x, double f) { return -(x - theta[0] - theta[1] * f).pow(2) / 2; };
    auto gap = [&] { return (lp(1.0, 1.0) - lp(-0.5, 0.5)).item<double>(); };
    const double before = gap();
    sdpo::RebelLossInput in;
    in.log_prob_a = lp(1.0, 1.0).view({1, 1});
    in.log_prob_b = lp(-0.5, 0.5).view({1, 1});
    in.old_log_prob_a = in.log_prob_a.detach().clone();
    in.old_log_prob_b = in.log_prob_b.detach().clone();
    in.advantage_a = vec({1.0});  // a is the better member
    in.advantage_b = vec({-1.0});
    if (!trajectory) {
      in.log_prob_a = in.log_prob_a.view({1});
      in.log_prob_b = in.log_prob_b.view({1});
      in.old_log_prob_a = in.old_log_prob_a.view({1});
      in.old_log_prob_b = in.old_log_prob_b.view({1});
    }
    auto loss = trajectory ? sdpo::rebel_trajectory_loss(in) : sdpo::rebel_per_step_loss(in);
    loss.backward();
    {
      at::NoGradGuard no_grad;
      theta -= 0.05 * theta.grad();
    }
    EXPECT_GT(gap(), before + 1e-3) << (trajectory ? "trajectory" : "per_step");
  }
}

}  // namespace
