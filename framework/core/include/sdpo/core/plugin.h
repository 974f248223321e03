#pragma once
// The plugin boundary (aesthetics.md, "Designing the Boost.DLL plugin ABI safely").
//
// A plugin is a shared library exporting two Boost.DLL aliases: `sdpo_plugin_info`, a constant
// POD the host reads before running any plugin code, and `sdpo_plugin_register`, called only once
// the ABI version and the libtorch version match the host's. One line declares both:
//
//   SDPO_DECLARE_PLUGIN("ddim", "0.1.0", register_ddim)   // void register_ddim(sdpo::Registry&)
//
// Bump kPluginAbiVersion on any change to PluginInfo or to a virtual function of an interface
// in framework/core/include/sdpo/core/.

#include <torch/csrc/api/include/torch/version.h>

#include <boost/config.hpp>
#include <boost/dll/alias.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/registry.h"

namespace sdpo {

inline constexpr std::uint32_t kPluginAbiVersion = 1;

struct PluginInfo {
  std::uint32_t abi_version;  ///< kPluginAbiVersion the plugin was compiled with
  std::uint32_t struct_size;  ///< sizeof(PluginInfo) in the plugin
  const char* name;
  const char* plugin_version;
  const char* torch_version;  ///< TORCH_VERSION the plugin was compiled against
  std::uint32_t cxx11_abi;    ///< _GLIBCXX_USE_CXX11_ABI
};

using PluginRegisterFn = void(Registry&);

#if defined(_GLIBCXX_USE_CXX11_ABI)
inline constexpr std::uint32_t kCxx11Abi = _GLIBCXX_USE_CXX11_ABI;
#else
inline constexpr std::uint32_t kCxx11Abi = 0;
#endif

/// Loads plugin libraries into a registry. Libraries stay loaded for the life of the process.
class PluginLoader {
 public:
  explicit PluginLoader(Registry& registry) : registry_(registry) {}

  /// Loads one library. Throws PluginLoadError (missing file, missing symbols, ABI or libtorch
  /// mismatch naming both versions, duplicate (kind, name) naming both files).
  void load(const std::string& path);
  /// Loads every `*.so` in `dir` (sorted); a missing directory is skipped.
  void load_directory(const std::string& dir);
  /// The build's plugin folder, then SDPO_PLUGIN_PATH (colon-separated), then `extra` paths.
  /// Each entry may be a directory or a library file.
  void load_default(const std::vector<std::string>& extra = {});

  /// The host's plugin folder: next to the executable (../plugins, ../lib/sdpo/plugins) or the
  /// build tree's.
  static std::string default_plugin_dir();
  const std::vector<std::string>& loaded() const { return loaded_; }

 private:
  Registry& registry_;
  std::vector<std::string> loaded_;
};

}  // namespace sdpo

#define SDPO_PLUGIN_STR2(x) #x
#define SDPO_PLUGIN_STR(x) SDPO_PLUGIN_STR2(x)

/// Declares the plugin's info and registration entry (use once per plugin library).
#define SDPO_DECLARE_PLUGIN(NAME, VERSION, REGISTER_FN)                                                        \
  namespace sdpo_plugin_entry {                                                                                \
  const ::sdpo::PluginInfo sdpo_plugin_info_value{                                                             \
      ::sdpo::kPluginAbiVersion, sizeof(::sdpo::PluginInfo), NAME, VERSION, TORCH_VERSION, ::sdpo::kCxx11Abi}; \
  void sdpo_plugin_register_fn(::sdpo::Registry& r) { REGISTER_FN(r); }                                        \
  }                                                                                                            \
  BOOST_DLL_ALIAS(sdpo_plugin_entry::sdpo_plugin_info_value, sdpo_plugin_info)                                 \
  BOOST_DLL_ALIAS(sdpo_plugin_entry::sdpo_plugin_register_fn, sdpo_plugin_register)
