// experiments/plot.py on a micro experiment: the runner writes run files and index.json, the
// script writes a curves PNG and a Markdown table from them without error.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "sdpo/commands/experiment.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

bool have_plot_python() {
  return std::system("/usr/bin/python3 -c 'import h5py, matplotlib, numpy' >/dev/null 2>&1") == 0;
}

TEST(PlotScript, WritesTheFigureAndTheTableOfAMicroExperiment) {
  if (!have_plot_python()) GTEST_SKIP() << "/usr/bin/python3 with h5py and matplotlib is missing (scripts/setup.sh)";
  const std::string dir = sdpo::test::temp_dir("plot");
  boost::json::value base = boost::json::parse(sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt"})", R"({"name": "sdpo"})"));
  boost::json::object experiment{
      {"name", "micro_plot"},
      {"base", base},
      {"set", boost::json::object{{"eval.every", 1}}},
      {"runs",
       boost::json::array{
           boost::json::object{{"name", "sdpo"}},
           boost::json::object{{"name", "sdpo_lr"}, {"set", {{"train.learning_rate", 0.01}}}}}},
      {"grid", boost::json::object{{"train.seed", boost::json::array{1, 2}}}},
      {"output", boost::json::object{{"dir", dir + "/runs"}}},
      {"plots", boost::json::array{
                    boost::json::object{
                        {"kind", "curves"},
                        {"file", "curves.png"},
                        {"group", "variant"},
                        {"x", "samples"},
                        {"panels",
                         boost::json::array{
                             boost::json::object{{"y", "eval/steps_1/reward_mean"}},
                             boost::json::object{{"y", "train/reward_last_mean"}}}}},
                    boost::json::object{
                        {"kind", "table"},
                        {"file", "table.md"},
                        {"group", "variant"},
                        {"steps", boost::json::array{1, 2}},
                        {"base", true}},
                    boost::json::object{
                        {"kind", "sweep"},
                        {"file", "sweep.png"},
                        {"x", "train.learning_rate"},
                        {"group", "variant"},
                        {"steps", boost::json::array{1, 2}},
                        {"base", true}}}}};
  const std::string file = dir + "/micro_plot.json";
  std::ofstream(file) << boost::json::serialize(experiment);

  sdpo::ExperimentOptions options;
  options.progress = false;
  std::ostringstream out;
  auto report = sdpo::run_experiment(sdpo::Experiment::load(file), options, out);
  ASSERT_EQ(report.failed, 0) << out.str();
  ASSERT_EQ(report.trained, 4);

  const std::string cmd = "/usr/bin/python3 " + std::string(SDPO_SOURCE_DIR) + "/experiments/plot.py " + file +
                          " --out " + dir + "/figures --results " + dir + "/results/micro.csv > " + dir +
                          "/plot.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << std::ifstream(dir + "/plot.log").rdbuf();
  // The results CSV: a header and one row per run, its settings read back from the run files.
  std::ifstream csv(dir + "/results/micro.csv");
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0].rfind("run,variant,seed,reward,learning_rate,epochs,samples,steps_1_mean,steps_1_std", 0), 0u)
      << lines[0];
  int lr_rows = 0;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    EXPECT_NE(lines[i].find(",colorfulness,"), std::string::npos) << lines[i];
    if (lines[i].rfind("sdpo_lr", 0) == 0) {
      ++lr_rows;
      EXPECT_NE(lines[i].find(",0.01,"), std::string::npos) << lines[i];
    }
  }
  EXPECT_EQ(lr_rows, 2);
  EXPECT_GT(fs::file_size(dir + "/figures/curves.png"), 1000u);
  EXPECT_GT(fs::file_size(dir + "/figures/sweep.png"), 1000u);
  std::ifstream table(dir + "/figures/table.md");
  std::string text((std::istreambuf_iterator<char>(table)), std::istreambuf_iterator<char>());
  for (const char* row : {"| base |", "| sdpo |", "| sdpo_lr |", "| 1 step | 2 steps |"}) {
    EXPECT_NE(text.find(row), std::string::npos) << row << " not in:\n" << text;
  }

  // --all over a folder: this experiment is drawn again with the same results CSV; a run manifest
  // beside it is not an experiment (passed over), an experiment without runs is listed as skipped.
  fs::create_directories(dir + "/manifests");
  fs::copy_file(file, dir + "/manifests/micro_plot.json");
  boost::json::object unrun = experiment;
  unrun["output"] = boost::json::object{{"dir", dir + "/never_ran"}};
  std::ofstream(dir + "/manifests/unrun.json") << boost::json::serialize(unrun);
  std::ofstream(dir + "/manifests/run.json") << boost::json::serialize(base);
  const std::string all = "/usr/bin/python3 " + std::string(SDPO_SOURCE_DIR) + "/experiments/plot.py --all " + dir +
                          "/manifests --results-dir " + dir + "/all > " + dir + "/all.log 2>&1";
  ASSERT_EQ(std::system(all.c_str()), 0) << std::ifstream(dir + "/all.log").rdbuf();
  std::ifstream all_log(dir + "/all.log");
  const std::string all_text((std::istreambuf_iterator<char>(all_log)), std::istreambuf_iterator<char>());
  EXPECT_NE(all_text.find("unrun.json: skipped (no " + dir + "/never_ran/index.json)"), std::string::npos) << all_text;
  EXPECT_NE(all_text.find("1 experiments drawn, 1 skipped"), std::string::npos) << all_text;
  std::ifstream again(dir + "/all/micro_plot.csv"), first(dir + "/results/micro.csv");
  EXPECT_EQ(
      std::string((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>()),
      std::string((std::istreambuf_iterator<char>(first)), std::istreambuf_iterator<char>()));

  // A plot of a curve no run logged is refused with the file and the curve named.
  experiment["plots"] = boost::json::array{boost::json::object{
      {"kind", "curves"},
      {"file", "bad.png"},
      {"panels", boost::json::array{boost::json::object{{"y", "train/nope"}}}}}};
  std::ofstream(file) << boost::json::serialize(experiment);
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::ifstream log(dir + "/plot.log");
  std::string err((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("no curve 'train/nope'"), std::string::npos) << err;
}

}  // namespace

