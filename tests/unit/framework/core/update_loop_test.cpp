// The algorithms' shared update scaffolding (sdpo/core/update_loop.h): trained steps, the visiting
// order, the micro-batch backward, the metric means and the update phase around update().
#include "sdpo/core/update_loop.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "sdpo/core/error.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/registry.h"
#include "support/component_config.h"
#include "support/test_support.h"
#include "support/transition_bias_model.h"

namespace {

TEST(UpdateLoop, TrainedStepsTruncateAndKeepOne) {
  EXPECT_EQ(sdpo::trained_steps(8, 1.0), 8);
  EXPECT_EQ(sdpo::trained_steps(8, 0.5), 4);
  EXPECT_EQ(sdpo::trained_steps(10, 0.99), 9);  // int(9.9) = 9, as the reference's int()
  EXPECT_EQ(sdpo::trained_steps(3, 0.1), 1);    // int(0.3) = 0 -> at least one
}

TEST(UpdateLoop, OrderIsTheIdentityUnshuffledAndDrawsNothing) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto o = sdpo::draw_update_order(3, 4, false, false, gen);
  EXPECT_TRUE(at::equal(o.rows, at::arange(3, at::kLong)));
  EXPECT_TRUE(at::equal(o.steps, at::arange(4, at::kLong).repeat({3, 1})));
  // Nothing was drawn: the generator gives what a fresh one with the same seed gives.
  auto fresh = at::make_generator<at::CPUGeneratorImpl>(3);
  EXPECT_TRUE(at::equal(at::randperm(5, gen, at::kLong), at::randperm(5, fresh, at::kLong)));
}

TEST(UpdateLoop, ShuffledOrderDrawsRowsThenEachRowsSteps) {
  // The draws the algorithms made before the scaffolding was shared: randperm(n), then n
  // randperm(T) in row order, from the same generator.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto ref = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto o = sdpo::draw_update_order(4, 5, true, true, gen);
  EXPECT_TRUE(at::equal(o.rows, at::randperm(4, ref, at::kLong)));
  for (std::int64_t i = 0; i < 4; ++i) EXPECT_TRUE(at::equal(o.steps[i], at::randperm(5, ref, at::kLong))) << i;
  // Rows only (REBEL): no step permutation is drawn.
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(11);
  auto ref2 = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto rows_only = sdpo::draw_update_order(4, 5, true, false, gen2);
  EXPECT_TRUE(at::equal(rows_only.rows, at::randperm(4, ref2, at::kLong)));
  EXPECT_TRUE(at::equal(at::randperm(6, gen2, at::kLong), at::randperm(6, ref2, at::kLong)));
}

TEST(UpdateLoop, NonFiniteLossNamesAlgorithmEpochAndPlace) {
  EXPECT_NO_THROW(sdpo::check_loss_finite(1.5, "ddpo", 3, "position 2"));
  try {
    sdpo::check_loss_finite(std::nan(""), "ddpo", 3, "mini-batch 1, position 2");
    FAIL() << "no throw";
  } catch (const sdpo::NumericError& e) {
    EXPECT_EQ(std::string(e.what()), "algorithm 'ddpo': the loss is nan at epoch 3, mini-batch 1, position 2");
  }
  EXPECT_THROW(sdpo::check_loss_finite(-INFINITY, "sdpo", 1, "position 0"), sdpo::NumericError);
}

struct Fixture {
  Fixture() : model(1), optimizer(model.trainable_parameters(), options()) {
    sdpo::test::load_plugins_once();
    sampler = sdpo::Registry::global().create<sdpo::Sampler>(
        sdpo::test::component_config("sampler", "ddim", "{}", "update_loop_test"));
  }
  static sdpo::OptimizerOptions options() {
    sdpo::OptimizerOptions o;
    o.gradient_accumulation = 2;
    o.learning_rate = 1e-3;
    return o;
  }
  sdpo::test::TransitionBiasModel model;
  sdpo::Optimizer optimizer;
  std::shared_ptr<sdpo::Sampler> sampler;
};

