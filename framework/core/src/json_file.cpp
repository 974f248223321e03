// json_parse_file (sdpo/core/options.h): manifests and experiment files as users write them.
#include <algorithm>
#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"

namespace sdpo {
namespace json = boost::json;

namespace {

// A basic_parser handler that only tracks keys: the first key an object repeats is kept, with
// the JSON path of its object. Boost.JSON's value parser keeps the last of two equal keys without
// a word, so `"lr": 1e-4, ..., "lr": 1e-3` would run with one of them unnoticed.
class DuplicateKeys {
 public:
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);

  std::string duplicate;  ///< "path.key" of the first repeated key; empty if none

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    frames_.push_back({true, path_here(), {}, {}, 0});
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) { return pop(); }
  bool on_array_begin(json::error_code&) {
    frames_.push_back({false, path_here(), {}, {}, 0});
    return true;
  }
  bool on_array_end(std::size_t, json::error_code&) { return pop(); }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    auto& f = frames_.back();
    if (!f.keys.insert(key_).second && duplicate.empty()) {
      duplicate = f.path.empty() ? key_ : f.path + "." + key_;
    }
    f.current = key_;
    key_.clear();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return value(); }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, json::error_code&) { return value(); }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code&) { return value(); }
  bool on_double(double, json::string_view, json::error_code&) { return value(); }
  bool on_bool(bool, json::error_code&) { return value(); }
  bool on_null(json::error_code&) { return value(); }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  struct Frame {
    bool object;
    std::string path;            ///< of this object or array
    std::set<std::string> keys;  ///< objects: the keys seen
    std::string current;         ///< objects: the key whose value comes next
    std::size_t index = 0;       ///< arrays: the next element's index
  };
  // The path of the value about to start (an object or array is a value of its parent).
  std::string path_here() const {
    if (frames_.empty()) return "";
    const auto& f = frames_.back();
    if (f.object) return f.path.empty() ? f.current : f.path + "." + f.current;
    return f.path + "[" + std::to_string(f.index) + "]";
  }
  bool value() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
    return true;
  }
  bool pop() {
    frames_.pop_back();
    return value();
  }
  std::vector<Frame> frames_;
  std::string key_;
};

std::size_t line_of(const std::string& text, std::size_t offset) {
  return 1 + static_cast<std::size_t>(std::count(text.begin(), text.begin() + std::min(offset, text.size()), '\n'));
}

}  // namespace

json::value json_parse_file(const std::string& path) {
  std::error_code fec;
  if (std::filesystem::is_directory(path, fec)) throw FileError(path, "is a directory, expected a JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot open file (missing or unreadable)");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  // Editors on Windows save UTF-8 with a byte-order mark; JSON parsers reject it as a syntax error.
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
  json::parse_options opt;
  opt.allow_comments = true;
  opt.allow_trailing_commas = true;
  boost::system::error_code ec;
  json::stream_parser p({}, opt);
  std::size_t n = p.write_some(text.data(), text.size(), ec);
  if (!ec) p.finish(ec);
  if (ec) {
    throw ManifestError(path, "", "invalid JSON at line " + std::to_string(line_of(text, n)) + ": " + ec.message());
  }
  json::basic_parser<DuplicateKeys> keys(opt);
  boost::system::error_code kec;
  keys.write_some(false, text.data(), text.size(), kec);
  if (!keys.handler().duplicate.empty()) {
    throw ManifestError(
        path, keys.handler().duplicate,
        "the key appears twice in one object (JSON keeps only one of them silently); remove one");
  }
  return p.release();
}

}  // namespace sdpo
