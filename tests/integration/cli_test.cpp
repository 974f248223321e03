// The sdpo command line: help, plugin listing, and clear errors for bad input.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sdpo/train/run_file.h"
#include "support/test_support.h"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

sdpo::test::CommandResult run(const std::string& args) {
  return sdpo::test::run_command(std::string(SDPO_CLI) + " " + args);
}

TEST(Cli, HelpListsCommands) {
  auto r = run("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* c :
       {"train MANIFEST", "sample --checkpoint", "pretrain MANIFEST", "plugins", "analyze dense-rewards MANIFEST"}) {
    EXPECT_NE(r.output.find(c), std::string::npos) << c;
  }
}

TEST(Cli, PluginsListsKindsFilesAndOptions) {
  auto r = run("plugins");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const char* s :
       {"[sampler]", "ddim", "sdpo_ddim.so", "eta (number, default 1)", "[algorithm]",
        "clip_range (number, default 0.0001)", "[normalizer]", "per_step_prompt"}) {
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  }
}

TEST(Cli, UnknownCommandAndMissingManifestFailCleanly) {
  auto r = run("frobnicate");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos) << r.output;
  r = run("train /nonexistent/m.json");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("/nonexistent/m.json: cannot open manifest"), std::string::npos) << r.output;
}

TEST(Cli, SampleNamesAMissingCheckpointFolder) {
  auto r = run("sample --checkpoint /nonexistent/run/checkpoints/epoch_3 --prompt x");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/run/checkpoints/epoch_3: --checkpoint: no such folder"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("manifest.json"), std::string::npos) << r.output;
}

TEST(Cli, UnknownComponentListsRegisteredNames) {
  auto dir = sdpo::test::temp_dir("cli");
  auto r =
      run(std::string("train ") + SDPO_SOURCE_DIR + "/experiments/toy/quickstart.json --output " + dir +
          " --set sampler.name=dimm");
  // Checked before any component is built: the model's checkpoint path is not even opened.
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("sampler.name: unknown sampler 'dimm'; registered: ddim"), std::string::npos) << r.output;
}

TEST(Cli, TrainWritesToOutputAndSampleReadsTheCheckpoint) {
  auto dir = sdpo::test::temp_dir("cli_train");
  auto manifest = dir + "/micro.json";
  {
    std::ofstream f(manifest);
    f << R"({
      "model": {"name": "toy_unet", "options": {"image_size": 8, "channels": [8, 8], "cond_dim": 8, "heads": 1, "norm_groups": 4}},
      "text_encoder": {"name": "toy_text", "options": {"dim": 8, "heads": 1}},
      "decoder": "identity", "sampler": "ddim", "prompts": {"name": "shapes", "options": {"image_size": 8}},
      "reward": "colorfulness", "dense_reward": "similarity_3_adaptive", "normalizer": "per_step_prompt",
      "algorithm": "sdpo", "train": {"epochs": 1, "batch_size": 2}, "sample": {"steps": 3},
      "eval": {"steps": [1], "seeds": 1, "max_prompts": 1}, "output": {"progress": false}
    })";
  }
  auto r = run("train " + manifest + " --threads 0 --output " + dir + "/run");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--threads: expected a thread count, a whole number in 1..4096, got '0'"), std::string::npos)
      << r.output;
  r = run("train " + manifest + " --output " + dir + "/run --set train.seed=7 --threads 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(sdpo::RunFile::open(dir + "/run/run.h5").attribute("intra_op_threads"), "2");
  EXPECT_NE(r.output.find("run file:     " + dir + "/run/run.h5"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/run/run.h5"));
  EXPECT_NE(read_file(dir + "/run/manifest.json").find("\"seed\": 7"), std::string::npos) << "--set reaches the run";
  r =
      run("sample --checkpoint " + dir +
          "/run/checkpoints/epoch_1 --prompt \"a red circle\" --prompt \"two blue squares\" "
          "--steps 1,3 --out " +
          dir + "/grid.png");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/grid.png"));
  r = run("sample --checkpoint " + dir + "/run/checkpoints/epoch_9 --prompt x --out " + dir + "/g.png");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("epoch_9: --checkpoint: no such folder"), std::string::npos) << r.output;
}

TEST(Cli, AnalyzeDenseRewardsPrintsAndWritesTheTable) {
  auto dir = sdpo::test::temp_dir("cli_analyze");
  auto manifest = dir + "/micro.json";
  {
    std::ofstream f(manifest);
    f << sdpo::test::micro_manifest(R"({"name": "colorfulness"})", R"("per_step_prompt")", R"("sdpo")");
  }
  auto r = run("analyze dense-rewards " + manifest + " --output " + dir + "/out --trajectories 3 --set sample.steps=5");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("3 trajectories of T = 5 steps"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("similarity_3_adaptive"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(dir + "/out/dense_reward_analysis.csv"), std::string::npos) << r.output;
  EXPECT_NE(read_file(dir + "/out/dense_reward_analysis.csv").find("\nsimilarity_3_adaptive,3,"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir + "/out/dense_reward_analysis.h5"));

  r = run("analyze frobnicate " + manifest);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("known: dense-rewards"), std::string::npos) << r.output;
  r = run("analyze dense-rewards " + manifest + " --trajectories -1");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--trajectories must be >= 0"), std::string::npos) << r.output;
}

}  // namespace
