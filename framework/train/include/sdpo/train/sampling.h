#pragma once
// Running a sampler with a model: the trajectories RL trains on and the images evaluation
// scores. Each step calls the model on the whole batch (both members of every pair together), or
// in chunks of at most `forward_batch` latents (the manifest's sample.forward_batch): on a CPU,
// two calls of 8 toy latents take 20% less time than one of 16 (benchmarks/README.md, "One
// sampling step"). Chunks change the samples only at float round-off: libtorch picks other
// convolution kernels for other batch sizes.

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

/// model.forward(x, t, cond) over the batch (dimension 0 of all three) in chunks of at most
/// `forward_batch` (0: one call), concatenated: (N, C, H, W).
at::Tensor forward_in_chunks(
    Model& model, const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond, std::int64_t forward_batch);

/// Samples N trajectories of `num_steps` steps from initial noise `x_T` (N, C, H, W) under
/// conditioning `cond` (N, L, D), drawing step noise from `generator`. No gradient is recorded.
/// `keep` = false stores only the log-probs, the last predicted x0 and the final sample (for
/// evaluation, where memory matters). `forward_batch`: latents per model call (0: all N).
Trajectories sample_trajectories(
    Model& model,
    Sampler& sampler,
    const at::Tensor& cond,
    const at::Tensor& x_T,
    std::int64_t num_steps,
    at::Generator& generator,
    bool keep,
    std::int64_t forward_batch = 0);

}  // namespace sdpo
