// The dense-reward ablation predictors of research/algorithms.md 9.1 (copy_1, interp_2,
// similarity_2, similarity_3_fixed, similarity_3_random, all_steps): hand-computed dense rewards on
// a trajectory whose cosine similarities are known exactly, query counts and edge cases (T = 1, 2),
// the anchors, and a micro end-to-end run per variant whose logged query count is checked.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/registry.h"
#include "sdpo/math/similarity.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

using sdpo::test::expect_close;

const std::vector<std::string> kVariants{
    "copy_1", "interp_2", "similarity_2", "similarity_3_fixed", "similarity_3_random", "all_steps"};

std::shared_ptr<sdpo::DenseRewardPredictor> make(const std::string& name) {
  sdpo::ComponentConfig cfg{"dense_reward", name, boost::json::object{}, "<test>", "dense_reward.options"};
  return sdpo::Registry::global().create<sdpo::DenseRewardPredictor>(cfg);
}

at::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

// The hand-made trajectory: N = 2, T = 5, latents (3, 1, 1) built from 3-4-5 triangles, so every
// cosine is a short decimal. Unit directions:
//   row 0: u0 = (1,0,0), u1 = (.8,0,.6), u2 = (.6,.8,0), u3 = (0,.8,.6), u4 = (0,0,1)
//     cos(u0, .) = 1, .8, .6, 0, 0      cos(u4, .) = 0, .6, 0, .6, 1
//     cos(u1, .) = .8, 1, .48, .36, .6  cos(u2, .) = .6, .48, 1, .64, 0   cos(u3, .) = 0, .36, .64, 1, .6
//   row 1 (lengths differ; w2 is colinear with w0): w0 = (0,0,1), w1 = (.6,0,.8), w2 = (0,0,1),
//     w3 = (.8,.6,0), w4 = (1,0,0)
//     cos(w0, .) = 1, .8, 1, 0, 0       cos(w4, .) = 0, .6, 0, .8, 1
//     cos(w1, .) = .8, 1, .8, .48, .6   cos(w2, .) = 1, .8, 1, 0, 0       cos(w3, .) = 0, .48, 0, 1, .8
at::Tensor hand_x0() {
  return at::tensor({5.f, 0.f, 0.f, 4.f, 0.f, 3.f, 3.f, 4.f, 0.f,  0.f, 4.f, 3.f, 0.f, 0.f, 5.f,   // row 0
                     0.f, 0.f, 2.f, 3.f, 0.f, 4.f, 0.f, 0.f, 10.f, 4.f, 3.f, 0.f, 3.f, 0.f, 0.f})  // row 1
      .view({2, 5, 3, 1, 1});
}

// The reward every step would get if it were queried; a plan's queries read from it.
at::Tensor hand_truth() { return at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 10.f, -2.f, 6.f, 0.f, 4.f}).view({2, 5}); }

at::Tensor rows(std::vector<std::vector<double>> r) {
  std::vector<at::Tensor> out;
  for (const auto& v : r) out.push_back(at::tensor(v, at::kDouble));
  return at::stack(out);
}

struct Result {
  sdpo::QueryPlan plan;
  at::Tensor queried, dense;
};

Result run(const std::string& name, const at::Tensor& x0, const at::Tensor& truth, uint64_t seed = 1) {
  auto d = make(name);
  auto g = seeded(seed);
  Result r;
  r.plan = d->plan(x0, g);
  r.queried = truth.gather(1, r.plan.steps);
  r.dense = d->predict(r.plan, r.queried);
  return r;
}

TEST(DenseRewardVariants, Copy1CopiesTheLastStepsReward) {
  auto r = run("copy_1", hand_x0(), hand_truth());
  EXPECT_TRUE(r.plan.steps.equal(at::tensor({int64_t{4}, int64_t{4}}).view({2, 1})));
  EXPECT_FALSE(r.plan.similarities.defined());
  EXPECT_FALSE(r.plan.anchor.defined());
  expect_close(r.dense, rows({{5, 5, 5, 5, 5}, {4, 4, 4, 4, 4}}), 0, 0, "copy_1");
}

