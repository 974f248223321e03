#include "sdpo/core/options.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "sdpo/core/error.h"

namespace sdpo {
namespace json = boost::json;

namespace {

std::string join_path(const std::string& base, const std::string& key) { return base.empty() ? key : base + "." + key; }

std::string kind_of(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "an integer";
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "?";
}

std::string num_str(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

}  // namespace

OptionReader::OptionReader(const ComponentConfig& cfg, bool describing) : cfg_(cfg), describing_(describing) {}

const json::value* OptionReader::find(const std::string& key) {
  read_.push_back(key);
  return cfg_.options.if_contains(key);
}

void OptionReader::fail(const std::string& key, const std::string& message) const {
  std::string who = cfg_.kind.empty() ? std::string() : cfg_.kind + " '" + cfg_.name + "': ";
  throw ManifestError(cfg_.file, join_path(cfg_.json_path, key), who + message);
}

double OptionReader::number(const std::string& key, double def, double lo, double hi, const std::string& help) {
  docs_.push_back({key, "number", def, help + " [" + num_str(lo) + ", " + num_str(hi) + "]"});
  const json::value* v = find(key);
  if (!v) return def;
  if (!v->is_number()) fail(key, "expected a number, got " + kind_of(*v));
  double x = v->to_number<double>();
  if (!(x >= lo && x <= hi)) {
    fail(key, "expected a number in [" + num_str(lo) + ", " + num_str(hi) + "], got " + num_str(x));
  }
  return x;
}

std::int64_t OptionReader::integer(
    const std::string& key, std::int64_t def, std::int64_t lo, std::int64_t hi, const std::string& help) {
  docs_.push_back({key, "integer", def, help + " [" + std::to_string(lo) + ", " + std::to_string(hi) + "]"});
  const json::value* v = find(key);
  if (!v) return def;
  std::int64_t x = 0;
  if (v->is_int64()) {
    x = v->as_int64();
  } else if (v->is_uint64() && v->as_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    x = static_cast<std::int64_t>(v->as_uint64());
  } else if (v->is_double() && std::floor(v->as_double()) == v->as_double() && std::abs(v->as_double()) < 9e15) {
    x = static_cast<std::int64_t>(v->as_double());
  } else {
    fail(key, "expected an integer, got " + kind_of(*v));
  }
  if (x < lo || x > hi) {
    fail(
        key,
        "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(x));
  }
  return x;
}

bool OptionReader::boolean(const std::string& key, bool def, const std::string& help) {
  docs_.push_back({key, "bool", def, help});
  const json::value* v = find(key);
  if (!v) return def;
  if (!v->is_bool()) fail(key, "expected true or false, got " + kind_of(*v));
  return v->as_bool();
}

std::string OptionReader::string(
    const std::string& key, const std::string& def, const std::string& help, const std::vector<std::string>& choices) {
  std::string h = help;
  if (!choices.empty()) {
    h += " {";
    for (std::size_t i = 0; i < choices.size(); ++i) h += (i ? ", " : "") + (choices[i].empty() ? "\"\"" : choices[i]);
    h += "}";
  }
  docs_.push_back({key, "string", json::string(def), h});
  const json::value* v = find(key);
  if (!v) return def;
  if (!v->is_string()) fail(key, "expected a string, got " + kind_of(*v));
  std::string s(v->as_string());
  if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end()) {
    fail(key, "expected one of" + h.substr(help.size()) + ", got '" + s + "'");
  }
  return s;
}

std::vector<std::string> OptionReader::strings(
    const std::string& key, const std::vector<std::string>& def, const std::string& help) {
  json::array d;
  for (const auto& x : def) d.push_back(json::string(x));
  docs_.push_back({key, "string[]", d, help});
  const json::value* v = find(key);
  if (!v) return def;
  if (!v->is_array()) fail(key, "expected a list of strings, got " + kind_of(*v));
  std::vector<std::string> out;
  for (const auto& e : v->as_array()) {
    if (!e.is_string()) fail(key, "expected a list of strings, got an element that is " + kind_of(e));
    out.emplace_back(e.as_string());
  }
  return out;
}

std::string OptionReader::required_string(const std::string& key, const std::string& help) {
  docs_.push_back({key, "string (required)", json::value(nullptr), help});
  const json::value* v = find(key);
  if (!v) {
    if (describing_) return {};
    fail(key, "required: " + help);
  }
  if (!v->is_string() || v->as_string().empty()) fail(key, "expected a non-empty string (" + help + ")");
  return std::string(v->as_string());
}

std::vector<std::int64_t> OptionReader::integers(
    const std::string& key,
    const std::vector<std::int64_t>& def,
    std::int64_t lo,
    std::int64_t hi,
    const std::string& help) {
  json::array d;
  for (auto x : def) d.push_back(x);
  docs_.push_back({key, "integer[]", d, help});
  const json::value* v = find(key);
  if (!v) return def;
  if (!v->is_array() || v->as_array().empty()) fail(key, "expected a non-empty array of integers, got " + kind_of(*v));
  std::vector<std::int64_t> out;
  for (const auto& e : v->as_array()) {
    if (!e.is_int64() || e.as_int64() < lo || e.as_int64() > hi) {
      fail(
          key,
          "expected integers in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + json::serialize(e));
    }
    out.push_back(e.as_int64());
  }
  return out;
}

json::object OptionReader::object(const std::string& key, const std::string& help) {
  docs_.push_back({key, "object", json::object(), help});
  const json::value* v = find(key);
  if (!v) return {};
  if (!v->is_object()) fail(key, "expected an object, got " + kind_of(*v));
  return v->as_object();
}

void OptionReader::finish() const {
  for (const auto& kv : cfg_.options) {
    std::string key(kv.key());
    if (std::find(read_.begin(), read_.end(), key) == read_.end()) {
      std::string known;
      for (const auto& d : docs_) known += (known.empty() ? "" : ", ") + d.key;
      fail(key, "unknown option; known options: " + (known.empty() ? std::string("(none)") : known));
    }
  }
}

namespace {
void pretty(std::ostream& os, const json::value& v, int indent) {
  std::string pad(static_cast<std::size_t>(indent), ' ');
  if (v.is_object()) {
    const auto& o = v.as_object();
    if (o.empty()) {
      os << "{}";
      return;
    }
    os << "{\n";
    std::size_t i = 0;
    for (const auto& kv : o) {
      os << pad << "  " << json::serialize(json::value(kv.key())) << ": ";
      pretty(os, kv.value(), indent + 2);
      os << (++i < o.size() ? ",\n" : "\n");
    }
    os << pad << "}";
  } else if (v.is_array()) {
    const auto& a = v.as_array();
    bool flat = std::all_of(a.begin(), a.end(), [](const json::value& e) { return !e.is_object() && !e.is_array(); });
    if (flat) {
      os << json::serialize(v);
      return;
    }
    os << "[\n";
    for (std::size_t i = 0; i < a.size(); ++i) {
      os << pad << "  ";
      pretty(os, a[i], indent + 2);
      os << (i + 1 < a.size() ? ",\n" : "\n");
    }
    os << pad << "]";
  } else {
    os << json::serialize(v);
  }
}
}  // namespace

std::string json_pretty(const json::value& v) {
  std::ostringstream os;
  pretty(os, v, 0);
  return os.str();
}

}  // namespace sdpo
