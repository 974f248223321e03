// Experiment manifests: reading, validating and expanding them into named runs
// (sdpo/commands/experiment.h has the schema). Running them is experiment_runner.cpp.
#include "sdpo/commands/experiment.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"

namespace sdpo {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::size_t kMaxValueChars = 40;

// 64-bit FNV-1a: a short, stable tag for a value too long or too structured for a folder name.
std::string hash_tag(const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "h%08x", static_cast<unsigned>(h ^ (h >> 32)));
  return buf;
}

// The shortest %g form that reads back as the same double: 0.001 and 1.5e-05 rather than
// Boost.JSON's 1E-3 and 1.5E-5.
std::string shortest(double x) {
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

// A grid value as it appears in a run's name (sdpo/commands/experiment.h: "Values are written as JSON").
std::string value_label(const json::value& v) {
  if (v.is_object() || v.is_array()) return hash_tag(json::serialize(v));
  std::string s = v.is_string() ? std::string(v.as_string()) : json::serialize(v);
  if (v.is_double()) s = shortest(v.as_double());
  if (s.size() > kMaxValueChars) return hash_tag(s);
  for (char& c : s) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-';
    if (!ok) c = '-';
  }
  return s.empty() ? "-" : s;
}

// A variant's name starts its runs' folder names.
bool folder_safe(const std::string& name) {
  if (name.empty() || name.size() > kMaxValueChars || name.find("__") != std::string::npos) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || (c != '\0' && std::strchr("._+-=", c) != nullptr);
  });
}

// A key of "set" or "grid" must be a --set path: dot-separated, non-empty parts, no '='.
void check_path(const std::string& key, const std::string& file, const std::string& where) {
  bool ok = !key.empty() && key.find('=') == std::string::npos && key.front() != '.' && key.back() != '.' &&
            key.find("..") == std::string::npos;
  if (!ok) {
    throw ManifestError(file, where, "expected a manifest path such as \"train.seed\" or \"algorithm.name\"");
  }
}

// "set" objects: {path: value}; checked and kept in file order.
json::object read_set(const json::value& v, const std::string& file, const std::string& where) {
  if (!v.is_object()) throw ManifestError(file, where, "expected an object {\"json.path\": value, ...}");
  for (const auto& kv : v.as_object()) {
    check_path(std::string(kv.key()), file, where + "[\"" + std::string(kv.key()) + "\"]");
  }
  return v.as_object();
}

std::string override_of(const std::string& path, const json::value& value) {
  // Serialized JSON: apply_override parses it back to the same value (a string stays a string).
  return path + "=" + json::serialize(value);
}

std::string stem(const std::string& path) { return fs::path(path).stem().string(); }

struct Base {
  json::object manifest;
  std::string from;  ///< the file it was read from, or "<where> (inline)": named in errors
};

struct Variant {
  std::string name;
  json::object set;
  std::optional<Base> base;  ///< runs[i].base: replaces the experiment's base
};

// A base run manifest: a path relative to the experiment file, or an inline object.
Base read_base(const json::value& v, const std::string& file, const std::string& where) {
  if (v.is_string() && !v.as_string().empty()) {
    fs::path p(std::string(v.as_string()));
    if (p.is_relative()) p = fs::path(file).parent_path() / p;
    const json::value doc = json_parse_file(p.string());
    if (!doc.is_object()) throw ManifestError(p.string(), "", "expected a JSON object at the top level");
    return {doc.as_object(), p.string()};
  }
  if (v.is_object()) return {v.as_object(), where + " (inline)"};
  throw ManifestError(file, where, "expected a run manifest: a path (relative to this file) or an inline object");
}

// grid: {path: [values...]} in file order; every value must give a distinct folder label.
std::vector<std::pair<std::string, json::array>> read_grid(const json::value& v, const std::string& file) {
  if (!v.is_object()) throw ManifestError(file, "grid", "expected an object {\"json.path\": [values...], ...}");
  std::vector<std::pair<std::string, json::array>> grid;
  for (const auto& kv : v.as_object()) {
    const std::string key(kv.key());
    const std::string where = "grid[\"" + key + "\"]";
    check_path(key, file, where);
    if (!kv.value().is_array() || kv.value().as_array().empty()) {
      throw ManifestError(file, where, "expected a non-empty array of values");
    }
    std::set<std::string> labels;
    for (const auto& x : kv.value().as_array()) {
      if (!labels.insert(value_label(x)).second) {
        throw ManifestError(
            file, where,
            "the value " + json::serialize(x) + " is given twice (or names the same run folder as another value)");
      }
    }
    grid.emplace_back(key, kv.value().as_array());
  }
  return grid;
}

// runs: [{"name", "set", "base"}]; names unique and usable in folder names.
std::vector<Variant> read_variants(const json::value& v, const std::string& file, bool has_base) {
  if (!v.is_array() || v.as_array().empty()) {
    throw ManifestError(file, "runs", "expected a non-empty array of {\"name\": ..., \"set\": {...}}");
  }
  std::vector<Variant> variants;
  std::set<std::string> names;
  for (std::size_t i = 0; i < v.as_array().size(); ++i) {
    const std::string where = "runs[" + std::to_string(i) + "]";
    const json::value& r = v.as_array()[i];
    if (!r.is_object()) throw ManifestError(file, where, "expected an object {\"name\": ..., \"set\": {...}}");
    for (const auto& kv : r.as_object()) {
      if (kv.key() != "name" && kv.key() != "set" && kv.key() != "base") {
        throw ManifestError(
            file, where + "." + std::string(kv.key()), "unknown key; expected 'name', 'set' and 'base'");
      }
    }
    const json::value* name = r.as_object().if_contains("name");
    if (!name || !name->is_string() || name->as_string().empty()) {
      throw ManifestError(file, where + ".name", "expected the variant's name (a non-empty string)");
    }
    Variant var;
    var.name = std::string(name->as_string());
    if (!folder_safe(var.name)) {
      throw ManifestError(
          file, where + ".name",
          "'" + var.name +
              "': use at most 40 letters, digits and ._+-= "
              "(no \"__\"; it names the run folders)");
    }
    if (!names.insert(var.name).second) throw ManifestError(file, where + ".name", "'" + var.name + "' is given twice");
    if (const auto* s = r.as_object().if_contains("set")) var.set = read_set(*s, file, where + ".set");
    if (const auto* b = r.as_object().if_contains("base")) var.base = read_base(*b, file, where + ".base");
    if (!var.base && !has_base) {
      throw ManifestError(
          file, where + ".base", "no run manifest to start from: give \"base\" here or at the top level");
    }
    variants.push_back(std::move(var));
  }
  return variants;
}

}  // namespace