TEST(DenseRewardVariants, Interp2IsLinearInTheStepIndex) {
  auto r = run("interp_2", hand_x0(), hand_truth());
  EXPECT_TRUE(r.plan.steps.equal(at::tensor({int64_t{0}, int64_t{4}, int64_t{0}, int64_t{4}}).view({2, 2})));
  EXPECT_FALSE(r.plan.similarities.defined());
  // Row 1: 10 + (k/4)(4 - 10) = 10, 8.5, 7, 5.5, 4.
  expect_close(r.dense, rows({{1, 2, 3, 4, 5}, {10, 8.5, 7, 5.5, 4}}), 0, 1e-6, "interp_2");
}

TEST(DenseRewardVariants, Interp2EndsAreExactAndTheMidpointIsTheMean) {
  auto d = make("interp_2");
  auto g = seeded(1);
  auto plan = d->plan(at::randn({4, 9, 2}, seeded(2)), g);
  auto q = at::randn({4, 2}, seeded(3)) * 7 + 0.1;  // values that do not round-trip through sums
  auto dense = d->predict(plan, q);
  EXPECT_TRUE(dense.select(1, 0).equal(q.select(1, 0)));
  EXPECT_TRUE(dense.select(1, 8).equal(q.select(1, 1)));
  expect_close(dense.select(1, 4), (q.select(1, 0) + q.select(1, 1)) / 2, 0, 1e-6, "midpoint");
  // Equal spacing: every difference between neighbours is (q_last - q_first) / 8.
  auto diffs = dense.slice(1, 1) - dense.slice(1, 0, -1);
  expect_close(diffs, ((q.select(1, 1) - q.select(1, 0)) / 8).unsqueeze(1).expand({4, 8}), 0, 1e-5, "spacing");
}

TEST(DenseRewardVariants, Similarity2WeighsTheEndsByCosine) {
  auto r = run("similarity_2", hand_x0(), hand_truth());
  EXPECT_TRUE(r.plan.steps.equal(at::tensor({int64_t{0}, int64_t{4}, int64_t{0}, int64_t{4}}).view({2, 2})));
  EXPECT_FALSE(r.plan.anchor.defined());
  ASSERT_TRUE(r.plan.similarities.defined());
  expect_close(r.plan.similarities.select(0, 0), rows({{1, .8, .6, 0, 0}, {0, .6, 0, .6, 1}}), 0, 1e-6, "row 0 sims");
  expect_close(r.plan.similarities.select(0, 1), rows({{1, .8, 1, 0, 0}, {0, .6, 0, .8, 1}}), 0, 1e-6, "row 1 sims");
  // Row 0, k = 1: (1 * .8 + 5 * .6) / 1.4; k = 2 sees only the first step, k = 3 only the last.
  // Row 1, k = 1: (10 * .8 + 4 * .6) / 1.4; k = 2 is colinear with step 0.
  expect_close(r.dense, rows({{1, 3.8 / 1.4, 1, 5, 5}, {10, 10.4 / 1.4, 10, 4, 4}}), 0, 1e-5, "similarity_2");
}

TEST(DenseRewardVariants, Similarity2MatchesTheReferenceEndSimilarities) {
  // On the golden trajectory the weights are the reference's sim_first and sim_last.
  const auto& g = sdpo::test::golden().at("dense");
  auto x0 = sdpo::test::json_tensor(g.at("pred_x0")).to(at::kFloat);
  auto qfal = sdpo::test::json_tensor(g.at("queried_first_anchor_last"));
  auto sf = sdpo::test::json_tensor(g.at("sim_first")), sl = sdpo::test::json_tensor(g.at("sim_last"));
  auto d = make("similarity_2");
  auto gen = seeded(1);
  auto plan = d->plan(x0, gen);
  auto q = at::stack({qfal.select(1, 0), qfal.select(1, 2)}, 1).to(at::kFloat);
  auto dense = d->predict(plan, q);
  auto expected =
      (q.select(1, 0).to(at::kDouble).unsqueeze(1) * sf + q.select(1, 1).to(at::kDouble).unsqueeze(1) * sl) / (sf + sl);
  const int64_t t = x0.size(1);
  expect_close(dense.slice(1, 1, t - 1), expected.slice(1, 1, t - 1), 1e-5, 1e-5, "interior steps");
  EXPECT_TRUE(dense.select(1, 0).equal(q.select(1, 0)));
  EXPECT_TRUE(dense.select(1, t - 1).equal(q.select(1, 1)));
}

