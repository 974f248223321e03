// `sdpo experiment` on the micro world: grid expansion (named variants x cross product, stable
// and unique folder names), manifest errors, skipping complete runs, exact resume of an
// interrupted run through the runner, --dry-run, a failing run marked failed while the others
// complete, --only, and index.json.
#include "sdpo/commands/experiment.h"

#include <sys/wait.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/trainer.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted by the test") {}
};

// A folder with base.json (the micro world, SDPO, 2 epochs) and experiment.json (`body` plus
// "base": "base.json" and an output folder inside).
struct ExperimentFolder {
  std::string dir, file, out;
  explicit ExperimentFolder(const std::string& body, const std::string& tag = "experiment") {
    dir = sdpo::test::temp_dir(tag);
    out = dir + "/runs";
    std::ofstream(dir + "/base.json") << sdpo::test::micro_manifest(
        R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
        R"({"name": "sdpo"})");
    file = dir + "/experiment.json";
    std::ofstream(file) << "{\"name\": \"micro_exp\", \"base\": \"base.json\", \"output\": {\"dir\": \"" + out +
                               "\"},\n" + body + "}";
  }
  sdpo::Experiment load(const std::vector<std::string>& sets = {}) const { return sdpo::Experiment::load(file, sets); }
};

sdpo::ExperimentReport run(const sdpo::Experiment& e, sdpo::ExperimentOptions o = {}, std::string* printed = nullptr) {
  std::ostringstream out;
  auto rep = sdpo::run_experiment(e, o, out);
  if (printed) *printed = out.str();
  return rep;
}

sdpo::ExperimentOptions quiet() {
  sdpo::ExperimentOptions o;
  o.progress = false;
  return o;
}

json::object index_entry(const std::string& index, const std::string& name) {
  const json::value v = sdpo::json_parse_file(index);
  for (const auto& r : v.at("runs").as_array()) {
    if (r.at("name").as_string() == name) return r.as_object();
  }
  ADD_FAILURE() << name << " not in " << index;
  return {};
}

std::pair<int, std::string> cli(const std::string& args) {
  const std::string cmd = std::string(SDPO_CLI) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  char buf[4096];
  while (pipe && fgets(buf, sizeof buf, pipe.get())) out += buf;
  const int status = pclose(pipe.release());
  return {WEXITSTATUS(status), out};
}

