#pragma once
// Interface kind `sampler`: owns the timestep schedule and the stochastic step math. It sees the
// model only through its output (aesthetics.md, guideline 3): the trainer calls the model and
// hands the prediction to step().
//
// Example (one trajectory of n steps):
//   auto ts = sampler->timesteps(n);
//   for (k = 0; k < n; ++k) {
//     auto o = model->forward(x, t_k, cond);
//     auto out = sampler->step({o, t_k, x, n, {}, gen});
//     x = out.prev_sample;                  // out.pred_x0, out.log_prob kept for training
//   }
//
// Thread safety: stateless after construction; step() is thread-safe.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/api.h"

namespace sdpo {

struct SamplerStepInput {
  at::Tensor model_output;                  ///< (B, C, H, W): the model's prediction at (sample, timestep)
  at::Tensor timestep;                      ///< (B,) int64: the current timestep of each sample
  at::Tensor sample;                        ///< (B, C, H, W): x_t, the latent before the step
  std::int64_t num_steps;                   ///< N: steps of the whole trajectory (enters the prev-timestep rule)
  at::Tensor prev_sample;                   ///< undefined: draw it; defined: score this given transition
  c10::optional<at::Generator> generator;   ///< noise source when drawing
  std::string prediction_type = "epsilon";  ///< what model_output is (Model::prediction_type())
};

struct SamplerStepOutput {
  at::Tensor prev_sample;  ///< (B, C, H, W): x_{t_prev}, detached when drawn
  at::Tensor pred_x0;      ///< (B, C, H, W): predicted clean sample at this step
  at::Tensor log_prob;     ///< (B,): log density of prev_sample, averaged over C*H*W
};

class SDPO_API Sampler {
 public:
  static constexpr const char* kKind = "sampler";
  virtual ~Sampler() = default;

  /// The n timesteps of an n-step trajectory, in denoising order (first = noisiest).
  virtual std::vector<std::int64_t> timesteps(std::int64_t n) const = 0;

  /// One step. Gradients flow from log_prob and pred_x0 to model_output (never to prev_sample).
  virtual SamplerStepOutput step(const SamplerStepInput& in) const = 0;

  /// Standard deviation of the initial noise x_T (1 for DDIM).
  virtual double init_noise_sigma() const { return 1.0; }

  /// The image a trajectory ends in, for rewards on final images (DDPO, REBEL, D3PO): the last
  /// sample (false: DDIM, whose last step lands on the clean sample) or the last step's predicted
  /// x0 (true: LCM under RLCM's policy, which adds noise on the last step too; RLCM scores the
  /// denoised image, research/algorithms.md 5.1).
  virtual bool final_image_is_pred_x0() const { return false; }
};

}  // namespace sdpo
