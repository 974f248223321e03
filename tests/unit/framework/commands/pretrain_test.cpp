// `sdpo pretrain` (framework/commands/src/pretrain.cpp) on a micro configuration of the toy world.

#include "sdpo/commands/pretrain.h"

#include <sstream>
#include <string>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/train/manifest.h"
#include "support/test_support.h"

namespace {

// A 2-level UNet at 16x16 and a 16-wide text encoder: a few steps run in well under a second.
std::string manifest_text(const std::string& dir) {
  return R"({
    "model": {"name": "toy_unet", "options": {"image_size": 16, "channels": [16, 16], "cond_dim": 16,
              "heads": 2, "checkpoint": ")" +
         dir + R"(/model.safetensors"}},
    "text_encoder": {"name": "toy_text", "options": {"dim": 16, "max_words": 8}},
    "prompts": {"name": "shapes", "options": {"image_size": 16}},
    "pretrain": {"steps": 4, "batch_size": 4, "learning_rate": 1e-3, "seed": 3,
                 "model_out": ")" +
         dir + R"(/model.safetensors",
                 "text_encoder_out": ")" +
         dir + R"(/sub/text.safetensors"}
  })";
}

// A distillation of the micro model that manifest_text(dir) trained: both networks from its
// outputs, `pretrain` the given members.
std::string distill_manifest_text(const std::string& dir, const std::string& pretrain) {
  return R"({
    "model": {"name": "toy_unet", "options": {"image_size": 16, "channels": [16, 16], "cond_dim": 16,
              "heads": 2, "checkpoint": ")" +
         dir + R"(/model.safetensors"}},
    "text_encoder": {"name": "toy_text", "options": {"dim": 16, "max_words": 8,
                     "checkpoint": ")" +
         dir + R"(/sub/text.safetensors"}},
    "prompts": {"name": "shapes", "options": {"image_size": 16}},
    "pretrain": {)" +
         pretrain + "}}";
}

// Sum over every tensor of |student - teacher| (the student holds every key of the teacher).
double total_change(const sdpo::TensorMap& student, const sdpo::TensorMap& teacher) {
  double moved = 0.0;
  for (const auto& [key, value] : teacher) moved += (student.at(key) - value).abs().sum().item<double>();
  return moved;
}

class Pretrain : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!sdpo::Registry::global().contains("prompts", "shapes")) GTEST_SKIP() << "the shapes plugin is not built";
  }
};

// The model's `checkpoint` option names the very file pretraining writes: it must be ignored on
// the way in (the file does not exist yet), and the outputs must load into the configured
// components with the metadata set.
TEST_F(Pretrain, WritesLoadableCheckpoints) {
  const std::string dir = sdpo::test::temp_dir("pretrain");
  const sdpo::Manifest m = sdpo::Manifest::parse(manifest_text(dir), "<test>");
  std::ostringstream log;
  sdpo::run_pretrain(m, log);
  EXPECT_NE(log.str().find("pretrain 4/4"), std::string::npos) << log.str();

  sdpo::StringMap meta;
  sdpo::safetensors_load(dir + "/model.safetensors", &meta);
  EXPECT_EQ(meta["steps"], "4");
  EXPECT_GT(std::stod(meta["final_loss"]), 0.0);
  auto model = sdpo::Registry::global().create<sdpo::Model>(m.model);  // loads model_out, strict
  auto text = sdpo::Registry::global().create<sdpo::TextEncoder>(m.text_encoder);
  text->load_state_dict(sdpo::safetensors_load(dir + "/sub/text.safetensors"), true, "text");
  at::Tensor out =
      model->forward(at::zeros({1, 3, 16, 16}), at::full({1}, 999, at::kLong), text->encode({"a red circle"}));
  EXPECT_TRUE(out.isfinite().all().item<bool>());
}

