// End-to-end micro runs of the trainer: a 2-epoch SDPO run that produces a valid run file,
// checkpoints and a sample grid; and a NaN reward that stops a run leaving the last good
// checkpoint and a readable run file.
#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <filesystem>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/train/checkpoint.h"
#include "sdpo/train/components.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

// A micro world: 8x8 images, a UNet of a few thousand parameters, 4-step trajectories.
std::string micro_manifest(const std::string& reward) {
  return sdpo::test::micro_manifest(
      reward, R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})", R"({"name": "sdpo"})");
}

TEST(MicroRun, TwoEpochsWriteAValidRunFile) {
  auto dir = sdpo::test::temp_dir("micro");
  auto m = sdpo::Manifest::parse(micro_manifest(R"({"name": "colorfulness"})"), "micro.json");
  sdpo::Trainer trainer(m, {dir});
  trainer.run();

  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_EQ(file.attribute("schema_version"), "1");
  EXPECT_NE(file.attribute("manifest").find("\"similarity_3_adaptive\""), std::string::npos);
  EXPECT_EQ(file.rows("train"), 2);
  EXPECT_EQ(file.rows("eval/steps_1"), 3) << "base model + 2 epochs";
  EXPECT_EQ(file.rows("eval/steps_2"), 3);
  auto samples = file.read_curve("train", "samples");
  EXPECT_EQ(samples, (std::vector<double>{8, 16})) << "2 batches x 2 pairs x 2 trajectories per epoch";
  auto queries = file.read_curve("train", "reward_queries");
  EXPECT_EQ(queries, (std::vector<double>{24, 48})) << "3 queries per trajectory";
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));
  for (const char* metric :
       {"reward_first_mean", "reward_last_std", "clipfrac", "adv_clipfrac", "wall_seconds", "device_seconds",
        "epoch"}) {
    EXPECT_EQ(file.read_curve("train", metric).size(), 2u) << metric;
  }
  EXPECT_EQ(file.read_curve("eval/steps_1", "epoch"), (std::vector<double>{0, 1, 2}));

  for (int e : {1, 2}) {
    auto ck = dir + "/checkpoints/epoch_" + std::to_string(e);
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer.safetensors"}) {
      EXPECT_TRUE(fs::exists(ck + "/" + f)) << ck << "/" << f;
    }
  }
  EXPECT_TRUE(fs::exists(dir + "/samples_epoch_0.png"));
  EXPECT_TRUE(fs::exists(dir + "/samples_epoch_2.png"));
  EXPECT_TRUE(fs::exists(dir + "/manifest.json"));

  // The last checkpoint restores the trained weights into a fresh model.
  auto c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  sdpo::TensorMap before;
  for (const auto& [k, v] : c.model->trainable_state_dict()) before[k] = v.detach().clone();
  auto counters = sdpo::checkpoint_load(dir + "/checkpoints/epoch_2", *c.model, nullptr, nullptr, nullptr);
  EXPECT_EQ(counters.epoch, 2);
  EXPECT_EQ(counters.samples, 16);
  auto saved = sdpo::safetensors_load(dir + "/checkpoints/epoch_2/model.safetensors");
  bool changed = false;
  for (const auto& [k, v] : c.model->trainable_state_dict()) {
    ASSERT_TRUE(saved.count(k)) << k;
    EXPECT_TRUE(v.cpu().equal(saved.at(k))) << k;
    changed = changed || !v.cpu().equal(before.at(k).cpu());
  }
  EXPECT_TRUE(changed) << "training changed the parameters";
}

TEST(MicroRun, NaNRewardStopsTheRunAndKeepsTheLastCheckpoint) {
  auto dir = sdpo::test::temp_dir("nan");
  // Calls: eval epoch 0 (2 step counts), epoch 1 (2 batches), eval epoch 1 (2); the 7th call,
  // the first batch of epoch 2, returns NaN.
  auto m =
      sdpo::Manifest::parse(micro_manifest(R"({"name": "fixture_nan", "options": {"nan_after": 6}})"), "micro.json");
  sdpo::Trainer trainer(m, {dir});
  try {
    trainer.run();
    FAIL() << "expected the run to stop";
  } catch (const sdpo::Error& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("epoch 2"), std::string::npos) << w;
    EXPECT_NE(w.find("reward 'fixture_nan'"), std::string::npos) << w;
    EXPECT_NE(w.find("NaN"), std::string::npos) << w;
  }
  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_EQ(file.rows("train"), 1);
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/epoch_1/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/checkpoints/epoch_2"));
}

TEST(MicroRun, TruncatedCheckpointIsRefusedNamingTheFile) {
  auto dir = sdpo::test::temp_dir("trunc");
  auto m = sdpo::Manifest::parse(
      micro_manifest(R"({"name": "colorfulness"})"), "micro.json", {"train.epochs=1", "eval.every=0"});
  sdpo::Trainer(m, {dir}).run();
  auto file = dir + "/checkpoints/epoch_1/model.safetensors";
  fs::resize_file(file, fs::file_size(file) / 2);
  auto c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  try {
    sdpo::checkpoint_load(dir + "/checkpoints/epoch_1", *c.model, nullptr, nullptr, nullptr);
    FAIL() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      sdpo::checkpoint_load(dir + "/checkpoints/epoch_9", *c.model, nullptr, nullptr, nullptr), sdpo::FileError);
}

}  // namespace
