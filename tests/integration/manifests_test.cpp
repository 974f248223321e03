// Every manifest shipped under experiments/ stays in step with the code: it parses, and every
// component it names is registered and accepts its options (validated without loading weights).
// Paper-scale manifests get placeholder folders for the paths a user gives on the command line.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "sdpo/commands/experiment.h"
#include "sdpo/core/options.h"
#include "sdpo/train/components.h"
#include "sdpo/train/manifest.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> manifests(const std::string& scale) {
  std::vector<fs::path> out;
  const fs::path dir = fs::path(SDPO_SOURCE_DIR) / "experiments" / scale;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".json") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Experiment manifests (a "base" run manifest plus a grid or variants) are checked by
// tests/integration/experiment_test.cpp; these tests take the run manifests.
bool is_experiment(const fs::path& file) {
  const auto v = sdpo::json_parse_file(file.string());
  return v.is_object() && v.as_object().contains("base");
}

// Validates a run manifest; returns false (and checks nothing) for an experiment manifest.
bool validate(const fs::path& file, const std::vector<std::string>& overrides) {
  SCOPED_TRACE(file.string());
  if (is_experiment(file)) return false;
  sdpo::Manifest m = sdpo::Manifest::load(file.string(), overrides);
  EXPECT_NO_THROW(sdpo::validate_components(m, sdpo::ComponentSet::kTraining));
  return true;
}

// The counts are the shipped manifests (experiments/README.md lists them): a manifest added or
// removed changes them on purpose, and a wrong folder or glob cannot pass by validating nothing.
TEST(Manifests, EveryToyManifestValidates) {
  std::size_t validated = 0;
  for (const auto& f : manifests("toy")) validated += validate(f, {}) ? 1 : 0;
  // quickstart, turbo, ddpo, ddpo_sf, rebel, rebel_rlcm, d3po, sdpo_lcm and the three pretrain manifests.
  EXPECT_EQ(validated, 11u);
}

TEST(Manifests, EveryPaperManifestValidatesOnceItsFoldersAreGiven) {
  std::size_t validated = 0;
  for (const auto& f : manifests("paper")) {
    validated += validate(
                     f, {"model.path=/models/sd-turbo", "reward.options.clip=/models/clip-vit-large-patch14",
                         "reward.options.head=/models/aesthetic_head.safetensors"})
                     ? 1
                     : 0;
  }
  // The five SD-Turbo presets (sdpo, ddpo, ddpo_sf, rebel, d3po) and the three LCM ones.
  EXPECT_EQ(validated, 8u);
}

TEST(Manifests, EveryPaperExperimentExpandsAndValidatesOnceItsFoldersAreGiven) {
  const std::vector<std::string> folders{
      "model.path=/models/sd-turbo", "reward.options.clip=/models/clip-vit-large-patch14",
      "reward.options.head=/models/aesthetic_head.safetensors"};
  std::size_t experiments = 0;
  for (const auto& f : manifests("paper")) {
    if (!is_experiment(f)) continue;
    SCOPED_TRACE(f.string());
    ++experiments;
    const auto e = sdpo::Experiment::load(f.string(), folders, sdpo::test::temp_dir("paper_experiment"));
    EXPECT_GE(e.runs.size(), 2u);
    sdpo::ExperimentOptions options;
    options.dry_run = true;  // validates every run's components; trains nothing
    options.progress = false;
    std::ostringstream out;
    EXPECT_NO_THROW(sdpo::run_experiment(e, options, out));
  }
  EXPECT_EQ(experiments, 8u);  // Figs. 3, 4, 5 (two), 6, 7, 12 and Table 1
}

}  // namespace
