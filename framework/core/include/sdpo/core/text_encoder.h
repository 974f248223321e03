#pragma once
// Interface kind `text_encoder`: prompts -> conditioning tensors for the model.
//
// Thread safety: not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "sdpo/core/api.h"
#include "sdpo/core/tensor_map.h"

namespace sdpo {

class SDPO_API TextEncoder {
 public:
  static constexpr const char* kKind = "text_encoder";
  virtual ~TextEncoder() = default;

  /// prompts: B strings. Returns (B, L, D) float conditioning (L and D fixed per encoder).
  virtual at::Tensor encode(const std::vector<std::string>& prompts) = 0;

  /// Parameters trained by `sdpo pretrain` (frozen during RL fine-tuning).
  virtual std::vector<at::Tensor> trainable_parameters() = 0;
  virtual TensorMap state_dict() const = 0;
  virtual void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) = 0;
  virtual void set_training(bool training) = 0;
  virtual void to(c10::Device device) = 0;
};

}  // namespace sdpo