TEST(Experiment, GridExpandsVariantsTimesTheCrossProductWithStableNames) {
  const std::string grid = R"("grid": {"train.seed": [1, 2], "train.learning_rate": [0.001, 0.0001]},)";
  const std::string runs = R"("runs": [
      {"name": "sdpo", "set": {}},
      {"name": "ddpo", "set": {"algorithm": {"name": "ddpo", "options": {"estimator": "sf"}},
                               "normalizer": {"name": "per_prompt", "options": {"buffer_size": 4, "min_count": 2}}}}])";
  ExperimentFolder s(grid + runs);
  const auto e = s.load();
  ASSERT_EQ(e.runs.size(), 8u);
  std::vector<std::string> names;
  for (const auto& r : e.runs) names.push_back(r.name);
  EXPECT_EQ(
      names, (std::vector<std::string>{
                 "sdpo__train.seed=1__train.learning_rate=0.001", "sdpo__train.seed=1__train.learning_rate=0.0001",
                 "sdpo__train.seed=2__train.learning_rate=0.001", "sdpo__train.seed=2__train.learning_rate=0.0001",
                 "ddpo__train.seed=1__train.learning_rate=0.001", "ddpo__train.seed=1__train.learning_rate=0.0001",
                 "ddpo__train.seed=2__train.learning_rate=0.001", "ddpo__train.seed=2__train.learning_rate=0.0001"}));
  const auto& r = e.runs[5];
  EXPECT_EQ(r.variant, "ddpo");
  EXPECT_EQ(r.manifest.algorithm.name, "ddpo");
  EXPECT_EQ(r.manifest.algorithm.options.at("estimator").as_string(), "sf");
  EXPECT_EQ(r.manifest.normalizer.name, "per_prompt");
  EXPECT_EQ(r.manifest.train.seed, 1);
  EXPECT_DOUBLE_EQ(r.manifest.train.optimizer.learning_rate, 1e-4);
  EXPECT_EQ(r.manifest.name, r.name);
  EXPECT_EQ(r.manifest.output.dir, s.out);
  EXPECT_EQ(r.dir, s.out + "/" + r.name);
  EXPECT_EQ(
      json::serialize(r.settings),
      R"({"algorithm":{"name":"ddpo","options":{"estimator":"sf"}},"normalizer":{"name":"per_prompt","options":{"buffer_size":4,"min_count":2}},"train.seed":1,"train.learning_rate":1E-4})");
  EXPECT_EQ(e.runs[0].manifest.algorithm.name, "sdpo");
  EXPECT_EQ(e.name, "micro_exp");

  // Stable: another grid value and another variant add runs and rename none.
  ExperimentFolder more(
      R"("grid": {"train.seed": [1, 2, 3], "train.learning_rate": [0.001, 0.0001]},)" +
      runs.substr(0, runs.size() - 1) + R"(, {"name": "sdpo_gamma", "set": {"algorithm.options.gamma": 0.9}}])");
  const auto e2 = more.load();
  EXPECT_EQ(e2.runs.size(), 18u);
  std::set<std::string> all;
  for (const auto& x : e2.runs) EXPECT_TRUE(all.insert(x.name).second) << "duplicate " << x.name;
  for (const auto& n : names) EXPECT_TRUE(all.count(n)) << n;
  EXPECT_TRUE(all.count("sdpo_gamma__train.seed=3__train.learning_rate=0.0001"));

  // Neither grid nor variants: one run named "base"; --set applies to every run.
  ExperimentFolder single("\"set\": {\"train.epochs\": 3}");
  const auto e3 = single.load({"train.batch_size=1"});
  ASSERT_EQ(e3.runs.size(), 1u);
  EXPECT_EQ(e3.runs[0].name, "base");
  EXPECT_EQ(e3.runs[0].manifest.train.epochs, 3);
  EXPECT_EQ(e3.runs[0].manifest.train.batch_size, 1);
}

TEST(Experiment, AVariantMayNameItsOwnBase) {
  ExperimentFolder s(R"("runs": [{"name": "gamma=0.9", "set": {"algorithm.options.gamma": 0.9}},
                                 {"name": "ddpo", "base": "ddpo_base.json"},
                                 {"name": "inline", "base": {"name": "x", "train": {"epochs": 1}}}],
                       "plots": [{"kind": "curves"}])");
  std::ofstream(s.dir + "/ddpo_base.json") << sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": "ddpo"})");
  const auto e = s.load();
  ASSERT_EQ(e.runs.size(), 3u);
  EXPECT_EQ(e.runs[0].name, "gamma=0.9");
  EXPECT_EQ(e.runs[0].manifest.algorithm.name, "sdpo");
  EXPECT_DOUBLE_EQ(e.runs[0].manifest.algorithm.options.at("gamma").as_double(), 0.9);
  EXPECT_EQ(e.runs[1].manifest.algorithm.name, "ddpo");
  EXPECT_EQ(e.runs[1].manifest.normalizer.name, "per_prompt");
  EXPECT_EQ(e.runs[2].manifest.train.epochs, 1);
  EXPECT_TRUE(e.runs[2].manifest.algorithm.name.empty());
}

