#include "sdpo/train/checkpoint.h"

#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/safetensors.h"

namespace sdpo {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// Boost.JSON 1.81 prints a double in its shortest round-trip form but parses some of them 1 ulp
// off (it has no correctly rounded mode; about 10% of random doubles), and it writes an infinity
// as text it cannot parse back. So the normalizer state's doubles also travel as a float64 tensor,
// in the JSON's (preserved) order, and replace the parsed values on load: the bits are the ones
// saved. In the JSON, a NaN or infinity is this marker string instead.
constexpr const char* kNonFinite = "sdpo:non-finite";

void collect_doubles(json::value& v, std::vector<double>& out) {
  if (v.is_double()) {
    out.push_back(v.get_double());
    if (!std::isfinite(v.get_double())) v = kNonFinite;
  } else if (v.is_array()) {
    for (auto& e : v.get_array()) collect_doubles(e, out);
  } else if (v.is_object()) {
    for (auto& kv : v.get_object()) collect_doubles(kv.value(), out);
  }
}

void restore_doubles(json::value& v, const double*& next, const double* end, const std::string& file) {
  if (v.is_double() || (v.is_string() && v.get_string() == kNonFinite)) {
    if (next == end) throw FileError(file, "'normalizer_f64' holds fewer values than the normalizer state has numbers");
    v = *next++;
  } else if (v.is_array()) {
    for (auto& e : v.get_array()) restore_doubles(e, next, end, file);
  } else if (v.is_object()) {
    for (auto& kv : v.get_object()) restore_doubles(kv.value(), next, end, file);
  }
}

}  // namespace

void checkpoint_save(
    const std::string& dir,
    const Model& model,
    const Optimizer& optimizer,
    const Normalizer& normalizer,
    const at::Generator& generator,
    const TrainingCounters& c,
    const std::vector<at::Tensor>& rank_rng_states) {
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.string() + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  safetensors_save((tmp / "model.safetensors").string(), model.trainable_state_dict());
  safetensors_save((tmp / "optimizer.safetensors").string(), optimizer.state_dict());
  json::object state{
      {"epoch", c.epoch},
      {"samples", c.samples},
      {"reward_queries", c.reward_queries},
      {"wall_seconds", c.wall_seconds},
      {"device_seconds", c.device_seconds}};
  json::value norm = normalizer.state();
  std::vector<double> doubles;
  collect_doubles(norm, doubles);
  state["normalizer"] = std::move(norm);
  TensorMap trainer{{"rng_state", generator.get_state()}};
  if (!doubles.empty()) {
    trainer["normalizer_f64"] = at::tensor(doubles, at::TensorOptions().dtype(at::kDouble));
  }
  for (std::size_t r = 1; r < rank_rng_states.size(); ++r) {
    trainer["rng_state.rank" + std::to_string(r)] = rank_rng_states[r];
  }
  safetensors_save((tmp / "trainer.safetensors").string(), trainer, {{"state", json::serialize(state)}});
  // rename() cannot replace a non-empty folder: an existing checkpoint of this epoch is moved
  // aside first, so that at every moment one whole copy sits under a name a resume accepts or
  // ignores (epoch_<k>.old and epoch_<k>.tmp are never resumed from).
  const fs::path old = final_dir.string() + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(final_dir)) {
    fs::rename(final_dir, old, ec);
    if (ec) throw FileError(dir, "cannot move the previous checkpoint aside: " + ec.message());
  }
  fs::rename(tmp, final_dir, ec);
  if (ec) throw FileError(dir, "cannot move the new checkpoint into place: " + ec.message());
  fs::remove_all(old, ec);
}

TrainingCounters checkpoint_load(
    const std::string& dir,
    Model& model,
    Optimizer* optimizer,
    Normalizer* normalizer,
    at::Generator* generator,
    int rank) {
  if (!fs::is_directory(dir)) throw FileError(dir, "checkpoint folder not found");
  const std::string model_file = (fs::path(dir) / "model.safetensors").string();
  model.load_state_dict(safetensors_load(model_file), /*strict=*/false, model_file);
  if (optimizer) {
    const std::string f = (fs::path(dir) / "optimizer.safetensors").string();
    optimizer->load_state_dict(safetensors_load(f), f);
  }
  const std::string f = (fs::path(dir) / "trainer.safetensors").string();
  StringMap meta;
  TensorMap trainer = safetensors_load(f, &meta);
  TrainingCounters c;
  json::value state;
  try {
    const auto text = meta.find("state");
    if (text == meta.end()) throw std::runtime_error("not in the file's metadata");
    boost::system::error_code ec;
    state = json::parse(text->second, ec);
    if (ec) throw std::runtime_error("invalid JSON: " + ec.message());
    c.epoch = state.at("epoch").to_number<std::int64_t>();
    c.samples = state.at("samples").to_number<std::int64_t>();
    c.reward_queries = state.at("reward_queries").to_number<std::int64_t>();
    c.wall_seconds = state.at("wall_seconds").to_number<double>();
    c.device_seconds = state.at("device_seconds").to_number<double>();
  } catch (const boost::system::system_error& e) {
    // Boost.JSON's what() carries its source location; the code's message is the user's part.
    throw FileError(f, "the trainer state (metadata 'state') is missing or malformed: " + e.code().message());
  } catch (const std::exception& e) {
    throw FileError(f, std::string("the trainer state (metadata 'state') is missing or malformed: ") + e.what());
  }
  json::value& norm = state.as_object()["normalizer"];
  if (auto it = trainer.find("normalizer_f64"); it != trainer.end()) {
    // Checkpoints from before it have no 'normalizer_f64': their parsed values are used as they are.
    const at::Tensor exact = it->second.to(at::kDouble).contiguous();
    const double* next = exact.data_ptr<double>();
    const double* end = next + exact.numel();
    restore_doubles(norm, next, end, f);
    if (next != end) throw FileError(f, "'normalizer_f64' holds more values than the normalizer state has numbers");
  }
  if (normalizer) normalizer->load_state(norm);
  if (generator) {
    const std::string key = rank == 0 ? "rng_state" : "rng_state.rank" + std::to_string(rank);
    auto it = trainer.find(key);
    if (it == trainer.end()) {
      throw FileError(
          f,
          "lacks the tensor '" + key + "'" + (rank == 0 ? "" : " (written by a run of fewer processes than this one)"));
    }
    try {
      generator->set_state(it->second);
    } catch (const c10::Error& e) {
      throw FileError(f, "'" + key + "' is not a CPU generator state: " + e.what_without_backtrace());
    }
  }
  return c;
}

}  // namespace sdpo
