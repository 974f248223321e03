// CUDA checks: skipped where no GPU is present (the CI machines), run by scripts/gpu_check.sh.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <filesystem>

#include "sdpo/math/ddim.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "CUDA not available";
  }
};

TEST_F(CudaTest, DDIMStepMatchesReferenceOnGPU) {
  auto ac = sdpo::ddim_alphas_cumprod({});
  for (const auto& c : sdpo::test::golden().at("ddim_steps").as_array()) {
    auto dev = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
    auto x_t = sdpo::test::json_tensor(c.at("x_t")).to(dev);
    auto out = sdpo::test::json_tensor(c.at("model_output")).to(dev);
    auto x_prev = sdpo::test::json_tensor(c.at("x_prev")).to(dev);
    auto t = at::full({x_t.size(0)}, c.at("timestep").to_number<int64_t>(), dev.dtype(at::kLong));
    auto r =
        sdpo::ddim_step(ac, out, t, x_t, c.at("num_steps").to_number<int64_t>(), 1.0, "epsilon", x_prev, c10::nullopt);
    EXPECT_TRUE(r.log_prob.is_cuda());
    sdpo::test::expect_close(r.log_prob.cpu(), sdpo::test::json_tensor(c.at("log_prob")), 1e-4, 1e-5, "log_prob");
  }
}

TEST_F(CudaTest, MicroRunOnGPU) {
  auto dir = sdpo::test::temp_dir("cuda");
  auto m = sdpo::Manifest::parse(
      R"({
    "device": "cuda",
    "model": {"name": "toy_unet", "options": {"image_size": 8, "channels": [8, 8], "cond_dim": 8, "heads": 1, "norm_groups": 4}},
    "text_encoder": {"name": "toy_text", "options": {"dim": 8, "heads": 1}},
    "decoder": "identity", "sampler": "ddim",
    "prompts": {"name": "shapes", "options": {"image_size": 8}},
    "reward": "colorfulness", "dense_reward": "similarity_3_adaptive",
    "normalizer": {"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}},
    "algorithm": "sdpo",
    "train": {"epochs": 2, "batch_size": 2, "train_batch_size": 2},
    "sample": {"steps": 4}, "eval": {"steps": [1, 4], "seeds": 1, "max_prompts": 2},
    "output": {"progress": false}
  })",
      "cuda.json");
  sdpo::Trainer(m, {dir}).run();
  auto f = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_EQ(f.rows("train"), 2);
  for (double l : f.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));
  EXPECT_EQ(f.attribute("device"), "cuda");
}

}  // namespace
