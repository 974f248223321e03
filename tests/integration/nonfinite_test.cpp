// Non-finite values are blamed on their source: a policy whose outputs turn NaN stops the run
// naming the model (not the reward that would have been handed NaN images), and `sdpo sample`
// refuses a checkpoint with NaN weights instead of writing a black grid.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

// Forwards to the real model, but its no-grad (sampling) outputs are NaN from the second epoch's
// sampling on: what a diverged policy looks like to the trainer.
class DivergingModel final : public sdpo::Model {
 public:
  explicit DivergingModel(std::shared_ptr<sdpo::Model> inner) : inner_(std::move(inner)) {}
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& cond) override {
    auto y = inner_->forward(x, t, cond);
    if (!at::GradMode::is_enabled() && ++sampling_calls_ > calls_per_epoch) {
      return y * std::numeric_limits<float>::quiet_NaN();
    }
    return y;
  }
  std::string prediction_type() const override { return inner_->prediction_type(); }
  std::vector<std::int64_t> latent_shape() const override { return inner_->latent_shape(); }
  std::vector<at::Tensor> trainable_parameters() override { return inner_->trainable_parameters(); }
  sdpo::TensorMap state_dict() const override { return inner_->state_dict(); }
  sdpo::TensorMap trainable_state_dict() const override { return inner_->trainable_state_dict(); }
  void load_state_dict(const sdpo::TensorMap& w, bool strict, const std::string& s) override {
    inner_->load_state_dict(w, strict, s);
  }
  void set_training(bool training) override { inner_->set_training(training); }
  void to(c10::Device d) override { inner_->to(d); }
  std::int64_t calls_per_epoch = 0;

 private:
  std::shared_ptr<sdpo::Model> inner_;
  std::int64_t sampling_calls_ = 0;
};

TEST(NonFinite, ADivergedPolicyIsBlamedOnTheModelNotTheReward) {
  const auto m = sdpo::Manifest::parse(
      sdpo::test::micro_algorithm_manifest("sdpo"), "micro.json", {"train.epochs=3", "eval.every=0"});
  sdpo::TrainerOptions o(sdpo::test::temp_dir("nonfinite_model"));
  o.wrap_model = [&](std::shared_ptr<sdpo::Model> inner) -> std::shared_ptr<sdpo::Model> {
    auto d = std::make_shared<DivergingModel>(std::move(inner));
    d->calls_per_epoch = m.sample.steps * m.train.batches_per_epoch;  // one call per step per batch
    return d;
  };
  try {
    sdpo::Trainer(m, o).run();
    FAIL() << "expected the run to stop";
  } catch (const sdpo::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(
        what.find("model '" + m.model.name + "' produced NaN or Inf while sampling at epoch 2"), std::string::npos)
        << what;
    EXPECT_EQ(what.find("reward"), std::string::npos) << what;
  }
}

TEST(NonFinite, SampleRefusesACheckpointWithNaNWeights) {
  const auto dir = sdpo::test::temp_dir("nonfinite_sample");
  const auto manifest = dir + "/micro.json";
  std::ofstream(manifest) << sdpo::test::micro_algorithm_manifest("sdpo");
  auto r = sdpo::test::run_command(
      std::string(SDPO_CLI) + " train " + manifest + " --output " + dir +
      "/run --set train.epochs=1 --set eval.every=0");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto ckpt = dir + "/run/checkpoints/epoch_1";
  auto weights = sdpo::safetensors_load(ckpt + "/model.safetensors");
  ASSERT_FALSE(weights.empty());
  auto& first = weights.begin()->second;
  first = first.clone();
  first.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  sdpo::safetensors_save(ckpt + "/model.safetensors", weights);
  r = sdpo::test::run_command(
      std::string(SDPO_CLI) + " sample --checkpoint " + ckpt + " --prompt x --steps 1 --out " + dir + "/grid.png");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("weight '" + weights.begin()->first + "' holds NaN or Inf"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/grid.png"));
}

}  // namespace
