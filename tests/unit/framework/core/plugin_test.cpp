// The plugin loader's refusals: each names the file and what is wrong, before any plugin code runs.
#include "sdpo/core/plugin.h"

#include <filesystem>
#include <fstream>

#include "sdpo/core/error.h"
#include "support/test_support.h"

namespace {

std::string fixture(const std::string& name) { return std::string(SDPO_TEST_FIXTURE_DIR) + "/" + name + ".so"; }

std::string load_error(const std::string& path) {
  sdpo::PluginLoader loader(sdpo::Registry::global());
  try {
    loader.load(path);
  } catch (const sdpo::PluginLoadError& e) {
    return e.what();
  }
  return "";
}

TEST(PluginLoader, MissingFile) {
  auto e = load_error("/nonexistent/sdpo_nothing.so");
  EXPECT_NE(e.find("/nonexistent/sdpo_nothing.so"), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
}

TEST(PluginLoader, NotAPlugin) {
  auto e = load_error(fixture("fixture_no_entry"));
  EXPECT_NE(e.find("fixture_no_entry.so"), std::string::npos) << e;
  EXPECT_NE(e.find("not an sdpo plugin"), std::string::npos) << e;
}

TEST(PluginLoader, AbiMismatchRejectedBeforeEntryCall) {
  auto e = load_error(fixture("fixture_wrong_abi"));
  EXPECT_NE(e.find("ABI version " + std::to_string(sdpo::kPluginAbiVersion + 98)), std::string::npos) << e;
  EXPECT_NE(e.find("host has ABI version " + std::to_string(sdpo::kPluginAbiVersion)), std::string::npos) << e;
  // Had the entry run, its exception text would be in the message.
  EXPECT_EQ(e.find("must never be called"), std::string::npos) << e;
}

TEST(PluginLoader, TorchMismatchNamesBothVersions) {
  auto e = load_error(fixture("fixture_wrong_torch"));
  EXPECT_NE(e.find("libtorch 0.4.1"), std::string::npos) << e;
  EXPECT_NE(e.find(std::string("libtorch ") + TORCH_VERSION), std::string::npos) << e;
  EXPECT_EQ(e.find("must never be called"), std::string::npos) << e;
}

TEST(PluginLoader, DuplicateNameNamesBothFilesAndRollsBack) {
  auto e = load_error(fixture("fixture_duplicate"));
  EXPECT_NE(e.find("fixture_duplicate.so"), std::string::npos) << e;
  EXPECT_NE(e.find("sdpo_ddim.so"), std::string::npos) << e;
  EXPECT_NE(e.find("sampler 'ddim'"), std::string::npos) << e;
  EXPECT_FALSE(sdpo::Registry::global().contains("sampler", "fixture_duplicate_fresh"))
      << "a library that failed to register must leave nothing behind";
  EXPECT_TRUE(sdpo::Registry::global().contains("sampler", "ddim"));
}

TEST(PluginLoader, BuiltPluginsAreRegisteredWithTheirFiles) {
  const auto& reg = sdpo::Registry::global();
  for (const auto& [kind, name] : std::vector<std::pair<std::string, std::string>>{
           {"sampler", "ddim"},
           {"dense_reward", "similarity_3_adaptive"},
           {"normalizer", "per_step_prompt"},
           {"algorithm", "sdpo"}}) {
    EXPECT_TRUE(reg.contains(kind, name)) << kind << " " << name;
  }
  for (const auto* e : reg.entries()) {
    if (e->kind == "sampler" && e->name == "ddim") {
      EXPECT_NE(e->file.find("sdpo_ddim.so"), std::string::npos);
    }
  }
}

// A built plugin's file (the ddim sampler's), to damage copies of.
std::string ddim_plugin_file() {
  for (const auto* e : sdpo::Registry::global().entries()) {
    if (e->kind == "sampler" && e->name == "ddim") return e->file;
  }
  return "";
}

// A truncated .so would be a SIGBUS inside dlopen's mapping; the ELF check refuses it first,
// at every cut: inside the ELF header, inside the program headers, inside a loadable segment.
TEST(PluginLoader, TruncatedLibraryIsRefusedBeforeDlopen) {
  sdpo::test::load_plugins_once();
  const auto src = ddim_plugin_file();
  ASSERT_FALSE(src.empty());
  std::ifstream in(src, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(bytes.size(), 4096u);
  const auto dir = sdpo::test::temp_dir("plugin_truncated");
  for (std::size_t cut : {std::size_t{10}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    const auto path = dir + "/sdpo_cut_" + std::to_string(cut) + ".so";
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(cut));
    const auto e = load_error(path);
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_TRUE(e.find("truncated") != std::string::npos || e.find("no ELF header") != std::string::npos)
        << "cut at " << cut << ": " << e;
  }
}

TEST(PluginLoader, NonElfFileAndDirectoryAreNamed) {
  const auto dir = sdpo::test::temp_dir("plugin_not_elf");
  std::ofstream(dir + "/sdpo_text.so") << "this is not a library\n";
  auto e = load_error(dir + "/sdpo_text.so");
  EXPECT_NE(e.find("sdpo_text.so: not an ELF shared library"), std::string::npos) << e;
  std::filesystem::create_directories(dir + "/sdpo_dir.so");
  e = load_error(dir + "/sdpo_dir.so");
  EXPECT_NE(e.find("is a directory"), std::string::npos) << e;
}

}  // namespace
