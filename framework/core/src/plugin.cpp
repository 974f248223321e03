#include "sdpo/core/plugin.h"

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>

namespace sdpo {
namespace fs = std::filesystem;

namespace {

// Libraries are kept for the life of the process and never unloaded: objects, std::function
// factories and autograd nodes from a plugin may live until exit (aesthetics.md, "Keep the
// library loaded"). Allocated with new and never deleted, so no dlclose runs at static destruction.
// Keyed by canonical path: a library is loaded (and registered) once per process, whichever
// loader asks.
std::map<std::string, std::shared_ptr<boost::dll::shared_library>>& libraries() {
  static auto* libs = new std::map<std::string, std::shared_ptr<boost::dll::shared_library>>();
  return *libs;
}

std::string canonical(const std::string& path) {
  std::error_code ec;
  auto p = fs::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

}  // namespace

void PluginLoader::load(const std::string& path_in) {
  const std::string path = canonical(path_in);
  if (libraries().count(path)) {
    if (std::find(loaded_.begin(), loaded_.end(), path) == loaded_.end()) loaded_.push_back(path);
    return;
  }
  if (!fs::exists(path)) throw PluginLoadError(path, "file not found");

  auto lib = std::make_shared<boost::dll::shared_library>();
  try {
    // rtld_now: a plugin built against another libtorch fails here, naming the missing symbol,
    // not mid-epoch. rtld_local: plugins never bind each other's symbols.
    lib->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw PluginLoadError(path, std::string("cannot load library: ") + e.what());
  }
  if (!lib->has("sdpo_plugin_info") || !lib->has("sdpo_plugin_register")) {
    throw PluginLoadError(
        path,
        "not an sdpo plugin: the symbols sdpo_plugin_info and sdpo_plugin_register "
        "are missing (declare it with SDPO_DECLARE_PLUGIN)");
  }
  const PluginInfo& info = lib->get_alias<const PluginInfo>("sdpo_plugin_info");
  if (info.abi_version != kPluginAbiVersion) {
    std::ostringstream m;
    m << "built for plugin ABI version " << info.abi_version << ", but this host has ABI version " << kPluginAbiVersion
      << "; rebuild the plugin against the installed sdpo framework";
    throw PluginLoadError(path, m.str());
  }
  if (info.struct_size > sizeof(PluginInfo)) {
    throw PluginLoadError(path, "plugin info is larger than this host knows; rebuild the plugin");
  }
  if (std::string(info.torch_version ? info.torch_version : "") != TORCH_VERSION || info.cxx11_abi != kCxx11Abi) {
    std::ostringstream m;
    m << "built against libtorch " << (info.torch_version ? info.torch_version : "?") << " (cxx11 abi "
      << info.cxx11_abi << "), but this host uses libtorch " << TORCH_VERSION << " (cxx11 abi " << kCxx11Abi
      << "); rebuild the plugin against the same libtorch";
    throw PluginLoadError(path, m.str());
  }
  auto& reg_fn = lib->get_alias<PluginRegisterFn>("sdpo_plugin_register");
  registry_.set_current_file(path);
  try {
    reg_fn(registry_);
  } catch (const PluginLoadError&) {
    registry_.remove_file(path);
    registry_.set_current_file("<host>");
    throw;
  } catch (const std::exception& e) {
    registry_.remove_file(path);
    registry_.set_current_file("<host>");
    throw PluginLoadError(path, std::string("registration failed: ") + e.what());
  }
  registry_.set_current_file("<host>");
  libraries().emplace(path, lib);
  loaded_.push_back(path);
}

void PluginLoader::load_directory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".so") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) load(f);
}

void PluginLoader::load_default(const std::vector<std::string>& extra) {
  std::vector<std::string> paths{default_plugin_dir()};
  if (const char* env = std::getenv("SDPO_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':')) {
      if (!item.empty()) paths.push_back(item);
    }
  }
  paths.insert(paths.end(), extra.begin(), extra.end());
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      load_directory(p);
    } else {
      load(p);  // a file: missing is an error
    }
  }
}

std::string PluginLoader::default_plugin_dir() {
  std::error_code ec;
  fs::path exe = boost::dll::program_location(ec).string();
  if (!ec) {
    for (const fs::path& candidate :
         {exe.parent_path().parent_path() / "plugins", exe.parent_path().parent_path() / "lib" / "sdpo" / "plugins"}) {
      if (fs::is_directory(candidate)) return candidate.string();
    }
  }
  if (fs::is_directory(SDPO_INSTALL_PLUGIN_DIR)) return SDPO_INSTALL_PLUGIN_DIR;
  return SDPO_BUILD_PLUGIN_DIR;
}

}  // namespace sdpo
