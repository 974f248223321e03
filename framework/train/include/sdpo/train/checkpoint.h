#pragma once
// Training checkpoints (DESIGN.md section 3, step 7): trainable parameters, optimizer state,
// normalizer state, RNG state and counters, in one folder:
//   <dir>/model.safetensors          Model::trainable_state_dict()
//   <dir>/optimizer.safetensors      Optimizer::state_dict()
//   <dir>/trainer.safetensors        RNG state; metadata "state" = counters + normalizer (JSON)
// Written to <dir>.tmp and renamed, so an interrupted save never replaces a good checkpoint.
// The trainer's generator is the only random source of training (prompts, initial and step
// noise, query plans, the algorithms' shuffles; evaluation seeds its own), so its state with the
// weights, optimizer, normalizer and counters is everything an exact resume needs
// (TrainerOptions::resume).

#include <ATen/core/Generator.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sdpo {

class Model;
class Optimizer;
class Normalizer;

struct TrainingCounters {
  std::int64_t epoch = 0;           ///< completed epochs
  std::int64_t samples = 0;         ///< trajectories generated for training
  std::int64_t reward_queries = 0;  ///< reward-model calls (images scored) for training
  double wall_seconds = 0;
  double device_seconds = 0;
};

/// `rank_rng_states`: in a multi-process run, every rank's generator state (index = rank; written
/// by rank 0 as rng_state.rank<r> for r >= 1, rank 0's is `generator`). Empty for one process.
void checkpoint_save(
    const std::string& dir,
    const Model& model,
    const Optimizer& optimizer,
    const Normalizer& normalizer,
    const at::Generator& generator,
    const TrainingCounters& counters,
    const std::vector<at::Tensor>& rank_rng_states = {});

/// Restores what is given (null pointers are skipped). Missing or truncated files throw a
/// FileError naming the file. `rank` > 0 restores that rank's generator state (a checkpoint of a
/// run with fewer processes has none: FileError).
TrainingCounters checkpoint_load(
    const std::string& dir,
    Model& model,
    Optimizer* optimizer,
    Normalizer* normalizer,
    at::Generator* generator,
    int rank = 0);

}  // namespace sdpo