TEST(DenseRewardVariants, SimilarityPlanWithTheReferenceAnchorGivesTheReferenceDenseRewards) {
  // The shared plan/predict of the 3-query variants, given the golden (adaptive) anchors.
  const auto& g = sdpo::test::golden().at("dense");
  auto x0 = sdpo::test::json_tensor(g.at("pred_x0")).to(at::kFloat);
  auto qfal = sdpo::test::json_tensor(g.at("queried_first_anchor_last")).to(at::kFloat);
  auto anchor = sdpo::test::json_tensor(g.at("anchor")).to(at::kLong);
  auto plan = sdpo::similarity_plan(x0, anchor);
  ASSERT_EQ(plan.steps.size(1), 3);
  EXPECT_TRUE(plan.steps.select(1, 2).equal(anchor));
  EXPECT_TRUE(plan.anchor.equal(anchor));
  expect_close(plan.similarities.select(1, 2), sdpo::test::json_tensor(g.at("sim_anchor")), 1e-5, 1e-6, "sim_anchor");
  auto q = at::stack({qfal.select(1, 0), qfal.select(1, 2), qfal.select(1, 1)}, 1);  // (first, last, anchor)
  expect_close(
      sdpo::similarity_predict(plan, q), sdpo::test::json_tensor(g.at("dense_rewards")), 1e-5, 1e-6, "dense rewards");
}

TEST(DenseRewardVariants, Similarity3FixedUsesStepFloorHalfMinusOne) {
  auto r = run("similarity_3_fixed", hand_x0(), hand_truth());
  // T = 5: anchor floor(5/2) - 1 = 1; query order (first, last, anchor).
  EXPECT_TRUE(r.plan.anchor.equal(at::tensor({int64_t{1}, int64_t{1}})));
  EXPECT_TRUE(r.plan.steps.equal(
      at::tensor({int64_t{0}, int64_t{4}, int64_t{1}, int64_t{0}, int64_t{4}, int64_t{1}}).view({2, 3})));
  ASSERT_EQ(r.plan.similarities.sizes(), (at::IntArrayRef{2, 3, 5}));
  expect_close(
      r.plan.similarities.select(1, 2), rows({{.8, 1, .48, .36, .6}, {.8, 1, .8, .48, .6}}), 0, 1e-6, "anchor sims");
  // Row 0 (anchor reward 2): k = 2: (1 * .6 + 5 * 0 + 2 * .48) / (.6 + 0 + .48);
  //                          k = 3: (1 * 0 + 5 * .6 + 2 * .36) / (0 + .6 + .36).
  // Row 1 (anchor reward -2): k = 2: (10 * 1 + 4 * 0 - 2 * .8) / 1.8; k = 3: (0 + 4 * .8 - 2 * .48) / 1.28.
  expect_close(
      r.dense, rows({{1, 2, 1.56 / 1.08, 3.72 / 0.96, 5}, {10, -2, 8.4 / 1.8, 2.24 / 1.28, 4}}), 0, 1e-5,
      "similarity_3_fixed");
}

