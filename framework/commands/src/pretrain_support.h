#pragma once
// Pieces shared by the `sdpo pretrain` methods (pretrain.cpp: denoising training of the base
// model; consistency_distillation_driver.cpp: latent consistency distillation of it;
// few_step_distillation_driver.cpp: distillation into a few-step ddim model). Internal to the
// framework library.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "sdpo/core/safetensors.h"
#include "sdpo/math/ddim.h"
#include "sdpo/train/manifest.h"

namespace torch::optim {
class AdamW;
}

namespace sdpo::detail {

/// A copy of `cfg` without its `checkpoint` option (training that must start from random init).
ComponentConfig without_checkpoint(ComponentConfig cfg);

/// Refuses an empty output path (naming `key` in the manifest) and creates its parent folder.
void require_output(const Manifest& m, const std::string& path, const std::string& key);

/// The distillation methods write only the model: a manifest that asks them for a text encoder
/// copy or reward fits (options of the denoising method) gets a ManifestError naming the key.
void refuse_denoising_only_options(const Manifest& m);

/// "%.6g" of `v`, for the checkpoints' metadata.
std::string number_text(double v);

/// Linear warm-up over the first 5% of steps (at most 100), then cosine decay from lr to 0.1 lr.
double learning_rate_at(std::int64_t step, std::int64_t steps, double lr);

std::int64_t parameter_count(const std::vector<at::Tensor>& params);

/// "12s", "3m04s", "1h02m".
std::string duration_text(double seconds);

/// The trailing timesteps of 1-, 2-, 4- and 8-step sampling, pooled with repetition: (K,) int64.
at::Tensor few_step_timestep_pool(const DDIMSchedule& schedule);

/// Timesteps of one denoising batch, (batch,) int64: the first half uniform over
/// {0..num_train_timesteps-1}, the second half drawn from `few_step_pool`.
at::Tensor sample_denoising_timesteps(
    std::int64_t batch, const at::Tensor& few_step_pool, at::Generator& gen, std::int64_t num_train_timesteps);

/// One batch of the denoising loss (pretrain.h), on the device of `alphas_cumprod`: x0 = 2 *
/// image - 1, t from sample_denoising_timesteps, then eps ~ N(0, I) (in that order from `gen`),
/// x_t = sqrt(ab) x0 + sqrt(1 - ab) eps and the target of `prediction`: eps, v = sqrt(ab) eps -
/// sqrt(1 - ab) x0, or x0 ("sample"). `images`: (B, 3, H, W) in [0, 1] on the CPU.
struct DenoisingBatch {
  at::Tensor x_t, t, target;
};
DenoisingBatch denoising_batch(
    const at::Tensor& images,
    const at::Tensor& alphas_cumprod,
    const at::Tensor& few_step_pool,
    at::Generator& gen,
    const std::string& prediction);

/// The optimizer of every pretrain method: AdamW (weight decay 0.01) over `params`, the gradient
/// norm clipped at 1, the learning rate of learning_rate_at() for `steps` steps.
class PretrainOptimizer {
 public:
  PretrainOptimizer(std::vector<at::Tensor> params, double learning_rate, std::int64_t steps);
  ~PretrainOptimizer();
  /// Sets step's learning rate, back-propagates `loss` and steps. Returns that learning rate.
  double step(std::int64_t step, const at::Tensor& loss);

 private:
  std::vector<at::Tensor> params_;
  double learning_rate_;
  std::int64_t steps_;
  std::unique_ptr<torch::optim::AdamW> adamw_;
};

/// The metadata every pretrain method writes beside its weights: component ("model:<name>"),
/// method, steps, final_loss, seed, batch_size, learning_rate.
StringMap pretrain_metadata(const Manifest& m, double final_loss);

/// Averages the loss over windows of `every` steps and logs "pretrain k/N  loss  lr  elapsed  eta"
/// at each window's end and at the last step. Throws NumericError on a non-finite loss.
class PretrainProgress {
 public:
  PretrainProgress(std::int64_t steps, std::ostream& log, std::int64_t every = 50);
  void record(std::int64_t step, double loss, double lr);
  double final_loss() const { return final_loss_; }

 private:
  std::int64_t steps_, every_;
  std::ostream& log_;
  std::chrono::steady_clock::time_point start_;
  double window_loss_ = 0.0, final_loss_ = 0.0;
  std::int64_t window_steps_ = 0;
};

}  // namespace sdpo::detail
