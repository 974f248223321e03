#include "sdpo/train/guidance.h"

#include <ATen/ATen.h>

#include "sdpo/core/error.h"

namespace sdpo {

GuidedModel::GuidedModel(std::shared_ptr<Model> inner, at::Tensor uncond, double scale)
    : inner_(std::move(inner)), uncond_(std::move(uncond)), scale_(scale) {
  TORCH_CHECK(
      uncond_.dim() == 3 && uncond_.size(0) == 1, "GuidedModel: the unconditional embedding must be (1, L, D), got ",
      uncond_.sizes());
  TORCH_CHECK(scale_ > 0.0, "GuidedModel: guidance scale must be > 0, got ", scale_);
}

at::Tensor GuidedModel::forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) {
  const std::int64_t b = x_t.size(0);
  TORCH_CHECK(
      cond.dim() == 3 && cond.size(1) == uncond_.size(1) && cond.size(2) == uncond_.size(2),
      "GuidedModel: conditioning ", cond.sizes(), " does not match the unconditional embedding ", uncond_.sizes());
  // One doubled batch, unconditional half first (the diffusers pipelines' order).
  at::Tensor out = inner_->forward(
      at::cat({x_t, x_t}), at::cat({t, t}),
      at::cat({uncond_.to(cond.device(), cond.scalar_type()).expand({b, -1, -1}), cond}));
  at::Tensor out_u = out.narrow(0, 0, b), out_c = out.narrow(0, b, b);
  return out_u + scale_ * (out_c - out_u);
}

void GuidedModel::to(c10::Device device) {
  inner_->to(device);
  uncond_ = uncond_.to(device);
}

}  // namespace sdpo
