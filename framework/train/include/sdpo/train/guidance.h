#pragma once
// Classifier-free guidance as a model: forward() runs the wrapped model on the unconditional and
// the conditional input in one doubled batch and returns
//   out_u + w * (out_c - out_u)            (research/algorithms.md 2.5; w = sample.guidance)
// where out_u uses the text encoder's embedding of the empty prompt. Built by build_components
// when sample.guidance != 1, so sampling, log-probability recomputation in every algorithm and
// evaluation all see the guided prediction, and gradients flow through both branches (DDPO's
// `train.cfg = True`). The combination is linear, so it holds for epsilon, v and sample
// predictions alike.
//
// Thread safety: as the wrapped model.

#include <ATen/core/Tensor.h>

#include <memory>

#include "sdpo/core/api.h"
#include "sdpo/core/model.h"

namespace sdpo {

class SDPO_API GuidedModel final : public Model {
 public:
  /// uncond: (1, L, D) embedding of the empty prompt; scale: w > 0.
  GuidedModel(std::shared_ptr<Model> inner, at::Tensor uncond, double scale);

  /// x_t (B, C, H, W), t (B,), cond (B, L, D) -> (B, C, H, W); one forward of batch 2B.
  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override;

  std::string prediction_type() const override { return inner_->prediction_type(); }
  std::vector<std::int64_t> latent_shape() const override { return inner_->latent_shape(); }
  std::vector<at::Tensor> trainable_parameters() override { return inner_->trainable_parameters(); }
  TensorMap state_dict() const override { return inner_->state_dict(); }
  TensorMap trainable_state_dict() const override { return inner_->trainable_state_dict(); }
  void load_state_dict(const TensorMap& w, bool strict, const std::string& source) override {
    inner_->load_state_dict(w, strict, source);
  }
  void set_training(bool training) override { inner_->set_training(training); }
  void to(c10::Device device) override;
  at::ScalarType trained_dtype() const override { return inner_->trained_dtype(); }
  bool has_adapter() const override { return inner_->has_adapter(); }
  void set_adapter_enabled(bool enabled) override { inner_->set_adapter_enabled(enabled); }

  const std::shared_ptr<Model>& inner() const { return inner_; }
  const at::Tensor& uncond() const { return uncond_; }
  double scale() const { return scale_; }

 private:
  std::shared_ptr<Model> inner_;
  at::Tensor uncond_;
  double scale_;
};

}  // namespace sdpo
