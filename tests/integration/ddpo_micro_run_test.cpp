// End-to-end micro runs of the DDPO baseline (research/algorithms.md section 4): both estimators
// on the micro world, unpaired trajectories scored once on the decoded final sample, advantages
// from the per-prompt running normalizer.
#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <cmath>
#include <filesystem>

#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

// The micro world of micro_run_test.cpp: 8x8 images, a tiny UNet, 4-step trajectories.
std::string ddpo_manifest(const std::string& estimator) {
  return sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": "ddpo", "options": {"estimator": ")" + estimator + R"("}})");
}

class DDPOMicroRun : public ::testing::TestWithParam<std::string> {};

TEST_P(DDPOMicroRun, TwoEpochsWriteAValidRunFile) {
  const std::string estimator = GetParam();
  auto dir = sdpo::test::temp_dir("ddpo_" + estimator);
  auto m = sdpo::Manifest::parse(ddpo_manifest(estimator), "micro_ddpo.json");
  sdpo::Trainer trainer(m, {dir});
  trainer.run();

  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_EQ(file.attribute("schema_version"), "1");
  EXPECT_NE(file.attribute("manifest").find("\"ddpo\""), std::string::npos);
  EXPECT_EQ(file.rows("train"), 2);
  EXPECT_EQ(file.rows("eval/steps_1"), 3) << "base model + 2 epochs";
  // Unpaired: 2 batches x 2 trajectories per epoch, one reward query per trajectory.
  EXPECT_EQ(file.read_curve("train", "samples"), (std::vector<double>{4, 8}));
  EXPECT_EQ(file.read_curve("train", "reward_queries"), (std::vector<double>{4, 8}));
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));
  for (double g : file.read_curve("train", "grad_norm")) EXPECT_TRUE(std::isfinite(g) && g > 0);
  for (const char* metric : {"clipfrac", "approx_kl", "reward_last_mean", "epoch"}) {
    EXPECT_EQ(file.read_curve("train", metric).size(), 2u) << metric;
  }
  // IS: G_acc = 1 -> one update per mini-batch of B_t = 2 (after all 4 steps): 2 per epoch.
  // SF: one update per epoch (4.3).
  auto updates = file.read_curve("train", "updates");
  EXPECT_EQ(updates, estimator == "sf" ? (std::vector<double>{1, 2}) : (std::vector<double>{2, 4}));
  if (estimator == "sf") {
    for (double c : file.read_curve("train", "clipfrac")) EXPECT_EQ(c, 0.0);
  }
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/epoch_2/model.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(Estimators, DDPOMicroRun, ::testing::Values("is", "sf"));

}  // namespace
