// End-to-end micro runs with the `lcm` sampler (research/algorithms.md 5.2, 7.7): SDPO, DDPO and
// REBEL train 2 epochs on a micro consistency model (the micro world's model of micro_run_test.cpp
// distilled for 2 steps by `sdpo pretrain`'s latent consistency distillation, the way the toy one
// is made) with finite losses, and log their reward queries: 3 per trajectory for SDPO (on the
// steps' `denoised`), 1 per trajectory for the final-image baselines.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "sdpo/commands/pretrain.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

struct LCMRun {
  const char* algorithm;
  const char* normalizer;
  std::vector<double> samples;         ///< cumulative trajectories after epochs 1 and 2
  std::vector<double> reward_queries;  ///< cumulative reward queries after epochs 1 and 2
};

// The micro model distilled into a consistency model once per process; returns its weights file.
const std::string& micro_consistency_model() {
  static const std::string path = [] {
    const std::string dir = sdpo::test::temp_dir("lcm_micro_distill");
    const std::string text =
        sdpo::test::micro_manifest(R"({"name": "colorfulness"})", R"({"name": "global"})", R"({"name": "sdpo"})");
    const auto m = sdpo::Manifest::parse(
        text, "micro.json",
        {"pretrain.method=latent_consistency_distillation", "pretrain.steps=2", "pretrain.batch_size=2",
         "pretrain.original_inference_steps=10", "pretrain.model_out=" + dir + "/lcm.safetensors"});
    std::ostringstream log;
    sdpo::run_pretrain(m, log);
    return dir + "/lcm.safetensors";
  }();
  return path;
}

class LCMMicroRun : public testing::TestWithParam<LCMRun> {};

TEST_P(LCMMicroRun, TwoEpochsWithFiniteLosses) {
  const LCMRun r = GetParam();
  auto dir = sdpo::test::temp_dir("lcm_micro");
  auto text = sdpo::test::micro_manifest(R"({"name": "colorfulness"})", r.normalizer, r.algorithm);
  sdpo::StringMap meta;
  sdpo::safetensors_load(micro_consistency_model(), &meta);
  ASSERT_EQ(meta["method"], "latent_consistency_distillation");
  auto m = sdpo::Manifest::parse(
      text, "micro.json",
      {"sampler.name=lcm", "sampler.options.original_inference_steps=10",
       "model.options.checkpoint=" + micro_consistency_model()});
  ASSERT_EQ(m.sampler.name, "lcm");
  sdpo::Trainer(m, {dir}).run();

  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_NE(file.attribute("manifest").find("\"lcm\""), std::string::npos);
  ASSERT_EQ(file.rows("train"), 2);
  EXPECT_EQ(file.rows("eval/steps_1"), 3) << "base model + 2 epochs";
  EXPECT_EQ(file.read_curve("train", "samples"), r.samples);
  EXPECT_EQ(file.read_curve("train", "reward_queries"), r.reward_queries);
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l)) << l;
  for (double g : file.read_curve("train", "grad_norm")) EXPECT_TRUE(std::isfinite(g) && g > 0) << g;
  for (double v : file.read_curve("eval/steps_2", "reward_mean")) EXPECT_TRUE(std::isfinite(v)) << v;
  EXPECT_GT(file.read_curve("train", "updates").back(), 0.0);
}

// Micro world: batch_size 2, 2 batches per epoch, T = 4. Paired algorithms sample 8 trajectories
// per epoch, DDPO 4.
INSTANTIATE_TEST_SUITE_P(
    Algorithms,
    LCMMicroRun,
    testing::Values(
        LCMRun{
            R"({"name": "sdpo"})",
            R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
            {8, 16},
            {24, 48}},
        LCMRun{
            R"({"name": "ddpo"})",
            R"({"name": "per_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
            {4, 8},
            {4, 8}},
        LCMRun{
            R"({"name": "rebel"})",
            R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
            {8, 16},
            {8, 16}}),
    [](const testing::TestParamInfo<LCMRun>& info) {
      const std::string a = info.param.algorithm;
      return a.find("sdpo") != std::string::npos   ? std::string("SDPO")
             : a.find("ddpo") != std::string::npos ? std::string("DDPO")
                                                   : std::string("REBEL");
    });

}  // namespace