TEST(Experiment, AGridOverAComponentNameStartsEachComponentFromItsDefaults) {
  // The base gives similarity_3_adaptive an option copy_1 does not have; a changed name drops
  // the old component's options, an unchanged one keeps them, and later --set options apply.
  ExperimentFolder s(R"("set": {"dense_reward": {"name": "similarity_3_adaptive", "options": {"anchor_range": "all"}},
                               "decoder.name": "identity"},
                       "grid": {"dense_reward.name": ["similarity_3_adaptive", "copy_1"]})");
  const auto e = s.load();
  ASSERT_EQ(e.runs.size(), 2u);
  EXPECT_EQ(e.runs[0].manifest.dense_reward.options.at("anchor_range").as_string(), "all");
  EXPECT_EQ(e.runs[1].manifest.dense_reward.name, "copy_1");
  EXPECT_TRUE(e.runs[1].manifest.dense_reward.options.empty());
  EXPECT_EQ(e.runs[1].manifest.decoder.name, "identity") << "a bare-name component accepts <kind>.name";
  auto m = sdpo::Manifest::parse(
      R"({"reward": {"name": "colorfulness", "options": {"x": 1}}})", "m.json",
      {"reward.name=fixture_nan", "reward.options.nan_after=2"});
  EXPECT_EQ(json::serialize(m.reward.options), R"({"nan_after":2})");
}

TEST(Experiment, EveryShippedToyExperimentExpandsAndValidates) {
  // Experiment manifests live beside run manifests in experiments/toy/; they are the files with
  // a "grid" or "runs".
  const fs::path dir = fs::path(SDPO_SOURCE_DIR) / "experiments" / "toy";
  std::vector<fs::path> files;
  for (const auto& f : fs::directory_iterator(dir)) {
    if (f.path().extension() != ".json") continue;
    const json::value v = sdpo::json_parse_file(f.path().string());
    if (v.is_object() && (v.as_object().contains("grid") || v.as_object().contains("runs"))) files.push_back(f.path());
  }
  std::sort(files.begin(), files.end());
  // Every shipped toy experiment (experiments/README.md's table): a wrong folder or a changed test
  // of what is an experiment cannot pass by checking none.
  EXPECT_EQ(files.size(), 15u);
  const auto out = sdpo::test::temp_dir("shipped_experiments");
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    const auto e = sdpo::Experiment::load(f.string(), {}, out + "/" + f.stem().string());
    EXPECT_GE(e.runs.size(), 2u);
    auto o = quiet();
    o.dry_run = true;
    std::string printed;
    EXPECT_NO_THROW(run(e, o, &printed));  // validates every run's components, prints the costs
    EXPECT_NE(printed.find("image-steps left"), std::string::npos) << printed;
  }
}

TEST(Experiment, ManifestErrorsNameTheFileAndPath) {
  auto error_of = [](const std::string& body) -> std::pair<std::string, std::string> {
    ExperimentFolder s(body, "experiment_err");
    try {
      s.load();
    } catch (const sdpo::ManifestError& e) {
      return {e.json_path(), e.what()};
    }
    return {"", "no error"};
  };
  EXPECT_EQ(error_of(R"("grids": {})").first, "grids");
  EXPECT_EQ(error_of(R"("grid": {"train.seed": []})").first, "grid[\"train.seed\"]");
  EXPECT_EQ(error_of(R"("grid": {"train.seed": [1, 1]})").first, "grid[\"train.seed\"]");
  EXPECT_EQ(error_of(R"("grid": {"train..seed": [1]})").first, "grid[\"train..seed\"]");
  EXPECT_EQ(error_of(R"("runs": [{"name": "a b"}])").first, "runs[0].name");
  EXPECT_EQ(error_of(R"("runs": [{"name": "a"}, {"name": "a"}])").first, "runs[1].name");
  EXPECT_EQ(error_of(R"("runs": [{"name": "a", "sett": {}}])").first, "runs[0].sett");
  EXPECT_EQ(error_of(R"("runs": [{"name": "a__b"}])").first, "runs[0].name");
  EXPECT_EQ(error_of(R"("runs": [{"name": "a", "base": 3}])").first, "runs[0].base");
  // A run's manifest error names the experiment, the run and the run manifest's path.
  auto [path, what] = error_of(R"("grid": {"train.epochs": [2, -1]})");
  EXPECT_EQ(path, "train.epochs");
  EXPECT_NE(what.find("experiment.json (run train.epochs=-1; base "), std::string::npos) << what;
  EXPECT_NE(what.find("/base.json): train.epochs: "), std::string::npos) << what;
  ExperimentFolder s("\"grid\": {}", "experiment_err");
  std::ofstream(s.file) << R"({"grid": {"train.seed": [1]}})";
  try {
    s.load();
    FAIL() << "expected an error for the missing base";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_EQ(e.json_path(), "base");
  }
}

