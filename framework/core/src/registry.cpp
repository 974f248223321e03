#include "sdpo/core/registry.h"

#include "sdpo/core/prompts.h"

namespace sdpo {

Registry& Registry::global() {
  // Never freed: entries hold std::function objects whose code lives in plugin libraries, which
  // stay loaded until the process ends; no destructor may run after them (c10::Registry does the same).
  static Registry* r = new Registry();
  return *r;
}

void Registry::add_entry(RegistryEntry e) {
  e.file = current_file_;
  auto key = std::make_pair(e.kind, e.name);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    throw PluginLoadError(
        current_file_, "registers " + e.kind + " '" + e.name + "', which " + it->second.file +
                           " already registered; remove one of the two libraries from the plugin path");
  }
  entries_.emplace(key, std::move(e));
}

const RegistryEntry& Registry::entry(const ComponentConfig& cfg) const {
  auto it = entries_.find({cfg.kind, cfg.name});
  if (it == entries_.end()) {
    std::string known;
    for (const auto& n : names(cfg.kind)) known += (known.empty() ? "" : ", ") + n;
    std::string path = cfg.json_path;
    auto dot = path.rfind(".options");
    if (dot != std::string::npos && dot + 8 == path.size()) path = path.substr(0, dot);
    throw ManifestError(
        cfg.file, path.empty() ? cfg.kind : path + ".name",
        "unknown " + cfg.kind + " '" + cfg.name +
            "'; registered: " + (known.empty() ? std::string("(none: were the plugins built and found?)") : known));
  }
  return it->second;
}

void Registry::validate(const ComponentConfig& cfg) const {
  const RegistryEntry& e = entry(cfg);
  OptionReader reader(cfg);
  e.describe(reader);
  reader.finish();
}

bool Registry::contains(const std::string& kind, const std::string& name) const {
  return entries_.count({kind, name}) > 0;
}

std::vector<std::string> Registry::names(const std::string& kind) const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) {
    if (kv.first.first == kind) out.push_back(kv.first.second);
  }
  return out;
}

std::vector<const RegistryEntry*> Registry::entries() const {
  std::vector<const RegistryEntry*> out;
  for (const auto& kv : entries_) out.push_back(&kv.second);
  return out;
}

std::vector<OptionDoc> Registry::options(const std::string& kind, const std::string& name) const {
  ComponentConfig cfg;
  cfg.kind = kind;
  cfg.name = name;
  cfg.file = "<defaults>";
  OptionReader reader(cfg, /*describing=*/true);
  entry(cfg).describe(reader);
  return reader.docs();
}

void Registry::remove_file(const std::string& file) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = it->second.file == file ? entries_.erase(it) : std::next(it);
  }
}

LabelledBatch PromptSource::labelled_batch(std::int64_t, at::Generator&) {
  throw Error("this prompt source has no labelled images (has_labelled_data() is false)");
}

}  // namespace sdpo
