#pragma once
// The rollout buffer: the one data structure every algorithm consumes (DESIGN.md section 3).
//
// N trajectories of T steps. Paired algorithms have B pairs stored as N = 2B rows: row i is
// member a and row i + B member b of pair i (same prompt; same initial noise when the algorithm
// asks for it). Index order along T is denoising order: index 0 is the first (noisiest) step.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sdpo {

struct RolloutBuffer {
  std::int64_t num_steps = 0;        ///< T
  bool paired = false;               ///< rows [0,B) are members a, [B,2B) members b
  std::vector<std::string> prompts;  ///< N prompts
  at::Tensor cond;                   ///< (N, L, D) conditioning
  at::Tensor timesteps;              ///< (N, T) int64
  at::Tensor latents;                ///< (N, T, C, H, W): x before each step
  at::Tensor next_latents;           ///< (N, T, C, H, W): x after each step
  at::Tensor log_probs;              ///< (N, T): log-prob under the sampling parameters
  at::Tensor pred_x0;                ///< (N, T, C, H, W): predicted x0 (freed after rewards)
  at::Tensor query_steps;            ///< (N, Q) int64
  at::Tensor queried_rewards;        ///< (N, Q)
  at::Tensor similarities;           ///< (N, Q, T) or undefined
  at::Tensor anchor_step;            ///< (N,) int64 or undefined
  at::Tensor final_rewards;          ///< (N,): reward of the last step's image
  at::Tensor dense_rewards;          ///< (N, T)
  at::Tensor returns;                ///< (N, T)
  at::Tensor advantages;             ///< (N, T)

  std::int64_t size() const { return static_cast<std::int64_t>(prompts.size()); }
  /// Number of pairs (paired) or trajectories.
  std::int64_t groups() const { return paired ? size() / 2 : size(); }
};

}  // namespace sdpo
