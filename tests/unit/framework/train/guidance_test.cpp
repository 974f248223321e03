// Classifier-free guidance (sdpo/train/guidance.h): the combination against a hand computation on a
// model whose output is known, gradients through both branches, and the wiring: a manifest with
// sample.guidance != 1 trains (micro run, D3PO's non-adapter reference guided too).

#include "sdpo/train/guidance.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/train/components.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/reference_model.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

// out = a * x + cond.mean over (L, D), broadcast: the conditional and unconditional outputs differ
// by a known amount.
class AffineModel final : public sdpo::Model {
 public:
  AffineModel() : a_(at::full({1}, 2.0).requires_grad_(true)) {}
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond) override {
    ++calls;
    last_batch = x.size(0);
    return a_ * x + cond.mean({1, 2}).view({-1, 1, 1, 1});
  }
  std::string prediction_type() const override { return "epsilon"; }
  std::vector<std::int64_t> latent_shape() const override { return {1, 2, 2}; }
  std::vector<at::Tensor> trainable_parameters() override { return {a_}; }
  sdpo::TensorMap state_dict() const override { return {{"a", a_}}; }
  sdpo::TensorMap trainable_state_dict() const override { return {{"a", a_}}; }
  void load_state_dict(const sdpo::TensorMap&, bool, const std::string&) override {}
  void set_training(bool) override {}
  void to(c10::Device) override {}
  int calls = 0;
  std::int64_t last_batch = 0;

 private:
  at::Tensor a_;
};

TEST(Guidance, CombinesUnconditionalAndConditionalInOneDoubledBatch) {
  auto inner = std::make_shared<AffineModel>();
  at::Tensor uncond = at::full({1, 3, 2}, 1.0);  // mean 1
  sdpo::GuidedModel guided(inner, uncond, 7.5);
  at::Tensor x = at::arange(8, at::kFloat).view({2, 1, 2, 2});
  at::Tensor cond = at::stack({at::full({3, 2}, 3.0), at::full({3, 2}, -1.0)});  // means 3, -1
  at::Tensor out = guided.forward(x, at::zeros({2}, at::kLong), cond);
  EXPECT_EQ(inner->calls, 1);
  EXPECT_EQ(inner->last_batch, 4);
  // out_u = 2x + 1, out_c = 2x + m_c: out = 2x + 1 + 7.5 (m_c - 1).
  at::Tensor expected = 2 * x + 1 + 7.5 * (at::tensor({3.0f, -1.0f}).view({2, 1, 1, 1}) - 1);
  sdpo::test::expect_close(out, expected, 0, 1e-5);
  // d out / d a = x (1 - w) + w x = x: both branches carry gradient.
  out.sum().backward();
  EXPECT_NEAR(inner->trainable_parameters()[0].grad().item<float>(), x.sum().item<float>(), 1e-4);
  EXPECT_THROW(sdpo::GuidedModel(inner, at::zeros({2, 3, 2}), 2.0), c10::Error);
  EXPECT_THROW(sdpo::GuidedModel(inner, uncond, 0.0), c10::Error);
}

TEST(Guidance, ManifestScaleWrapsThePolicyAndTheD3POReference) {
  const std::string text =
      sdpo::test::micro_manifest(R"({"name": "colorfulness"})", R"({"name": "global"})", R"({"name": "d3po"})");
  EXPECT_THROW(sdpo::Manifest::parse(text, "micro.json", {"sample.guidance=0"}), sdpo::ManifestError);
  auto m = sdpo::Manifest::parse(text, "micro.json", {"sample.guidance=3.0", "train.epochs=1"});
  auto c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  auto* guided = dynamic_cast<sdpo::GuidedModel*>(c.model.get());
  ASSERT_NE(guided, nullptr);
  EXPECT_DOUBLE_EQ(guided->scale(), 3.0);
  auto reference = sdpo::make_reference_model(c.model, m.model, c10::Device("cpu"));
  EXPECT_NE(dynamic_cast<sdpo::GuidedModel*>(reference.get()), nullptr);
  auto plain = sdpo::build_components(sdpo::Manifest::parse(text, "micro.json"), sdpo::ComponentSet::kSampling);
  EXPECT_EQ(dynamic_cast<sdpo::GuidedModel*>(plain.model.get()), nullptr);

  sdpo::Trainer trainer(m, {sdpo::test::temp_dir("guided_run")});
  EXPECT_NO_THROW(trainer.run());
}

}  // namespace