TEST(Experiment, RunsEveryRunWritesTheIndexAndSkipsCompleteRunsTheSecondTime) {
  ExperimentFolder s(R"("grid": {"train.seed": [1, 2]})");
  const auto e = s.load();
  const auto rep = run(e, quiet());
  EXPECT_EQ(rep.trained, 2);
  EXPECT_EQ(rep.failed, 0);
  EXPECT_EQ(rep.index_path, s.out + "/index.json");
  const auto entry = index_entry(rep.index_path, "train.seed=2");
  EXPECT_EQ(entry.at("state").as_string(), "complete");
  EXPECT_EQ(entry.at("folder").as_string(), "train.seed=2") << "relative to the index's folder";
  EXPECT_EQ(entry.at("epochs").as_int64(), 2);
  EXPECT_EQ(entry.at("epochs_done").as_int64(), 2);
  EXPECT_EQ(entry.at("resume_from").as_int64(), 2);
  EXPECT_GT(entry.at("wall_seconds").as_double(), 0.0);
  EXPECT_EQ(json::serialize(entry.at("settings")), R"({"train.seed":2})");
  EXPECT_FALSE(entry.contains("error"));
  const json::value index = sdpo::json_parse_file(rep.index_path);
  EXPECT_EQ(index.at("experiment").as_string(), "micro_exp");
  EXPECT_EQ(index.at("runs").as_array().size(), 2u);
  EXPECT_FALSE(fs::exists(rep.index_path + ".tmp"));
  // Each run is its own seed: different curves.
  auto c1 = sdpo::RunFile::open(s.out + "/train.seed=1/run.h5", false).read_curve("train", "reward_last_mean");
  auto c2 = sdpo::RunFile::open(s.out + "/train.seed=2/run.h5", false).read_curve("train", "reward_last_mean");
  EXPECT_NE(c1, c2);

  const auto h5 = s.out + "/train.seed=1/run.h5", ck = s.out + "/train.seed=1/checkpoints/epoch_2/model.safetensors";
  const auto h5_time = fs::last_write_time(h5), ck_time = fs::last_write_time(ck);
  const auto stamp = entry.at("updated_at");
  const auto again = run(s.load(), quiet());
  EXPECT_EQ(again.trained, 0);
  EXPECT_EQ(again.skipped, 2);
  EXPECT_EQ(fs::last_write_time(h5), h5_time) << "a complete run is not touched";
  EXPECT_EQ(fs::last_write_time(ck), ck_time);
  EXPECT_EQ(index_entry(again.index_path, "train.seed=2").at("updated_at"), stamp);
  EXPECT_EQ(index_entry(again.index_path, "train.seed=2").at("state").as_string(), "complete");
}

