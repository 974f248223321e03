// Mixed-step training (`sample.steps` as a list, the paper's Fig. 7 study): each epoch draws its
// trajectory length from the list with the trainer's generator. Every algorithm trains through
// epochs of different lengths, the draw is logged as trajectory_steps, a run of such epochs
// resumes exactly, and a one-element list is the plain integer.
#include <boost/json.hpp>
#include <set>

#include "sdpo/core/error.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

std::string manifest_text(const std::string& algorithm) {
  const std::string normalizer = R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})";
  return sdpo::test::micro_manifest(R"({"name": "colorfulness"})", normalizer, algorithm);
}

sdpo::Manifest mixed(const std::string& algorithm, std::vector<std::string> sets = {}) {
  sets.insert(sets.begin(), {"sample.steps=[1, 2, 4]", "train.epochs=6", "eval.every=3"});
  return sdpo::Manifest::parse(manifest_text(algorithm), "mixed.json", sets);
}

TEST(MixedSteps, ManifestAcceptsAnIntegerOrAListOfThem) {
  auto m = mixed(R"({"name": "sdpo"})");
  EXPECT_EQ(m.sample.step_choices, (std::vector<std::int64_t>{1, 2, 4}));
  EXPECT_EQ(m.sample.steps, 4) << "the longest trajectory";
  auto plain = sdpo::Manifest::parse(manifest_text(R"({"name": "sdpo"})"), "plain.json");
  EXPECT_EQ(plain.sample.steps, 4);
  EXPECT_TRUE(plain.sample.step_choices.empty());
  for (const char* bad : {"sample.steps=[]", "sample.steps=[2, 0]", "sample.steps=[2.5]", "sample.steps=\"x\""}) {
    try {
      sdpo::Manifest::parse(manifest_text(R"({"name": "sdpo"})"), "bad.json", {bad});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const sdpo::ManifestError& e) {
      EXPECT_EQ(e.json_path(), "sample.steps") << bad << ": " << e.what();
    }
  }
}

class MixedStepRun : public ::testing::TestWithParam<std::string> {};

TEST_P(MixedStepRun, EveryAlgorithmTrainsThroughEpochsOfDifferentLengths) {
  const auto dir = sdpo::test::temp_dir("mixed");
  sdpo::Trainer(mixed(GetParam()), {dir}).run();
  auto f = sdpo::RunFile::open(dir + "/run.h5", false);
  const auto steps = f.read_curve("train", "trajectory_steps");
  ASSERT_EQ(steps.size(), 6u);
  std::set<double> seen(steps.begin(), steps.end());
  for (double t : seen) EXPECT_TRUE(t == 1 || t == 2 || t == 4) << t;
  EXPECT_GE(seen.size(), 2u) << "6 draws under seed 42 give more than one length";
  for (double l : f.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));
  EXPECT_EQ(f.read_curve("eval/steps_2", "epoch"), (std::vector<double>{0, 3, 6}));
}

INSTANTIATE_TEST_SUITE_P(
    Algorithms,
    MixedStepRun,
    ::testing::Values(
        R"({"name": "sdpo"})",
        R"({"name": "ddpo"})",
        R"({"name": "rebel", "options": {"form": "per_step"}})",
        R"({"name": "rebel", "options": {"form": "trajectory"}})",
        R"({"name": "d3po"})"));

TEST(MixedSteps, AMixedStepRunResumesExactly) {
  const auto m = mixed(R"({"name": "sdpo"})", {"train.checkpoint_every=1"});
  const auto straight = sdpo::test::temp_dir("mixed_straight"), broken = sdpo::test::temp_dir("mixed_broken");
  sdpo::Trainer(m, {straight}).run();
  sdpo::TrainerOptions o(broken);
  o.on_epoch = [](const sdpo::TrainingCounters& c) {
    if (c.epoch == 3) throw std::runtime_error("stop");
  };
  EXPECT_THROW(sdpo::Trainer(m, o).run(), sdpo::Error);
  o.on_epoch = nullptr;
  o.resume = true;
  sdpo::Trainer(m, o).run();
  sdpo::test::expect_same_run(straight, broken, 6);
}

TEST(MixedSteps, AOneElementListIsThePlainInteger) {
  const auto a = sdpo::test::temp_dir("steps_int"), b = sdpo::test::temp_dir("steps_list");
  const std::string text = manifest_text(R"({"name": "sdpo"})");
  sdpo::Trainer(sdpo::Manifest::parse(text, "a.json", {"sample.steps=2"}), {a}).run();
  sdpo::Trainer(sdpo::Manifest::parse(text, "b.json", {"sample.steps=[2]"}), {b}).run();
  sdpo::test::expect_same_run(a, b, 2);
}

}  // namespace
