// Exact resume (TrainerOptions::resume, `sdpo train --resume`): a micro run stopped after an
// epoch and resumed ends with the same parameters, optimizer, normalizer and RNG state and the
// same logged curves (all but the clocks) as one that never stopped, for SDPO and DDPO; the
// run file is rolled back to the checkpoint; a changed manifest is refused.
#include <ATen/ATen.h>
#include <sys/wait.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "sdpo/core/error.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/trainer.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

// The micro world (test_support.h) for 4 epochs, a checkpoint every epoch, for one algorithm.
sdpo::Manifest manifest(const std::string& algorithm, std::vector<std::string> sets) {
  sets.insert(sets.begin(), {"train.epochs=4", "train.checkpoint_every=1"});
  return sdpo::Manifest::parse(sdpo::test::micro_algorithm_manifest(algorithm), "micro_" + algorithm + ".json", sets);
}

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted by the test") {}
};

// Runs `m` in `dir` and stops it (like a kill) right after epoch `stop_after` completed.
void run_until(const sdpo::Manifest& m, const std::string& dir, std::int64_t stop_after) {
  sdpo::TrainerOptions o(dir);
  o.on_epoch = [stop_after](const sdpo::TrainingCounters& c) {
    if (c.epoch == stop_after) throw Interrupted();
  };
  EXPECT_THROW(sdpo::Trainer(m, o).run(), sdpo::Error);
}

void resume(const sdpo::Manifest& m, const std::string& dir, std::int64_t expected_from) {
  sdpo::TrainerOptions o(dir);
  o.resume = true;
  sdpo::Trainer t(m, o);
  t.run();
  EXPECT_EQ(t.resumed_from(), expected_from);
}

class Resume : public ::testing::TestWithParam<std::string> {};

TEST_P(Resume, StoppedAfterEpochTwoAndResumedMatchesAnUnbrokenRun) {
  const auto m = manifest(GetParam(), {});
  const auto straight = sdpo::test::temp_dir("resume_straight"), broken = sdpo::test::temp_dir("resume_broken");
  sdpo::Trainer(m, {straight}).run();

  run_until(m, broken, 2);
  ASSERT_EQ(sdpo::last_checkpoint_epoch(broken), 2);
  // A save killed half-way through epoch 3's checkpoint: a partial .tmp folder is never resumed.
  fs::create_directories(broken + "/checkpoints/epoch_3.tmp");
  std::ofstream(broken + "/checkpoints/epoch_3.tmp/model.safetensors") << "trunc";
  EXPECT_EQ(sdpo::last_checkpoint_epoch(broken), 2);

  resume(m, broken, 2);
  EXPECT_FALSE(fs::exists(broken + "/checkpoints/epoch_3.tmp"));
  EXPECT_EQ(
      sdpo::RunFile::open(broken + "/run.h5", false).curve_groups(),
      (std::vector<std::string>{"eval/steps_1", "eval/steps_2", "train"}));
  sdpo::test::expect_same_run(straight, broken, 4);
}

TEST_P(Resume, RowsLoggedAfterTheLastCheckpointAreDroppedAndRelogged) {
  // Checkpoints every 2 epochs, stopped after epoch 3: epoch 3 was logged but not checkpointed,
  // so the resume rolls the run file back to epoch 2 and runs epoch 3 again.
  const auto m = manifest(GetParam(), {"train.checkpoint_every=2"});
  const auto straight = sdpo::test::temp_dir("resume_straight"), broken = sdpo::test::temp_dir("resume_broken");
  sdpo::Trainer(m, {straight}).run();

  run_until(m, broken, 3);
  {
    auto f = sdpo::RunFile::open(broken + "/run.h5", false);
    EXPECT_EQ(f.rows("train"), 3);
    EXPECT_EQ(f.rows("eval/steps_1"), 4);
  }
  EXPECT_EQ(sdpo::last_checkpoint_epoch(broken), 2);
  resume(m, broken, 2);
  sdpo::test::expect_same_run(straight, broken, 4);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, Resume, ::testing::Values("sdpo", "ddpo"));

