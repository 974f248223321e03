// Pure math of few-step distillation (sdpo/math/few_step_distillation.h) and the shared prediction
// conversion of the DDIM step (ddim_prediction in sdpo/math/ddim.h), against hand-computed values.
#include "sdpo/math/few_step_distillation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sdpo/core/error.h"
#include "sdpo/math/ddim.h"

namespace {

using Positions = std::vector<std::int64_t>;

// Trailing grids (T = 1000): 8 steps 999 874 749 624 499 374 249 124; 4 steps 999 749 499 249;
// 2 steps 999 499; 1 step 999.
TEST(FewStepDistillation, PositionsAreTheStudentsTimestepsOnTheTeachersGrid) {
  const sdpo::DDIMSchedule s;
  EXPECT_EQ(sdpo::distillation_positions(s, 8, {1, 2, 4}), (Positions{0, 2, 4, 6}));
  EXPECT_EQ(sdpo::distillation_positions(s, 8, {2, 1}), (Positions{0, 4}));  // order and repeats do not matter
  EXPECT_EQ(sdpo::distillation_positions(s, 8, {1}), (Positions{0}));
  EXPECT_EQ(sdpo::distillation_positions(s, 8, {8}), (Positions{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(sdpo::distillation_positions(s, 16, {8}), (Positions{0, 2, 4, 6, 8, 10, 12, 14}));
  // 6-step trailing grid: 999 832 666 499 332 166; 3 steps: 999 666 332.
  EXPECT_EQ(sdpo::distillation_positions(s, 6, {3, 2}), (Positions{0, 2, 3, 4}));
}

TEST(FewStepDistillation, StepCountsOffTheTeachersGridAreRefused) {
  const sdpo::DDIMSchedule s;
  try {
    sdpo::distillation_positions(s, 6, {1, 4});
    ADD_FAILURE() << "accepted 4 student steps on a 6-step teacher";
  } catch (const sdpo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("4-step sampling visits t = 749"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("make teacher_steps a multiple of 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sdpo::distillation_positions(s, 8, {}), sdpo::Error);
  EXPECT_THROW(sdpo::distillation_positions(s, 8, {0}), sdpo::Error);
  EXPECT_THROW(sdpo::distillation_positions(s, 0, {1}), sdpo::Error);
}

TEST(FewStepDistillation, LossIsBothMeanSquaredErrorsWithTheWeight) {
  at::Tensor student = at::tensor({1.0, 2.0}, at::kDouble).view({1, 2}).requires_grad_(true);
  at::Tensor teacher = at::zeros({1, 2}, at::kDouble);
  at::Tensor pred = at::tensor({3.0}, at::kDouble).view({1, 1}).requires_grad_(true);
  at::Tensor target = at::tensor({1.0}, at::kDouble).view({1, 1});
  const auto l = sdpo::few_step_distillation_loss(student, teacher, pred, target, 0.5);
  EXPECT_DOUBLE_EQ(l.distill.item<double>(), 2.5);  // (1 + 4) / 2
  EXPECT_DOUBLE_EQ(l.denoise.item<double>(), 4.0);  // (3 - 1)^2
  EXPECT_DOUBLE_EQ(l.total.item<double>(), 4.5);    // 2.5 + 0.5 * 4
  l.total.backward();
  // d/ds (s - t)^2 / 2 = s - t; d/dp 0.5 (p - y)^2 = p - y.
  EXPECT_TRUE(at::allclose(student.grad(), at::tensor({1.0, 2.0}, at::kDouble).view({1, 2})));
  EXPECT_DOUBLE_EQ(pred.grad().item<double>(), 2.0);
  EXPECT_THROW(sdpo::few_step_distillation_loss(student, teacher.view({2, 1}), pred, target, 1.0), c10::Error);
}

// ab = 0.64 at t = 1: sqrt(ab) = 0.8, sqrt(1 - ab) = 0.6; x = 1, model output 0.5.
TEST(DDIMPrediction, HandValuesForEveryParametrization) {
  const at::Tensor ac = at::tensor({0.25, 0.64}, at::kFloat);
  const at::Tensor t = at::tensor({1}, at::kLong);
  const at::Tensor x = at::ones({1, 1}), out = at::full({1, 1}, 0.5);
  auto p = sdpo::ddim_prediction(ac, out, t, x, "epsilon");
  EXPECT_NEAR(p.pred_x0.item<float>(), (1.0 - 0.6 * 0.5) / 0.8, 1e-6);  // 0.875
  EXPECT_NEAR(p.pred_eps.item<float>(), 0.5, 1e-6);
  p = sdpo::ddim_prediction(ac, out, t, x, "v_prediction");
  EXPECT_NEAR(p.pred_x0.item<float>(), 0.8 * 1.0 - 0.6 * 0.5, 1e-6);   // 0.5
  EXPECT_NEAR(p.pred_eps.item<float>(), 0.8 * 0.5 + 0.6 * 1.0, 1e-6);  // 1.0
  p = sdpo::ddim_prediction(ac, out, t, x, "sample");
  EXPECT_NEAR(p.pred_x0.item<float>(), 0.5, 1e-6);
  EXPECT_NEAR(p.pred_eps.item<float>(), (1.0 - 0.8 * 0.5) / 0.6, 1e-6);  // 1.0
  EXPECT_THROW(sdpo::ddim_prediction(ac, out, t, x, "flow"), sdpo::Error);
}

}  // namespace