TEST(UpdateLoop, MicroBatchBackwardAveragesOverTheAccumulation) {
  Fixture f;
  sdpo::UpdateContext ctx{f.model, *f.sampler, f.optimizer, at::make_generator<at::CPUGeneratorImpl>(1), 4, 1, nullptr};
  at::Tensor w = f.model.trainable_parameters()[0];
  // loss = 2 w[0,0,0] - 4 w[0,0,1]: gradient (2, -4) there, divided by the accumulation 2.
  auto loss = 2 * w[0][0][0] - 4 * w[0][0][1];
  EXPECT_DOUBLE_EQ(sdpo::backward_micro_batch(loss, 2, ctx, "sdpo", "position 0"), 0.0);
  EXPECT_FLOAT_EQ(w.grad()[0][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(w.grad()[0][0][1].item<float>(), -2.0f);
  EXPECT_EQ(f.optimizer.updates(), 0) << "one of two accumulated micro-batches";
  sdpo::backward_micro_batch(2 * w[0][0][0], 2, ctx, "sdpo", "position 1");
  EXPECT_EQ(f.optimizer.updates(), 1);
  auto bad = w[0][0][0] * std::numeric_limits<float>::infinity();
  EXPECT_THROW(sdpo::backward_micro_batch(bad, 2, ctx, "sdpo", "position 2"), sdpo::NumericError);
}

TEST(UpdateLoop, MetricSumsAreMeansOverTerms) {
  sdpo::MetricSums s;
  EXPECT_TRUE(s.means().empty());
  s.add("loss", 1.0);
  s.add("clipfrac", 0.5);
  s.next_term();
  s.add("loss", 2.0);
  s.next_term();
  s.set("tie_fraction", 0.25);
  const auto m = s.means();
  EXPECT_EQ(s.terms(), 2);
  EXPECT_DOUBLE_EQ(m.at("loss"), 1.5);
  EXPECT_DOUBLE_EQ(m.at("clipfrac"), 0.25);  // a metric a term did not add counts as 0 there
  EXPECT_DOUBLE_EQ(m.at("tie_fraction"), 0.25);
  sdpo::MetricSums none;
  none.add("loss", 3.0);
  EXPECT_DOUBLE_EQ(none.means().at("loss"), 3.0) << "no closed term divides by one";
}

// An algorithm that makes one training forward and one of two accumulated micro-steps.
class OneMicroStep final : public sdpo::Algorithm {
 public:
  sdpo::RolloutSpec spec() const override { return {}; }
  sdpo::Metrics update(sdpo::RolloutBuffer&, sdpo::UpdateContext& ctx) override {
    auto x = at::zeros({1, 1, 2, 2});
    auto cond = at::ones({1, 1, 1});
    sdpo::backward_micro_batch(ctx.model.forward(x, at::tensor({999}), cond).sum(), 2, ctx, "one", "here");
    return {{"loss", 7.0}};
  }
};

TEST(UpdateLoop, PhaseTrainsFlushesAndAddsTheOptimizersMetrics) {
  Fixture f;
  sdpo::UpdateContext ctx{f.model, *f.sampler, f.optimizer, at::make_generator<at::CPUGeneratorImpl>(1), 1, 1, nullptr};
  OneMicroStep algorithm;
  sdpo::RolloutBuffer buf;
  const auto m = sdpo::run_update_phase(algorithm, buf, ctx);
  EXPECT_EQ(f.model.calls.size(), 1u) << "update() ran in training mode";
  EXPECT_EQ(f.optimizer.updates(), 1) << "the pending micro-step was flushed";
  EXPECT_DOUBLE_EQ(m.at("loss"), 7.0);
  EXPECT_DOUBLE_EQ(m.at("updates"), 1.0);
  // The bias's gradient is 1 on 4 entries, halved by the accumulation: norm sqrt(4 * 0.25) = 1.
  EXPECT_NEAR(m.at("grad_norm"), 1.0, 1e-6);
  f.model.forward(at::zeros({1, 1, 2, 2}), at::tensor({999}), at::ones({1, 1, 1}));
  EXPECT_EQ(f.model.calls.size(), 1u) << "training mode is off after the phase";
}

}  // namespace
