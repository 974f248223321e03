// Learning micro runs (issue 22): each algorithm's shipped toy preset, trained for a few epochs on
// the shipped few-step toy model, must raise the reward it is trained on. Colorfulness is a reward
// this model learns within a handful of updates (the quickstart's), so a sign error anywhere in
// the chain (reward, normalizer, advantage, loss, optimizer) shows as a falling curve. This is a
// direction check with a generous margin, not a speed or quality assertion.
//
// Measured when written (8 images per epoch at T = 4, evaluation at 4 steps on 6 prompts; the base
// scores 55.2): after 6 epochs at lr 3e-4, SDPO 82.5, DDPO 84.5 and D3PO 74.1 with seed 42, and
// all three clear the margin with the test's seed 1. REBEL at that rate is unstable on this model:
// 29.4 with seed 1, 48.9 with seed 2, 92.0 with seed 3; at 1e-4 it takes 10 epochs (seed 1: 69.3;
// seed 2: 59.5), and the test gives it those. The test asks for a rise of 10% (to 60.7), under half
// of the smallest gain (REBEL's 14.1).
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

struct Case {
  std::string algorithm;
  std::string learning_rate;
  int epochs;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.algorithm << " at " << c.learning_rate << ", " << c.epochs << " epochs";
}

class LearningMicroRun : public ::testing::TestWithParam<Case> {};

TEST_P(LearningMicroRun, ColorfulnessRisesByTenPercent) {
  const std::string algorithm = GetParam().algorithm;
  const std::string epochs = std::to_string(GetParam().epochs);
  const std::string root = SDPO_SOURCE_DIR;
  const std::string preset = root + "/experiments/toy/" + (algorithm == "sdpo" ? "turbo" : algorithm) + ".json";
  const std::string dir = sdpo::test::temp_dir("learning_" + algorithm);
  const std::vector<std::string> sets{
      "model.options.checkpoint=\"" + root + "/experiments/assets/toy_turbo_unet.safetensors\"",
      "model.options.prediction_type=\"v_prediction\"",
      "text_encoder.options.checkpoint=\"" + root + "/experiments/assets/toy_text.safetensors\"",
      "reward={\"name\": \"colorfulness\"}",
      "train.seed=1",
      "train.learning_rate=" + GetParam().learning_rate,
      "train.epochs=" + epochs,
      "train.batch_size=8",
      "train.batches_per_epoch=1",
      "train.checkpoint_every=" + epochs,
      "sample.steps=4",
      "eval.steps=[4]",
      "eval.every=" + epochs,
      "eval.max_prompts=6",
      "eval.seeds=1",
      "output.save_trajectories=false",
      "output.progress=false",
      "output.grid_prompts=1",
  };
  sdpo::Trainer trainer(sdpo::Manifest::load(preset, sets), {dir});
  trainer.run();

  const auto file = sdpo::RunFile::open(dir + "/run.h5", false);
  const std::vector<double> reward = file.read_curve("eval/steps_4", "reward_mean");
  ASSERT_EQ(reward.size(), 2u) << "the base and the last epoch";
  EXPECT_GT(reward[1], 1.10 * reward[0]) << algorithm << ": colorfulness at 4 steps went from " << reward[0] << " to "
                                         << reward[1];
}

INSTANTIATE_TEST_SUITE_P(
    EveryAlgorithm,
    LearningMicroRun,
    ::testing::Values(
        Case{"sdpo", "3e-4", 6}, Case{"ddpo", "3e-4", 6}, Case{"rebel", "1e-4", 10}, Case{"d3po", "3e-4", 6}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.algorithm; });

}  // namespace
