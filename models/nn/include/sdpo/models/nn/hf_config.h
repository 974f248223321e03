#pragma once
// Reading Hugging Face `config.json` files (diffusers and transformers) and locating the weight
// files of a pipeline folder (research/models.md section 1.3).
//
// Example:
//   sdpo::nn::HFConfig cfg = sdpo::nn::HFConfig::load(folder + "/unet/config.json");
//   auto channels = cfg.integers("block_out_channels", {320, 640, 1280, 1280});
//   std::string act = cfg.string("act_fn", "silu", {"silu"});
//
// Absent keys and JSON null take the default. A value of the wrong type, or not among `allowed`,
// throws sdpo::ManifestError(file, key, what was expected). Keys starting with "_" (diffusers'
// "_class_name", "_diffusers_version") are metadata and never read.

#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sdpo::nn {

class HFConfig {
 public:
  /// Parses `path` (FileError if missing, ManifestError on bad JSON or a non-object).
  static HFConfig load(const std::string& path);
  /// `prefix` is put before every key in error messages ("vision_config." for a nested object).
  HFConfig(boost::json::object object, std::string file, std::string prefix = "");

  /// The nested object under `key` (a CLIPModel's "vision_config") as a config whose errors name
  /// "<key>.<inner key>"; nullopt when absent or null; anything but an object: ManifestError.
  std::optional<HFConfig> child(const std::string& key) const;
  const boost::json::object& object() const { return object_; }

  bool has(const std::string& key) const;  ///< present and not null
  std::int64_t integer(const std::string& key, std::int64_t fallback) const;
  /// integer(), refusing values below 1 ("expected a positive integer, got N") naming file and key.
  std::int64_t positive_integer(const std::string& key, std::int64_t fallback) const;
  double number(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(
      const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed = {}) const;
  std::vector<std::int64_t> integers(const std::string& key, const std::vector<std::int64_t>& fallback) const;
  std::vector<std::string> strings(const std::string& key, const std::vector<std::string>& fallback) const;
  /// An integer, or a list of integers (diffusers lets `attention_head_dim` be either); a scalar
  /// is repeated `count` times.
  std::vector<std::int64_t> integer_or_list(
      const std::string& key, std::int64_t count, const std::vector<std::int64_t>& fallback) const;

  /// Throws ManifestError naming the file and `key` (after the prefix).
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  const std::string& file() const { return file_; }

 private:
  const boost::json::value* find(const std::string& key) const;
  boost::json::object object_;
  std::string file_;
  std::string prefix_;
};

/// The weights file of one component folder: `<dir>/<stem>[.<variant>].safetensors`, e.g.
/// stem "diffusion_pytorch_model" (diffusers) or "model" (transformers), variant "fp16" or "".
/// A folder that only has a `.bin` pickle (`<stem>.bin`, or transformers' `pytorch_<stem>.bin`) is
/// refused with a message telling how to convert it.
std::string find_weights_file(const std::string& dir, const std::string& stem, const std::string& variant);

}  // namespace sdpo::nn
