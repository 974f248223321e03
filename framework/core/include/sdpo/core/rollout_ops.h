#pragma once
// Reading stored transitions back out of a rollout buffer, for the algorithms' updates: each row
// of a micro-batch trains its own (shuffled) step, so entries are selected per (row, step).

#include <ATen/core/Tensor.h>

#include "sdpo/core/rollout.h"

namespace sdpo {

class Model;
class Sampler;

/// full: (N, T, ...); rows, steps: (n,) int64. Returns (n, ...) with entry i = full[rows[i], steps[i]].
/// One index_select on the flattened (N*T, ...) view: no (n, T, ...) copy.
at::Tensor rollout_select(const at::Tensor& full, const at::Tensor& rows, const at::Tensor& steps);

/// The log-probability (research/algorithms.md 2.4), under `model`, of the stored transitions
/// x^(k) -> x^(k+1) of buffer rows `rows` at steps `steps` ((n,) int64 each), conditioned on the
/// rows' prompts. One batched forward; gradients flow to the model's parameters. Returns (n,).
at::Tensor rollout_log_prob(
    Model& model, const Sampler& sampler, const RolloutBuffer& buffer, const at::Tensor& rows, const at::Tensor& steps);

}  // namespace sdpo
