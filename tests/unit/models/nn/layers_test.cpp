// The shared layer library (nn/): layer math against hand-written formulas, LoRA's contract
// (zero-init leaves outputs unchanged, disabling restores the base, only adapters train, PEFT key
// names), meta-device construction, and config.json reading.

#include "sdpo/models/nn/layers.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <fstream>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/models/nn/hf_config.h"
#include "support/test_support.h"

namespace sdpo::nn {
namespace {

const at::TensorOptions kF32 = at::TensorOptions().dtype(at::kFloat);

TEST(NNLayers, LinearConvAndNormsMatchTheirFormulas) {
  ScopedSeed seed(1);
  Linear lin(3, 2, true, kF32);
  at::Tensor x = at::randn({4, 3});
  test::expect_close(lin->forward(x), at::matmul(x, lin->weight.t()) + lin->bias, 0.0, 1e-6);
  EXPECT_LE(lin->weight.abs().max().item<float>(), 1.0f / std::sqrt(3.0f));

  Conv2d conv(2, 3, 3, 2, 1, kF32);
  at::Tensor img = at::randn({1, 2, 6, 6});
  EXPECT_EQ(conv->forward(img).sizes(), (std::vector<std::int64_t>{1, 3, 3, 3}));

  GroupNorm gn(2, 4, 1e-6, kF32);
  at::Tensor g = at::randn({2, 4, 3, 3});
  at::Tensor grouped = g.reshape({2, 2, -1});
  at::Tensor expect = ((grouped - grouped.mean(-1, true)) / (grouped.var(-1, false, true) + 1e-6).sqrt()).reshape_as(g);
  test::expect_close(gn->forward(g), expect, 0.0, 1e-5);
  // Half inputs are normalized in fp32 and come back in half.
  EXPECT_EQ(gn->forward(g.to(at::kBFloat16)).scalar_type(), at::kBFloat16);

  LayerNorm ln(5, 1e-5, kF32);
  at::Tensor l = at::randn({3, 5});
  test::expect_close(ln->forward(l), (l - l.mean(-1, true)) / (l.var(-1, false, true) + 1e-5).sqrt(), 0.0, 1e-5);
}

TEST(NNLayers, AttentionMatchesTheDefinitionPerHeadWithAndWithoutCausalMask) {
  ScopedSeed seed(2);
  const std::int64_t heads = 2, d = 3;
  at::Tensor q = at::randn({1, 4, heads * d}), k = at::randn({1, 4, heads * d}), v = at::randn({1, 4, heads * d});
  for (bool causal : {false, true}) {
    at::Tensor out = multi_head_attention(q, k, v, heads, causal);
    for (std::int64_t h = 0; h < heads; ++h) {
      at::Tensor qh = q[0].narrow(1, h * d, d), kh = k[0].narrow(1, h * d, d), vh = v[0].narrow(1, h * d, d);
      at::Tensor s = at::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(d));
      if (causal) s = s.masked_fill(at::ones({4, 4}, at::kBool).triu(1), -1e30);
      test::expect_close(out[0].narrow(1, h * d, d), at::matmul(at::softmax(s, -1), vh), 0.0, 1e-5);
    }
  }
  // Causal: the first position sees only itself.
  test::expect_close(multi_head_attention(q, k, v, heads, true)[0][0], v[0][0], 0.0, 1e-6);
}

TEST(NNLayers, LoRAStartsAtZeroTrainsAloneAndCanBeDisabled) {
  ScopedSeed seed(3);
  Linear lin(4, 3, true, kF32);
  at::Tensor x = at::randn({2, 4});
  at::Tensor before = lin->forward(x).detach();
  lin->add_lora(2, 4.0, kF32);
  EXPECT_TRUE(lin->has_lora());
  test::expect_close(lin->forward(x), before, 0.0, 0.0);

  // Keys are PEFT's names under the layer.
  TensorMap sd = module_state_dict(*lin);
  ASSERT_TRUE(sd.count("lora_A.weight") && sd.count("lora_B.weight"));
  EXPECT_EQ(sd.at("lora_A.weight").sizes(), (std::vector<std::int64_t>{2, 4}));
  EXPECT_EQ(sd.at("lora_B.weight").sizes(), (std::vector<std::int64_t>{3, 2}));

  // Freeze the base as the model plugins do; the loss reaches only the adapter.
  lin->weight.requires_grad_(false);
  lin->bias.requires_grad_(false);
  lin->forward(x).sum().backward();
  EXPECT_FALSE(lin->weight.grad().defined());
  for (const auto& p : lin->named_parameters()) {
    if (p.key() == "lora_B.weight") {
      EXPECT_GT(p.value().grad().abs().sum().item<float>(), 0.0f);
    }
    if (p.key() == "lora_A.weight") {  // its gradient is B^T(...) and B = 0
      EXPECT_EQ(p.value().grad().abs().sum().item<float>(), 0.0f);
    }
  }

  // A trained B changes the output by scale * B A x; disabling the adapter restores the base.
  {
    at::NoGradGuard ng;
    for (auto& p : lin->named_parameters()) {
      if (p.key() == "lora_B.weight") p.value().fill_(0.5);
    }
  }
  at::Tensor a = lin->named_parameters()["lora_A.weight"];
  at::Tensor b = lin->named_parameters()["lora_B.weight"];
  test::expect_close(
      lin->forward(x).detach(), before + 2.0 * at::matmul(at::matmul(x, a.t()), b.t()).detach(), 0.0, 1e-5);
  lin->set_lora_enabled(false);
  test::expect_close(lin->forward(x).detach(), before, 0.0, 0.0);
  EXPECT_EQ(lora_layers(*lin).size(), 1u);
  EXPECT_THROW(lin->add_lora(2, 2.0, kF32), c10::Error);
}

TEST(NNLayers, MetaDeviceBuildsShapesWithoutMemory) {
  const auto meta = at::TensorOptions().dtype(at::kFloat).device(at::kMeta);
  Linear big(100000, 100000, true, meta);  // 10^10 parameters: 40 GB if it were allocated
  EXPECT_EQ(parameter_count(*big), 100000LL * 100000 + 100000);
  EXPECT_TRUE(big->weight.is_meta());
}

TEST(NNLayers, ModuleFreezeStopsGradientsAndTrainingModeInEveryChild) {
  torch::nn::Module parent;
  Linear child = parent.register_module("child", Linear(3, 2, true, kF32));
  ASSERT_TRUE(parent.is_training());
  ASSERT_TRUE(child->weight.requires_grad());
  module_freeze(parent);
  EXPECT_FALSE(parent.is_training());
  EXPECT_FALSE(child->is_training());
  ASSERT_EQ(parent.parameters().size(), 2u);
  for (const auto& p : parent.parameters()) EXPECT_FALSE(p.requires_grad());
}

TEST(NNConfig, ReadsValuesDefaultsAndNamesTheFileAndKeyOnBadValues) {
  const std::string dir = test::temp_dir("nn_config");
  const std::string path = dir + "/config.json";
  std::ofstream(path) << R"({"_class_name": "X", "a": 3, "b": [1, 2], "c": null, "act": "gelu", "x": 0.5,
                             "heads": 8, "flag": "yes"})";
  HFConfig cfg = HFConfig::load(path);
  EXPECT_EQ(cfg.integer("a", 0), 3);
  EXPECT_EQ(cfg.integer("c", 7), 7);  // null takes the default
  EXPECT_EQ(cfg.integers("b", {}), (std::vector<std::int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(cfg.number("x", 0), 0.5);
  EXPECT_EQ(cfg.integer_or_list("heads", 3, {}), (std::vector<std::int64_t>{8, 8, 8}));
  EXPECT_EQ(cfg.integer_or_list("b", 2, {}), (std::vector<std::int64_t>{1, 2}));
  try {
    cfg.string("act", "silu", {"silu"});
    FAIL() << "expected a ManifestError";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.json_path(), "act");
    EXPECT_NE(std::string(e.what()).find("\"gelu\" is not supported"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cfg.boolean("flag", false), ManifestError);
  EXPECT_THROW(cfg.integer_or_list("b", 3, {}), ManifestError);
}

TEST(NNConfig, FindsWeightFilesAndExplainsPickles) {
  const std::string dir = test::temp_dir("nn_weights");
  std::ofstream(dir + "/model.fp16.safetensors") << "x";
  EXPECT_EQ(find_weights_file(dir, "model", "fp16"), dir + "/model.fp16.safetensors");
  std::ofstream(dir + "/diffusion_pytorch_model.bin") << "x";
  try {
    find_weights_file(dir, "diffusion_pytorch_model", "");
    FAIL() << "expected a FileError";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("convert"), std::string::npos) << e.what();
  }
  EXPECT_THROW(find_weights_file(dir, "model", ""), FileError);
}

}  // namespace
}  // namespace sdpo::nn
