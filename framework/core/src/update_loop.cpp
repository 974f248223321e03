// The update scaffolding shared by the algorithms (update_loop.h). Each piece reproduces what the
// four algorithms did on their own before, draw for draw, so that moving them here changed no bit
// of a run (the generator is consumed in the same order: rows first, then each row's steps).
#include "sdpo/core/update_loop.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"

namespace sdpo {

Metrics run_update_phase(Algorithm& algorithm, RolloutBuffer& buffer, UpdateContext& ctx) {
  ctx.model.set_training(true);
  Metrics metrics = algorithm.update(buffer, ctx);
  ctx.optimizer.flush();
  ctx.model.set_training(false);
  metrics["grad_norm"] = ctx.optimizer.last_grad_norm();
  metrics["updates"] = static_cast<double>(ctx.optimizer.updates());
  if (ctx.optimizer.loss_scaling()) {
    // Curves of a loss-scaled run: the scale after the epoch's updates, and the running count of
    // skipped steps (a skip is an update that did not happen; `updates` counts applied ones).
    metrics["loss_scale"] = ctx.optimizer.loss_scale();
    metrics["skipped_updates"] = static_cast<double>(ctx.optimizer.skipped_updates());
  }
  return metrics;
}

std::int64_t trained_steps(std::int64_t T, double timestep_fraction) {
  // 4.4: int() truncates, as the reference's int(num_steps * timestep_fraction).
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(T) * timestep_fraction));
}

UpdateOrder draw_update_order(
    std::int64_t n, std::int64_t T, bool shuffle_rows, bool shuffle_steps, at::Generator& gen) {
  const auto long_cpu = at::TensorOptions().dtype(at::kLong);
  UpdateOrder o;
  o.rows = shuffle_rows ? at::randperm(n, gen, long_cpu) : at::arange(n, long_cpu);
  std::vector<at::Tensor> perms;
  perms.reserve(static_cast<size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    perms.push_back(shuffle_steps ? at::randperm(T, gen, long_cpu) : at::arange(T, long_cpu));
  }
  o.steps = n > 0 ? at::stack(perms) : at::empty({0, T}, long_cpu);
  return o;
}

void check_loss_finite(double value, const std::string& algorithm, std::int64_t epoch, const std::string& where) {
  if (!std::isfinite(value)) {
    throw NumericError(
        "algorithm '" + algorithm + "': the loss is " + std::to_string(value) + " at epoch " + std::to_string(epoch) +
        ", " + where);
  }
}

double backward_micro_batch(
    const at::Tensor& loss,
    std::int64_t accumulation,
    UpdateContext& ctx,
    const std::string& algorithm,
    const std::string& where) {
  const double value = loss.item<double>();
  check_loss_finite(value, algorithm, ctx.epoch, where);
  ctx.optimizer.backward(loss / static_cast<double>(accumulation));
  ctx.optimizer.micro_step(accumulation);
  return value;
}

Metrics MetricSums::means() const {
  const double m = static_cast<double>(std::max<std::int64_t>(terms_, 1));
  Metrics out;
  for (const auto& [name, sum] : sums_) out[name] = sum / m;
  for (const auto& [name, value] : fixed_) out[name] = value;
  return out;
}

}  // namespace sdpo