TEST_F(Pretrain, RewardWithoutCheckpointRefusedBeforeTraining) {
  const std::string dir = sdpo::test::temp_dir("pretrain");
  sdpo::Manifest m = sdpo::Manifest::parse(manifest_text(dir), "<test>");
  m.pretrain.rewards.push_back(
      sdpo::ComponentConfig{"reward", "shape_alignment", {}, "<test>", "pretrain.rewards[0].options"});
  std::ostringstream log;
  try {
    sdpo::run_pretrain(m, log);
    ADD_FAILURE() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_EQ(e.json_path(), "pretrain.rewards[0].options.checkpoint");
  }
  EXPECT_EQ(log.str().find("pretrain 1/"), std::string::npos) << "no step may run before the check";
}

TEST_F(Pretrain, MissingOutputRefused) {
  const sdpo::Manifest m = sdpo::Manifest::parse(
      R"({"model": "toy_unet", "text_encoder": "toy_text",
      "prompts": "shapes", "pretrain": {"steps": 1, "text_encoder_out": "x.safetensors"}})",
      "<test>");
  std::ostringstream log;
  try {
    sdpo::run_pretrain(m, log);
    ADD_FAILURE() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_EQ(e.json_path(), "pretrain.model_out");
  }
}

// Latent consistency distillation of a micro base model: the student starts from the teacher's
// checkpoint, moves, and its output loads strictly into the same model configuration.
TEST_F(Pretrain, ConsistencyDistillationWritesAStudentThatMoved) {
  const std::string dir = sdpo::test::temp_dir("pretrain_lcd");
  const sdpo::Manifest base = sdpo::Manifest::parse(manifest_text(dir), "<test>");
  std::ostringstream log;
  sdpo::run_pretrain(base, log);  // the teacher: dir/model.safetensors

  const sdpo::Manifest m =
      sdpo::Manifest::parse(
          distill_manifest_text(dir, R"("method": "latent_consistency_distillation", "steps": 3, "batch_size": 4,
                 "learning_rate": 1e-3, "seed": 5, "consistency_loss": "huber",
                 "model_out": ")" + dir + R"(/lcm.safetensors")"),
          "<test>");
  std::ostringstream lcd_log;
  sdpo::run_pretrain(m, lcd_log);
  EXPECT_NE(lcd_log.str().find("latent consistency distillation"), std::string::npos) << lcd_log.str();
  EXPECT_NE(lcd_log.str().find("pretrain 3/3"), std::string::npos) << lcd_log.str();

  sdpo::StringMap meta;
  const sdpo::TensorMap student = sdpo::safetensors_load(dir + "/lcm.safetensors", &meta);
  const sdpo::TensorMap teacher = sdpo::safetensors_load(dir + "/model.safetensors");
  EXPECT_EQ(meta["method"], "latent_consistency_distillation");
  EXPECT_EQ(meta["consistency_loss"], "huber");
  EXPECT_EQ(meta["steps"], "3");
  ASSERT_EQ(student.size(), teacher.size());
  EXPECT_GT(total_change(student, teacher), 0.0);
  sdpo::ComponentConfig cfg = m.model;
  cfg.options["checkpoint"] = dir + "/lcm.safetensors";
  EXPECT_NO_THROW(sdpo::Registry::global().create<sdpo::Model>(cfg));  // strict load
}

TEST_F(Pretrain, ConsistencyDistillationRefusesDenoisingOnlyOutputs) {
  const std::string dir = sdpo::test::temp_dir("pretrain_lcd");
  sdpo::Manifest m = sdpo::Manifest::parse(manifest_text(dir), "<test>");
  m.pretrain.method = "latent_consistency_distillation";  // text_encoder_out is still set
  std::ostringstream log;
  try {
    sdpo::run_pretrain(m, log);
    ADD_FAILURE() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_EQ(e.json_path(), "pretrain.text_encoder_out");
  }
}

