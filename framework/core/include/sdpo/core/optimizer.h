#pragma once
// The framework's optimizer service: AdamW (libtorch's) with gradient accumulation and
// gradient-norm clipping, so algorithms never hold torch::optim types (keeps their headers light).
//
// Example (accumulate 4 micro-batches per update):
//   loss.backward();  if (opt.micro_step()) { /* an update happened */ }
//
// Thread safety: not thread-safe.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sdpo/core/loss_scaler.h"
#include "sdpo/core/tensor_map.h"

namespace sdpo {

struct OptimizerOptions {
  std::string name = "adamw";  ///< "adamw" or "adam"
  double learning_rate = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-4;
  double max_grad_norm = 1.0;  ///< <= 0: no clipping
  std::int64_t gradient_accumulation = 1;
  LossScalingOptions loss_scaling;  ///< off unless the trainer enables it (float16 training)
};

class Optimizer {
 public:
  Optimizer(std::vector<at::Tensor> parameters, const OptimizerOptions& options);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Backpropagates loss * loss_scale() (the loss itself when loss scaling is off). Every
  /// micro-batch backward goes through here, so the gradients are uniformly scaled.
  void backward(const at::Tensor& loss);
  /// The current loss scale (1 when loss scaling is off; loss_scaler.h).
  double loss_scale() const { return scaler_.scale(); }
  /// Steps skipped so far because the scaled gradient overflowed (0 when loss scaling is off).
  std::int64_t skipped_updates() const { return scaler_.skipped(); }
  bool loss_scaling() const { return scaler_.enabled(); }

  /// Call after each micro-batch's backward. Every `accumulation` calls it unscales the
  /// gradients (with loss scaling), clips the gradient norm, steps and zeroes the gradients, and
  /// returns true. With loss scaling, a non-finite gradient skips the step instead (gradients
  /// zeroed, the scale backed off) and it returns false; without, it throws NumericError. Gradients are summed, so
  /// losses should be divided by `accumulation` by the caller (as accelerate does).
  bool micro_step();
  /// Same, with an explicit accumulation count (e.g. G_acc * T for step-accumulated updates).
  bool micro_step(std::int64_t accumulation);
  /// Applies an update now if micro-batches are pending (end of an epoch whose micro-batch count
  /// is not a multiple of the accumulation). Returns true if it updated.
  bool flush();
  /// Total (unscaled) gradient norm before clipping at the last update or skipped update.
  double last_grad_norm() const { return last_grad_norm_; }
  std::int64_t updates() const { return updates_; }
  const OptimizerOptions& options() const { return options_; }
  void zero_grad();
  /// Called at every update with the parameters, once their micro-batch gradients are summed and
  /// before the gradient norm is taken, clipped and applied: the trainer all-reduces the gradients
  /// across data-parallel ranks here (sdpo/distributed/distributed.h), so every rank clips and steps the same
  /// mean gradient. Unset (one process): nothing happens.
  void set_gradient_hook(std::function<void(const std::vector<at::Tensor>&)> hook);

  /// Optimizer state as named tensors (moments, step counts, the loss scaler's state) for
  /// checkpoints.
  TensorMap state_dict() const;
  void load_state_dict(const TensorMap& state, const std::string& source);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  OptimizerOptions options_;
  std::function<void(const std::vector<at::Tensor>&)> gradient_hook_;
  LossScaler scaler_;
  std::int64_t pending_ = 0;
  std::int64_t updates_ = 0;
  double last_grad_norm_ = 0.0;
};

}  // namespace sdpo
