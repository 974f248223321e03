// The source tree's layout rules (README.md "Layout", models/README.md), checked on the files:
// plugins are grouped by kind, and no plugin, algorithm, reward or model folder includes another
// folder's files; what two of them share is a library under models/.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = SDPO_SOURCE_DIR;

bool is_source(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".cpp" || e == ".h" || e == ".inc";
}

// Every `#include "..."` of a file, with its line number.
std::vector<std::pair<int, std::string>> quoted_includes(const fs::path& file) {
  static const std::regex kInclude(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::ifstream in(file);
  std::vector<std::pair<int, std::string>> out;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    std::smatch m;
    if (std::regex_search(line, m, kInclude)) out.emplace_back(n, m[1].str());
  }
  return out;
}

// The include is a framework or model-layer header, or a file of the including folder itself
// (resolved next to the including file, or in the folder's own src/ for a model library).
bool allowed(const fs::path& file, const std::string& inc, const fs::path& folder) {
  if (inc.rfind("sdpo/", 0) == 0) return true;
  for (const fs::path& base : {file.parent_path(), folder / "src"}) {
    const fs::path target = (base / inc).lexically_normal();
    const std::string rel = target.lexically_relative(folder).string();
    if (fs::exists(target) && !rel.empty() && rel.rfind("..", 0) != 0) return true;
  }
  return false;
}

// The offending lines ("file:line: include") of every source file under `folder`.
std::vector<std::string> foreign_includes(const fs::path& folder) {
  std::vector<std::string> bad;
  for (const auto& e : fs::recursive_directory_iterator(folder)) {
    if (!e.is_regular_file() || !is_source(e.path())) continue;
    for (const auto& [line, inc] : quoted_includes(e.path())) {
      if (!allowed(e.path(), inc, folder)) {
        bad.push_back(e.path().lexically_relative(kRoot).string() + ":" + std::to_string(line) + ": \"" + inc + "\"");
      }
    }
  }
  return bad;
}

std::vector<fs::path> subfolders(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_directory()) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The component folders: plugins/<kind>/<name>, algorithms/<name>, rewards/<name>, models/<name>.
std::vector<fs::path> component_folders() {
  std::vector<fs::path> out;
  for (const fs::path& kind : subfolders(kRoot / "plugins")) {
    for (const fs::path& p : subfolders(kind)) out.push_back(p);
  }
  for (const char* top : {"algorithms", "rewards", "models"}) {
    for (const fs::path& p : subfolders(kRoot / top)) out.push_back(p);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "  " + x + "\n";
  return s;
}

}  // namespace

TEST(Layout, PluginsAreGroupedByKind) {
  const std::set<std::string> kinds{"models",  "text_encoders", "decoders",   "samplers",
                                    "prompts", "dense_rewards", "normalizers"};
  std::set<std::string> found;
  for (const fs::path& kind : subfolders(kRoot / "plugins")) {
    const std::string name = kind.filename().string();
    EXPECT_TRUE(kinds.count(name)) << "plugins/" << name << " is not a component kind";
    found.insert(name);
    for (const fs::path& p : subfolders(kind)) {
      EXPECT_TRUE(fs::exists(p / "CMakeLists.txt")) << p << " has no CMakeLists.txt";
    }
  }
  EXPECT_EQ(found, kinds);
  for (const fs::path& f : fs::directory_iterator(kRoot / "plugins")) {
    EXPECT_TRUE(fs::is_directory(f)) << f << ": plugins/ holds only kind folders";
  }
}

TEST(Layout, NoFolderIncludesAnothersFiles) {
  std::vector<std::string> bad;
  const auto folders = component_folders();
  EXPECT_GE(folders.size(), 40u);  // 22 plugins, 4 algorithms, 9 rewards, 7 model libraries
  for (const fs::path& f : folders) {
    auto b = foreign_includes(f);
    bad.insert(bad.end(), b.begin(), b.end());
  }
  EXPECT_TRUE(bad.empty()) << bad.size() << " includes reach outside their folder:\n" << join(bad);
}

TEST(Layout, ModelLibrariesAreIncludedByTheirName) {
  // models/<name>/include holds exactly sdpo/models/<name>/, so each header's path names its library.
  for (const fs::path& lib : subfolders(kRoot / "models")) {
    const fs::path inc = lib / "include";
    ASSERT_TRUE(fs::is_directory(inc)) << lib << " has no include/";
    for (const auto& e : fs::recursive_directory_iterator(inc)) {
      if (!e.is_regular_file()) continue;
      const std::string rel = e.path().lexically_relative(inc).string();
      const std::string want = "sdpo/models/" + lib.filename().string() + "/";
      EXPECT_EQ(rel.rfind(want, 0), 0u) << e.path() << ": expected under include/" << want;
    }
  }
}