Experiment Experiment::load(
    const std::string& path, const std::vector<std::string>& overrides, const std::string& output_dir) {
  const json::value doc = json_parse_file(path);
  if (!doc.is_object()) throw ManifestError(path, "", "expected a JSON object at the top level");
  const json::object& root = doc.as_object();
  // "plots" belongs to experiments/plot.py (the figures of the experiment); it is not read here.
  static const std::vector<std::string> known = {"name", "description", "base",   "set",
                                                 "grid", "runs",        "output", "plots"};
  for (const auto& kv : root) {
    if (std::find(known.begin(), known.end(), std::string(kv.key())) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw ManifestError(
          path, std::string(kv.key()), "unknown key in an experiment manifest; expected one of: " + list);
    }
  }
  Experiment e;
  e.file = path;
  for (const char* k : {"name", "description"}) {
    if (const auto* v = root.if_contains(k); v && !v->is_string()) throw ManifestError(path, k, "expected a string");
  }
  e.name = root.contains("name") ? std::string(root.at("name").as_string()) : stem(path);
  if (root.contains("description")) e.description = std::string(root.at("description").as_string());

  // The base run manifest: a file beside this one, or inline; a variant may name its own.
  std::optional<Base> base;
  if (const auto* v = root.if_contains("base")) base = read_base(*v, path, "base");
  json::object common;
  if (const auto* v = root.if_contains("set")) common = read_set(*v, path, "set");
  std::vector<std::pair<std::string, json::array>> grid;
  if (const auto* v = root.if_contains("grid")) grid = read_grid(*v, path);
  std::vector<Variant> variants{Variant{}};  // without "runs": one unnamed variant
  if (const auto* v = root.if_contains("runs")) variants = read_variants(*v, path, base.has_value());
  if (!base && !root.contains("runs")) {
    throw ManifestError(
        path, "base",
        "expected the run manifest every run starts from: a path (relative to this "
        "file) or an inline object");
  }

  e.output_dir = (fs::path("runs") / e.name).string();
  if (const auto* v = root.if_contains("output")) {
    if (!v->is_object()) throw ManifestError(path, "output", "expected an object {\"dir\": ...}");
    for (const auto& kv : v->as_object()) {
      if (kv.key() != "dir")
        throw ManifestError(path, "output." + std::string(kv.key()), "unknown key; expected 'dir'");
      if (!kv.value().is_string() || kv.value().as_string().empty()) {
        throw ManifestError(path, "output.dir", "expected a folder path");
      }
      e.output_dir = std::string(kv.value().as_string());
    }
  }
  if (!output_dir.empty()) e.output_dir = output_dir;

  // Variants x the grid's cross product, the last grid key varying fastest.
  std::size_t points = 1;
  for (const auto& g : grid) points *= g.second.size();
  std::map<std::string, std::string> seen;  // name -> what made it, for the collision message
  for (const auto& var : variants) {
    for (std::size_t p = 0; p < points; ++p) {
      ExperimentRun run;
      run.variant = var.name;
      run.settings = var.set;
      std::vector<std::string> parts;
      if (!var.name.empty()) parts.push_back(var.name);
      std::size_t rest = p, stride = points;
      for (const auto& [key, values] : grid) {
        stride /= values.size();
        const json::value& x = values[rest / stride];
        rest %= stride;
        run.settings[key] = x;
        parts.push_back(key + "=" + value_label(x));
      }
      for (const auto& part : parts) run.name += (run.name.empty() ? "" : "__") + part;
      if (run.name.empty()) run.name = "base";
      auto [it, fresh] = seen.emplace(run.name, json::serialize(run.settings));
      if (!fresh) {
        throw ManifestError(
            path, "grid",
            "two runs would share the folder name '" + run.name + "' (" + it->second + " and " +
                json::serialize(run.settings) + "); make the values distinct");
      }
      run.dir = (fs::path(e.output_dir) / run.name).string();

      std::vector<std::string> sets;
      for (const auto& kv : common) sets.push_back(override_of(std::string(kv.key()), kv.value()));
      for (const auto& kv : var.set) sets.push_back(override_of(std::string(kv.key()), kv.value()));
      for (const auto& [key, values] : grid) sets.push_back(override_of(key, run.settings.at(key)));
      sets.insert(sets.end(), overrides.begin(), overrides.end());
      sets.push_back(override_of("name", json::string(run.name)));
      sets.push_back(override_of("output.dir", json::string(e.output_dir)));
      const Base& from = var.base ? *var.base : *base;
      run.manifest = Manifest::parse(
          json::serialize(from.manifest), path + " (run " + run.name + "; base " + from.from + ")", sets);
      e.runs.push_back(std::move(run));
    }
  }
  return e;
}

}  // namespace sdpo
