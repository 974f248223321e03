#include "sdpo/similarity.h"

#include <ATen/ATen.h>
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
  auto refs = unit.gather(1, idx);        // (N, Q, D)
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
  auto idx = steps.to(at::kLong).to(rewards.device());
  auto q = queried.to(rewards.scalar_type()).to(rewards.device());
  for (int64_t j = 0; j < idx.size(1); ++j) {
    rewards.scatter_(1, idx.select(1, j).unsqueeze(1), q.select(1, j).unsqueeze(1));
  }
  return rewards;
}

at::Tensor dense_similarity_weighted(const at::Tensor& queried, const at::Tensor& sims, const at::Tensor& steps) {
  TORCH_CHECK(queried.dim() == 2 && sims.dim() == 3 && sims.size(1) == queried.size(1),
              "dense rewards: queried (N, Q) and sims (N, Q, T) disagree: ", queried.sizes(), " vs ", sims.sizes());
  auto q = queried.to(sims.scalar_type());
  // 7.2 step 1 (the reference has no guard on the denominator, quirk 11.17).
  auto dense = (q.unsqueeze(-1) * sims).sum(1) / sims.sum(1);
  // 7.2 steps 2-3: exact rewards at the queried steps; the anchor (queried last) wins.
  return dense_keep_exact(dense, queried, steps);
}

}  // namespace sdpo
