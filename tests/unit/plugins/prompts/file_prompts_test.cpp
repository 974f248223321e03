// The `file` prompt source: prompt sets from text files, and the error an empty evaluation set
// gives.

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <fstream>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::PromptSource> make_file_prompts(const std::string& options_json) {
  return sdpo::Registry::global().create<sdpo::PromptSource>(sdpo::ComponentConfig{
      "prompts", "file", boost::json::parse(options_json).as_object(), "<test>", "prompts.options"});
}

TEST(FilePrompts, ReadsOnePromptPerLineSkippingBlanksAndComments) {
  const std::string dir = sdpo::test::temp_dir("file_prompts");
  std::ofstream(dir + "/train.txt") << "# training prompts\n  a red circle \n\nTwo blue squares\r\n";
  std::ofstream(dir + "/unseen.txt") << "a green triangle\n";
  auto p = make_file_prompts(R"({"train": ")" + dir + R"(/train.txt", "unseen": ")" + dir + R"(/unseen.txt"})");
  EXPECT_EQ(p->train_prompts(), (std::vector<std::string>{"a red circle", "Two blue squares"}));
  EXPECT_EQ(p->eval_prompts(), p->train_prompts());
  EXPECT_EQ(p->unseen_prompts(), (std::vector<std::string>{"a green triangle"}));

  EXPECT_THROW(make_file_prompts("{}"), sdpo::ManifestError);
  EXPECT_THROW(make_file_prompts(R"({"train": ")" + dir + R"(/missing.txt"})"), sdpo::FileError);
  std::ofstream(dir + "/empty.txt") << "# nothing\n\n";
  EXPECT_THROW(make_file_prompts(R"({"train": ")" + dir + R"(/empty.txt"})"), sdpo::FileError);
}

TEST(FilePrompts, EvaluatingAnEmptySetNamesTheManifestPath) {
  const std::string dir = sdpo::test::temp_dir("file_prompts_eval");
  std::ofstream(dir + "/train.txt") << "a red circle\na blue square\n";
  const std::string text =
      sdpo::test::micro_manifest(R"({"name": "colorfulness"})", R"({"name": "global"})", R"({"name": "sdpo"})");
  auto m = sdpo::Manifest::parse(
      text, "micro.json",
      {"prompts.name=file", "prompts.options={\"train\": \"" + dir + "/train.txt\"}", "eval.prompt_set=unseen"});
  try {
    sdpo::Trainer trainer(m, {sdpo::test::temp_dir("file_prompts_run")});
    trainer.run();
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("eval.prompt_set"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no \"unseen\" prompts"), std::string::npos) << e.what();
  }
}

}  // namespace
