// The `sdpo_toy_geneval` tool (rewards/toy_geneval/tool.cpp) run as a program on a micro model:
// its table, its CSV and its exit status for bad input.
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "support/test_support.h"

namespace {

using Result = sdpo::test::CommandResult;

Result run(const std::string& args) { return sdpo::test::run_command(std::string(SDPO_TOY_GENEVAL_CLI) + " " + args); }

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(line);
  return lines;
}

// The untrained 8x8 micro model (test_support.h): its images are noise, which the table must
// still report (as zeros), and it samples the 12 unseen prompts in well under a second.
std::string write_micro_manifest(const std::string& dir) {
  const std::string path = dir + "/micro.json";
  std::ofstream(path) << sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt"})", R"({"name": "sdpo"})");
  return path;
}

TEST(ToyGenevalTool, PrintsTheTableAndWritesOneCsvRowPerImage) {
  const std::string dir = sdpo::test::temp_dir("toy_geneval_tool");
  const std::string manifest = write_micro_manifest(dir);
  const Result r = run(manifest + " --steps 1 --seeds 1 --prompts unseen --threads 1 --csv " + dir + "/images.csv");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(
      r.output.find("| steps | single_object | counting | position | two_object | overall | soft |\n"
                    "|---|---|---|---|---|---|---|\n| 1 | "),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("prompts unseen (12) x 1 seeds"), std::string::npos) << r.output;
  const std::vector<std::string> csv = read_lines(dir + "/images.csv");
  ASSERT_EQ(csv.size(), 13u) << "header + one row per unseen prompt";
  EXPECT_EQ(csv[0], "steps,prompt,category,seed,strict,soft,failed");
  // Seeds as the trainer's evaluation: eval.seed (default 1234) + i for the first seed.
  EXPECT_EQ(csv[1].rfind("1,a yellow triangle,single_object,1234,", 0), 0u) << csv[1];
  EXPECT_EQ(csv[7].rfind("1,a red circle and a blue square,two_object,1240,", 0), 0u) << csv[7];
}

TEST(ToyGenevalTool, BadInputExitsTwoAndRuntimeErrorsOne) {
  const std::string dir = sdpo::test::temp_dir("toy_geneval_tool_errors");
  const std::string manifest = write_micro_manifest(dir);
  const auto expect = [&](const std::string& args, int status, const std::string& message) {
    const Result r = run(args);
    EXPECT_EQ(r.status, status) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  };
  // Each run pays the process start (~0.4 s, libtorch), so one case per kind of check.
  expect("", 2, "usage: sdpo_toy_geneval MANIFEST");
  expect(manifest + " --steps 1,x", 2, "--steps: expected comma-separated positive integers");
  expect(manifest + " --prompts everything --threads 1", 2, "--prompts: expected geneval, eval, unseen or train");
  expect(manifest + " --threads 0", 2, "--threads: expected a thread count");
  // The sampler is asked before sampling: an lcm schedule of 4 origin steps takes at most 4.
  expect(
      manifest + " --steps 1,8 --set 'sampler={\"name\": \"lcm\", \"options\": {\"original_inference_steps\": 4}}'", 2,
      "--steps: sampler 'lcm' of " + manifest + " cannot take 8 steps");
  expect(
      manifest + " --checkpoint " + dir + "/no_such_checkpoint", 1, "no_such_checkpoint: checkpoint folder not found");
}

}  // namespace
