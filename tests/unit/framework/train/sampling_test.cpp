// Sampling in chunks of sample.forward_batch latents per model call (sdpo/train/sampling.h): the
// chunk sizes and their order, the calls per step, the manifest key, and on the toy UNet as the
// trainer builds it, trajectories equal to one call's up to round-off.

#include "sdpo/train/sampling.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <memory>
#include <string>
#include <vector>

#include "sdpo/core/model.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/sampler.h"
#include "sdpo/train/manifest.h"
#include "support/test_support.h"

namespace {

// out = 3 x + the row's mean of cond: per-sample, so chunking cannot change it; records each
// call's batch size.
class RecordingModel final : public sdpo::Model {
 public:
  at::Tensor forward(const at::Tensor& x, const at::Tensor&, const at::Tensor& cond) override {
    batches.push_back(x.size(0));
    return 3 * x + cond.mean({1, 2}).view({-1, 1, 1, 1});
  }
  std::string prediction_type() const override { return "epsilon"; }
  std::vector<std::int64_t> latent_shape() const override { return {1, 2, 2}; }
  std::vector<at::Tensor> trainable_parameters() override { return {}; }
  sdpo::TensorMap state_dict() const override { return {}; }
  sdpo::TensorMap trainable_state_dict() const override { return {}; }
  void load_state_dict(const sdpo::TensorMap&, bool, const std::string&) override {}
  void set_training(bool) override {}
  void to(c10::Device) override {}
  std::vector<std::int64_t> batches;
};

std::shared_ptr<sdpo::Sampler> ddim() {
  return sdpo::Registry::global().create<sdpo::Sampler>(
      sdpo::ComponentConfig{"sampler", "ddim", {}, "<test>", "sampler.options"});
}

TEST(ForwardBatch, SplitsTheBatchIntoChunksAndConcatenatesInOrder) {
  RecordingModel model;
  const auto x = at::arange(20, at::kFloat).view({5, 1, 2, 2});
  const auto t = at::arange(5, at::kLong);
  const auto cond = at::arange(10, at::kFloat).view({5, 2, 1});
  const auto whole = model.forward(x, t, cond);
  model.batches.clear();
  const auto chunked = sdpo::forward_in_chunks(model, x, t, cond, 2);
  EXPECT_EQ(model.batches, (std::vector<std::int64_t>{2, 2, 1}));
  EXPECT_TRUE(at::equal(chunked, whole));
  // 0, or a chunk at least the batch: one call.
  for (std::int64_t chunk : {0, 5, 9}) {
    model.batches.clear();
    EXPECT_TRUE(at::equal(sdpo::forward_in_chunks(model, x, t, cond, chunk), whole));
    EXPECT_EQ(model.batches, (std::vector<std::int64_t>{5})) << "chunk " << chunk;
  }
}

TEST(ForwardBatch, SampleTrajectoriesCallsTheModelPerChunkAtEveryStep) {
  sdpo::test::load_plugins_once();
  RecordingModel model;
  auto sampler = ddim();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto x_T = at::randn({6, 1, 2, 2}, gen);
  const auto cond = at::randn({6, 3, 2}, gen);
  sdpo::sample_trajectories(model, *sampler, cond, x_T, 3, gen, true, 4);
  EXPECT_EQ(model.batches, (std::vector<std::int64_t>{4, 2, 4, 2, 4, 2}));
}

// The trainer's sampling on the toy UNet: calls of 8, 4 or 3 give the trajectories of one call of
// 16 up to float round-off (libtorch's convolution kernels differ with the batch size; measured:
// 2.7e-5 on pred_x0, whose noise term is scaled by up to 1 / sqrt(alpha_bar) = 15, 1.4e-5 on the
// next latents and 2.4e-7 on the log-probs).
TEST(ForwardBatch, ToyUNetTrajectoriesMatchUpToRoundOff) {
  sdpo::test::load_plugins_once();
  auto model = sdpo::Registry::global().create<sdpo::Model>(sdpo::ComponentConfig{
      "model", "toy_unet", boost::json::parse("{\"seed\": 3}").as_object(), "<test>", "model.options"});
  model->set_training(false);
  auto sampler = ddim();
  at::Generator noise = at::make_generator<at::CPUGeneratorImpl>(7);
  const auto x_T = at::randn({16, 3, 32, 32}, noise);
  const auto cond = at::randn({16, 12, 64}, noise);
  auto run = [&](std::int64_t chunk) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
    return sdpo::sample_trajectories(*model, *sampler, cond, x_T, 3, gen, true, chunk);
  };
  const auto whole = run(0);
  for (std::int64_t chunk : {8, 4, 3}) {
    const auto part = run(chunk);
    const std::string what = "chunk " + std::to_string(chunk);
    sdpo::test::expect_close(part.pred_x0, whole.pred_x0, 1e-5, 1e-4, what + " pred_x0");
    sdpo::test::expect_close(part.next_latents, whole.next_latents, 1e-5, 1e-4, what + " next latents");
    sdpo::test::expect_close(part.log_probs, whole.log_probs, 1e-5, 1e-5, what + " log-probs");
  }
}

TEST(ForwardBatch, ManifestReadsItAndRejectsANegativeValue) {
  auto m = sdpo::Manifest::parse(
      R"({"name": "fb", "model": {"name": "toy_unet"}, "sample": {"steps": 4, "forward_batch": 6}})", "fb.json");
  EXPECT_EQ(m.sample.forward_batch, 6);
  EXPECT_EQ(
      sdpo::Manifest::parse(R"({"name": "fb", "model": {"name": "toy_unet"}})", "fb.json").sample.forward_batch, 0);
  sdpo::test::expect_error_names(
      [] {
        sdpo::Manifest::parse(
            R"({"name": "fb", "model": {"name": "toy_unet"}, "sample": {"forward_batch": -1}})", "fb.json");
      },
      {"fb.json", "sample.forward_batch"});
}

}  // namespace
