#pragma once
// The scaffolding every algorithm's update() shares (research/algorithms.md 4.4, 5.4, 6.4, 7.5):
// how many steps are trained, the epoch's visiting order of rows and steps, the one backward of a
// micro-batch with its finiteness check, and the sums behind the returned metrics. What differs
// between the algorithms (the loss, the loop nesting, the accumulation count) stays in them.
//
// The rest of an update phase is run_update_phase's, called by the trainer (and by tests that
// drive an algorithm directly): model.set_training(true) before update(), then optimizer.flush()
// (a trailing partial accumulation still updates), set_training(false), and the `grad_norm` and
// `updates` metrics (algorithm.h).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/api.h"

namespace sdpo {

/// One update phase: set_training(true), algorithm.update(buffer, ctx), ctx.optimizer.flush(),
/// set_training(false); returns the algorithm's metrics with `grad_norm` (the last optimizer step's
/// gradient norm) and `updates` (the optimizer's running count of steps) added.
SDPO_API Metrics run_update_phase(Algorithm& algorithm, RolloutBuffer& buffer, UpdateContext& ctx);

/// num_train_timesteps = int(T * timestep_fraction), at least one (4.4).
SDPO_API std::int64_t trained_steps(std::int64_t T, double timestep_fraction);

/// The order an epoch's update visits the buffer in.
struct UpdateOrder {
  at::Tensor rows;   ///< (n,) int64 on the CPU: a permutation of the rows (or pairs), or 0..n-1
  at::Tensor steps;  ///< (n, T) int64 on the CPU: steps[i][j] = the step trained at position j by row i
};

/// Draws the order from `gen`: first the row permutation (when `shuffle_rows`), then one
/// independent step permutation per row 0..n-1 (when `shuffle_steps`), each row's indexed by the
/// row itself so that it travels with the row through the permutation (4.4 steps 1-2, 7.5).
/// Unshuffled axes are the identity and draw nothing.
SDPO_API UpdateOrder
draw_update_order(std::int64_t n, std::int64_t T, bool shuffle_rows, bool shuffle_steps, at::Generator& gen);

/// Throws NumericError "algorithm '<algorithm>': the loss is <value> at epoch <epoch>, <where>"
/// when `value` is NaN or infinite.
SDPO_API void check_loss_finite(
    double value, const std::string& algorithm, std::int64_t epoch, const std::string& where);

/// One micro-batch's backward: the loss's value is checked (check_loss_finite), loss / accumulation
/// is backpropagated (accelerate averages the accumulated micro-batches, 4.4) and the optimizer's
/// accumulation advances (it steps every `accumulation` calls). `loss` is a scalar. Returns its value.
SDPO_API double backward_micro_batch(
    const at::Tensor& loss,
    std::int64_t accumulation,
    UpdateContext& ctx,
    const std::string& algorithm,
    const std::string& where);

/// Sums of per-term metrics (one term per backward, or per mini-batch); means() divides each sum
/// by the number of terms (at least one) and adds the per-epoch values given to set().
class SDPO_API MetricSums {
 public:
  void add(const std::string& name, double value) { sums_[name] += value; }
  /// Closes one term: the number of terms divides the sums.
  void next_term() { ++terms_; }
  /// A value reported as is (e.g. a fraction computed once per epoch).
  void set(const std::string& name, double value) { fixed_[name] = value; }
  std::int64_t terms() const { return terms_; }
  Metrics means() const;

 private:
  std::map<std::string, double> sums_;
  std::map<std::string, double> fixed_;
  std::int64_t terms_ = 0;
};

}  // namespace sdpo
