#pragma once
// Discounted returns over dense rewards (research/algorithms.md 7.3, 9.2).

#include <ATen/core/Tensor.h>

namespace sdpo {

/// rewards: (N, T) in denoising order. Returns G with G_{T-1} = R_{T-1} and
/// G_k = R_k + gamma * G_{k+1}. gamma <= 0 means "no return": G = R (a copy).
at::Tensor returns_discounted(const at::Tensor& rewards, double gamma);

}  // namespace sdpo