// Few-step distillation of a micro base model (few_step_distillation_driver.h): the student starts
// from the teacher's checkpoint, moves, logs both losses and loads strictly back.
TEST_F(Pretrain, FewStepDistillationWritesAStudentThatMoved) {
  const std::string dir = sdpo::test::temp_dir("pretrain_fsd");
  const sdpo::Manifest base = sdpo::Manifest::parse(manifest_text(dir), "<test>");
  std::ostringstream log;
  sdpo::run_pretrain(base, log);  // the teacher: dir/model.safetensors

  const sdpo::Manifest m = sdpo::Manifest::parse(
      distill_manifest_text(
          dir, R"("method": "few_step_distillation", "steps": 3, "batch_size": 4,
                 "distill_batch_size": 2, "teacher_steps": 4, "distill_steps": [1, 2], "learning_rate": 1e-3,
                 "seed": 5, "prediction_type": "v_prediction", "model_out": ")" +
                   dir + R"(/turbo.safetensors")"),
      "<test>");
  std::ostringstream fsd_log;
  sdpo::run_pretrain(m, fsd_log);
  const std::string out = fsd_log.str();
  EXPECT_NE(out.find("few-step distillation"), std::string::npos) << out;
  EXPECT_NE(out.find("distilled at t = 999, 499"), std::string::npos) << out;
  EXPECT_NE(out.find("predicts v_prediction, teacher epsilon"), std::string::npos) << out;
  EXPECT_NE(out.find("pretrain 3/3"), std::string::npos) << out;
  EXPECT_NE(out.find("  distill "), std::string::npos) << out;

  sdpo::StringMap meta;
  const sdpo::TensorMap student = sdpo::safetensors_load(dir + "/turbo.safetensors", &meta);
  const sdpo::TensorMap teacher = sdpo::safetensors_load(dir + "/model.safetensors");
  EXPECT_EQ(meta["method"], "few_step_distillation");
  EXPECT_EQ(meta["teacher_steps"], "4");
  EXPECT_EQ(meta["distill_steps"], "1,2");
  EXPECT_EQ(meta["prediction_type"], "v_prediction");
  ASSERT_EQ(student.size(), teacher.size());
  EXPECT_GT(total_change(student, teacher), 0.0);
  sdpo::ComponentConfig cfg = m.model;
  cfg.options["checkpoint"] = dir + "/turbo.safetensors";
  cfg.options["prediction_type"] = "v_prediction";
  EXPECT_EQ(sdpo::Registry::global().create<sdpo::Model>(cfg)->prediction_type(), "v_prediction");  // strict load
}

TEST_F(Pretrain, FewStepDistillationRefusesBadSettingsBeforeTraining) {
  const std::string dir = sdpo::test::temp_dir("pretrain_fsd");
  sdpo::Manifest m = sdpo::Manifest::parse(manifest_text(dir), "<test>");
  m.pretrain.method = "few_step_distillation";
  m.pretrain.distill_batch_size = 2;
  auto refused_at = [&](const sdpo::Manifest& bad) {
    std::ostringstream log;
    try {
      sdpo::run_pretrain(bad, log);
    } catch (const sdpo::ManifestError& e) {
      EXPECT_EQ(log.str().find("pretrain 1/"), std::string::npos) << "no step may run before the check";
      return e.json_path() + ": " + e.what();
    }
    return std::string("not refused");
  };
  EXPECT_NE(refused_at(m).find("pretrain.text_encoder_out"), std::string::npos);  // still set
  m.pretrain.text_encoder_out.clear();
  m.pretrain.teacher_steps = 6;
  m.pretrain.distill_steps = {1, 4};
  EXPECT_NE(
      refused_at(m).find("4-step sampling visits t = 749, which the teacher's 6-step trajectory does not pass"),
      std::string::npos)
      << refused_at(m);
  m.pretrain.teacher_steps = 8;
  m.pretrain.distill_batch_size = m.pretrain.batch_size + 1;
  EXPECT_NE(refused_at(m).find("pretrain.distill_batch_size"), std::string::npos) << refused_at(m);
}

}  // namespace
