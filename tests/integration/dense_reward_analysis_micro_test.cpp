// `sdpo analyze dense-rewards` on the micro world (the driver function; the CLI is in
// cli_test.cpp): one row per registered dense_reward predictor, each fed the target's exact
// rewards, and the CSV and HDF5 files holding those rows.
#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sdpo/commands/dense_reward_analysis_driver.h"
#include "sdpo/core/registry.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "support/test_support.h"

namespace {

sdpo::Manifest micro() {
  return sdpo::Manifest::parse(
      sdpo::test::micro_manifest(
          R"({"name": "colorfulness"})", R"({"name": "per_step_prompt"})", R"({"name": "sdpo"})"),
      "micro.json");
}

std::vector<std::string> csv_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}

TEST(DenseRewardAnalysisRun, OneRowPerRegisteredPredictor) {
  auto dir = sdpo::test::temp_dir("analysis");
  auto a = sdpo::analyze_dense_rewards(micro(), {dir, 0});
  // Default: one training epoch's worth, 2 batches x 2 prompts x 2 (sdpo is paired); T = 4.
  EXPECT_EQ(a.trajectories, 8);
  EXPECT_EQ(a.steps, 4);
  ASSERT_EQ(a.target.sizes(), (at::IntArrayRef{8, 4}));
  EXPECT_GT(a.target.std().item<double>(), 0) << "the target varies";
  const auto names = sdpo::Registry::global().names("dense_reward");
  ASSERT_EQ(a.rows.size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto& r = a.rows[i];
    SCOPED_TRACE(r.predictor);
    EXPECT_EQ(r.predictor, names[i]);
    EXPECT_GE(r.queries_per_trajectory, 1);
    EXPECT_LE(r.queries_per_trajectory, a.steps);
    ASSERT_EQ(r.dense.sizes(), a.target.sizes());
    EXPECT_GE(r.comparison.cosine_mean, -1.0 - 1e-9);
    EXPECT_LE(r.comparison.cosine_mean, 1.0 + 1e-9);
    EXPECT_EQ(r.comparison.trajectories, 8);
    if (r.predictor == "all_steps") {
      EXPECT_NEAR(r.comparison.cosine_mean, 1.0, 1e-9);
      EXPECT_NEAR(r.comparison.l1_sum, 0.0, 1e-9);
      EXPECT_NEAR(r.comparison.l2_sum, 0.0, 1e-9);
      EXPECT_EQ(r.queries_per_trajectory, a.steps);
    }
    if (r.predictor == "copy_1") {
      EXPECT_EQ(r.comparison.cosine_mean, 0.0) << "constant -> zeros";
    }
  }
  // The default predictor queries the first and last steps: it got the target's exact rewards.
  for (const auto& r : a.rows) {
    if (r.predictor != "similarity_3_adaptive") continue;
    EXPECT_EQ(r.queries_per_trajectory, 3);
    EXPECT_TRUE(r.dense.select(1, 0).equal(a.target.select(1, 0)));
    EXPECT_TRUE(r.dense.select(1, 3).equal(a.target.select(1, 3)));
  }

  // The files hold the same rows.
  EXPECT_EQ(a.csv_path, dir + "/dense_reward_analysis.csv");
  auto lines = csv_lines(a.csv_path);
  ASSERT_EQ(lines.size(), names.size() + 1);
  EXPECT_EQ(lines[0], "predictor,queries_per_trajectory,cosine_mean,l1_sum,l2_sum,l2_pooled");
  for (std::size_t i = 0; i < names.size(); ++i) EXPECT_EQ(lines[i + 1].substr(0, names[i].size() + 1), names[i] + ",");
  auto t = sdpo::RunFile::read_table(dir + "/dense_reward_analysis.h5");
  EXPECT_EQ(t.string_columns.at("predictor"), names);
  EXPECT_EQ(t.integer_attributes.at("trajectories"), 8);
  EXPECT_EQ(t.integer_attributes.at("steps"), 4);
  EXPECT_NE(t.string_attributes.at("manifest").find("\"micro\""), std::string::npos);
  ASSERT_EQ(t.number_columns.at("cosine_mean").size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(t.number_columns.at("cosine_mean")[i], a.rows[i].comparison.cosine_mean);
    EXPECT_EQ(t.number_columns.at("l1_sum")[i], a.rows[i].comparison.l1_sum);
    EXPECT_EQ(t.number_columns.at("l2_sum")[i], a.rows[i].comparison.l2_sum);
    EXPECT_EQ(t.number_columns.at("l2_pooled")[i], a.rows[i].comparison.l2_pooled);
    EXPECT_EQ(t.integer_columns.at("queries_per_trajectory")[i], a.rows[i].queries_per_trajectory);
  }

  // The printed table: one line per predictor under the header.
  auto text = sdpo::format_dense_reward_analysis(a);
  EXPECT_NE(text.find("8 trajectories of T = 4 steps"), std::string::npos) << text;
  for (const auto& n : names) EXPECT_NE(text.find("\n" + n + " "), std::string::npos) << n << "\n" << text;
}

TEST(DenseRewardAnalysisRun, TrajectoryCountAndDeterminism) {
  auto m = micro();
  auto a = sdpo::analyze_dense_rewards(m, {sdpo::test::temp_dir("analysis_n"), 3});
  auto b = sdpo::analyze_dense_rewards(m, {sdpo::test::temp_dir("analysis_n"), 3});
  EXPECT_EQ(a.trajectories, 3);
  EXPECT_EQ(a.target.size(0), 3) << "a last batch of 1 after one of 2";
  EXPECT_TRUE(a.target.equal(b.target)) << "seeded by train.seed";
  auto other_seed = sdpo::Manifest::parse(
      sdpo::test::micro_manifest(
          R"({"name": "colorfulness"})", R"({"name": "per_step_prompt"})", R"({"name": "sdpo"})"),
      "micro.json", {"train.seed=3"});
  EXPECT_FALSE(sdpo::analyze_dense_rewards(other_seed, {sdpo::test::temp_dir("analysis_s"), 3}).target.equal(a.target));
}

}  // namespace
