#include "sdpo/train/sampling.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <vector>

#include "sdpo/core/model.h"
#include "sdpo/core/sampler.h"

namespace sdpo {

at::Tensor forward_in_chunks(
    Model& model, const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond, std::int64_t forward_batch) {
  const std::int64_t n = x.size(0);
  if (forward_batch <= 0 || forward_batch >= n) return model.forward(x, t, cond);
  std::vector<at::Tensor> outs;
  for (std::int64_t i = 0; i < n; i += forward_batch) {
    const std::int64_t len = std::min(forward_batch, n - i);
    outs.push_back(model.forward(x.narrow(0, i, len), t.narrow(0, i, len), cond.narrow(0, i, len)));
  }
  return at::cat(outs, 0);
}

Trajectories sample_trajectories(
    Model& model,
    Sampler& sampler,
    const at::Tensor& cond,
    const at::Tensor& x_T,
    std::int64_t num_steps,
    at::Generator& generator,
    bool keep,
    std::int64_t forward_batch) {
  at::NoGradGuard no_grad;
  const auto ts = sampler.timesteps(num_steps);
  const int64_t n = x_T.size(0);
  auto x = x_T;
  std::vector<at::Tensor> latents, next, logps, x0s, tcol;
  for (int64_t k = 0; k < num_steps; ++k) {
    auto t = at::full({n}, ts[static_cast<size_t>(k)], x.options().dtype(at::kLong));
    auto out = forward_in_chunks(model, x, t, cond, forward_batch);
    SamplerStepInput in{out, t, x, num_steps, at::Tensor(), generator, model.prediction_type()};
    auto step = sampler.step(in);
    if (keep) {
      latents.push_back(x);
      next.push_back(step.prev_sample);
      x0s.push_back(step.pred_x0);
    } else if (k == num_steps - 1) {
      x0s.push_back(step.pred_x0);
    }
    logps.push_back(step.log_prob);
    tcol.push_back(t);
    x = step.prev_sample;
  }
  Trajectories tr;
  tr.timesteps = at::stack(tcol, 1);
  tr.log_probs = at::stack(logps, 1);
  tr.pred_x0 = at::stack(x0s, 1);
  if (keep) {
    tr.latents = at::stack(latents, 1);
    tr.next_latents = at::stack(next, 1);
  }
  tr.final_sample = x;
  return tr;
}

}  // namespace sdpo
