#include "sdpo/math/similarity.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

namespace sdpo {

at::Tensor similarity_to_steps(const at::Tensor& pred_x0, const at::Tensor& steps) {
  TORCH_CHECK(pred_x0.dim() >= 2, "similarity: pred_x0 must be (N, T, ...), got ", pred_x0.sizes());
  TORCH_CHECK(steps.dim() == 2 && steps.size(0) == pred_x0.size(0), "similarity: steps must be (N, Q)");
  const int64_t n = pred_x0.size(0), t = pred_x0.size(1);
  // 7.1: cosine similarity of the *flattened predicted-x0 latents* (not of images).
  auto flat = pred_x0.reshape({n, t, -1}).to(at::kFloat);
  auto unit = flat / flat.norm(2, -1, true).clamp_min(1e-8);
  auto idx = steps.to(at::kLong).to(flat.device()).unsqueeze(-1).expand({n, steps.size(1), unit.size(2)});
  auto refs = unit.gather(1, idx);             // (N, Q, D)
  return at::bmm(refs, unit.transpose(1, 2));  // (N, Q, T)
}

at::Tensor anchor_argmin(const at::Tensor& sim_first, const at::Tensor& sim_last, bool interior) {
  TORCH_CHECK(sim_first.sizes() == sim_last.sizes() && sim_first.dim() == 2, "anchor: sims must be (N, T)");
  auto total = (sim_first + sim_last).clone();
  const int64_t t = total.size(1);
  if (interior) {
    TORCH_CHECK(t >= 3, "anchor: the interior range {1..T-2} needs T >= 3, got T = ", t);
    total.select(1, 0).fill_(std::numeric_limits<float>::infinity());
    total.select(1, t - 1).fill_(std::numeric_limits<float>::infinity());
  }
  // argmin returns the first minimum, like numpy/torch in the reference.
  return total.argmin(1);
}

at::Tensor dense_keep_exact(at::Tensor rewards, const at::Tensor& queried, const at::Tensor& steps) {
  TORCH_CHECK(
      queried.dim() == 2 && queried.sizes() == steps.sizes(),
      "dense rewards: queried rewards must be (N, Q) like the query steps ", steps.sizes(), ", got ", queried.sizes());
  TORCH_CHECK(
      rewards.dim() == 2 && rewards.size(0) == steps.size(0),
      "dense rewards: rewards must be (N, T) with N = ", steps.size(0), ", got ", rewards.sizes());
  auto idx = steps.to(at::kLong).to(rewards.device());
  auto q = queried.to(rewards.scalar_type()).to(rewards.device());
  for (int64_t j = 0; j < idx.size(1); ++j) {
    rewards.scatter_(1, idx.select(1, j).unsqueeze(1), q.select(1, j).unsqueeze(1));
  }
  return rewards;
}

at::Tensor dense_similarity_weighted(const at::Tensor& queried, const at::Tensor& sims, const at::Tensor& steps) {
  TORCH_CHECK(
      queried.dim() == 2 && sims.dim() == 3 && sims.size(1) == queried.size(1),
      "dense rewards: queried (N, Q) and sims (N, Q, T) disagree: ", queried.sizes(), " vs ", sims.sizes());
  auto q = queried.to(sims.scalar_type());
  // 7.2 step 1 (the reference has no guard on the denominator, quirk 11.17).
  auto dense = (q.unsqueeze(-1) * sims).sum(1) / sims.sum(1);
  // 7.2 steps 2-3: exact rewards at the queried steps; the anchor (queried last) wins.
  return dense_keep_exact(dense, queried, steps);
}

// ---- 9.1 ablation variants ----------------------------------------------------------------------

at::Tensor every_step(std::int64_t n, std::int64_t num_steps, const at::TensorOptions& options) {
  TORCH_CHECK(num_steps >= 1, "dense rewards: a trajectory needs at least one step, got T = ", num_steps);
  return at::arange(num_steps, options.dtype(at::kLong)).unsqueeze(0).expand({n, num_steps}).contiguous();
}

at::Tensor end_steps(std::int64_t n, std::int64_t num_steps, const at::TensorOptions& options) {
  TORCH_CHECK(num_steps >= 1, "dense rewards: a trajectory needs at least one step, got T = ", num_steps);
  // T = 1: the first step is also the last one; it is queried once.
  if (num_steps == 1) return at::zeros({n, 1}, options.dtype(at::kLong));
  auto ends = at::tensor({std::int64_t{0}, num_steps - 1}, options.dtype(at::kLong));
  return ends.unsqueeze(0).expand({n, 2}).contiguous();
}

std::int64_t fixed_anchor(std::int64_t num_steps) {
  TORCH_CHECK(num_steps >= 3, "fixed anchor: needs an interior step (T >= 3), got T = ", num_steps);
  // 9.1: the "25th step" of 50 is k = 24 = floor(50/2) - 1; the same rule for other T, kept interior.
  return std::clamp<std::int64_t>(num_steps / 2 - 1, 1, num_steps - 2);
}

at::Tensor random_anchors(std::int64_t n, std::int64_t num_steps, at::Generator& generator) {
  TORCH_CHECK(num_steps >= 3, "random anchor: needs an interior step (T >= 3), got T = ", num_steps);
  // 9.1 [PROPOSAL]: Uniform{1, ..., T-2}, one independent draw per trajectory (randint's high is exclusive).
  return at::randint(1, num_steps - 1, {n}, generator, at::TensorOptions().dtype(at::kLong));
}

at::Tensor dense_linear_interpolation(const at::Tensor& first, const at::Tensor& last, std::int64_t num_steps) {
  TORCH_CHECK(num_steps >= 1, "interpolation: a trajectory needs at least one step, got T = ", num_steps);
  TORCH_CHECK(
      first.dim() == 1 && first.sizes() == last.sizes(), "interpolation: first and last must be (N,), got ",
      first.sizes(), " and ", last.sizes());
  auto f = first.to(at::kFloat).unsqueeze(1), l = last.to(at::kFloat).to(f.device()).unsqueeze(1);
  if (num_steps == 1) return l.clone();
  // 9.1: linear in the step index k. Written as (1 - w) f + w l so that w = 0 and w = 1 give the
  // exact end rewards (f + w (l - f) can round at w = 1).
  auto w = at::arange(num_steps, f.options()).div_(static_cast<double>(num_steps - 1)).unsqueeze(0);
  return (1 - w) * f + w * l;
}

void check_queried(const QueryPlan& plan, const at::Tensor& queried, const char* who) {
  TORCH_CHECK(plan.steps.defined() && plan.steps.dim() == 2, "dense_reward '", who, "': the plan has no (N, Q) steps");
  TORCH_CHECK(
      queried.dim() == 2 && queried.sizes() == plan.steps.sizes(), "dense_reward '", who,
      "': queried rewards must be (N, Q) = ", plan.steps.sizes(), " like the planned steps, got ", queried.sizes());
}

QueryPlan similarity_plan(const at::Tensor& pred_x0, const at::Tensor& anchor) {
  TORCH_CHECK(pred_x0.dim() >= 2, "dense rewards: pred_x0 must be (N, T, ...), got ", pred_x0.sizes());
  const std::int64_t n = pred_x0.size(0), t = pred_x0.size(1);
  auto opts = at::TensorOptions().dtype(at::kLong).device(pred_x0.device());
  QueryPlan p;
  p.num_steps = t;
  p.steps = end_steps(n, t, opts);
  if (t == 1) return p;  // one step, queried exactly: nothing to weight
  if (anchor.defined()) {
    TORCH_CHECK(t >= 3, "dense rewards: an anchor needs an interior step (T >= 3), got T = ", t);
    TORCH_CHECK(
        anchor.dim() == 1 && anchor.size(0) == n, "dense rewards: anchor must be (N,) = (", n, "), got ",
        anchor.sizes());
    p.anchor = anchor.to(opts);
    TORCH_CHECK(
        (p.anchor >= 0).all().item<bool>() && (p.anchor < t).all().item<bool>(),
        "dense rewards: anchor steps must lie in [0, T-1] = [0, ", t - 1, "]");
    // 7.1 query order (first, last, anchor): the anchor's exact reward is written last.
    p.steps = at::cat({p.steps, p.anchor.unsqueeze(1)}, 1);
  }
  p.similarities = similarity_to_steps(pred_x0, p.steps);  // (N, Q, T)
  return p;
}

at::Tensor dense_exact_every_step(const at::Tensor& queried, const at::Tensor& steps, std::int64_t num_steps) {
  TORCH_CHECK(
      queried.dim() == 2 && queried.sizes() == steps.sizes(),
      "dense rewards: queried (N, Q) and steps (N, Q) disagree: ", queried.sizes(), " vs ", steps.sizes());
  const std::int64_t n = queried.size(0);
  auto idx = steps.to(at::kLong).to(queried.device());
  auto covered = at::zeros({n, num_steps}, idx.options().dtype(at::kBool)).scatter_(1, idx, true);
  TORCH_CHECK(covered.all().item<bool>(), "dense rewards: every one of the T = ", num_steps, " steps must be queried");
  return dense_keep_exact(at::zeros({n, num_steps}, queried.options().dtype(at::kFloat)), queried, steps);
}

at::Tensor similarity_predict(const QueryPlan& plan, const at::Tensor& queried) {
  if (plan.similarities.defined()) return dense_similarity_weighted(queried, plan.similarities, plan.steps);
  // No similarities (T = 1): the only step was queried.
  return dense_exact_every_step(queried, plan.steps, plan.num_steps);
}

}  // namespace sdpo