TEST(ResumeExtend, ARunOfTwoEpochsExtendedToFourMatchesAFourEpochRun) {
  // eval.every 3: the 2-epoch run evaluated its last epoch 2, which a 4-epoch run does not (it
  // evaluates 0, 3, 4); the resume drops that row so the curves match.
  const auto m4 = manifest("sdpo", {"eval.every=3"});
  const auto m2 = manifest("sdpo", {"eval.every=3", "train.epochs=2"});
  const auto straight = sdpo::test::temp_dir("extend_straight"), extended = sdpo::test::temp_dir("extend");
  sdpo::Trainer(m4, {straight}).run();
  sdpo::Trainer(m2, {extended}).run();
  EXPECT_EQ(
      sdpo::RunFile::open(extended + "/run.h5", false).read_curve("eval/steps_1", "epoch"),
      (std::vector<double>{0, 2}));
  EXPECT_TRUE(fs::exists(extended + "/samples_epoch_2.png"));

  resume(m4, extended, 2);
  EXPECT_EQ(
      sdpo::RunFile::open(extended + "/run.h5", false).read_curve("eval/steps_1", "epoch"),
      (std::vector<double>{0, 3, 4}));
  EXPECT_FALSE(fs::exists(extended + "/samples_epoch_2.png"));
  sdpo::test::expect_same_run(straight, extended, 4);
  // The run file and manifest.json now hold the extended manifest.
  auto logged = boost::json::parse(sdpo::RunFile::open(extended + "/run.h5", false).attribute("manifest"));
  EXPECT_EQ(logged.at("train").at("epochs").as_int64(), 4);
}

TEST(ResumeRefusal, AChangedManifestIsRefusedNamingTheKey) {
  const auto m = manifest("sdpo", {"train.epochs=1"});
  const auto dir = sdpo::test::temp_dir("resume_changed");
  sdpo::Trainer(m, {dir}).run();
  sdpo::TrainerOptions o(dir);
  o.resume = true;
  try {
    sdpo::Trainer(manifest("sdpo", {"train.epochs=2", "train.learning_rate=0.002"}), o).run();
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_EQ(e.json_path(), "train.learning_rate");
    EXPECT_NE(std::string(e.what()).find("a resume may change only train.epochs"), std::string::npos) << e.what();
  }
  // Fewer epochs than the checkpoint holds.
  EXPECT_THROW(sdpo::Trainer(manifest("sdpo", {"train.epochs=0"}), o).run(), sdpo::ManifestError);
  // Nothing to resume: a fresh folder starts afresh.
  const auto fresh = sdpo::test::temp_dir("resume_fresh");
  sdpo::TrainerOptions of(fresh);
  of.resume = true;
  sdpo::Trainer t(m, of);
  t.run();
  EXPECT_EQ(t.resumed_from(), 0);
  EXPECT_EQ(sdpo::RunFile::open(fresh + "/run.h5", false).rows("train"), 1);
}

TEST(ResumeCli, TrainResumeContinuesTheOutputFolder) {
  const auto dir = sdpo::test::temp_dir("resume_cli");
  const auto file = dir + "/micro.json";
  std::ofstream(file) << sdpo::test::micro_algorithm_manifest("sdpo");
  auto run = [&](const std::string& args) {
    std::string cmd = std::string(SDPO_CLI) + " train " + file + " --output " + dir + "/run " + args + " 2>&1";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
    std::string out;
    char buf[4096];
    while (pipe && fgets(buf, sizeof buf, pipe.get())) out += buf;
    const int status = pclose(pipe.release());
    return std::make_pair(WEXITSTATUS(status), out);
  };
  auto [rc1, out1] = run("--set train.epochs=1");
  ASSERT_EQ(rc1, 0) << out1;
  auto [rc2, out2] = run("--resume --set train.epochs=2");
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("from its checkpoint at epoch 1 of 2"), std::string::npos) << out2;
  auto f = sdpo::RunFile::open(dir + "/run/run.h5", false);
  EXPECT_EQ(f.read_curve("train", "epoch"), (std::vector<double>{1, 2}));
}

}  // namespace
