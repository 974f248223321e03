#pragma once
// The registry: one host-owned table of factories keyed by (kind, name). Plugins add factories
// from their registration entry; the trainer and CLI create components from manifest sections.
// Modelled on c10::Registry: duplicate keys are errors naming both files, unknown names list
// the known ones.
//
// Example (inside a plugin's registration function):
//   registry.add<sdpo::Sampler, DDIMOptions>("ddim", "DDIM with log-probabilities",
//       &DDIMOptions::read,
//       [](const DDIMOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<DDIMSampler>(o); });
//
// Thread safety: populate from the main thread at start-up; reads are then thread-safe.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"

namespace sdpo {

struct RegistryEntry {
  std::string kind;
  std::string name;
  std::string help;
  std::string file;  ///< library that registered it ("<host>" for host-built components)
  /// Reads the options (validating them) without building anything; fills `reader.docs()`.
  std::function<void(OptionReader&)> describe;
  /// Builds the component; the result is a shared_ptr<Kind> held as void.
  std::function<std::shared_ptr<void>(const ComponentConfig&)> make;
};

class Registry {
 public:
  /// The process-wide registry (allocated once, never freed: no destructor runs after plugin
  /// code is gone).
  static Registry& global();

  /// Registers `name` for interface `Kind`. `read(reader)` parses and validates the options
  /// into `Options`; `make(options, cfg)` builds the component.
  template <class Kind, class Options>
  void add(
      const std::string& name,
      const std::string& help,
      std::function<Options(OptionReader&)> read,
      std::function<std::shared_ptr<Kind>(const Options&, const ComponentConfig&)> make) {
    RegistryEntry e;
    e.kind = Kind::kKind;
    e.name = name;
    e.help = help;
    e.describe = [read](OptionReader& r) { read(r); };
    e.make = [read, make](const ComponentConfig& cfg) -> std::shared_ptr<void> {
      OptionReader reader(cfg);
      Options o = read(reader);
      reader.finish();
      return std::static_pointer_cast<void>(make(o, cfg));
    };
    add_entry(std::move(e));
  }

  /// Builds component `cfg.name` of kind `Kind`; unknown names throw a ManifestError listing
  /// the registered names of that kind.
  template <class Kind>
  std::shared_ptr<Kind> create(ComponentConfig cfg) const {
    cfg.kind = Kind::kKind;
    return std::static_pointer_cast<Kind>(entry(cfg).make(cfg));
  }

  /// Checks that `cfg` names a registered component and that its options parse, without
  /// building it (so a manifest's errors show before any weights load).
  void validate(const ComponentConfig& cfg) const;

  bool contains(const std::string& kind, const std::string& name) const;
  /// Names registered for `kind`, sorted.
  std::vector<std::string> names(const std::string& kind) const;
  /// All entries, sorted by (kind, name).
  std::vector<const RegistryEntry*> entries() const;
  /// Option docs (key, type, default, help) of one entry, read from its own option parser.
  std::vector<OptionDoc> options(const std::string& kind, const std::string& name) const;

  /// The library whose registration function is running (set by the plugin loader).
  void set_current_file(const std::string& file) { current_file_ = file; }
  /// Removes every entry registered from `file` (used when a library's registration fails).
  void remove_file(const std::string& file);

 private:
  void add_entry(RegistryEntry e);
  const RegistryEntry& entry(const ComponentConfig& cfg) const;
  std::map<std::pair<std::string, std::string>, RegistryEntry> entries_;
  std::string current_file_ = "<host>";
};

}  // namespace sdpo
