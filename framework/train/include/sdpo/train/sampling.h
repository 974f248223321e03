#pragma once
// Running a sampler with a model: the trajectories RL trains on and the images evaluation
// scores. The model is called once per step on the whole batch (both members of every pair in
// one forward pass).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sdpo {

class Model;
class Sampler;

struct Trajectories {
  at::Tensor timesteps;     ///< (N, T) int64
  at::Tensor latents;       ///< (N, T, C, H, W): x before each step (undefined unless kept)
  at::Tensor next_latents;  ///< (N, T, C, H, W): x after each step (undefined unless kept)
  at::Tensor log_probs;     ///< (N, T)
  at::Tensor pred_x0;       ///< (N, T, C, H, W) if kept, else (N, 1, C, H, W): the last step's
  at::Tensor final_sample;  ///< (N, C, H, W): x after the last step
};

/// Samples N trajectories of `num_steps` steps from initial noise `x_T` (N, C, H, W) under
/// conditioning `cond` (N, L, D), drawing step noise from `generator`. No gradient is recorded.
/// `keep` = false stores only the log-probs, the last predicted x0 and the final sample (for
/// evaluation, where memory matters).
Trajectories sample_trajectories(
    Model& model,
    Sampler& sampler,
    const at::Tensor& cond,
    const at::Tensor& x_T,
    std::int64_t num_steps,
    at::Generator& generator,
    bool keep);

}  // namespace sdpo