TEST(Layout, TheCheckSeesAForeignInclude) {
  // The rule itself on a folder written here: a sibling, an sdpo/ header and a reach into another
  // folder; only the last is reported.
  const fs::path dir = fs::temp_directory_path() / "sdpo_layout_test";
  fs::remove_all(dir);
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b");
  std::ofstream(dir / "b" / "shared.h") << "\n";
  std::ofstream(dir / "a" / "own.h") << "\n";
  std::ofstream(dir / "a" / "x.cpp")
      << "#include \"own.h\"\n#include \"sdpo/core/error.h\"\n#include \"../b/shared.h\"\n";
  const auto bad = foreign_includes(dir / "a");
  ASSERT_EQ(bad.size(), 1u) << join(bad);
  EXPECT_NE(bad[0].find(":3: \"../b/shared.h\""), std::string::npos) << bad[0];
  fs::remove_all(dir);
}

namespace {

// The framework's folders in layer order (framework/CMakeLists.txt): each may include the headers
// of its own folder and of the folders before it. core and math are the SDK that plugins link.
const std::vector<std::string> kFrameworkLayers{"core", "math", "distributed", "train", "commands"};
const std::set<std::string> kSdkLayers{"core", "math"};

// The framework folder an include names ("sdpo/train/trainer.h" -> "train"), or "" if none.
std::string framework_layer(const std::string& inc) {
  for (const std::string& layer : kFrameworkLayers) {
    if (inc.rfind("sdpo/" + layer + "/", 0) == 0) return layer;
  }
  return "";
}

}  // namespace

TEST(Layout, FrameworkFoldersAreIncludedByTheirName) {
  // framework/ holds exactly the layer folders, and framework/<layer>/include exactly sdpo/<layer>/.
  std::set<std::string> found;
  for (const fs::path& dir : subfolders(kRoot / "framework")) found.insert(dir.filename().string());
  EXPECT_EQ(found, std::set<std::string>(kFrameworkLayers.begin(), kFrameworkLayers.end()));
  for (const std::string& layer : kFrameworkLayers) {
    const fs::path inc = kRoot / "framework" / layer / "include";
    ASSERT_TRUE(fs::is_directory(inc)) << inc;
    for (const auto& e : fs::recursive_directory_iterator(inc)) {
      if (!e.is_regular_file()) continue;
      const std::string rel = e.path().lexically_relative(inc).string();
      EXPECT_EQ(rel.rfind("sdpo/" + layer + "/", 0), 0u) << e.path() << ": expected under include/sdpo/" << layer;
    }
  }
}

TEST(Layout, FrameworkLayersIncludeOnlyLowerLayers) {
  std::vector<std::string> bad;
  for (size_t i = 0; i < kFrameworkLayers.size(); ++i) {
    const std::set<std::string> allowed_layers(kFrameworkLayers.begin(), kFrameworkLayers.begin() + i + 1);
    for (const auto& e : fs::recursive_directory_iterator(kRoot / "framework" / kFrameworkLayers[i])) {
      if (!e.is_regular_file() || !is_source(e.path())) continue;
      for (const auto& [line, inc] : quoted_includes(e.path())) {
        const std::string layer = framework_layer(inc);
        if (!layer.empty() && !allowed_layers.count(layer)) {
          bad.push_back(e.path().lexically_relative(kRoot).string() + ":" + std::to_string(line) + ": \"" + inc + "\"");
        }
      }
    }
  }
  EXPECT_TRUE(bad.empty()) << bad.size() << " includes reach a later layer:\n" << join(bad);
}

TEST(Layout, ComponentsIncludeOnlyTheSdk) {
  // Plugins, algorithms, rewards and model libraries see the SDK alone (the build enforces it
  // through the include roots; this names the line). A reward's standalone tool, an executable
  // linked with the host (rewards/toy_geneval/tool.cpp), is the exception.
  std::vector<std::string> bad;
  for (const fs::path& folder : component_folders()) {
    for (const auto& e : fs::recursive_directory_iterator(folder)) {
      if (!e.is_regular_file() || !is_source(e.path()) || e.path().filename() == "tool.cpp") continue;
      for (const auto& [line, inc] : quoted_includes(e.path())) {
        const std::string layer = framework_layer(inc);
        if (!layer.empty() && !kSdkLayers.count(layer)) {
          bad.push_back(e.path().lexically_relative(kRoot).string() + ":" + std::to_string(line) + ": \"" + inc + "\"");
        }
      }
    }
  }
  EXPECT_TRUE(bad.empty()) << bad.size() << " includes of host headers:\n" << join(bad);
}
