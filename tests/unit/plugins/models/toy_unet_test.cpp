// The `toy_unet` model plugin, reached through the registry as the trainer reaches it.

#include <ATen/CPUGeneratorImpl.h>

#include <boost/json/parse.hpp>
#include <map>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "support/test_support.h"

namespace {

sdpo::ComponentConfig config(const std::string& kind, const std::string& name, const std::string& options_json) {
  return sdpo::ComponentConfig{kind, name, boost::json::parse(options_json).as_object(), "<test>", kind + ".options"};
}

std::shared_ptr<sdpo::Model> make_model(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::Model>(config("model", "toy_unet", options_json));
}

struct Inputs {
  at::Tensor x, t, cond;
};

Inputs inputs(std::int64_t batch, std::uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return {
      at::randn({batch, 3, 32, 32}, gen), at::randint(0, 1000, {batch}, gen, at::kLong),
      at::randn({batch, 12, 64}, gen)};
}

// Expects `fn` to throw an sdpo::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error_with(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const sdpo::Error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(ToyUNet, OutputShapeAndDescription) {
  auto model = make_model();
  Inputs in = inputs(2, 1);
  at::Tensor out = model->forward(in.x, in.t, in.cond);
  EXPECT_EQ(out.sizes(), in.x.sizes());
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  EXPECT_EQ(model->prediction_type(), "epsilon");
  EXPECT_EQ(model->latent_shape(), (std::vector<std::int64_t>{3, 32, 32}));
  // A single timestep broadcasts over the batch.
  at::Tensor same_t = model->forward(in.x, at::full({2}, 500, at::kLong), in.cond);
  sdpo::test::expect_close(model->forward(in.x, at::scalar_tensor(500, at::kLong), in.cond), same_t, 0, 0);
}

TEST(ToyUNet, OtherOptionsShapes) {
  auto model = make_model(R"({"image_size": 16, "in_channels": 4, "channels": [16, 32], "cond_dim": 8, "heads": 2})");
  at::Tensor out = model->forward(at::randn({3, 4, 16, 16}), at::tensor({0, 1, 999}, at::kLong), at::randn({3, 5, 8}));
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{3, 4, 16, 16}));
}

TEST(ToyUNet, ParameterCountAboutHalfMillion) {
  auto model = make_model();
  std::int64_t n = 0;
  for (const auto& p : model->trainable_parameters()) {
    EXPECT_TRUE(p.requires_grad());
    n += p.numel();
  }
  EXPECT_GT(n, 400000);
  EXPECT_LT(n, 700000);
  EXPECT_EQ(model->state_dict().size(), model->trainable_parameters().size());
  EXPECT_TRUE(model->state_dict().count("down.1.attn.to_k.weight"));
}

TEST(ToyUNet, SeedDeterminesInit) {
  Inputs in = inputs(2, 2);
  at::Tensor a = make_model(R"({"seed": 7})")->forward(in.x, in.t, in.cond);
  at::Tensor b = make_model(R"({"seed": 7})")->forward(in.x, in.t, in.cond);
  at::Tensor c = make_model(R"({"seed": 8})")->forward(in.x, in.t, in.cond);
  sdpo::test::expect_close(a, b, 0, 0, "same seed");
  EXPECT_GT((a - c).abs().max().item<double>(), 1e-3);
}

TEST(ToyUNet, ConditioningAndTimestepChangeOutput) {
  auto model = make_model();
  Inputs in = inputs(2, 3);
  at::Tensor base = model->forward(in.x, in.t, in.cond);
  EXPECT_GT((base - model->forward(in.x, in.t, at::randn({2, 12, 64}))).abs().max().item<double>(), 1e-4);
  EXPECT_GT((base - model->forward(in.x, 999 - in.t, in.cond)).abs().max().item<double>(), 1e-4);
}

TEST(ToyUNet, SaveLoadGivesIdenticalOutputs) {
  auto trained = make_model(R"({"seed": 1})");
  const std::string path = sdpo::test::temp_dir("toy_unet") + "/model.safetensors";
  sdpo::safetensors_save(path, trained->state_dict());
  auto fresh = make_model(R"({"seed": 2, "checkpoint": ")" + path + R"("})");
  Inputs in = inputs(3, 4);
  sdpo::test::expect_close(fresh->forward(in.x, in.t, in.cond), trained->forward(in.x, in.t, in.cond), 0, 0);

  auto other = make_model(R"({"seed": 3})");
  other->load_state_dict(sdpo::safetensors_load(path), true, path);
  sdpo::test::expect_close(other->forward(in.x, in.t, in.cond), trained->forward(in.x, in.t, in.cond), 0, 0);
}

