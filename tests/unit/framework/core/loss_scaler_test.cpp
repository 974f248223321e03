// Dynamic loss scaling (sdpo/core/loss_scaler.h) with GradScaler's semantics, on synthetic
// gradients: growth after growth_interval clean steps, backoff and skip on Inf/NaN, the unscale
// before the gradient-norm clip, the divergence stop, the checkpoint round trip, the "auto" rule,
// and the float16 underflow that motivates it.
#include "sdpo/core/loss_scaler.h"

#include <ATen/ATen.h>

#include <limits>

#include "sdpo/core/error.h"
#include "sdpo/core/optimizer.h"
#include "support/test_support.h"

namespace {

sdpo::LossScalingOptions scaling(std::int64_t growth_interval = 2000) {
  sdpo::LossScalingOptions o;
  o.enabled = true;
  o.growth_interval = growth_interval;
  return o;
}

TEST(LossScaler, DefaultsAreGradScalers) {
  sdpo::LossScalingOptions o;
  EXPECT_FALSE(o.enabled);
  EXPECT_EQ(o.init_scale, 65536.0);
  EXPECT_EQ(o.growth_factor, 2.0);
  EXPECT_EQ(o.backoff_factor, 0.5);
  EXPECT_EQ(o.growth_interval, 2000);
  EXPECT_EQ(sdpo::LossScaler(o).scale(), 1.0) << "disabled: the loss is not scaled";
}

TEST(LossScaler, GrowsAfterGrowthIntervalCleanStepsInARow) {
  sdpo::LossScaler s(scaling(3));
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.growth_tracker(), 2);
  s.update(true);
  EXPECT_EQ(s.scale(), 131072.0) << "the third clean step doubles the scale";
  EXPECT_EQ(s.growth_tracker(), 0);
  // A skip restarts the count: two clean steps after it do not grow the scale.
  s.update(false);
  EXPECT_EQ(s.scale(), 65536.0);
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.scale(), 65536.0);
  s.update(true);
  EXPECT_EQ(s.scale(), 131072.0);
  EXPECT_EQ(s.skipped(), 1);
}

TEST(LossScaler, BacksOffByHalfOnEverySkipAndStopsBelowTheFloor) {
  auto o = scaling();
  o.init_scale = 8.0;
  sdpo::LossScaler s(o);
  s.update(false);
  EXPECT_EQ(s.scale(), 4.0);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_EQ(s.skipped(), 3);
  // 1 * 0.5 < min_scale 1: a run whose gradient overflows at scale 1 has diverged.
  EXPECT_THROW(s.update(false), sdpo::NumericError);
}

TEST(LossScaler, StateRoundTripsAndAnUnscaledCheckpointStartsFresh) {
  sdpo::LossScaler a(scaling(4));
  a.update(false);
  a.update(true);
  sdpo::TensorMap state;
  a.save(state);
  sdpo::LossScaler b(scaling(4));
  b.load(state);
  EXPECT_EQ(b.scale(), 32768.0);
  EXPECT_EQ(b.growth_tracker(), 1);
  EXPECT_EQ(b.skipped(), 1);
  sdpo::LossScaler c(scaling(4));
  c.update(false);
  c.load(sdpo::TensorMap{});
  EXPECT_EQ(c.scale(), 65536.0);
  EXPECT_EQ(c.skipped(), 0);
  sdpo::TensorMap none;
  sdpo::LossScaler(sdpo::LossScalingOptions{}).save(none);
  EXPECT_TRUE(none.empty()) << "a disabled scaler adds nothing to a checkpoint";
}

TEST(LossScaler, AutoIsOnExactlyForFloat16) {
  EXPECT_TRUE(sdpo::loss_scaling_enabled("auto", at::kHalf));
  EXPECT_FALSE(sdpo::loss_scaling_enabled("auto", at::kBFloat16)) << "float32's exponent range";
  EXPECT_FALSE(sdpo::loss_scaling_enabled("auto", at::kFloat));
  EXPECT_TRUE(sdpo::loss_scaling_enabled("on", at::kFloat));
  EXPECT_FALSE(sdpo::loss_scaling_enabled("off", at::kHalf));
  EXPECT_THROW(sdpo::loss_scaling_enabled("yes", at::kHalf), sdpo::Error);
}

sdpo::OptimizerOptions scaled_optimizer(double max_grad_norm) {
  sdpo::OptimizerOptions o;
  o.max_grad_norm = max_grad_norm;
  o.weight_decay = 0;
  o.loss_scaling = scaling();
  return o;
}