TEST(DenseRewardVariants, FixedAnchorIsStep24AtFiftySteps) {
  EXPECT_EQ(sdpo::fixed_anchor(50), 24);
  EXPECT_EQ(sdpo::fixed_anchor(3), 1) << "floor(3/2) - 1 = 0, clamped to 1";
  EXPECT_EQ(sdpo::fixed_anchor(4), 1);
  EXPECT_EQ(sdpo::fixed_anchor(8), 3);
  EXPECT_EQ(sdpo::fixed_anchor(51), 24);
  EXPECT_ANY_THROW(sdpo::fixed_anchor(2));
  auto d = make("similarity_3_fixed");
  auto g = seeded(1);
  auto plan = d->plan(at::randn({3, 50, 2, 2, 2}, seeded(4)), g);
  EXPECT_TRUE(plan.anchor.equal(at::full({3}, 24, at::kLong)));
  EXPECT_TRUE(plan.steps.equal(at::tensor({int64_t{0}, int64_t{49}, int64_t{24}}).unsqueeze(0).expand({3, 3})));
}

TEST(DenseRewardVariants, Similarity3RandomMatchesTheHandTableForEveryAnchor) {
  // Expected dense rewards of the hand trajectory for each possible anchor a in {1, 2, 3}.
  std::map<int64_t, at::Tensor> row0{
      {1, at::tensor({1., 2., 1.56 / 1.08, 3.72 / 0.96, 5.}, at::kDouble)},
      // a = 2 (reward 3): k = 1: (.8 + 3 + 3 * .48) / 1.88; k = 3: (0 + 3 + 3 * .64) / 1.24.
      {2, at::tensor({1., 5.24 / 1.88, 3., 4.92 / 1.24, 5.}, at::kDouble)},
      // a = 3 (reward 4): k = 1: (.8 + 3 + 4 * .36) / 1.76; k = 2: (.6 + 0 + 4 * .64) / 1.24.
      {3, at::tensor({1., 5.24 / 1.76, 3.16 / 1.24, 4., 5.}, at::kDouble)}};
  std::map<int64_t, at::Tensor> row1{
      {1, at::tensor({10., -2., 8.4 / 1.8, 2.24 / 1.28, 4.}, at::kDouble)},
      // a = 2 (reward 6): k = 1: (8 + 2.4 + 6 * .8) / 2.2; k = 3: (0 + 3.2 + 0) / .8.
      {2, at::tensor({10., 15.2 / 2.2, 6., 4., 4.}, at::kDouble)},
      // a = 3 (reward 0): k = 1: (8 + 2.4 + 0) / 1.88; k = 2 is colinear with step 0.
      {3, at::tensor({10., 10.4 / 1.88, 10., 0., 4.}, at::kDouble)}};
  std::set<int64_t> seen;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    auto r = run("similarity_3_random", hand_x0(), hand_truth(), seed);
    ASSERT_TRUE(r.plan.anchor.defined());
    EXPECT_TRUE(r.plan.steps.select(1, 2).equal(r.plan.anchor));
    const int64_t a0 = r.plan.anchor[0].item<int64_t>(), a1 = r.plan.anchor[1].item<int64_t>();
    ASSERT_TRUE(a0 >= 1 && a0 <= 3 && a1 >= 1 && a1 <= 3) << a0 << " " << a1;
    seen.insert(a0);
    seen.insert(a1);
    expect_close(r.dense.select(0, 0), row0.at(a0), 0, 1e-5, "row 0, anchor " + std::to_string(a0));
    expect_close(r.dense.select(0, 1), row1.at(a1), 0, 1e-5, "row 1, anchor " + std::to_string(a1));
  }
  EXPECT_EQ(seen, (std::set<int64_t>{1, 2, 3})) << "20 seeds reach every anchor";
}

