// The `torchscript` model: a TorchScript module built and saved here, loaded through the registry.

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

#include <boost/json/parse.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "support/test_support.h"

namespace {

// forward(x, t, cond) = x * scale + shift + t / 1000 + mean(cond) per sample.
const char* const kPolicySource = R"JIT(
def forward(self, x, t, cond):
    b = x.size(0)
    return x * self.scale + self.shift + t.to(x.dtype).view(b, 1, 1, 1) / 1000.0 + cond.mean(dim=[1, 2]).view(b, 1, 1, 1)
)JIT";

std::string save_module(const std::string& source, bool with_buffer = true) {
  torch::jit::Module m("SDPOTestPolicy");
  m.register_parameter("scale", at::full({1, 2, 1, 1}, 2.0), false);
  m.register_parameter("shift", at::full({2, 1, 1}, 0.5), false);
  if (with_buffer) m.register_buffer("calls", at::zeros({1}, at::kLong));
  m.define(source);
  const std::string path = sdpo::test::temp_dir("torchscript") + "/policy.pt";
  m.save(path);
  return path;
}

std::shared_ptr<sdpo::Model> make_model(const std::string& options_json) {
  return sdpo::Registry::global().create<sdpo::Model>(sdpo::ComponentConfig{
      "model", "torchscript", boost::json::parse(options_json).as_object(), "<test>", "model.options"});
}

std::string options(const std::string& file, const std::string& extra = "") {
  return R"({"file": ")" + file + R"(", "latent_shape": [2, 3, 3])" + (extra.empty() ? "" : ", " + extra) + "}";
}

template <class Fn>
void expect_error_with(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const sdpo::Error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(TorchScriptModel, ForwardMatchesTheScriptAndTrains) {
  auto model = make_model(options(save_module(kPolicySource), R"("prediction_type": "v_prediction")"));
  EXPECT_EQ(model->prediction_type(), "v_prediction");
  EXPECT_EQ(model->latent_shape(), (std::vector<std::int64_t>{2, 3, 3}));
  EXPECT_FALSE(model->has_adapter());

  const at::Tensor x = at::randn({2, 2, 3, 3});
  const at::Tensor t = at::tensor({100, 900}, at::kLong);
  const at::Tensor cond = at::randn({2, 4, 5});
  const at::Tensor expected = x * 2.0 + 0.5 + (t.to(at::kFloat) / 1000.0 + cond.mean({1, 2})).view({2, 1, 1, 1});
  at::Tensor out = model->forward(x, t, cond);
  sdpo::test::expect_close(out, expected, 0.0, 1e-6);

  const std::vector<at::Tensor> params = model->trainable_parameters();
  ASSERT_EQ(params.size(), 2u);
  out.sum().backward();
  // d sum / d scale[c] = sum of x over channel c; d sum / d shift[c] = batch * 3 * 3.
  for (const auto& p : params) {
    ASSERT_TRUE(p.grad().defined());
    if (p.sizes() == at::IntArrayRef{1, 2, 1, 1}) {
      sdpo::test::expect_close(p.grad().flatten(), x.sum({0, 2, 3}), 0.0, 1e-5, "scale");
    } else {
      sdpo::test::expect_close(p.grad().flatten(), at::full({2}, 18.0), 0.0, 1e-6, "shift");
    }
  }

  auto frozen = make_model(options(save_module(kPolicySource), R"("trainable": false)"));
  EXPECT_TRUE(frozen->trainable_parameters().empty());
  EXPECT_TRUE(frozen->trainable_state_dict().empty());
  EXPECT_FALSE(frozen->forward(x, t, cond).requires_grad());
}

TEST(TorchScriptModel, StateRoundTripsStrictly) {
  const std::string file = save_module(kPolicySource);
  auto model = make_model(options(file));
  const sdpo::TensorMap sd = model->state_dict();
  ASSERT_EQ(sd.size(), 3u);
  EXPECT_TRUE(sd.count("scale") && sd.count("shift") && sd.count("calls"));
  EXPECT_EQ(model->trainable_state_dict().size(), 2u);

  sdpo::TensorMap changed = sd;
  changed["scale"] = at::full({1, 2, 1, 1}, -1.0);
  changed["shift"] = at::full({2, 1, 1}, 3.0);
  changed["calls"] = at::full({1}, 7, at::kLong);
  auto other = make_model(options(file));
  other->load_state_dict(changed, /*strict=*/true, "changed.safetensors");
  const at::Tensor x = at::randn({1, 2, 3, 3});
  const at::Tensor t = at::zeros({1}, at::kLong);
  const at::Tensor cond = at::zeros({1, 1, 4});
  sdpo::test::expect_close(other->forward(x, t, cond), -x + 3.0, 0.0, 1e-6);
  EXPECT_EQ(other->state_dict().at("calls").item<std::int64_t>(), 7);
  // The trainable part alone loads without strict (a training checkpoint).
  model->load_state_dict(other->trainable_state_dict(), /*strict=*/false, "ckpt");
  sdpo::test::expect_close(model->forward(x, t, cond), -x + 3.0, 0.0, 1e-6);

  sdpo::TensorMap missing = changed;
  missing.erase("shift");
  expect_error_with(
      [&] { other->load_state_dict(missing, true, "m.safetensors"); }, {"m.safetensors", "missing", "shift"});
  sdpo::TensorMap extra = changed;
  extra["bias"] = at::zeros({1});
  expect_error_with(
      [&] { other->load_state_dict(extra, true, "e.safetensors"); }, {"e.safetensors", "unexpected", "bias"});
  sdpo::TensorMap misshapen = changed;
  misshapen["scale"] = at::zeros({2});
  expect_error_with([&] { other->load_state_dict(misshapen, false, "s.safetensors"); }, {"scale", "[2]"});
}

TEST(TorchScriptModel, BadFilesAndSignaturesAreRefused) {
  const std::string absent = sdpo::test::temp_dir("torchscript") + "/absent.pt";
  try {
    make_model(options(absent));
    ADD_FAILURE() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_EQ(e.path(), absent);
  }
  const std::string wrong = save_module("def forward(self, x):\n    return x * self.scale\n");
  try {
    make_model(options(wrong));
    ADD_FAILURE() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_EQ(e.path(), wrong);
    EXPECT_NE(std::string(e.what()).find("forward"), std::string::npos) << e.what();
  }
  // A wrong output shape, and an error inside the script, name the file at forward time.
  const std::string reduced = save_module("def forward(self, x, t, cond):\n    return x.sum(1)\n");
  expect_error_with(
      [&] {
        make_model(options(reduced))->forward(at::zeros({1, 2, 3, 3}), at::zeros({1}), at::zeros({1, 1, 1}));
      },
      {reduced, "shape"});
  const std::string text = sdpo::test::temp_dir("torchscript") + "/not_a_module.pt";
  { std::ofstream(text) << "not a zip archive"; }
  expect_error_with([&] { make_model(options(text)); }, {text, "TorchScript"});
  // Options: latent_shape is required and has 3 entries.
  expect_error_with([&] { make_model(R"({"file": ")" + wrong + R"("})"); }, {"model.options.latent_shape"});
  expect_error_with([&] { make_model(R"({"file": "x.pt", "latent_shape": [4, 8]})"); }, {"latent_shape"});
  expect_error_with([&] { make_model(R"({"latent_shape": [4, 8, 8]})"); }, {"model.options.file"});
}

}  // namespace
