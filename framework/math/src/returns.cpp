#include "sdpo/math/returns.h"

#include <ATen/ATen.h>

namespace sdpo {

at::Tensor returns_discounted(const at::Tensor& rewards, double gamma) {
  TORCH_CHECK(rewards.dim() == 2, "returns: rewards must be (N, T), got ", rewards.sizes());
  if (gamma <= 0) return rewards.clone();  // 9.2 "no return": the code skips the recursion
  auto g = rewards.clone();
  // Backward recursion over the trajectory index (7.3): G_k = R_k + gamma * G_{k+1}.
  for (int64_t k = rewards.size(1) - 2; k >= 0; --k) {
    g.select(1, k).add_(g.select(1, k + 1), gamma);
  }
  return g;
}

}  // namespace sdpo
