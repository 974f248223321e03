// End-to-end micro runs of the REBEL (both forms) and D3PO baselines: 2 epochs on the micro world
// of micro_run_test.cpp write a valid run file with finite losses, one reward query per trajectory
// (final-image reward) and the parameters move.
#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <cmath>
#include <filesystem>

#include "sdpo/core/model.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/train/components.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

constexpr int kBatchSize = 2, kBatchesPerEpoch = 2, kEpochs = 2;

// The micro world of micro_run_test.cpp with another algorithm and the per-(prompt, step) normalizer
// (identical advantage columns under a final-image reward up to its running statistics).
std::string micro_manifest(const std::string& algorithm) {
  return sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      algorithm);
}

void expect_valid_micro_run(const std::string& algorithm, const std::vector<std::string>& extra_metrics) {
  auto dir = sdpo::test::temp_dir("baseline");
  auto m = sdpo::Manifest::parse(micro_manifest(algorithm), "micro.json");
  sdpo::Trainer trainer(m, {dir});
  trainer.run();

  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_EQ(file.attribute("schema_version"), "1");
  EXPECT_EQ(file.rows("train"), kEpochs);
  EXPECT_EQ(file.rows("eval/steps_1"), kEpochs + 1) << "base model + 2 epochs";
  // 2 members x batch_size pairs x batches_per_epoch per epoch.
  const double per_epoch = 2.0 * kBatchSize * kBatchesPerEpoch;
  EXPECT_EQ(file.read_curve("train", "samples"), (std::vector<double>{per_epoch, 2 * per_epoch}));
  EXPECT_EQ(file.read_curve("train", "reward_queries"), file.read_curve("train", "samples"))
      << "one final-image query per trajectory";
  auto losses = file.read_curve("train", "loss");
  ASSERT_EQ(losses.size(), static_cast<size_t>(kEpochs));
  for (double l : losses) EXPECT_TRUE(std::isfinite(l)) << l;
  auto updates = file.read_curve("train", "updates");
  ASSERT_EQ(updates.size(), static_cast<size_t>(kEpochs));
  EXPECT_GT(updates.back(), 0.0);
  for (const auto& metric : extra_metrics) {
    auto curve = file.read_curve("train", metric);
    ASSERT_EQ(curve.size(), static_cast<size_t>(kEpochs)) << metric;
    for (double v : curve) EXPECT_TRUE(std::isfinite(v)) << metric;
  }

  // Training moved the parameters away from the initial (pretrained) weights.
  auto c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  auto saved = sdpo::safetensors_load(dir + "/checkpoints/epoch_2/model.safetensors");
  bool changed = false;
  for (const auto& [k, v] : c.model->trainable_state_dict()) {
    ASSERT_TRUE(saved.count(k)) << k;
    changed = changed || !v.cpu().equal(saved.at(k));
  }
  EXPECT_TRUE(changed) << "training changed the parameters";
}

TEST(BaselineMicroRun, RebelPerStepWritesAValidRunFile) {
  expect_valid_micro_run(R"({"name": "rebel"})", {"grad_norm", "abs_log_ratio_diff", "abs_advantage_diff"});
}

TEST(BaselineMicroRun, RebelTrajectoryWritesAValidRunFile) {
  expect_valid_micro_run(
      R"({"name": "rebel", "options": {"form": "trajectory", "eta": 2.0}})", {"grad_norm", "abs_log_ratio_diff"});
}

TEST(BaselineMicroRun, D3POWritesAValidRunFile) {
  expect_valid_micro_run(
      R"({"name": "d3po", "options": {"beta": 0.1, "eps": 0.1}})",
      {"grad_norm", "mean_abs_log_q", "mean_abs_log_ratio", "clampfrac", "tie_fraction"});
}

}  // namespace
