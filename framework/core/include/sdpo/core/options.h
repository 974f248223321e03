#pragma once
// Options for components come from a manifest section as a Boost.JSON object. `OptionReader`
// reads typed values with defaults and ranges, records what it read (so `sdpo plugins` can print
// every option with its default from the same code), and rejects keys nobody read.
//
// Example:
//   sdpo::OptionReader r(cfg);               // cfg: ComponentConfig of sampler 'ddim'
//   double eta = r.number("eta", 1.0, 0.0, 10.0, "DDIM stochasticity (eta_DDIM)");
//   r.finish();                              // throws ManifestError on unknown keys

#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace sdpo {

/// Where a component's options come from: used in every error message.
struct ComponentConfig {
  std::string kind;  ///< component kind, e.g. "sampler"
  std::string name;  ///< registry key, e.g. "ddim"
  boost::json::object options;
  std::string file;       ///< manifest file ("<defaults>" when built from code)
  std::string json_path;  ///< JSON path of the options object, e.g. "sampler.options"
};

/// One documented option: filled while a factory reads its options.
struct OptionDoc {
  std::string key;
  std::string type;  ///< "number", "integer", "bool", "string", "number[]", "integer[]", "object"
  boost::json::value default_value;
  std::string help;
};

class OptionReader {
 public:
  /// `describing`: the reader only collects docs (`sdpo plugins`); required options then return
  /// an empty value instead of failing.
  explicit OptionReader(const ComponentConfig& cfg, bool describing = false);

  double number(const std::string& key, double def, double lo, double hi, const std::string& help);
  std::int64_t integer(
      const std::string& key, std::int64_t def, std::int64_t lo, std::int64_t hi, const std::string& help);
  bool boolean(const std::string& key, bool def, const std::string& help);
  /// `choices` empty: any string; otherwise the value must be one of them.
  std::string string(
      const std::string& key,
      const std::string& def,
      const std::string& help,
      const std::vector<std::string>& choices = {});
  /// A string the manifest must give (e.g. a model folder); missing or empty: ManifestError.
  std::string required_string(const std::string& key, const std::string& help);
  std::vector<std::int64_t> integers(
      const std::string& key,
      const std::vector<std::int64_t>& def,
      std::int64_t lo,
      std::int64_t hi,
      const std::string& help);
  /// A list of strings (e.g. layer names).
  std::vector<std::string> strings(
      const std::string& key, const std::vector<std::string>& def, const std::string& help);
  /// A nested object passed through unchecked (the callee validates it with its own reader).
  boost::json::object object(const std::string& key, const std::string& help);

  /// Throws ManifestError naming the first key that was never read.
  void finish() const;

  const std::vector<OptionDoc>& docs() const { return docs_; }
  /// Error located at `<json_path>.<key>`.
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const boost::json::value* find(const std::string& key);
  ComponentConfig cfg_;
  std::vector<std::string> read_;
  std::vector<OptionDoc> docs_;
  bool describing_ = false;
};

/// Parses a JSON file (comments and trailing commas allowed, a UTF-8 byte-order mark skipped).
/// Throws FileError (missing, unreadable, a directory) or ManifestError (a syntax error, with its
/// line; a key repeated in one object, naming it: JSON parsers keep one of the two silently).
boost::json::value json_parse_file(const std::string& path);
/// Pretty-prints JSON with two-space indentation.
std::string json_pretty(const boost::json::value& v);

}  // namespace sdpo
