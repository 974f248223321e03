#include "sdpo/math/returns.h"

#include <ATen/ATen.h>

#include "support/test_support.h"

namespace {

using sdpo::test::golden;
using sdpo::test::json_tensor;

TEST(Returns, DiscountedMatchesReference) {
  const auto& g = golden().at("returns");
  auto r = json_tensor(g.at("rewards"));
  sdpo::test::expect_close(sdpo::returns_discounted(r, 0.99), json_tensor(g.at("returns")), 1e-5, 1e-9, "gamma 0.99");
  sdpo::test::expect_close(sdpo::returns_discounted(r, 0.9), json_tensor(g.at("gamma_0.9")), 1e-5, 1e-9, "gamma 0.9");
  sdpo::test::expect_close(sdpo::returns_discounted(r, 1.0), json_tensor(g.at("gamma_1.0")), 1e-5, 1e-9, "gamma 1.0");
}

TEST(Returns, HandComputedThreeSteps) {
  // G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75.
  auto g = sdpo::returns_discounted(at::tensor({1.0, 2.0, 3.0}).view({1, 3}), 0.5);
  sdpo::test::expect_close(g, at::tensor({2.75, 3.5, 3.0}).view({1, 3}), 0, 1e-12);
}

TEST(Returns, NoReturnCopiesRewards) {
  auto r = at::tensor({1.0, -2.0}).view({1, 2});
  auto g = sdpo::returns_discounted(r, 0.0);
  sdpo::test::expect_close(g, r, 0, 0);
  g.fill_(7);
  EXPECT_EQ(r[0][0].item<double>(), 1.0) << "must be a copy";
}

}  // namespace
