#pragma once
// Interface kind `decoder`: latents -> images.
//
// Thread safety: not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "sdpo/core/api.h"

namespace sdpo {

class SDPO_API Decoder {
 public:
  static constexpr const char* kKind = "decoder";
  virtual ~Decoder() = default;

  /// latents: (B, C, h, w) as produced by the sampler. Returns (B, 3, H, W) float images in
  /// [0, 1] (clamped), on the latents' device. No gradient is needed through it.
  virtual at::Tensor decode(const at::Tensor& latents) = 0;
  virtual void to(c10::Device device) = 0;
};

}  // namespace sdpo
