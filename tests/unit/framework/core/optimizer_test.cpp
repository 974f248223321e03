// The optimizer service: accumulation cadence, gradient-norm clipping, state round trip.
#include "sdpo/core/optimizer.h"

#include <ATen/ATen.h>

#include "support/test_support.h"

namespace {

TEST(Optimizer, StepsEveryAccumulationMicroBatches) {
  auto p = at::zeros({2}, at::kFloat).requires_grad_(true);
  sdpo::OptimizerOptions o;
  o.gradient_accumulation = 3;
  o.learning_rate = 0.1;
  sdpo::Optimizer opt({p}, o);
  for (int i = 0; i < 5; ++i) {
    (p * at::tensor({1.0f, -1.0f})).sum().backward();
    EXPECT_EQ(opt.micro_step(), i == 2) << i;
  }
  EXPECT_EQ(opt.updates(), 1);
  EXPECT_TRUE(opt.flush()) << "two pending micro-batches";
  EXPECT_FALSE(opt.flush());
  EXPECT_EQ(opt.updates(), 2);
}

TEST(Optimizer, ClipsTheGlobalGradientNorm) {
  // Gradient (3, 4) has norm 5; clipped to 1 it is (0.6, 0.8). Plain Adam's first step moves
  // each coordinate by lr * sign, so check the clip through last_grad_norm and the stored grads.
  auto p = at::zeros({2}, at::kDouble).requires_grad_(true);
  sdpo::OptimizerOptions o;
  o.max_grad_norm = 1.0;
  o.weight_decay = 0;
  sdpo::Optimizer opt({p}, o);
  (p * at::tensor({3.0, 4.0})).sum().backward();
  ASSERT_TRUE(opt.micro_step());
  EXPECT_NEAR(opt.last_grad_norm(), 5.0, 1e-12);
  // The moments saw the clipped gradient: exp_avg = (1 - beta1) * g_clipped.
  auto state = opt.state_dict();
  sdpo::test::expect_close(state.at("param.0.exp_avg"), at::tensor({0.06, 0.08}), 1e-5, 1e-9);
}

TEST(Optimizer, StateRoundTripContinuesIdentically) {
  auto run = [](sdpo::Optimizer& opt, at::Tensor& p) {
    (p.pow(2).sum()).backward();
    opt.micro_step();
  };
  sdpo::OptimizerOptions o;
  o.learning_rate = 0.05;
  auto p1 = at::tensor({1.0, -2.0}).requires_grad_(true);
  sdpo::Optimizer a({p1}, o);
  run(a, p1);
  auto p2 = p1.detach().clone().requires_grad_(true);
  sdpo::Optimizer b({p2}, o);
  b.load_state_dict(a.state_dict(), "<test>");
  EXPECT_EQ(b.updates(), 1);
  run(a, p1);
  run(b, p2);
  sdpo::test::expect_close(p2, p1, 0, 1e-15, "restored optimizer");
}

}  // namespace
