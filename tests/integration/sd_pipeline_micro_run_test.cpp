// The paper-scale code path end to end on CPU: a tiny diffusers pipeline folder (random weights,
// SD-Turbo's layout) loaded by `sd_unet` (LoRA), `clip_text` and `sd_vae` through one
// `model.path`, trained by SDPO and by D3PO (whose reference is the policy with its adapter off),
// checkpointed in diffusers' LoRA format.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "sdpo/core/decoder.h"
#include "sdpo/core/model.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/train/components.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"
#include "support/tiny_sd.h"

namespace {

namespace fs = std::filesystem;

std::string sd_manifest(const std::string& algorithm, const std::string& normalizer) {
  return R"({
    "name": "tiny_sd",
    "model": {"name": "sd_unet", "options": {"lora_rank": 2, "seed": 3}},
    "text_encoder": "clip_text",
    "decoder": "sd_vae",
    "sampler": {"name": "ddim", "options": {"eta": 1.0, "spacing": "trailing"}},
    "prompts": "animals",
    "reward": "colorfulness",
    "dense_reward": {"name": "similarity_3_adaptive"},
    "normalizer": )" +
         normalizer + R"(,
    "algorithm": )" +
         algorithm + R"(,
    "train": {"epochs": 2, "batch_size": 2, "batches_per_epoch": 1, "train_batch_size": 2, "learning_rate": 0.01},
    "sample": {"steps": 3},
    "eval": {"steps": [1, 2], "every": 2, "seeds": 1, "max_prompts": 2},
    "output": {"progress": false, "grid_prompts": 2}
  })";
}

TEST(SDPipelineMicroRun, SDPOTrainsOnlyTheLoRAAndCheckpointsItInDiffusersFormat) {
  const std::string pipeline = sdpo::test::write_tiny_sd_pipeline();
  auto m = sdpo::Manifest::parse(
      sd_manifest(R"({"name": "sdpo"})", R"({"name": "per_step_prompt"})"), "tiny_sd.json", {"model.path=" + pipeline});
  // text_encoder and decoder took the model's folder.
  auto c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  EXPECT_TRUE(c.model->has_adapter());
  EXPECT_EQ(c.model->latent_shape(), (std::vector<std::int64_t>{4, 8, 8}));
  EXPECT_EQ(c.text_encoder->encode({"cat"}).sizes(), (std::vector<std::int64_t>{1, 77, 16}));
  EXPECT_EQ(c.decoder->decode(at::zeros({1, 4, 8, 8})).sizes(), (std::vector<std::int64_t>{1, 3, 16, 16}));

  const std::string dir = sdpo::test::temp_dir("tiny_sd_sdpo");
  sdpo::Trainer trainer(m, {dir});
  trainer.run();
  auto file = sdpo::RunFile::open(dir + "/run.h5");
  EXPECT_EQ(file.rows("train"), 2);
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));

  sdpo::StringMap meta;
  auto saved = sdpo::safetensors_load(dir + "/checkpoints/epoch_2/model.safetensors", &meta);
  EXPECT_EQ(meta["format"], "pt");
  ASSERT_FALSE(saved.empty());
  bool trained = false;
  for (const auto& [key, value] : saved) {
    EXPECT_EQ(key.rfind("unet.", 0), 0u) << key;
    EXPECT_TRUE(key.find(".lora_A.weight") != std::string::npos || key.find(".lora_B.weight") != std::string::npos)
        << key;
    if (key.find(".lora_B.weight") != std::string::npos) trained = trained || value.abs().sum().item<double>() > 0;
  }
  EXPECT_TRUE(trained) << "lora_B starts at zero; training must have moved it";

  // The checkpoint loads back as the model's starting adapter.
  auto resumed = sdpo::Manifest::parse(
      sd_manifest(R"({"name": "sdpo"})", R"({"name": "per_step_prompt"})"), "tiny_sd.json",
      {"model.path=" + pipeline, "model.options.lora_weights=" + dir + "/checkpoints/epoch_2/model.safetensors"});
  auto r = sdpo::build_components(resumed, sdpo::ComponentSet::kSampling);
  for (const auto& [key, value] : r.model->trainable_state_dict()) {
    EXPECT_TRUE(value.equal(saved.at(key))) << key;
  }
}

TEST(SDPipelineMicroRun, D3POUsesThePolicyWithItsAdapterOffAsReference) {
  const std::string pipeline = sdpo::test::write_tiny_sd_pipeline(5);
  const std::string d3po = sd_manifest(R"({"name": "d3po"})", R"({"name": "global"})");
  // One epoch is one update (2 pairs in one micro-batch, every step accumulated), so the logged
  // loss is taken at the starting weights: -log sigmoid(beta * (log q_w - log q_l)).
  auto loss_of = [&](const std::vector<std::string>& sets) {
    std::vector<std::string> all{"model.path=" + pipeline, "train.epochs=1"};
    all.insert(all.end(), sets.begin(), sets.end());
    const std::string dir = sdpo::test::temp_dir("tiny_sd_d3po");
    sdpo::Trainer trainer(sdpo::Manifest::parse(d3po, "tiny_sd.json", all), {dir});
    trainer.run();
    return sdpo::RunFile::open(dir + "/run.h5").read_curve("train", "loss").at(0);
  };
  // Fresh adapter (B = 0): policy and reference agree, every ratio is 1, the loss is log 2.
  EXPECT_NEAR(loss_of({}), std::log(2.0), 1e-6);

  // A trained adapter: the reference (adapter off) now differs from the policy, so the loss moves
  // away from log 2; were the adapter left on in the reference it would stay at log 2.
  const std::string sdpo_dir = sdpo::test::temp_dir("tiny_sd_sdpo_for_d3po");
  {
    sdpo::Trainer trainer(
        sdpo::Manifest::parse(
            sd_manifest(R"({"name": "sdpo"})", R"({"name": "per_step_prompt"})"), "tiny_sd.json",
            {"model.path=" + pipeline, "train.learning_rate=0.05"}),
        {sdpo_dir});
    trainer.run();
  }
  const double trained = loss_of({"model.options.lora_weights=" + sdpo_dir + "/checkpoints/epoch_2/model.safetensors"});
  EXPECT_TRUE(std::isfinite(trained));
  EXPECT_GT(std::abs(trained - std::log(2.0)), 1e-6) << trained;
}

}  // namespace