TEST(ToyUNet, StrictLoadRejectsMissingUnexpectedAndMisshapenKeys) {
  auto model = make_model();
  const sdpo::TensorMap good = make_model(R"({"seed": 5})")->state_dict();

  sdpo::TensorMap missing = good;
  missing.erase("down.1.attn.to_q.weight");
  expect_error_with(
      [&] { model->load_state_dict(missing, true, "ckpt.safetensors"); },
      {"ckpt.safetensors", "missing", "down.1.attn.to_q.weight"});

  sdpo::TensorMap unexpected = good;
  unexpected["extra.weight"] = at::zeros({2});
  expect_error_with(
      [&] { model->load_state_dict(unexpected, true, "ckpt.safetensors"); },
      {"ckpt.safetensors", "unexpected", "extra.weight"});

  sdpo::TensorMap misshapen = good;
  misshapen["conv_out.bias"] = at::zeros({5});
  expect_error_with(
      [&] { model->load_state_dict(misshapen, true, "ckpt.safetensors"); },
      {"ckpt.safetensors", "conv_out.bias", "[5]", "[3]"});
  // A shape mismatch is refused even without `strict`.
  expect_error_with([&] { model->load_state_dict(misshapen, false, "ckpt.safetensors"); }, {"conv_out.bias"});
}

TEST(ToyUNet, RefusedLoadLeavesWeightsUntouched) {
  auto model = make_model();
  const at::Tensor before = model->state_dict().at("conv_in.weight").clone();
  sdpo::TensorMap bad = make_model(R"({"seed": 9})")->state_dict();
  bad["conv_out.bias"] = at::zeros({5});
  EXPECT_THROW(model->load_state_dict(bad, true, "x"), sdpo::Error);
  sdpo::test::expect_close(model->state_dict().at("conv_in.weight"), before, 0, 0);
}

TEST(ToyUNet, NonStrictLoadKeepsMissingWeights) {
  auto model = make_model();
  const at::Tensor kept = model->state_dict().at("conv_in.weight").clone();
  sdpo::TensorMap partial = make_model(R"({"seed": 11})")->state_dict();
  const at::Tensor loaded = partial.at("conv_out.weight");
  partial.erase("conv_in.weight");
  partial["unknown.key"] = at::zeros({1});
  model->load_state_dict(partial, false, "partial");
  sdpo::test::expect_close(model->state_dict().at("conv_in.weight"), kept, 0, 0);
  sdpo::test::expect_close(model->state_dict().at("conv_out.weight"), loaded, 0, 0);
}

TEST(ToyUNet, MissingCheckpointFileNamesTheFile) {
  const std::string path = sdpo::test::temp_dir("toy_unet") + "/absent.safetensors";
  try {
    make_model(R"({"checkpoint": ")" + path + R"("})");
    ADD_FAILURE() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_EQ(e.path(), path);
  }
}

TEST(ToyUNet, OptionsAreValidated) {
  expect_error_with([] { make_model(R"({"channels": [32, 60]})"); }, {"model.options.norm_groups", "60"});
  expect_error_with(
      [] { make_model(R"({"channels": [32, 64], "heads": 3, "norm_groups": 4})"); }, {"model.options.heads"});
  expect_error_with([] { make_model(R"({"image_size": 30})"); }, {"model.options.image_size"});
  expect_error_with([] { make_model(R"({"prediction_type": "noise"})"); }, {"prediction_type"});
  expect_error_with([] { make_model(R"({"chanels": [32]})"); }, {"chanels"});
}

TEST(ToyUNet, BadInputShapesAreRefused) {
  auto model = make_model();
  Inputs in = inputs(2, 6);
  expect_error_with([&] { model->forward(at::randn({2, 3, 16, 16}), in.t, in.cond); }, {"x_t", "32"});
  expect_error_with([&] { model->forward(in.x, in.t, at::randn({2, 12, 32})); }, {"cond", "cond_dim"});
  expect_error_with([&] { model->forward(in.x, at::zeros({3}, at::kLong), in.cond); }, {"timestep"});
}

// A few dozen AdamW steps of the DDPM epsilon loss on one fixed batch, training the model and the
// text encoder jointly as `sdpo pretrain` does, must fit that batch markedly better.
TEST(ToyUNet, FewStepsOverfitOneBatch) {
  auto model = make_model(R"({"seed": 3})");
  auto text = sdpo::Registry::global().create<sdpo::TextEncoder>(config("text_encoder", "toy_text", "{}"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  const std::int64_t b = 4;
  const at::Tensor x0 = at::rand({b, 3, 32, 32}, gen).gt(0.7).to(at::kFloat) * 2 - 1;
  const at::Tensor t = at::randint(0, 1000, {b}, gen, at::kLong);
  const at::Tensor eps = at::randn({b, 3, 32, 32}, gen);
  const at::Tensor ab = at::linspace(0.999, 0.005, 1000).index_select(0, t).view({b, 1, 1, 1});
  const at::Tensor x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps;
  const std::vector<std::string> prompts{
      "a red circle", "two blue squares on the left", "a white triangle", "a red square and a blue circle"};
  std::vector<at::Tensor> params = model->trainable_parameters();
  for (const auto& p : text->trainable_parameters()) params.push_back(p);
  sdpo::OptimizerOptions opt;
  opt.learning_rate = 2e-3;
  opt.weight_decay = 0.0;
  sdpo::Optimizer optimizer(params, opt);
  auto loss_now = [&] { return at::mse_loss(model->forward(x_t, t, text->encode(prompts)), eps); };
  const double initial = loss_now().item<double>();
  for (int step = 0; step < 30; ++step) {
    loss_now().backward();
    optimizer.micro_step();
  }
  const double final_loss = loss_now().item<double>();
  EXPECT_LT(final_loss, 0.6 * initial) << "initial " << initial << " final " << final_loss;
}

}  // namespace