TEST(Experiment, AnInterruptedRunResumesExactlyThroughTheRunner) {
  ExperimentFolder s(R"("set": {"train.epochs": 4, "train.checkpoint_every": 1}, "grid": {"train.seed": [1, 2]})");
  const auto e = s.load();
  auto o = quiet();
  o.progress = true;
  o.on_epoch = [](const sdpo::ExperimentRun& r, const sdpo::TrainingCounters& c) {
    if (r.name == "train.seed=1" && c.epoch == 2) throw Interrupted();
  };
  testing::internal::CaptureStderr();
  const auto first = run(e, o);
  const std::string progress = testing::internal::GetCapturedStderr();
  EXPECT_EQ(first.failed, 1);
  EXPECT_EQ(first.trained, 1);
  EXPECT_NE(progress.find("run 1/2 train.seed=1 epoch 1/4, ~"), std::string::npos) << progress;
  EXPECT_NE(progress.find("left (all runs ~"), std::string::npos) << progress;
  EXPECT_NE(progress.find("run 2/2 train.seed=2 epoch 4/4"), std::string::npos) << progress;
  auto entry = index_entry(first.index_path, "train.seed=1");
  EXPECT_EQ(entry.at("state").as_string(), "failed");
  EXPECT_NE(std::string(entry.at("error").as_string()).find("interrupted by the test"), std::string::npos);
  EXPECT_EQ(entry.at("epochs_done").as_int64(), 2);
  EXPECT_EQ(entry.at("resume_from").as_int64(), 2);

  const auto second = run(s.load(), quiet());
  EXPECT_EQ(second.trained, 1);
  EXPECT_EQ(second.skipped, 1);
  EXPECT_EQ(second.failed, 0);
  entry = index_entry(second.index_path, "train.seed=1");
  EXPECT_EQ(entry.at("state").as_string(), "complete");
  EXPECT_FALSE(entry.contains("error"));

  // The same run, never stopped.
  const auto straight = sdpo::test::temp_dir("experiment_straight");
  sdpo::Trainer(e.runs[0].manifest, {straight}).run();
  sdpo::test::expect_same_run(straight, e.runs[0].dir, 4);
}

TEST(Experiment, DryRunListsStatesAndCostsAndTouchesNothing) {
  ExperimentFolder s(R"("set": {"train.epochs": 4},
             "runs": [{"name": "sdpo"}, {"name": "ddpo", "set": {"algorithm": "ddpo",
               "normalizer": {"name": "per_prompt", "options": {"buffer_size": 4, "min_count": 2}}}}],
             "grid": {"train.seed": [1, 2]})");
  std::string printed;
  auto o = quiet();
  o.dry_run = true;
  auto rep = run(s.load(), o, &printed);
  EXPECT_FALSE(fs::exists(s.out)) << "a dry run writes nothing";
  ASSERT_EQ(rep.runs.size(), 4u);
  // sdpo: 2 batches x 2 pairs x 2 images x T 4 = 32 image-steps per epoch, 4 epochs; ddpo unpaired: 16.
  EXPECT_NE(printed.find("experiment micro_exp"), std::string::npos) << printed;
  EXPECT_NE(printed.find("pending       0/4               128          ?  sdpo__train.seed=1"), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("pending       0/4                64          ?  ddpo__train.seed=2"), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("cost: 384 image-steps left = epochs left x images per epoch x T"), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("time: no estimate"), std::string::npos) << printed;

  // One run stopped after epoch 1: its own log times it and its seed sibling; ddpo has no basis.
  auto stop = quiet();
  stop.only = "sdpo__train.seed=1";
  stop.on_epoch = [](const sdpo::ExperimentRun&, const sdpo::TrainingCounters& c) {
    if (c.epoch == 1) throw Interrupted();
  };
  EXPECT_EQ(run(s.load(), stop).failed, 1);
  rep = run(s.load(), o, &printed);
  EXPECT_NE(printed.find("failed        1/4                96"), std::string::npos) << printed;
  EXPECT_NE(printed.find("sdpo__train.seed=1  (own log; resumes at epoch 1; failed: "), std::string::npos) << printed;
  EXPECT_NE(printed.find("sdpo__train.seed=2  (like sdpo__train.seed=1)"), std::string::npos) << printed;
  EXPECT_NE(printed.find("cost: 352 image-steps left"), std::string::npos) << printed;
  EXPECT_NE(printed.find("for 2 runs, from the wall_seconds per epoch"), std::string::npos) << printed;
  EXPECT_NE(printed.find("2 runs have no estimate yet"), std::string::npos) << printed;

  // --only narrows the listing.
  o.only = "ddpo*";
  rep = run(s.load(), o, &printed);
  EXPECT_EQ(rep.selected, 2);
  EXPECT_NE(printed.find("4 runs, 2 matching 'ddpo*'"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("sdpo__"), std::string::npos) << printed;
}

TEST(Experiment, AFailingRunIsMarkedFailedWhileTheOthersCompleteAndTheExitStatusIsOne) {
  // The second variant's reward turns NaN at its 4th call (epoch 1: 2 base evaluations, 2 batches).
  ExperimentFolder s(R"("runs": [{"name": "good"},
                      {"name": "nan", "set": {"reward": {"name": "fixture_nan", "options": {"nan_after": 3}}}},
                      {"name": "good_too", "set": {"train.seed": 7}}])");
  auto [rc, out] = cli("experiment " + s.file);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("run 2/3 nan: failed: "), std::string::npos) << out;
  EXPECT_NE(out.find("2 runs trained, 0 already complete, 1 failed (of 3 selected, 3 in all)"), std::string::npos)
      << out;
  const auto index = s.out + "/index.json";
  EXPECT_EQ(index_entry(index, "good").at("state").as_string(), "complete");
  EXPECT_EQ(index_entry(index, "good_too").at("state").as_string(), "complete");
  const auto nan = index_entry(index, "nan");
  EXPECT_EQ(nan.at("state").as_string(), "failed");
  EXPECT_NE(std::string(nan.at("error").as_string()).find("NaN"), std::string::npos) << nan;
  EXPECT_EQ(nan.at("epochs_done").as_int64(), 0);

  // The failure stays on record (and in --dry-run) until the run is retried.
  auto [rc2, listing] = cli("experiment " + s.file + " --dry-run");
  EXPECT_EQ(rc2, 0) << listing;
  EXPECT_NE(listing.find("failed        0/2"), std::string::npos) << listing;
  EXPECT_NE(listing.find("complete      2/2                 0          -  good"), std::string::npos) << listing;
  // --only retries just that run; it fails again the same way.
  auto [rc3, again] = cli("experiment " + s.file + " --only nan");
  EXPECT_EQ(rc3, 1) << again;
  EXPECT_NE(again.find("0 runs trained, 0 already complete, 1 failed (of 1 selected, 3 in all)"), std::string::npos)
      << again;
}

