#pragma once
// Pieces shared by the two `sdpo pretrain` methods (pretrain.cpp: denoising training of the base
// model; consistency_distillation.cpp: latent consistency distillation of it). Internal to the
// framework library.

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "sdpo/manifest.h"

namespace sdpo::detail {

/// A copy of `cfg` without its `checkpoint` option (training that must start from random init).
ComponentConfig without_checkpoint(ComponentConfig cfg);

/// Refuses an empty output path (naming `key` in the manifest) and creates its parent folder.
void require_output(const Manifest& m, const std::string& path, const std::string& key);

/// Linear warm-up over the first 5% of steps (at most 100), then cosine decay from lr to 0.1 lr.
double learning_rate_at(std::int64_t step, std::int64_t steps, double lr);

std::int64_t parameter_count(const std::vector<at::Tensor>& params);

/// "12s", "3m04s", "1h02m".
std::string duration_text(double seconds);

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
