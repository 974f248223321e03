// Table 3's measures (research/algorithms.md 9.1, 12.2) by hand: per-trajectory z-scoring,
// cosine, L1 and L2, their aggregation over trajectories; and the HDF5 table file the analysis
// writes (RunFile::write_table / read_table).
#include "sdpo/math/dense_reward_analysis.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sdpo/core/error.h"
#include "sdpo/train/run_file.h"
#include "support/test_support.h"

namespace {

at::Tensor rows(std::initializer_list<std::initializer_list<double>> values) {
  std::vector<at::Tensor> out;
  for (const auto& r : values) out.push_back(at::tensor(std::vector<double>(r), at::kDouble));
  return at::stack(out);
}

TEST(DenseRewardAnalysis, NormalizationZScoresEachTrajectory) {
  // (1, 2, 3): mean 2, population std sqrt(2/3), so z = (-1, 0, 1) * sqrt(3/2). (10, 20, 30) is the
  // same trajectory at another scale and offset; (7, 7, 7) and (0.1, 0.1, 0.1) are constant -> zeros
  // (the mean of three 0.1s is not exactly 0.1 in floating point).
  auto z = sdpo::normalize_per_trajectory(rows({{1, 2, 3}, {30, 20, 10}, {7, 7, 7}, {0.1, 0.1, 0.1}}).to(at::kFloat));
  const double s = std::sqrt(1.5);
  sdpo::test::expect_close(z, rows({{-s, 0, s}, {s, 0, -s}, {0, 0, 0}, {0, 0, 0}}), 1e-6, 1e-7);
  EXPECT_EQ(z.scalar_type(), at::kDouble);
  EXPECT_TRUE(z[2].eq(0).all().item<bool>()) << "a constant trajectory gives exact zeros";
  EXPECT_TRUE(z[3].eq(0).all().item<bool>());
  // One step: nothing varies.
  EXPECT_TRUE(sdpo::normalize_per_trajectory(rows({{5}})).eq(0).all().item<bool>());
}

TEST(DenseRewardAnalysis, CosineL1AndL2ByHand) {
  auto a = rows({{1, 2, 3}, {1, 0, 0}, {1, 2, 3}, {0, 0, 0}});
  auto b = rows({{1, 2, 3}, {0, 1, 0}, {-1, -2, -3}, {1, 2, 3}});
  // identical: 1; orthogonal: 0; opposite: -1; a zero row: 0 (guarded, not NaN).
  sdpo::test::expect_close(sdpo::cosine_per_trajectory(a, b), at::tensor({1.0, 0.0, -1.0, 0.0}, at::kDouble), 0, 1e-12);
  // (1, 2, 3) vs (2, 0, 3): L1 = 1 + 2 + 0 = 3, L2 = sqrt(1 + 4) = sqrt(5).
  auto x = rows({{1, 2, 3}}), y = rows({{2, 0, 3}});
  sdpo::test::expect_close(sdpo::l1_per_trajectory(x, y), at::tensor({3.0}, at::kDouble), 0, 1e-12);
  sdpo::test::expect_close(sdpo::l2_per_trajectory(x, y), at::tensor({std::sqrt(5.0)}, at::kDouble), 0, 1e-12);
  EXPECT_THROW(sdpo::l1_per_trajectory(x, rows({{1, 2}})), c10::Error);
  EXPECT_THROW(sdpo::cosine_per_trajectory(at::ones({3}), at::ones({3})), c10::Error);
}

TEST(DenseRewardAnalysis, ComparisonAveragesCosineAndSumsDistances) {
  // Target (1, 2, 3) twice -> z = (-s, 0, s), s = sqrt(3/2), |z|^2 = 3.
  //   trajectory 0 predicted constant (copy): z = 0, cosine 0, L1 = 2s, L2 = sqrt(3);
  //   trajectory 1 predicted reversed (3, 2, 1): cosine -1, L1 = 4s, L2 = 2 sqrt(3).
  // cosine_mean = -0.5, l1_sum = 6s, l2_sum = 3 sqrt(3), l2_pooled = sqrt(3 + 12) = sqrt(15).
  auto target = rows({{1, 2, 3}, {1, 2, 3}});
  auto c = sdpo::compare_dense_rewards(rows({{5, 5, 5}, {3, 2, 1}}), target);
  const double s = std::sqrt(1.5);
  EXPECT_EQ(c.trajectories, 2);
  EXPECT_NEAR(c.cosine_mean, -0.5, 1e-12);
  EXPECT_NEAR(c.l1_sum, 6 * s, 1e-12);
  EXPECT_NEAR(c.l2_sum, 3 * std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(c.l2_pooled, std::sqrt(15.0), 1e-12);
  // The target against itself (the all-steps predictor): cosine 1, distances 0, at any scale.
  auto same = sdpo::compare_dense_rewards(target * 3 + 1, target);
  EXPECT_NEAR(same.cosine_mean, 1.0, 1e-12);
  EXPECT_NEAR(same.l1_sum, 0.0, 1e-12);
  EXPECT_NEAR(same.l2_sum, 0.0, 1e-12);
  EXPECT_NEAR(same.l2_pooled, 0.0, 1e-12);
}

TEST(TableFile, RoundTripsAttributesAndColumns) {
  auto path = sdpo::test::temp_dir("table") + "/sub/t.h5";
  sdpo::TableFile t;
  t.string_attributes = {{"manifest", "{\"name\": \"x\"}"}, {"reward", "colorfulness"}};
  t.integer_attributes = {{"trajectories", 64}, {"steps", 8}};
  t.string_columns["predictor"] = {"all_steps", "copy_1", "similarity_3_adaptive"};
  t.integer_columns["queries_per_trajectory"] = {8, 1, 3};
  t.number_columns["cosine_mean"] = {1.0, 0.0, 0.4463};
  t.number_columns["l1_sum"] = {0.0, 11630.5, 9073.25};
  sdpo::RunFile::write_table(path, t);
  auto back = sdpo::RunFile::read_table(path);
  EXPECT_EQ(back.string_attributes, t.string_attributes);
  EXPECT_EQ(back.integer_attributes, t.integer_attributes);
  EXPECT_EQ(back.string_columns, t.string_columns);
  EXPECT_EQ(back.integer_columns, t.integer_columns);
  EXPECT_EQ(back.number_columns, t.number_columns) << "float64, not rounded to float32";
}

TEST(TableFile, RefusesRaggedOrDuplicateColumns) {
  auto dir = sdpo::test::temp_dir("table_bad");
  sdpo::TableFile ragged;
  ragged.string_columns["predictor"] = {"a", "b"};
  ragged.number_columns["cosine_mean"] = {1.0};
  try {
    sdpo::RunFile::write_table(dir + "/r.h5", ragged);
    FAIL() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_NE(std::string(e.what()).find("has 1 rows, expected 2"), std::string::npos) << e.what();
  }
  sdpo::TableFile twice;
  twice.string_columns["x"] = {"a"};
  twice.number_columns["x"] = {1.0};
  EXPECT_THROW(sdpo::RunFile::write_table(dir + "/d.h5", twice), sdpo::FileError);
  EXPECT_THROW(sdpo::RunFile::read_table(dir + "/missing.h5"), sdpo::FileError);
}

}  // namespace
