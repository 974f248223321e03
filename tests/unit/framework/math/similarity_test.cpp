// Similarities, anchors and dense rewards against the golden vectors (paper Eqs. 9-12, as the
// SDPO reference computes them).
#include "sdpo/math/similarity.h"

#include <ATen/ATen.h>

#include "support/test_support.h"

namespace {

using sdpo::test::golden;
using sdpo::test::json_tensor;

TEST(Similarity, CosineToEndsAndAnchorMatchReference) {
  const auto& d = golden().at("dense");
  auto x0 = json_tensor(d.at("pred_x0")).to(at::kFloat);  // (3, 8, 2, 2, 2)
  const int64_t n = x0.size(0), t = x0.size(1);
  auto ends = at::tensor({int64_t{0}, t - 1}).unsqueeze(0).expand({n, 2});
  auto sims = sdpo::similarity_to_steps(x0, ends);
  sdpo::test::expect_close(sims.select(1, 0), json_tensor(d.at("sim_first")), 1e-5, 1e-6, "sim_first");
  sdpo::test::expect_close(sims.select(1, 1), json_tensor(d.at("sim_last")), 1e-5, 1e-6, "sim_last");
  auto expected_anchor = json_tensor(d.at("anchor")).to(at::kLong);
  for (bool interior : {false, true}) {
    auto anchor = sdpo::anchor_argmin(sims.select(1, 0), sims.select(1, 1), interior);
    EXPECT_TRUE(anchor.equal(expected_anchor)) << "interior " << interior;
  }
  auto sa = sdpo::similarity_to_steps(x0, expected_anchor.unsqueeze(1));
  sdpo::test::expect_close(sa.select(1, 0), json_tensor(d.at("sim_anchor")), 1e-5, 1e-6, "sim_anchor");
}

TEST(Similarity, DenseRewardsMatchReference) {
  const auto& d = golden().at("dense");
  auto q = json_tensor(d.at("queried_first_anchor_last")).to(at::kFloat);  // (3, 3): first, anchor, last
  auto x0 = json_tensor(d.at("pred_x0")).to(at::kFloat);
  const int64_t n = x0.size(0), t = x0.size(1);
  auto anchor = json_tensor(d.at("anchor")).to(at::kLong);
  // Query order (first, last, anchor) so the anchor's exact reward is written last.
  auto steps = at::stack({at::zeros({n}, at::kLong), at::full({n}, t - 1, at::kLong), anchor}, 1);
  auto sims = sdpo::similarity_to_steps(x0, steps);
  auto queried = at::stack({q.select(1, 0), q.select(1, 2), q.select(1, 1)}, 1);
  auto dense = sdpo::dense_similarity_weighted(queried, sims, steps);
  sdpo::test::expect_close(dense, json_tensor(d.at("dense_rewards")), 1e-5, 1e-6, "dense rewards");
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_FLOAT_EQ(dense[i][0].item<float>(), q[i][0].item<float>());
    EXPECT_FLOAT_EQ(dense[i][t - 1].item<float>(), q[i][2].item<float>());
    EXPECT_FLOAT_EQ(dense[i][anchor[i].item<int64_t>()].item<float>(), q[i][1].item<float>());
  }
}

TEST(Similarity, AnchorInteriorExcludesEnds) {
  // Row whose global minimum sits at k = 0: the interior search must pick k = 2 instead.
  auto sf = at::tensor({0.1f, 0.9f, 0.5f, 1.0f}).view({1, 4});
  auto sl = at::tensor({0.0f, 0.9f, 0.4f, 0.3f}).view({1, 4});
  EXPECT_EQ(sdpo::anchor_argmin(sf, sl, false).item<int64_t>(), 0);
  EXPECT_EQ(sdpo::anchor_argmin(sf, sl, true).item<int64_t>(), 2);
}

TEST(Similarity, HandComputedWeightedMix) {
  // Two queries at steps 0 and 2 of a 3-step trajectory; step 1 has sims (0.5, 1.5):
  // (1 * 0.5 + 3 * 1.5) / 2 = 2.5.
  auto sims = at::tensor({1.0f, 0.5f, 0.2f, 0.2f, 1.5f, 1.0f}).view({1, 2, 3});
  auto steps = at::tensor({int64_t{0}, int64_t{2}}).view({1, 2});
  auto dense = sdpo::dense_similarity_weighted(at::tensor({1.0f, 3.0f}).view({1, 2}), sims, steps);
  sdpo::test::expect_close(dense, at::tensor({1.0f, 2.5f, 3.0f}).view({1, 3}), 0, 1e-6);
}

TEST(Similarity, HandComputedWeightedMixDividesBySimilaritySum) {
  // The similarities of step 1 sum to 0.8, not to the query count 2, so dividing by Q (or not
  // dividing) gives another value: (2 * 0.2 + 6 * 0.6) / 0.8 = 5; / 2 would be 2, undivided 4.
  // Step 2 has (0.9, 0.1): (2 * 0.9 + 6 * 0.1) / 1.0 = 2.4, then replaced by its exact query 6.
  auto sims = at::tensor({1.0f, 0.2f, 0.9f, 0.3f, 0.6f, 0.1f}).view({1, 2, 3});
  auto steps = at::tensor({int64_t{0}, int64_t{2}}).view({1, 2});
  auto dense = sdpo::dense_similarity_weighted(at::tensor({2.0f, 6.0f}).view({1, 2}), sims, steps);
  sdpo::test::expect_close(dense, at::tensor({2.0f, 5.0f, 6.0f}).view({1, 3}), 0, 1e-6);
  // Without the exact overwrite (a step that is not queried), the mix itself: a single-query row
  // with similarity 0.5 still returns that query's reward (0.5 r / 0.5).
  auto one = sdpo::dense_similarity_weighted(
      at::tensor({4.0f}).view({1, 1}), at::tensor({1.0f, 0.5f}).view({1, 1, 2}), at::tensor({int64_t{0}}).view({1, 1}));
  sdpo::test::expect_close(one, at::tensor({4.0f, 4.0f}).view({1, 2}), 0, 1e-6);
}

}  // namespace