namespace {

// experiments/select_rate.py on hand-made CSVs: the best rate, the 1% tie-break towards the
// smaller rate, non-finite runs skipped, and the collapse check (soft toy GenEval below 90% of
// the base's) removing the run that would otherwise win.
TEST(SelectRateScript, AppliesTheProtocolRuleAndTheCollapseCheck) {
  if (std::system("/usr/bin/python3 -c 'import csv' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 is missing";
  const std::string dir = sdpo::test::temp_dir("select_rate");
  std::ofstream(dir + "/sweep.csv") << "run,variant,learning_rate,steps_8_mean\n"
                                       "a1,a,1e-05,10.0\n"
                                       "a2,a,3e-05,10.05\n"  // within 1% of the best: a picks 1e-5
                                       "a3,a,1e-04,9.0\n"
                                       "b1,b,1e-05,5.0\n"
                                       "b2,b,3e-05,8.0\n"
                                       "b3,b,1e-04,nan\n"    // not finite: skipped
                                       "b4,b,3e-04,20.0\n";  // the best, but collapsed (below)
  std::ofstream(dir + "/guard.csv") << "run,variant,checkpoint,steps,soft\n"
                                       "base,base,base,8,0.80\n"
                                       "a1,a,epoch_2,8,0.80\na2,a,epoch_2,8,0.79\na3,a,epoch_2,8,0.80\n"
                                       "b1,b,epoch_2,8,0.80\nb2,b,epoch_2,8,0.72\n"  // 0.72 = 0.9 x 0.80: kept
                                       "b3,b,epoch_2,8,0.80\nb4,b,epoch_2,8,0.10\n";
  const std::string script = "/usr/bin/python3 " + std::string(SDPO_SOURCE_DIR) + "/experiments/select_rate.py ";
  const auto last_line = [&](const std::string& args) {
    const std::string cmd = script + args + " > " + dir + "/out.txt 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << std::ifstream(dir + "/out.txt").rdbuf();
    std::ifstream in(dir + "/out.txt");
    std::string line, last;
    while (std::getline(in, line)) last = line;
    return last;
  };
  EXPECT_EQ(last_line(dir + "/sweep.csv"), R"({"a": 1e-05, "b": 0.0003})");
  EXPECT_EQ(last_line(dir + "/sweep.csv --guard " + dir + "/guard.csv"), R"({"a": 1e-05, "b": 3e-05})");
}

}  // namespace
