#include "sdpo/core/plugin.h"

#include <elf.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
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

// dlopen maps a library's segments by its program headers without comparing them with the file's
// size, so a truncated .so (an interrupted copy or build) is a SIGBUS on first touch instead of an
// error. This reads the ELF header and the program headers and checks that the file is a shared
// library for this machine and holds every byte its loadable segments and section table name.
void check_elf(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw PluginLoadError(path, "cannot read its size: " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw PluginLoadError(path, std::string("cannot open it: ") + std::strerror(errno));
  Elf64_Ehdr h{};
  if (size < sizeof h || !in.read(reinterpret_cast<char*>(&h), sizeof h) ||
      std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0) {
    throw PluginLoadError(
        path, "not an ELF shared library (" + std::to_string(size) +
                  " bytes, no ELF header): expected a .so built by sdpo_add_plugin");
  }
  if (h.e_ident[EI_CLASS] != ELFCLASS64 || h.e_ident[EI_DATA] != ELFDATA2LSB || h.e_type != ET_DYN) {
    throw PluginLoadError(
        path, "not a 64-bit little-endian ELF shared library (ELF type " + std::to_string(h.e_type) + ")");
  }
#if defined(__x86_64__)
  constexpr Elf64_Half kMachine = EM_X86_64;
#elif defined(__aarch64__)
  constexpr Elf64_Half kMachine = EM_AARCH64;
#else
  const Elf64_Half kMachine = h.e_machine;
#endif
  if (h.e_machine != kMachine) {
    throw PluginLoadError(path, "built for another machine (ELF e_machine " + std::to_string(h.e_machine) + ")");
  }
  auto truncated = [&](const std::string& what, std::uint64_t end) {
    return PluginLoadError(
        path, "truncated: " + what + " ends at byte " + std::to_string(end) + " but the file has " +
                  std::to_string(size) + " bytes (an interrupted copy or build? rebuild or reinstall it)");
  };
  const std::uint64_t ph_end = h.e_phoff + static_cast<std::uint64_t>(h.e_phnum) * h.e_phentsize;
  if (h.e_phentsize != sizeof(Elf64_Phdr) || ph_end > size) throw truncated("the program header table", ph_end);
  if (h.e_shoff != 0) {
    const std::uint64_t sh_end = h.e_shoff + static_cast<std::uint64_t>(h.e_shnum) * h.e_shentsize;
    if (sh_end > size) throw truncated("the section header table", sh_end);
  }
  in.seekg(static_cast<std::streamoff>(h.e_phoff));
  for (Elf64_Half i = 0; i < h.e_phnum; ++i) {
    Elf64_Phdr ph{};
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof ph)) throw truncated("the program header table", ph_end);
    if (ph.p_type == PT_LOAD && ph.p_offset + ph.p_filesz > size) {
      throw truncated("loadable segment " + std::to_string(i), ph.p_offset + ph.p_filesz);
    }
  }
}

}  // namespace

void PluginLoader::load(const std::string& path_in) {
  const std::string path = canonical(path_in);
  if (libraries().count(path)) {
    if (std::find(loaded_.begin(), loaded_.end(), path) == loaded_.end()) loaded_.push_back(path);
    return;
  }
  if (!fs::exists(path)) throw PluginLoadError(path, "file not found");
  if (fs::is_directory(path)) throw PluginLoadError(path, "is a directory, not a plugin library");
  check_elf(path);

  auto lib = std::make_shared<boost::dll::shared_library>();
  try {
    // rtld_now: a plugin built against another libtorch fails here, naming the missing symbol,
    // not mid-epoch. rtld_local: plugins never bind each other's symbols.
    lib->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw PluginLoadError(path, std::string("cannot load library: ") + error_message(e));
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
    throw PluginLoadError(path, std::string("registration failed: ") + error_message(e));
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
