#include "sdpo/core/rollout_ops.h"

#include <ATen/ATen.h>

#include "sdpo/core/model.h"
#include "sdpo/core/sampler.h"

namespace sdpo {

at::Tensor rollout_select(const at::Tensor& full, const at::Tensor& rows, const at::Tensor& steps) {
  TORCH_CHECK(full.dim() >= 2, "rollout_select: expected (N, T, ...), got ", full.sizes());
  TORCH_CHECK(rows.sizes() == steps.sizes() && rows.dim() == 1, "rollout_select: rows and steps must be (n,)");
  auto flat_index = (rows.to(at::kLong) * full.size(1) + steps.to(at::kLong)).to(full.device());
  return full.flatten(0, 1).index_select(0, flat_index);
}

at::Tensor rollout_log_prob(
    Model& model,
    const Sampler& sampler,
    const RolloutBuffer& buffer,
    const at::Tensor& rows,
    const at::Tensor& steps) {
  auto x = rollout_select(buffer.latents, rows, steps);
  auto x_next = rollout_select(buffer.next_latents, rows, steps);
  auto t = rollout_select(buffer.timesteps, rows, steps);
  auto cond = buffer.cond.index_select(0, rows.to(at::kLong).to(buffer.cond.device()));
  auto out = model.forward(x, t, cond);
  return sampler.step({out, t, x, buffer.num_steps, x_next, c10::nullopt, model.prediction_type()}).log_prob;
}

}  // namespace sdpo
