// train.loss_scaling (sdpo/core/loss_scaler.h) in micro runs: in float32 a run with the loss
// scaled by 2^16 and the gradients unscaled before the clip is the unscaled run, bit for bit (the
// scale is a power of two), for each algorithm's backward path; the scaled run's curves add the
// scale and the skipped-step count; "auto" leaves a float32 run unscaled.
#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <vector>

#include "sdpo/core/safetensors.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/trainer.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

struct Case {
  std::string name;
  std::string manifest;  ///< a micro manifest (test_support.h)
};

std::string run(const Case& c, const std::string& loss_scaling, std::vector<std::string> sets = {}) {
  sets.push_back("train.loss_scaling=" + loss_scaling);
  const auto dir = sdpo::test::temp_dir("loss_scaling_" + c.name + "_" + loss_scaling);
  sdpo::Trainer(sdpo::Manifest::parse(c.manifest, c.name + ".json", sets), {dir}).run();
  return dir;
}

// REBEL's trajectory form backpropagates its T surrogates itself (not through
// backward_micro_batch): the scale must reach those backwards too.
std::string rebel_trajectory() {
  return sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": "rebel", "options": {"form": "trajectory"}})");
}

class LossScalingMicroRun : public ::testing::TestWithParam<Case> {};

TEST_P(LossScalingMicroRun, ScaledFloat32RunIsTheUnscaledRunBitForBit) {
  const auto off = run(GetParam(), "off"), on = run(GetParam(), "on");
  const auto ck_off = sdpo::checkpoint_dir(off, 2), ck_on = sdpo::checkpoint_dir(on, 2);
  sdpo::test::expect_same_tensors(ck_off + "/model.safetensors", ck_on + "/model.safetensors");
  auto opt_off = sdpo::safetensors_load(ck_off + "/optimizer.safetensors");
  auto opt_on = sdpo::safetensors_load(ck_on + "/optimizer.safetensors");
  for (const auto& [k, v] : opt_off) {
    ASSERT_TRUE(opt_on.count(k)) << k;
    EXPECT_TRUE(v.equal(opt_on.at(k))) << "optimizer state " << k;
  }
  EXPECT_EQ(opt_on.at("loss_scaler.scale").item<double>(), 65536.0) << "no skip, no growth in a micro run";
  EXPECT_EQ(opt_on.at("loss_scaler.skipped").item<std::int64_t>(), 0);
  EXPECT_EQ(opt_off.count("loss_scaler.scale"), 0u);

  auto f_off = sdpo::RunFile::open(off + "/run.h5", false), f_on = sdpo::RunFile::open(on + "/run.h5", false);
  ASSERT_EQ(f_off.curve_groups(), f_on.curve_groups());
  for (const auto& group : f_off.curve_groups()) {
    for (const auto& metric : f_off.metrics(group)) {
      if (sdpo::test::is_clock(metric)) continue;
      EXPECT_TRUE(sdpo::test::same_bits(f_off.read_curve(group, metric), f_on.read_curve(group, metric)))
          << group << "/" << metric;
    }
  }
  EXPECT_EQ(f_on.read_curve("train", "loss_scale"), (std::vector<double>{65536.0, 65536.0}));
  EXPECT_EQ(f_on.read_curve("train", "skipped_updates"), (std::vector<double>{0.0, 0.0}));
}

INSTANTIATE_TEST_SUITE_P(
    Algorithms,
    LossScalingMicroRun,
    ::testing::Values(
        Case{"sdpo", sdpo::test::micro_algorithm_manifest("sdpo")},
        Case{"ddpo", sdpo::test::micro_algorithm_manifest("ddpo")},
        Case{"rebel_trajectory", rebel_trajectory()}),
    [](const auto& info) { return info.param.name; });

TEST(LossScalingMicroRun, AutoLeavesAFloat32RunUnscaled) {
  const auto dir = run(Case{"auto", sdpo::test::micro_algorithm_manifest("sdpo")}, "auto", {"train.epochs=1"});
  auto f = sdpo::RunFile::open(dir + "/run.h5", false);
  const auto metrics = f.metrics("train");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), "loss_scale"), 0);
  EXPECT_EQ(
      sdpo::safetensors_load(sdpo::checkpoint_dir(dir, 1) + "/optimizer.safetensors").count("loss_scaler.scale"), 0u);
}

}  // namespace
