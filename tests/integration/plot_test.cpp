// experiments/plot.py on a micro experiment: the runner writes run files and index.json, the
// script writes a curves PNG and a Markdown table from them without error.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>
#include <sstream>

#include "sdpo/experiment.h"
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
      {"runs", boost::json::array{boost::json::object{{"name", "sdpo"}},
                                  boost::json::object{{"name", "sdpo_lr"}, {"set", {{"train.learning_rate", 0.01}}}}}},
      {"grid", boost::json::object{{"train.seed", boost::json::array{1, 2}}}},
      {"output", boost::json::object{{"dir", dir + "/runs"}}},
      {"plots", boost::json::array{
          boost::json::object{{"kind", "curves"}, {"file", "curves.png"}, {"group", "variant"}, {"x", "samples"},
                              {"panels", boost::json::array{boost::json::object{{"y", "eval/steps_1/reward_mean"}},
                                                            boost::json::object{{"y", "train/reward_last_mean"}}}}},
          boost::json::object{{"kind", "table"}, {"file", "table.md"}, {"group", "variant"},
                              {"steps", boost::json::array{1, 2}}, {"base", true}},
          boost::json::object{{"kind", "sweep"}, {"file", "sweep.png"}, {"x", "train.learning_rate"},
                              {"group", "variant"}, {"steps", boost::json::array{1, 2}}, {"base", true}}}}};
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

  // A plot of a curve no run logged is refused with the file and the curve named.
  experiment["plots"] = boost::json::array{boost::json::object{
      {"kind", "curves"}, {"file", "bad.png"}, {"panels", boost::json::array{boost::json::object{{"y", "train/nope"}}}}}};
  std::ofstream(file) << boost::json::serialize(experiment);
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::ifstream log(dir + "/plot.log");
  std::string err((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("no curve 'train/nope'"), std::string::npos) << err;
}

}  // namespace