TEST(DenseRewardVariants, RandomAnchorIsReproducibleAndInterior) {
  auto d = make("similarity_3_random");
  auto x0 = at::randn({64, 50, 2, 1, 1}, seeded(5));
  auto ga = seeded(7), gb = seeded(7), gc = seeded(8);
  auto a = d->plan(x0, ga).anchor, b = d->plan(x0, gb).anchor, c = d->plan(x0, gc).anchor;
  EXPECT_TRUE(a.equal(b)) << "same seed, same anchors";
  EXPECT_FALSE(a.equal(c)) << "another seed, other anchors";
  auto gd = seeded(7);
  EXPECT_TRUE(a.equal(sdpo::random_anchors(64, 50, gd))) << "drawn from the generator passed to plan()";
  EXPECT_GE(a.min().item<int64_t>(), 1);
  EXPECT_LE(a.max().item<int64_t>(), 48);
  std::set<int64_t> distinct;
  for (int64_t i = 0; i < a.size(0); ++i) distinct.insert(a[i].item<int64_t>());
  EXPECT_GT(distinct.size(), 20u) << "independent per trajectory";
  // Uniform over {1, 2, 3} at T = 5, never an end.
  auto g = seeded(9);
  auto many = d->plan(at::randn({3000, 5, 1}, seeded(6)), g).anchor;
  EXPECT_EQ(many.min().item<int64_t>(), 1);
  EXPECT_EQ(many.max().item<int64_t>(), 3);
  for (int64_t k = 1; k <= 3; ++k) {
    auto count = many.eq(k).sum().item<int64_t>();
    EXPECT_GT(count, 900) << "anchor " << k;
    EXPECT_LT(count, 1100) << "anchor " << k;
  }
}

TEST(DenseRewardVariants, AllStepsQueriesEveryStep) {
  auto r = run("all_steps", hand_x0(), hand_truth());
  EXPECT_TRUE(r.plan.steps.equal(at::arange(5, at::kLong).unsqueeze(0).expand({2, 5})));
  EXPECT_FALSE(r.plan.similarities.defined());
  EXPECT_TRUE(r.dense.equal(hand_truth()));
}

TEST(DenseRewardVariants, QueriedStepsKeepTheirExactRewards) {
  for (const auto& name : kVariants) {
    SCOPED_TRACE(name);
    auto r = run(name, hand_x0(), hand_truth(), 3);
    EXPECT_TRUE(r.dense.gather(1, r.plan.steps).equal(r.queried));
    EXPECT_TRUE(r.queried.equal(hand_truth().gather(1, r.plan.steps)));
  }
}

TEST(DenseRewardVariants, QueryCountsPerTrajectoryLength) {
  const std::vector<int64_t> lengths{1, 2, 5, 8, 50};
  const std::map<std::string, std::vector<int64_t>> expected{
      {"copy_1", {1, 1, 1, 1, 1}},
      {"interp_2", {1, 2, 2, 2, 2}},
      {"similarity_2", {1, 2, 2, 2, 2}},
      {"similarity_3_fixed", {1, 2, 3, 3, 3}},
      {"similarity_3_random", {1, 2, 3, 3, 3}},
      {"all_steps", {1, 2, 5, 8, 50}},
      {"similarity_3_adaptive", {1, 2, 3, 3, 3}}};
  for (const auto& [name, counts] : expected) {
    auto d = make(name);
    for (size_t i = 0; i < lengths.size(); ++i) {
      SCOPED_TRACE(name + " T=" + std::to_string(lengths[i]));
      EXPECT_EQ(d->queries_per_trajectory(lengths[i]), counts[i]);
      auto g = seeded(1);
      EXPECT_EQ(d->plan(at::randn({2, lengths[i], 2}, seeded(2)), g).steps.size(1), counts[i]);
    }
    if (name != "similarity_3_adaptive") {
      EXPECT_ANY_THROW(d->queries_per_trajectory(0)) << name;
    }
  }
}

TEST(DenseRewardVariants, OneStepTrajectoriesQueryTheOnlyStep) {
  auto x0 = hand_x0().slice(1, 0, 1);  // T = 1
  auto truth = hand_truth().slice(1, 0, 1);
  for (const auto& name : kVariants) {
    SCOPED_TRACE(name);
    auto r = run(name, x0, truth);
    EXPECT_EQ(r.plan.num_steps, 1);
    EXPECT_TRUE(r.plan.steps.equal(at::zeros({2, 1}, at::kLong)));
    EXPECT_FALSE(r.plan.similarities.defined());
    EXPECT_FALSE(r.plan.anchor.defined());
    EXPECT_TRUE(r.dense.equal(truth));
  }
}

