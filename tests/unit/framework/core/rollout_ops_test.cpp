#include "sdpo/core/rollout_ops.h"

#include <ATen/ATen.h>

#include "support/test_support.h"

namespace {

TEST(RolloutOps, SelectPicksEachRowsOwnStep) {
  // full[n][k] = (10 n + k) in every element of a (2, 2) tail.
  auto full = (at::arange(3).view({3, 1}) * 10 + at::arange(4).view({1, 4})).to(at::kFloat);
  full = full.view({3, 4, 1, 1}).expand({3, 4, 2, 2}).contiguous();
  auto rows = at::tensor({int64_t{2}, int64_t{0}, int64_t{2}});
  auto steps = at::tensor({int64_t{1}, int64_t{3}, int64_t{0}});
  auto got = sdpo::rollout_select(full, rows, steps);
  ASSERT_EQ(got.sizes(), (at::IntArrayRef{3, 2, 2}));
  EXPECT_EQ(got[0][0][0].item<float>(), 21.0f);
  EXPECT_EQ(got[1][1][1].item<float>(), 3.0f);
  EXPECT_EQ(got[2][0][1].item<float>(), 20.0f);
  // Works on (N, T) arrays too.
  auto lp = at::arange(12, at::kFloat).view({3, 4});
  sdpo::test::expect_close(sdpo::rollout_select(lp, rows, steps), at::tensor({9.0f, 3.0f, 8.0f}), 0, 0);
}

}  // namespace
