#include "sdpo/train/checkpoint.h"

#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <filesystem>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/safetensors.h"

namespace sdpo {
namespace fs = std::filesystem;
namespace json = boost::json;

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
      {"device_seconds", c.device_seconds},
      {"normalizer", normalizer.state()}};
  TensorMap trainer{{"rng_state", generator.get_state()}};
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
    state = json::parse(meta.at("state"));
    c.epoch = state.at("epoch").to_number<std::int64_t>();
    c.samples = state.at("samples").to_number<std::int64_t>();
    c.reward_queries = state.at("reward_queries").to_number<std::int64_t>();
    c.wall_seconds = state.at("wall_seconds").to_number<double>();
    c.device_seconds = state.at("device_seconds").to_number<double>();
  } catch (const std::exception& e) {
    throw FileError(f, std::string("the trainer state (metadata 'state') is missing or malformed: ") + e.what());
  }
  if (normalizer) normalizer->load_state(state.at("normalizer"));
  if (generator) {
    const std::string key = rank == 0 ? "rng_state" : "rng_state.rank" + std::to_string(rank);
    auto it = trainer.find(key);
    if (it == trainer.end()) {
      throw FileError(
          f,
          "lacks the tensor '" + key + "'" + (rank == 0 ? "" : " (written by a run of fewer processes than this one)"));
    }
    generator->set_state(it->second);
  }
  return c;
}

}  // namespace sdpo