TEST(DenseRewardVariants, TwoStepTrajectoriesQueryBothStepsWithoutAnAnchor) {
  auto x0 = hand_x0().slice(1, 0, 2);  // T = 2: no interior step
  auto truth = hand_truth().slice(1, 0, 2);
  for (const auto& name : kVariants) {
    SCOPED_TRACE(name);
    auto d = make(name);
    auto g = seeded(4);
    auto plan = d->plan(x0, g);
    EXPECT_EQ(plan.steps.size(1), d->queries_per_trajectory(2));
    EXPECT_FALSE(plan.anchor.defined());
    auto dense = d->predict(plan, truth.gather(1, plan.steps));
    if (name == "copy_1") {
      EXPECT_TRUE(plan.steps.equal(at::ones({2, 1}, at::kLong)));
      EXPECT_TRUE(dense.equal(truth.select(1, 1).unsqueeze(1).expand({2, 2})));
    } else {
      EXPECT_TRUE(plan.steps.equal(at::tensor({int64_t{0}, int64_t{1}}).unsqueeze(0).expand({2, 2})));
      EXPECT_TRUE(dense.equal(truth)) << "both steps exact";
    }
    const bool weighted = name.rfind("similarity_", 0) == 0;
    EXPECT_EQ(plan.similarities.defined(), weighted);
    if (weighted) {
      EXPECT_EQ(plan.similarities.sizes(), (at::IntArrayRef{2, 2, 2}));
    }
    // No anchor, so no draw: the generator is left as it was.
    auto fresh = seeded(4);
    EXPECT_TRUE(at::randn({4}, g).equal(at::randn({4}, fresh)));
  }
}

TEST(DenseRewardVariants, PredictRefusesQueriesThatDoNotMatchThePlan) {
  for (const auto& name : kVariants) {
    SCOPED_TRACE(name);
    auto d = make(name);
    auto g = seeded(1);
    auto plan = d->plan(hand_x0(), g);
    EXPECT_ANY_THROW(d->predict(plan, at::zeros({2, plan.steps.size(1) + 1})));
    EXPECT_ANY_THROW(d->predict(plan, at::zeros({3, plan.steps.size(1)})));
  }
}

// Micro end-to-end runs (test_support's micro world: T = 4, 2 batches x 2 pairs = 8 trajectories
// per epoch, 2 epochs): the logged reward_queries curve counts queries_per_trajectory(T) per
// trajectory.
void expect_logged_queries(const std::string& name, int64_t steps) {
  SCOPED_TRACE(name + " T=" + std::to_string(steps));
  auto dir = sdpo::test::temp_dir("dense_" + name);
  auto text = sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": "sdpo"})");
  auto m = sdpo::Manifest::parse(
      text, "micro.json", {"dense_reward.name=" + name, "sample.steps=" + std::to_string(steps), "eval.every=0"});
  sdpo::Trainer(m, {dir}).run();
  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_NE(file.attribute("manifest").find("\"" + name + "\""), std::string::npos);
  const double q = static_cast<double>(make(name)->queries_per_trajectory(steps));
  const double per_epoch = 8;
  EXPECT_EQ(file.read_curve("train", "samples"), (std::vector<double>{per_epoch, 2 * per_epoch}));
  EXPECT_EQ(file.read_curve("train", "reward_queries"), (std::vector<double>{q * per_epoch, q * per_epoch * 2}));
  EXPECT_EQ(file.read_curve("train", "reward_queries_per_trajectory"), (std::vector<double>{q, q}));
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));
}

TEST(DenseRewardVariants, MicroRunLogsTheQueryCountOfEveryVariant) {
  for (const auto& name : kVariants) expect_logged_queries(name, 4);
}

TEST(DenseRewardVariants, MicroRunOfTheThreeQueryVariantsAtTwoSteps) {
  // T = 2: the documented fallback of 2 queries (both steps) is what gets counted.
  for (const auto& name : {"similarity_3_fixed", "similarity_3_random"}) expect_logged_queries(name, 2);
}

}  // namespace
