#include "sdpo/train/reference_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "sdpo/core/error.h"
#include "sdpo/core/registry.h"
#include "sdpo/train/guidance.h"

namespace sdpo {
namespace {

// The policy with its adapter off. Every call re-enables the adapter on the way out (also when
// forward throws), so the policy is never left in the reference state.
class AdapterOffModel final : public Model {
 public:
  explicit AdapterOffModel(std::shared_ptr<Model> policy) : policy_(std::move(policy)) {}

  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override {
    struct Restore {
      Model& m;
      ~Restore() { m.set_adapter_enabled(true); }
    } restore{*policy_};
    policy_->set_adapter_enabled(false);
    at::NoGradGuard no_grad;
    return policy_->forward(x_t, t, cond);
  }
  std::string prediction_type() const override { return policy_->prediction_type(); }
  std::vector<std::int64_t> latent_shape() const override { return policy_->latent_shape(); }
  std::vector<at::Tensor> trainable_parameters() override { return {}; }
  TensorMap state_dict() const override { return policy_->state_dict(); }
  TensorMap trainable_state_dict() const override { return {}; }
  void load_state_dict(const TensorMap&, bool, const std::string& source) override {
    throw Error("the reference model is a view of the policy with its adapter off; it loads nothing (" + source + ")");
  }
  void set_training(bool) override {}
  void to(c10::Device) override {}

 private:
  std::shared_ptr<Model> policy_;
};

}  // namespace

std::shared_ptr<Model> make_reference_model(
    const std::shared_ptr<Model>& policy, const ComponentConfig& section, c10::Device device) {
  if (policy->has_adapter()) return std::make_shared<AdapterOffModel>(policy);
  std::shared_ptr<Model> reference = Registry::global().create<Model>(section);
  reference->to(device);
  reference->set_training(false);
  for (auto& p : reference->trainable_parameters()) p.requires_grad_(false);
  // A guided policy gets an equally guided reference.
  if (const auto* guided = dynamic_cast<const GuidedModel*>(policy.get())) {
    return std::make_shared<GuidedModel>(reference, guided->uncond(), guided->scale());
  }
  return reference;
}

}  // namespace sdpo
