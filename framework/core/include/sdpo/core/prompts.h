#pragma once
// Interface kind `prompts`: the training, evaluation and unseen prompt sets; optionally a
// labelled data source (images with their prompts) that `sdpo pretrain` trains the base model
// and learned rewards on.
//
// Thread safety: const methods are thread-safe.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "sdpo/core/api.h"

namespace sdpo {

/// A batch of the prompt source's own data, for pretraining.
struct LabelledBatch {
  at::Tensor images;                 ///< (B, 3, H, W) float in [0, 1]
  std::vector<std::string> prompts;  ///< B prompts describing the images
};

class SDPO_API PromptSource {
 public:
  static constexpr const char* kKind = "prompts";
  virtual ~PromptSource() = default;

  /// Prompts RL training draws from (uniformly, with replacement).
  virtual const std::vector<std::string>& train_prompts() const = 0;
  /// Fixed prompts evaluated every `eval.every` epochs.
  virtual const std::vector<std::string>& eval_prompts() const = 0;
  /// Prompts never trained on (the paper's Table 1 categories: color, count, composition, location).
  virtual const std::vector<std::string>& unseen_prompts() const = 0;

  /// Whether labelled_batch() is available.
  virtual bool has_labelled_data() const { return false; }
  /// Draws B labelled images from `gen`. Throws if has_labelled_data() is false.
  virtual LabelledBatch labelled_batch(std::int64_t batch_size, at::Generator& gen);
};

}  // namespace sdpo