TEST(Experiment, ASecondRunnerOnTheSameFolderIsRefused) {
  ExperimentFolder s("");
  const auto e = s.load();
  auto o = quiet();
  bool refused = false;
  o.on_epoch = [&](const sdpo::ExperimentRun&, const sdpo::TrainingCounters& c) {
    if (c.epoch != 1) return;
    try {
      run(e, quiet());
    } catch (const sdpo::FileError& err) {
      refused = std::string(err.what()).find("another `sdpo experiment` is running in " + s.out) != std::string::npos;
    }
  };
  EXPECT_EQ(run(e, o).trained, 1);
  EXPECT_TRUE(refused);
  EXPECT_EQ(run(e, quiet()).skipped, 1) << "the lock is released at the end";
}

TEST(Experiment, OnlyRunsTheMatchingRunsAndChangedSettingsAreNotSkipped) {
  ExperimentFolder s(R"("grid": {"train.seed": [1, 2, 3]})");
  auto o = quiet();
  o.only = "seed=2";
  const auto rep = run(s.load(), o);
  EXPECT_EQ(rep.selected, 1);
  EXPECT_EQ(rep.trained, 1);
  EXPECT_EQ(index_entry(rep.index_path, "train.seed=2").at("state").as_string(), "complete");
  EXPECT_EQ(index_entry(rep.index_path, "train.seed=1").at("state").as_string(), "pending");
  EXPECT_FALSE(fs::exists(s.out + "/train.seed=1"));

  // The same folder name with other settings (a changed base) is reported, not skipped.
  const auto changed = run(s.load({"train.learning_rate=0.01"}), o);
  EXPECT_EQ(changed.failed, 1);
  const auto entry = index_entry(changed.index_path, "train.seed=2");
  EXPECT_EQ(entry.at("state").as_string(), "failed");
  EXPECT_NE(std::string(entry.at("error").as_string()).find("train.learning_rate"), std::string::npos) << entry;
}

}  // namespace
