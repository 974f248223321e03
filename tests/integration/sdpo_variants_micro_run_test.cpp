// A 2-epoch micro run of every `sdpo` ablation variant (research/algorithms.md 9.2, 9.4, 9.5),
// each selected by one option of an otherwise unchanged manifest; the run file's cumulative
// `updates` curve gives the optimizer updates per epoch of each update schedule.
#include <cmath>
#include <string>
#include <vector>

#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

struct Variant {
  const char* options;
  double updates_per_epoch;  ///< micro world: T = 4, 4 pairs in micro-batches of 2, G_acc = 1
};

class SDPOVariantRun : public testing::TestWithParam<Variant> {};

TEST_P(SDPOVariantRun, TwoEpochs) {
  const Variant v = GetParam();
  auto dir = sdpo::test::temp_dir("sdpo_variant");
  auto text = sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      std::string(R"({"name": "sdpo", "options": )") + v.options + "}");
  auto m = sdpo::Manifest::parse(text, "micro.json", {"eval.every=0"});
  sdpo::Trainer(m, {dir}).run();

  auto file = sdpo::RunFile::open(dir + "/run.h5");
  ASSERT_EQ(file.rows("train"), 2);
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l)) << v.options;
  EXPECT_EQ(file.read_curve("train", "samples"), (std::vector<double>{8, 16}));
  // `updates` counts from the start of the run.
  EXPECT_EQ(file.read_curve("train", "updates"), (std::vector<double>{v.updates_per_epoch, 2 * v.updates_per_epoch}))
      << v.options;
}

// step_shuffled and stepwise_ordered: T * n_mb / G_acc = 4 * 2 = 8 updates per epoch (7.5);
// step_accumulated: n_mb / G_acc = 2, T = 4 times fewer (9.5).
INSTANTIATE_TEST_SUITE_P(
    Variants,
    SDPOVariantRun,
    testing::Values(
        Variant{R"({})", 8},
        Variant{R"({"returns": "none"})", 8},
        Variant{R"({"returns": "discounted", "gamma": 0.9})", 8},
        Variant{R"({"weighting": "reverse"})", 8},
        Variant{R"({"update": "step_shuffled"})", 8},
        Variant{R"({"update": "stepwise_ordered"})", 8},
        Variant{R"({"update": "step_accumulated"})", 2}));

}  // namespace
