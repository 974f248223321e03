// The sdpo command line: help, plugin listing, and clear errors for bad input.
#include <array>
#include <cstdio>
#include <memory>
#include <sys/wait.h>

#include "support/test_support.h"

namespace {

struct Result {
  int status;
  std::string output;
};

Result run(const std::string& args) {
  std::string cmd = std::string(SDPO_CLI) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  int status = pclose(pipe.release());
  return {WEXITSTATUS(status), out};
}

TEST(Cli, HelpListsCommands) {
  auto r = run("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* c : {"train MANIFEST", "sample --checkpoint", "pretrain MANIFEST", "plugins"}) {
    EXPECT_NE(r.output.find(c), std::string::npos) << c;
  }
}

TEST(Cli, PluginsListsKindsFilesAndOptions) {
  auto r = run("plugins");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const char* s : {"[sampler]", "ddim", "sdpo_ddim.so", "eta (number, default 1)", "[algorithm]",
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

TEST(Cli, UnknownComponentListsRegisteredNames) {
  auto dir = sdpo::test::temp_dir("cli");
  auto r = run(std::string("train ") + SDPO_SOURCE_DIR + "/experiments/toy/quickstart.json --output " + dir +
               " --set sampler.name=dimm");
  // Checked before any component is built: the model's checkpoint path is not even opened.
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("sampler.name: unknown sampler 'dimm'; registered: ddim"), std::string::npos) << r.output;
}

}  // namespace
