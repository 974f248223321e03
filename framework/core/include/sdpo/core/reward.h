#pragma once
// Interface kind `reward`: images (+ prompts) -> one score per image.
//
// Example:
//   at::Tensor r = reward->score(images, prompts);   // (B,)
//
// Thread safety: score() may be called from one worker thread while the trainer samples.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "sdpo/core/api.h"
#include "sdpo/core/tensor_map.h"

namespace sdpo {

class PromptSource;

/// What a learned reward needs to fit itself (`sdpo pretrain`).
struct RewardFitContext {
  PromptSource& data;       ///< labelled images and prompts
  at::Generator generator;  ///< seeded
  std::int64_t steps = 500;
  std::int64_t batch_size = 64;
  double learning_rate = 2e-3;
  std::string output;  ///< safetensors file to write the fitted weights to
};

class SDPO_API Reward {
 public:
  static constexpr const char* kKind = "reward";
  virtual ~Reward() = default;

  /// images: (B, 3, H, W) float in [0, 1]; prompts: B strings (may be ignored).
  /// Returns (B,) float scores on the images' device; higher is better.
  virtual at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) = 0;

  /// Whether score() reads the prompts.
  virtual bool needs_prompts() const = 0;

  /// Learned rewards fit themselves on labelled data and write their weights; others return
  /// false. Returns true when it fitted.
  virtual bool fit(RewardFitContext& ctx) { return false; }

  virtual void to(c10::Device device) {}
};

/// The checks every reward's score() makes on its arguments: images (B, 3, H, W) and, when the
/// reward reads them, one prompt per image. Throws sdpo::Error naming `component` (e.g.
/// "reward 'pickscore'") and the shape or counts it got.
SDPO_API void check_reward_inputs(
    const std::string& component,
    const at::Tensor& images,
    const std::vector<std::string>& prompts,
    bool needs_prompts);

}  // namespace sdpo
