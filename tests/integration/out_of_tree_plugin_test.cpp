// The plugin author's path (docs/writing-a-plugin.md), end to end: install this build into a
// temporary prefix (`cmake --install`), build docs/examples/brightness_reward out of tree against
// it (`find_package(sdpo)`), list it with the installed `sdpo plugins` through SDPO_PLUGIN_PATH,
// and train one micro epoch with it through the installed CLI. It compiles a plugin, so it takes
// tens of seconds; select it with `ctest -R OutOfTreePlugin`.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "sdpo/train/run_file.h"
#include "support/test_support.h"

namespace {
namespace fs = std::filesystem;

struct Result {
  int status;
  std::string output;
};

// Single-quoted for sh.
std::string q(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

Result sh(const std::string& command) {
  const std::string cmd = "(" + command + ") 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  const int status = pclose(pipe.release());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(OutOfTreePlugin, InstallBuildListAndTrain) {
  // The CMake that configured this build: it reads the build's install scripts and, with the same
  // generator and compiler, builds the example the way a plugin author would.
  const std::string cmake = SDPO_CMAKE_COMMAND;
  if (access(cmake.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "the CMake that configured this build (" << cmake << ") is not available to run";
  }
  // Canonical, as the plugin loader prints library paths.
  const std::string tmp = fs::weakly_canonical(sdpo::test::temp_dir("out_of_tree_plugin")).string();
  const std::string prefix = tmp + "/prefix";
  const std::string plugin_build = tmp + "/brightness_build";

  // 1. cmake --install <build> --prefix <prefix>
  auto r = sh(q(cmake) + " --install " + q(SDPO_BUILD_DIR) + " --prefix " + q(prefix));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* f :
       {"bin/sdpo", "lib/libsdpo_sdk.so", "lib/libsdpo_host.so", "include/sdpo/core/plugin.h",
        "include/sdpo/core/reward.h", "include/sdpo/math/ddim.h", "lib/cmake/sdpo/sdpoConfig.cmake",
        "lib/cmake/sdpo/sdpoConfigVersion.cmake", "lib/cmake/sdpo/sdpoTargets.cmake", "lib/cmake/sdpo/SdpoPlugin.cmake",
        "lib/sdpo/plugins/sdpo_ddim.so", "lib/sdpo/plugins/sdpo_colorfulness.so"}) {
    EXPECT_TRUE(fs::exists(prefix + "/" + f)) << f;
  }
  // Only the SDK's headers are installed: a plugin cannot include the host's.
  for (const char* d : {"include/sdpo/train", "include/sdpo/distributed", "include/sdpo/commands"}) {
    EXPECT_FALSE(fs::exists(prefix + "/" + d)) << d;
  }

  // 2. The example, configured and built against the prefix only.
  std::string configure = q(cmake) + " -S " + q(std::string(SDPO_SOURCE_DIR) + "/docs/examples/brightness_reward") +
                          " -B " + q(plugin_build) + " -G " + q(SDPO_CMAKE_GENERATOR) +
                          " -DCMAKE_CXX_COMPILER=" + q(SDPO_CXX_COMPILER) + " -DCMAKE_PREFIX_PATH=" + q(prefix);
  if (!std::string(SDPO_CMAKE_MAKE_PROGRAM).empty()) configure += " -DCMAKE_MAKE_PROGRAM=" + q(SDPO_CMAKE_MAKE_PROGRAM);
  if (!std::string(SDPO_BUILD_TYPE).empty()) configure += " -DCMAKE_BUILD_TYPE=" + q(SDPO_BUILD_TYPE);
  r = sh(configure);
  ASSERT_EQ(r.status, 0) << configure << "\n" << r.output;
  EXPECT_TRUE(contains(read_text(plugin_build + "/CMakeCache.txt"), "sdpo_DIR:PATH=" + prefix + "/lib/cmake/sdpo"))
      << "find_package(sdpo) found another installation";
  r = sh(q(cmake) + " --build " + q(plugin_build));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string plugin_file = plugin_build + "/sdpo_brightness.so";
  ASSERT_TRUE(fs::exists(plugin_file)) << r.output;

  // 3. The installed CLI (no LD_LIBRARY_PATH: its run path finds libsdpo_host.so and libsdpo_sdk.so) lists its own
  // installed plugins and the example through SDPO_PLUGIN_PATH.
  const std::string sdpo = "env -u LD_LIBRARY_PATH SDPO_PLUGIN_PATH=" + q(plugin_build) + " " + q(prefix + "/bin/sdpo");
  r = sh(sdpo + " plugins");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "\n[reward]\n")) << r.output;
  EXPECT_TRUE(contains(r.output, "  brightness  -  mean luminance of the image")) << r.output;
  EXPECT_TRUE(contains(r.output, "file: " + plugin_file + "\n")) << r.output;
  EXPECT_TRUE(contains(r.output, "gamma (number, default 1)")) << r.output;
  EXPECT_TRUE(contains(r.output, "file: " + prefix + "/lib/sdpo/plugins/sdpo_ddim.so\n")) << r.output;
  EXPECT_FALSE(contains(r.output, std::string(SDPO_TEST_PLUGIN_DIR) + "/")) << "the build's plugins were loaded\n"
                                                                            << r.output;

  // 4. A 1-epoch micro run with the reward chosen by --set; its values are mean luminances.
  const std::string manifest = tmp + "/micro.json";
  {
    std::ofstream f(manifest);
    f << sdpo::test::micro_manifest(R"({"name": "colorfulness"})", R"("per_step_prompt")", R"("sdpo")");
  }
  r =
      sh("cd " + q(tmp) + " && " + sdpo + " train " + q(manifest) + " --output " + q(tmp + "/run") +
         " --set reward.name=brightness --set reward.options.gamma=2 --set train.epochs=1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "run file:     " + tmp + "/run/run.h5")) << r.output;
  ASSERT_TRUE(fs::exists(tmp + "/run/run.h5"));
  EXPECT_TRUE(contains(read_text(tmp + "/run/manifest.json"), "\"brightness\""));
  {
    auto file = sdpo::RunFile::open(tmp + "/run/run.h5");
    ASSERT_EQ(file.rows("train"), 1);
    for (const char* metric : {"reward_first_mean", "reward_last_mean"}) {
      for (double v : file.read_curve("train", metric)) {
        EXPECT_TRUE(v >= 0.0 && v <= 1.0) << metric << " = " << v;
      }
    }
    for (double v : file.read_curve("eval/steps_1", "reward_mean")) EXPECT_TRUE(v >= 0.0 && v <= 1.0) << v;
  }

  // 5. The option's error path: out of range, named with the manifest file and JSON path.
  r =
      sh(sdpo + " train " + q(manifest) + " --output " + q(tmp + "/bad") +
         " --set reward.name=brightness --set reward.options.gamma=0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(
      r.output, manifest + ": reward.options.gamma: reward 'brightness': expected a number in [0.1, 10], got 0"))
      << r.output;

  if (!HasFailure()) fs::remove_all(tmp);
}

}  // namespace