TEST(LossScaledOptimizer, UnscalesBeforeTheGradientNormClip) {
  // Gradient (3, 4): scaled by 2^16 in backward. Unscaled first, its norm is 5 and the clip to 1
  // gives (0.6, 0.8), so Adam's first moment is (1 - beta1) * (0.6, 0.8). Clipping the scaled
  // gradient and unscaling after would give a gradient 2^16 times smaller.
  auto p = at::zeros({2}, at::kDouble).requires_grad_(true);
  sdpo::Optimizer opt({p}, scaled_optimizer(1.0));
  opt.backward((p * at::tensor({3.0, 4.0})).sum());
  EXPECT_EQ(p.grad()[0].item<double>(), 3.0 * 65536.0) << "backward ran on the scaled loss";
  ASSERT_TRUE(opt.micro_step());
  EXPECT_NEAR(opt.last_grad_norm(), 5.0, 1e-12);
  auto state = opt.state_dict();
  sdpo::test::expect_close(state.at("param.0.exp_avg"), at::tensor({0.06, 0.08}), 1e-5, 1e-9);  // clip eps 1e-6
  EXPECT_EQ(state.at("loss_scaler.scale").item<double>(), 65536.0);
  EXPECT_EQ(state.at("loss_scaler.growth_tracker").item<std::int64_t>(), 1);
}

TEST(LossScaledOptimizer, SkipsTheStepOnInfOrNaNAndBacksOff) {
  for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    auto p = at::ones({2}, at::kDouble).requires_grad_(true);
    sdpo::Optimizer opt({p}, scaled_optimizer(1.0));
    opt.backward((p * at::tensor({bad, 1.0})).sum());
    EXPECT_FALSE(opt.micro_step()) << bad << ": the step is skipped, not thrown";
    EXPECT_EQ(opt.updates(), 0);
    EXPECT_EQ(opt.skipped_updates(), 1);
    EXPECT_EQ(opt.loss_scale(), 32768.0);
    EXPECT_TRUE(p.equal(at::ones({2}, at::kDouble))) << "the parameters are untouched";
    EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0) << "the bad gradient is dropped";
    EXPECT_EQ(opt.state_dict().count("param.0.exp_avg"), 0u) << "no moment saw it";
    // The next clean step applies at the backed-off scale.
    opt.backward((p * at::tensor({1.0, 1.0})).sum());
    EXPECT_EQ(p.grad()[0].item<double>(), 32768.0);
    EXPECT_TRUE(opt.micro_step());
    EXPECT_EQ(opt.updates(), 1);
  }
}

TEST(LossScaledOptimizer, WithoutScalingANonFiniteGradientStopsTheRun) {
  auto p = at::ones({2}, at::kDouble).requires_grad_(true);
  sdpo::OptimizerOptions o;
  sdpo::Optimizer opt({p}, o);
  opt.backward((p * at::tensor({std::numeric_limits<double>::infinity(), 1.0})).sum());
  EXPECT_THROW(opt.micro_step(), sdpo::NumericError);
}

TEST(LossScaledOptimizer, RecoversAGradientThatUnderflowsInFloat16) {
  // A float32 parameter seen through a float16 path, y = half(p) * 1e-4, loss = 4e-4 mean(y):
  // d loss / d y = 1e-4 and d loss / d p = 1e-8, below float16's smallest subnormal (6e-8), so
  // unscaled that gradient flushes to zero in float16. Scaled by 2^16 it is 6.6e-4 there (and
  // d loss / d y = 6.6, far below float16's 65504) and unscales to 1e-8 in float32.
  auto grad_norm_through_half = [](bool scaled) {
    auto p = at::ones({4}, at::kFloat).requires_grad_(true);
    sdpo::OptimizerOptions o;
    o.loss_scaling.enabled = scaled;
    sdpo::Optimizer opt({p}, o);
    auto y = p.to(at::kHalf) * 1e-4;
    opt.backward(y.to(at::kFloat).mean() * 4e-4);
    EXPECT_TRUE(opt.micro_step());
    return opt.last_grad_norm();
  };
  EXPECT_EQ(grad_norm_through_half(false), 0.0) << "float16 underflow without a scale";
  EXPECT_NEAR(grad_norm_through_half(true), 2e-8, 2e-10) << "the norm of four gradients of 1e-8";
}

}  // namespace
