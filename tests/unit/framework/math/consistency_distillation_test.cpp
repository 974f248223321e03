// Latent consistency distillation math (sdpo/math/consistency_distillation.h) and the consistency
// function it shares with the lcm sampler (lcm_consistency_output), against hand-computed values.
#include "sdpo/math/consistency_distillation.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sdpo/core/error.h"
#include "sdpo/math/lcm.h"
#include "support/test_support.h"

namespace {

using Steps = std::vector<int64_t>;

Steps as_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return Steps(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// k = 1000 / 50 = 20: the lcm sampler's origin grid 19, 39, ..., 999, one grid step back, and the
// first grid point lands on 0.
TEST(ConsistencyDistillation, TimestepsOnTheLCMGrid) {
  auto t = sdpo::lcd_timesteps(at::tensor({0, 1, 24, 49}, at::kLong), 1000, 50);
  EXPECT_EQ(as_vector(t.start), (Steps{19, 39, 499, 999}));
  EXPECT_EQ(as_vector(t.target), (Steps{0, 19, 479, 979}));
  // k = 10 / 3 = 3 (integer division): 2, 5, 8 -> 0, 2, 5.
  auto u = sdpo::lcd_timesteps(at::tensor({0, 1, 2}, at::kLong), 10, 3);
  EXPECT_EQ(as_vector(u.start), (Steps{2, 5, 8}));
  EXPECT_EQ(as_vector(u.target), (Steps{0, 2, 5}));
  EXPECT_THROW(sdpo::lcd_timesteps(at::tensor({50}, at::kLong), 1000, 50), c10::Error);
  EXPECT_THROW(sdpo::lcd_timesteps(at::tensor({0}, at::kLong), 10, 11), c10::Error);
}

// ab = (0.9, 0.5, 0.2, 0.1), x = 1, eps_hat = 0.5 at t = 3 stepping to t = 1:
// x0_hat = (1 - sqrt(0.9) 0.5) / sqrt(0.1) = 1.66227766, x^ = sqrt(0.5)(1.66227766 + 0.5) = 1.52896120.
TEST(ConsistencyDistillation, TeacherStepIsDeterministicDDIMByHand) {
  const at::Tensor ac = at::tensor({0.9, 0.5, 0.2, 0.1}, at::kDouble);
  const sdpo::LCDTimesteps t{at::tensor({3}, at::kLong), at::tensor({1}, at::kLong)};
  const at::Tensor x = at::full({1, 1}, 1.0, at::kDouble);
  const at::Tensor out = sdpo::lcd_teacher_step(ac, at::full({1, 1}, 0.5, at::kDouble), t, x, "epsilon");
  EXPECT_NEAR(out.item<double>(), 1.5289611963132421, 1e-12);

  // The same (x0, eps) pair written as each parametrization gives the same step.
  const double a = std::sqrt(0.1), s = std::sqrt(0.9), eps = 0.5, x0 = (1.0 - s * eps) / a;
  const at::Tensor v = at::full({1, 1}, a * eps - s * x0, at::kDouble);
  EXPECT_NEAR(sdpo::lcd_teacher_step(ac, v, t, x, "v_prediction").item<double>(), 1.5289611963132421, 1e-12);
  EXPECT_NEAR(
      sdpo::lcd_teacher_step(ac, at::full({1, 1}, x0, at::kDouble), t, x, "sample").item<double>(), 1.5289611963132421,
      1e-12);
  EXPECT_THROW(sdpo::lcd_teacher_step(ac, v, t, x, "flow"), sdpo::Error);
}

// a - b = (0, 4): l2 = 16 / 2 = 8; pseudo-Huber with c = 1: (0 + sqrt(17) - 1) / 2.
TEST(ConsistencyDistillation, LossesByHand) {
  const at::Tensor a = at::tensor({0.0, 3.0}), b = at::tensor({0.0, -1.0});
  EXPECT_NEAR(sdpo::consistency_loss(a, b, "l2", 1.0).item<double>(), 8.0, 1e-6);
  EXPECT_NEAR(sdpo::consistency_loss(a, b, "huber", 1.0).item<double>(), (std::sqrt(17.0) - 1.0) / 2.0, 1e-6);
  // Small errors: pseudo-Huber ~ d^2 / 2c (d = 0.1, c = 1: sqrt(1.01) - 1 = 0.0049875621, ~0.005).
  const double small = sdpo::consistency_loss(at::tensor({0.1}), at::tensor({0.0}), "huber", 1.0).item<double>();
  EXPECT_NEAR(small, std::sqrt(1.01) - 1.0, 1e-7);
  EXPECT_NEAR(small / (0.01 / 2.0), 1.0, 0.003);
  EXPECT_THROW(sdpo::consistency_loss(a, b, "l1", 1.0), sdpo::Error);
  EXPECT_THROW(sdpo::consistency_loss(a, at::zeros({3}), "l2", 1.0), c10::Error);
}

TEST(ConsistencyDistillation, EMAUpdateByHand) {
  at::Tensor target = at::tensor({1.0, 2.0}), online = at::tensor({3.0, 6.0});
  sdpo::ema_update({target}, {online}, 0.75);  // 0.75 * (1, 2) + 0.25 * (3, 6)
  sdpo::test::expect_close(target, at::tensor({1.5, 3.0}), 0, 1e-6, "ema");
  sdpo::ema_update({target}, {online}, 1.0);  // decay 1: unchanged
  sdpo::test::expect_close(target, at::tensor({1.5, 3.0}), 0, 1e-6, "ema decay 1");
  EXPECT_THROW(sdpo::ema_update({target}, {}, 0.5), sdpo::Error);
  EXPECT_THROW(sdpo::ema_update({target}, {at::zeros({3})}, 0.5), c10::Error);
}

// f(x, 0) = x exactly (c_skip(0) = 1, c_out(0) = 0), whatever the model predicts; at t = 999 the
// output is the raw x0 estimate up to c_skip = 0.25 / (9990^2 + 0.25).
TEST(ConsistencyDistillation, ConsistencyOutputBoundary) {
  sdpo::LCMSchedule schedule;
  const at::Tensor ac = sdpo::lcm_alphas_cumprod(schedule);
  const at::Tensor x = at::tensor({0.3, -0.7}).view({2, 1});
  const at::Tensor out = at::tensor({5.0, -2.0}).view({2, 1});
  auto f0 = sdpo::lcm_consistency_output(ac, out, at::zeros({2}, at::kLong), x, 10.0, 0.5, "epsilon");
  EXPECT_TRUE(at::equal(f0.denoised, x));
  auto f = sdpo::lcm_consistency_output(ac, out, at::full({2}, 999, at::kLong), x, 10.0, 0.5, "epsilon");
  const double ab = ac[999].item<double>();
  const double c_skip = 0.25 / (9990.0 * 9990.0 + 0.25), c_out = 9990.0 / std::sqrt(9990.0 * 9990.0 + 0.25);
  const double x0 = (0.3 - std::sqrt(1 - ab) * 5.0) / std::sqrt(ab);
  EXPECT_NEAR(f.pred_x0[0].item<double>(), x0, 1e-4);
  EXPECT_NEAR(f.denoised[0].item<double>(), c_out * x0 + c_skip * 0.3, 1e-4);
}

}  // namespace
