#include "sdpo/models/nn/hf_config.h"

#include <boost/json/kind.hpp>
#include <filesystem>
#include <utility>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"

namespace sdpo::nn {

namespace fs = std::filesystem;

HFConfig HFConfig::load(const std::string& path) {
  boost::json::value v = json_parse_file(path);
  if (!v.is_object()) throw ManifestError(path, "", "expected a JSON object (a config.json)");
  return HFConfig(std::move(v.get_object()), path);
}

HFConfig::HFConfig(boost::json::object object, std::string file, std::string prefix)
    : object_(std::move(object)), file_(std::move(file)), prefix_(std::move(prefix)) {}

std::optional<HFConfig> HFConfig::child(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_object()) fail(key, "expected a JSON object");
  return HFConfig(v->get_object(), file_, prefix_ + key + ".");
}

const boost::json::value* HFConfig::find(const std::string& key) const {
  const auto* v = object_.if_contains(key);
  return (v && !v->is_null()) ? v : nullptr;
}

bool HFConfig::has(const std::string& key) const { return find(key) != nullptr; }

void HFConfig::fail(const std::string& key, const std::string& message) const {
  throw ManifestError(file_, prefix_ + key, message);
}

std::int64_t HFConfig::integer(const std::string& key, std::int64_t fallback) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  fail(key, "expected an integer");
}

std::int64_t HFConfig::positive_integer(const std::string& key, std::int64_t fallback) const {
  const std::int64_t v = integer(key, fallback);
  if (v < 1) fail(key, "expected a positive integer, got " + std::to_string(v));
  return v;
}

double HFConfig::number(const std::string& key, double fallback) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (v->is_double()) return v->get_double();
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  fail(key, "expected a number");
}

bool HFConfig::boolean(const std::string& key, bool fallback) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_bool()) fail(key, "expected true or false");
  return v->get_bool();
}

std::string HFConfig::string(
    const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_string()) fail(key, "expected a string");
  std::string s(v->get_string());
  if (allowed.empty()) return s;
  for (const auto& a : allowed) {
    if (a == s) return s;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
  fail(key, "\"" + s + "\" is not supported (expected one of " + list + ")");
}

std::vector<std::int64_t> HFConfig::integers(const std::string& key, const std::vector<std::int64_t>& fallback) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_array()) fail(key, "expected a list of integers");
  std::vector<std::int64_t> out;
  for (const auto& e : v->get_array()) {
    if (e.is_int64()) {
      out.push_back(e.get_int64());
    } else if (e.is_uint64()) {
      out.push_back(static_cast<std::int64_t>(e.get_uint64()));
    } else {
      fail(key, "expected a list of integers");
    }
  }
  return out;
}

std::vector<std::string> HFConfig::strings(const std::string& key, const std::vector<std::string>& fallback) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_array()) fail(key, "expected a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v->get_array()) {
    if (!e.is_string()) fail(key, "expected a list of strings");
    out.emplace_back(e.get_string());
  }
  return out;
}

std::vector<std::int64_t> HFConfig::integer_or_list(
    const std::string& key, std::int64_t count, const std::vector<std::int64_t>& fallback) const {
  const auto* v = find(key);
  if (!v) return fallback;
  if (v->is_array()) {
    auto out = integers(key, fallback);
    if (static_cast<std::int64_t>(out.size()) != count) {
      fail(key, "expected " + std::to_string(count) + " entries (one per block), got " + std::to_string(out.size()));
    }
    return out;
  }
  return std::vector<std::int64_t>(static_cast<std::size_t>(count), integer(key, 0));
}

std::string find_weights_file(const std::string& dir, const std::string& stem, const std::string& variant) {
  const std::string suffix = variant.empty() ? "" : "." + variant;
  const fs::path st = fs::path(dir) / (stem + suffix + ".safetensors");
  std::error_code ec;
  if (fs::is_regular_file(st, ec)) return st.string();
  if (fs::is_regular_file(fs::path(dir) / (stem + suffix + ".safetensors.index.json"), ec)) {
    throw FileError(
        st.string(),
        "sharded checkpoints (*.safetensors.index.json) are not supported; merge the shards "
        "into one safetensors file");
  }
  // diffusers pickles are "<stem>.bin", transformers ones "pytorch_<stem>.bin" (pytorch_model.bin).
  const fs::path pickles[] = {
      fs::path(dir) / (stem + suffix + ".bin"), fs::path(dir) / ("pytorch_" + stem + suffix + ".bin")};
  for (const fs::path& bin : pickles) {
    if (fs::is_regular_file(bin, ec)) {
      throw FileError(
          st.string(), "not found, but " + bin.string() +
                           " is: PyTorch pickles are not read; convert it once with "
                           "safetensors.torch.save_file(torch.load(path), out, metadata={'format': 'pt'})");
    }
  }
  throw FileError(
      st.string(), "weights file not found" + (variant.empty() ? std::string() : " (variant \"" + variant + "\")"));
}

}  // namespace sdpo::nn
