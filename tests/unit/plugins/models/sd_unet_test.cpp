// The `sd_unet` model: the UNet module (built on the meta device at SD-Turbo's real size, and at
// a tiny size with random weights) and the plugin reached through the registry as the trainer
// reaches it, with its diffusers file layout, LoRA contract, dtypes and errors.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>

#include <boost/json/parse.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/sd_unet/unet.h"
#include "support/sd_pipeline.h"
#include "support/test_support.h"

namespace sdpo::sd_unet {
namespace {

namespace fs = std::filesystem;

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);
const at::TensorOptions kF32 = at::TensorOptions().dtype(at::kFloat);

// research/models.md 2.1: SD-Turbo's unet/config.json values (shared with the benchmarks' random pipeline).
const std::string& kSDTurboConfig = test::sd_turbo_configs().unet;

// The SD 1.5 / LCM layout (models.md 8.3): 8 heads everywhere, 768-d text, conv projections.
const char* const kSD15Config = R"({
  "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 96, "time_cond_proj_dim": 256
})";

// Tiny SD 2.x-style UNet: both block kinds, linear projections, head counts as a list.
const char* const kTinyConfig = R"({
  "block_out_channels": [32, 64], "layers_per_block": 2, "attention_head_dim": [2, 2],
  "cross_attention_dim": 16, "sample_size": 8, "norm_num_groups": 8, "use_linear_projection": true,
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]
})";

// Tiny SD 1.x-style UNet: 1x1-conv projections, an integer head count, LCM's cond_proj.
const char* const kTinySD1Config = R"({
  "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 12,
  "sample_size": 8, "norm_num_groups": 8, "use_linear_projection": false, "time_cond_proj_dim": 8,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
})";

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

SDUNetConfig parse_config(const std::string& json) {
  const fs::path file = fs::path(test::temp_dir("sd_unet_config")) / "config.json";
  write_text(file, json);
  return SDUNetConfig::from_hf(nn::HFConfig::load(file.string()));
}

// A tiny UNet with every weight randomized (norms too), so a load that misses anything shows.
SDUNet random_unet(const SDUNetConfig& cfg, std::uint64_t seed) {
  ScopedSeed scoped(seed);
  SDUNet unet(cfg, kF32);
  at::NoGradGuard no_grad;
  for (auto& p : unet->parameters()) p.add_(at::randn_like(p) * 0.1);
  return unet;
}

// A diffusers pipeline folder <tmp>/unet/{config.json, diffusion_pytorch_model.safetensors}
// holding `unet`'s weights; returns the pipeline folder.
std::string write_pipeline(const std::string& config_json, SDUNet& unet, const std::string& variant = "") {
  const fs::path root = test::temp_dir("sd_unet_pipeline");
  write_text(root / "unet" / "config.json", config_json);
  const std::string name = "diffusion_pytorch_model" + (variant.empty() ? "" : "." + variant) + ".safetensors";
  TensorMap weights = module_state_dict(*unet);
  if (variant == "fp16") {
    for (auto& kv : weights) kv.second = kv.second.to(at::kHalf);
  }
  safetensors_save((root / "unet" / name).string(), weights, {{"format", "pt"}});
  return root.string();
}

ComponentConfig model_config(const std::string& options_json) {
  return ComponentConfig{"model", "sd_unet", boost::json::parse(options_json).as_object(), "<test>", "model.options"};
}

std::shared_ptr<Model> make_model(const std::string& path, const std::string& extra_options = "") {
  return Registry::global().create<Model>(
      model_config(R"({"path": ")" + path + "\"" + (extra_options.empty() ? "" : ", " + extra_options) + "}"));
}

struct Inputs {
  at::Tensor x, t, cond;
};

Inputs inputs(std::int64_t batch, std::int64_t cross_dim, std::uint64_t seed, std::int64_t size = 8) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return {
      at::randn({batch, 4, size, size}, gen), at::randint(0, 1000, {batch}, gen, at::kLong),
      at::randn({batch, 7, cross_dim}, gen)};
}

template <class Fn>
void expect_error_with(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const Error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

std::vector<std::int64_t> shape_of(const TensorMap& sd, const std::string& key) {
  auto it = sd.find(key);
  if (it == sd.end()) {
    ADD_FAILURE() << "missing key " << key;
    return {};
  }
  return it->second.sizes().vec();
}

using Shape = std::vector<std::int64_t>;

// A (1, n) float tensor.
at::Tensor row(const std::vector<float>& values) { return at::tensor(values).view({1, -1}); }

TEST(SDUNetModule, SDTurboOnMetaHasTheRealParameterCountsAndKeys) {
  const SDUNetConfig cfg = parse_config(kSDTurboConfig);
  EXPECT_EQ(cfg.heads, (Shape{5, 10, 20, 20}));  // attention_head_dim read as head counts
  SDUNet unet(cfg, kMeta);
  // models.md 2.6.
  EXPECT_EQ(nn::parameter_count(*unet), 865910724);
  const TensorMap sd = module_state_dict(*unet);
  EXPECT_EQ(sd.size(), 686u);
  EXPECT_EQ(shape_of(sd, "conv_in.weight"), (Shape{320, 4, 3, 3}));
  EXPECT_EQ(shape_of(sd, "time_embedding.linear_1.weight"), (Shape{1280, 320}));
  EXPECT_EQ(shape_of(sd, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"), (Shape{320, 1024}));
  EXPECT_EQ(shape_of(sd, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias"), (Shape{320}));
  EXPECT_EQ(shape_of(sd, "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight"), (Shape{10240, 1280}));
  EXPECT_EQ(shape_of(sd, "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.2.weight"), (Shape{1280, 5120}));
  EXPECT_EQ(shape_of(sd, "down_blocks.1.resnets.0.conv_shortcut.weight"), (Shape{640, 320, 1, 1}));
  EXPECT_EQ(shape_of(sd, "down_blocks.2.downsamplers.0.conv.weight"), (Shape{1280, 1280, 3, 3}));
  EXPECT_EQ(shape_of(sd, "mid_block.attentions.0.proj_in.weight"), (Shape{1280, 1280}));
  EXPECT_EQ(shape_of(sd, "mid_block.resnets.1.time_emb_proj.weight"), (Shape{1280, 1280}));
  // models.md 2.3 up-path table: r2 of up1 is 1920 -> 1280, r0 of up3 960 -> 320.
  EXPECT_EQ(shape_of(sd, "up_blocks.1.resnets.2.conv_shortcut.weight"), (Shape{1280, 1920, 1, 1}));
  EXPECT_EQ(shape_of(sd, "up_blocks.2.resnets.0.conv1.weight"), (Shape{640, 1920, 3, 3}));
  EXPECT_EQ(shape_of(sd, "up_blocks.3.resnets.0.conv_shortcut.weight"), (Shape{320, 960, 1, 1}));
  EXPECT_EQ(shape_of(sd, "up_blocks.0.upsamplers.0.conv.weight"), (Shape{1280, 1280, 3, 3}));
  EXPECT_EQ(shape_of(sd, "conv_norm_out.weight"), (Shape{320}));
  EXPECT_EQ(shape_of(sd, "conv_out.weight"), (Shape{4, 320, 3, 3}));
  for (const auto& absent :
       {"down_blocks.3.attentions.0.norm.weight", "down_blocks.3.downsamplers.0.conv.weight",
        "up_blocks.0.attentions.0.norm.weight", "up_blocks.3.upsamplers.0.conv.weight",
        "down_blocks.0.resnets.0.conv_shortcut.weight", "mid_block.resnets.0.conv_shortcut.weight"}) {
    EXPECT_EQ(sd.count(absent), 0u) << absent;
  }

  // models.md 5.1: rank-4 LoRA on q, k, v, out of all 32 attention modules.
  const auto adapted = apply_lora(*unet, {"to_q", "to_k", "to_v", "to_out.0"}, 4, 4.0, kMeta);
  EXPECT_EQ(adapted.size(), 128u);
  std::int64_t lora_tensors = 0, lora_params = 0;
  for (const auto& p : unet->named_parameters()) {
    if (p.key().find(".lora_") == std::string::npos) {
      EXPECT_FALSE(p.value().requires_grad()) << p.key();
      continue;
    }
    EXPECT_TRUE(p.value().requires_grad()) << p.key();
    ++lora_tensors;
    lora_params += p.value().numel();
  }
  EXPECT_EQ(lora_tensors, 256);
  EXPECT_EQ(lora_params, 829952);
  const TensorMap with_lora = module_state_dict(*unet);
  EXPECT_EQ(
      shape_of(with_lora, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"),
      (Shape{4, 1024}));
  EXPECT_EQ(
      shape_of(with_lora, "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0.lora_B.weight"),
      (Shape{320, 4}));
}

TEST(SDUNetModule, SD15LayoutHasConvProjectionsAndCondProj) {
  const SDUNetConfig cfg = parse_config(kSD15Config);
  EXPECT_EQ(cfg.heads, (Shape{8, 8, 8, 8}));
  SDUNet unet(cfg, kMeta);
  const TensorMap sd = module_state_dict(*unet);
  EXPECT_EQ(shape_of(sd, "down_blocks.0.attentions.0.proj_in.weight"), (Shape{320, 320, 1, 1}));
  EXPECT_EQ(shape_of(sd, "up_blocks.1.attentions.2.proj_out.weight"), (Shape{1280, 1280, 1, 1}));
  EXPECT_EQ(shape_of(sd, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight"), (Shape{640, 768}));
  EXPECT_EQ(shape_of(sd, "time_embedding.cond_proj.weight"), (Shape{320, 256}));
  EXPECT_EQ(sd.count("time_embedding.cond_proj.bias"), 0u);
  // SD-Turbo plus cond_proj, minus the linear-projection difference: C*C vs C*C*1*1 holds the
  // same count, and the 768-d text states shrink every attn2 to_k/to_v by 256 columns.
  const std::int64_t text_shrink = 2 * 256 * (2 * 320 + 2 * 640 + 2 * 1280 + 1280 + 3 * 1280 + 3 * 640 + 3 * 320);
  EXPECT_EQ(nn::parameter_count(*unet), 865910724 + 320 * 256 - text_shrink);
  // The same number from the other side: the SD v1.x UNet's published count, 859,520,964
  // (runwayml/stable-diffusion-v1-5's unet, "859.52M"), plus LCM_Dreamshaper_v7's bias-free
  // cond_proj 256 -> 320.
  EXPECT_EQ(nn::parameter_count(*unet), 859520964 + 256 * 320);
}

TEST(SDUNetModule, TimestepFeaturesMatchHandComputedValues) {
  // dim 4, t = 1: half 2, freqs exp(-ln(1e4) * i / 2) = {1, 0.01}.
  at::Tensor f = timestep_features(at::tensor({1}, at::kLong), 4, /*flip_sin_to_cos=*/true, 0.0);
  test::expect_close(f, row({0.5403023f, 0.9999500f, 0.8414710f, 0.0099998f}), 0.0, 1e-6, "flipped");
  f = timestep_features(at::tensor({1}, at::kLong), 4, false, 0.0);
  test::expect_close(f, row({0.8414710f, 0.0099998f, 0.5403023f, 0.9999500f}), 0.0, 1e-6, "sin first");
  // freq_shift 1: divisor half - 1 = 1, freqs {1, 1e-4}; t = 0 gives cos 1, sin 0.
  f = timestep_features(at::tensor({0, 2}, at::kLong), 4, true, 1.0);
  test::expect_close(
      f, at::cat({row({1.0f, 1.0f, 0.0f, 0.0f}), row({-0.4161468f, 1.0f, 0.9092974f, 0.0002f})}), 0.0, 1e-6, "shifted");
  // Odd dims get a zero last column.
  f = timestep_features(at::tensor({3}, at::kLong), 5, true, 0.0);
  ASSERT_EQ(f.sizes(), (Shape{1, 5}));
  EXPECT_EQ(f[0][4].item<float>(), 0.0f);
  // SD-Turbo's 320-d features at t = 999: cos(999) first, then ... sin(999 * 1e-4^(159/160)) last.
  f = timestep_features(at::tensor({999}, at::kLong), 320, true, 0.0);
  EXPECT_NEAR(f[0][0].item<float>(), std::cos(999.0), 1e-4);
  EXPECT_NEAR(f[0][319].item<float>(), std::sin(999.0 * std::exp(-std::log(10000.0) * 159.0 / 160.0)), 1e-6);
}

TEST(SDUNetModule, GEGLUIsValueTimesGeluOfGate) {
  GEGLU geglu(2, 1, kF32);
  {
    at::NoGradGuard no_grad;
    auto params = geglu->named_parameters();
    params["proj.weight"].copy_(at::eye(2));
    params["proj.bias"].copy_(at::tensor({0.0f, 0.5f}));
  }
  // a = x0, g = x1 + 0.5; GELU_erf(1.5) = 1.3997892, GELU_erf(-1) = -0.1586553.
  at::Tensor y = geglu->forward(at::cat({row({2.0f, 1.0f}), row({3.0f, -1.5f})}));
  test::expect_close(y, at::tensor({2.0f * 1.3997892f, 3.0f * -0.1586553f}).view({2, 1}), 0.0, 1e-5);
}

// Copies `values` into the same-named parameters of `module` (reshaped to their shapes).
void set_parameters(torch::nn::Module& module, const TensorMap& values) {
  at::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) p.value().copy_(values.at(p.key()).reshape(p.value().sizes()));
}

TEST(SDUNetModule, ResnetBlockMatchesItsFormula) {
  ScopedSeed seed(21);
  ResnetBlock2D block(8, 16, 12, 4, 1e-5, 2.0, kF32);
  TensorMap w = module_state_dict(*block);
  for (auto& kv : w) kv.second = at::randn(kv.second.sizes()) * 0.3;
  set_parameters(*block, w);
  const at::Tensor x = at::randn({2, 8, 5, 5}), temb = at::randn({2, 12});
  auto gn = [](const at::Tensor& v, const at::Tensor& g, const at::Tensor& b) {
    return at::group_norm(v, 4, g, b, 1e-5);
  };
  at::Tensor h =
      at::conv2d(at::silu(gn(x, w["norm1.weight"], w["norm1.bias"])), w["conv1.weight"], w["conv1.bias"], 1, 1);
  // models.md 2.4: SiLU on temb, then time_emb_proj, added per channel.
  h = h + at::linear(at::silu(temb), w["time_emb_proj.weight"], w["time_emb_proj.bias"]).view({2, 16, 1, 1});
  h = at::conv2d(at::silu(gn(h, w["norm2.weight"], w["norm2.bias"])), w["conv2.weight"], w["conv2.bias"], 1, 1);
  const at::Tensor expected = (at::conv2d(x, w["conv_shortcut.weight"], w["conv_shortcut.bias"]) + h) / 2.0;
  at::NoGradGuard no_grad;
  test::expect_close(block->forward(x, temb), expected, 0.0, 1e-5);
}

TEST(SDUNetModule, ConvAndLinearProjectionsAgreeOnTheSameWeights) {
  ScopedSeed seed(22);
  Transformer2D linear(16, 2, 2, 12, 8, /*linear_projection=*/true, false, kF32);
  Transformer2D conv(16, 2, 2, 12, 8, /*linear_projection=*/false, false, kF32);
  TensorMap w = module_state_dict(*linear);
  for (auto& kv : w) kv.second = at::randn(kv.second.sizes()) * 0.3;
  set_parameters(*linear, w);
  set_parameters(*conv, w);
  EXPECT_EQ(conv->named_parameters()["proj_in.weight"].sizes(), (Shape{16, 16, 1, 1}));
  const at::Tensor x = at::randn({2, 16, 3, 4}), context = at::randn({2, 5, 12});
  at::NoGradGuard no_grad;
  const at::Tensor out = linear->forward(x, context);
  test::expect_close(conv->forward(x, context), out, 0.0, 1e-5);
  EXPECT_GT((out - x).abs().max().item<double>(), 1e-2);  // not just the residual
}

// models.md 2.3: an up block concatenates [hidden, skip] and takes its skips last-in-first-out.
// With the skip-input columns of resnets 1 and 2 zeroed (GroupNorm groups of 8 do not straddle
// the hidden/skip boundary), the output depends on the last skip pushed only.
TEST(SDUNetModule, UpBlockConcatenatesHiddenFirstAndPopsSkipsLastInFirstOut) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  ScopedSeed seed(23);
  UpBlock block(cfg, 1, kF32);  // the final block: 3 resnets at 32 ch, hidden 64 -> 32 -> 32, skips of 32
  {
    at::NoGradGuard no_grad;
    auto params = block->named_parameters();
    for (const auto& [name, hidden] : {std::pair<std::string, std::int64_t>{"resnets.1", 32}, {"resnets.2", 32}}) {
      params[name + ".conv1.weight"].narrow(1, hidden, 32).zero_();
      params[name + ".conv_shortcut.weight"].narrow(1, hidden, 32).zero_();
    }
  }
  const at::Tensor h = at::randn({1, 64, 4, 4}), temb = at::randn({1, 128}), context = at::randn({1, 3, 16});
  auto run = [&](std::vector<at::Tensor> skips) {
    at::NoGradGuard no_grad;
    at::Tensor out = block->forward(h, temb, context, skips);
    EXPECT_TRUE(skips.empty());
    return out;
  };
  const at::Tensor s0 = at::randn({1, 32, 4, 4}), s1 = at::randn({1, 32, 4, 4}), s2 = at::randn({1, 32, 4, 4});
  const at::Tensor out = run({s0, s1, s2});
  test::expect_close(run({at::randn({1, 32, 4, 4}), at::randn({1, 32, 4, 4}), s2}), out, 0.0, 1e-6, "s0, s1 unused");
  EXPECT_GT((run({s0, s1, at::randn({1, 32, 4, 4})}) - out).abs().max().item<double>(), 1e-3);
}

TEST(SDUNetModule, ZeroTimestepCondEqualsNoneAndOddLatentsKeepTheirSize) {
  const SDUNetConfig cfg = parse_config(kTinySD1Config);
  SDUNet unet = random_unet(cfg, 3);
  Inputs in = inputs(2, 12, 4, 7);  // 7x7: the upsampler must resize to the 4x4 -> 7x7 skip
  at::NoGradGuard no_grad;
  at::Tensor plain = unet->forward(in.x, in.t, in.cond);
  EXPECT_EQ(plain.sizes(), (Shape{2, 4, 7, 7}));
  // cond_proj has no bias: a zero guidance embedding adds exactly nothing.
  test::expect_close(unet->forward(in.x, in.t, in.cond, at::zeros({2, 8})), plain, 0.0, 0.0);
  EXPECT_GT((unet->forward(in.x, in.t, in.cond, at::randn({2, 8})) - plain).abs().max().item<double>(), 1e-4);
}

TEST(SDUNetModule, ApplyLoRAFreezesTheBaseSoOnlyAdaptersGetGradients) {
  SDUNet unet = random_unet(parse_config(kTinyConfig), 19);
  EXPECT_THROW(apply_lora(*unet, {"to_q", "no_such_layer"}, 4, 4.0, kF32), std::invalid_argument);
  EXPECT_TRUE(nn::lora_layers(*unet).empty());  // a refused target changes nothing
  const auto adapted = apply_lora(*unet, {"to_q", "to_k", "to_v", "to_out.0"}, 4, 4.0, kF32);
  EXPECT_EQ(adapted.size(), 48u);
  EXPECT_EQ(adapted.front(), "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q");
  Inputs in = inputs(2, 16, 20);
  unet->forward(in.x, in.t, in.cond).pow(2).mean().backward();
  std::int64_t with_grad = 0;
  for (const auto& p : unet->named_parameters()) {
    const bool lora = p.key().find(".lora_") != std::string::npos;
    EXPECT_EQ(p.value().grad().defined(), lora) << p.key();
    with_grad += p.value().grad().defined() ? 1 : 0;
  }
  EXPECT_EQ(with_grad, 96);
}

TEST(SDUNetPlugin, PipelineFolderLoadsStrictlyWithIdenticalOutputs) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 1);
  const std::string path = write_pipeline(kTinyConfig, reference);
  auto model = make_model(path);
  EXPECT_EQ(model->latent_shape(), (Shape{4, 8, 8}));
  EXPECT_EQ(model->prediction_type(), "epsilon");
  EXPECT_TRUE(model->has_adapter());
  Inputs in = inputs(2, 16, 2);
  at::Tensor expected;
  {
    at::NoGradGuard no_grad;
    expected = reference->forward(in.x, in.t, in.cond);
  }
  at::Tensor out = model->forward(in.x, in.t, in.cond);
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  test::expect_close(out, expected, 0.0, 0.0, "fresh LoRA leaves the loaded UNet unchanged");
  // A single timestep broadcasts over the batch.
  test::expect_close(
      model->forward(in.x, at::scalar_tensor(321, at::kLong), in.cond),
      model->forward(in.x, at::full({2}, 321, at::kLong), in.cond), 0.0, 0.0);

  // The unet folder itself works too, and the fp16 variant file (converted on load).
  auto from_unet_dir = make_model(path + "/unet", R"("lora_rank": 0)");
  test::expect_close(from_unet_dir->forward(in.x, in.t, in.cond), expected, 0.0, 0.0, "unet folder");
  const std::string fp16_path = write_pipeline(kTinyConfig, reference, "fp16");
  auto from_fp16 = make_model(fp16_path, R"("variant": "fp16")");
  test::expect_close(from_fp16->forward(in.x, in.t, in.cond), expected, 0.0, 2e-2, "fp16 file");
}

TEST(SDUNetPlugin, SD1StyleConfigRoundTrips) {
  const SDUNetConfig cfg = parse_config(kTinySD1Config);
  SDUNet reference = random_unet(cfg, 5);
  auto model = make_model(write_pipeline(kTinySD1Config, reference));
  Inputs in = inputs(3, 12, 6);
  at::NoGradGuard no_grad;
  test::expect_close(model->forward(in.x, in.t, in.cond), reference->forward(in.x, in.t, in.cond), 0.0, 0.0);
  EXPECT_EQ(model->state_dict().at("down_blocks.0.attentions.0.proj_in.weight").sizes(), (Shape{16, 16, 1, 1}));
  EXPECT_TRUE(model->state_dict().count("time_embedding.cond_proj.weight"));
}

TEST(SDUNetPlugin, MissingAndExtraKeysAreRefusedNamingKeyAndFile) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 7);
  const std::string path = write_pipeline(kTinyConfig, reference);
  const std::string file = path + "/unet/diffusion_pytorch_model.safetensors";
  const TensorMap good = safetensors_load(file);

  TensorMap missing = good;
  missing.erase("up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v.weight");
  safetensors_save(file, missing);
  expect_error_with(
      [&] { make_model(path); }, {file, "missing", "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v.weight"});

  TensorMap extra = good;
  extra["down_blocks.1.attentions.0.norm.weight"] = at::ones({64});
  safetensors_save(file, extra);
  expect_error_with([&] { make_model(path); }, {file, "unexpected", "down_blocks.1.attentions.0.norm.weight"});

  TensorMap misshapen = good;
  misshapen["conv_in.weight"] = at::zeros({32, 4, 1, 1});
  safetensors_save(file, misshapen);
  expect_error_with([&] { make_model(path); }, {file, "conv_in.weight", "[32, 4, 1, 1]"});
}

TEST(SDUNetPlugin, LoRATrainsAloneTogglesAndRoundTripsInDiffusersKeys) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 9);
  const std::string path = write_pipeline(kTinyConfig, reference);
  auto model = make_model(path, R"("seed": 3)");
  auto base = make_model(path, R"("lora_rank": 0)");
  Inputs in = inputs(2, 16, 10);
  const at::Tensor base_out = base->forward(in.x, in.t, in.cond).detach();
  test::expect_close(model->forward(in.x, in.t, in.cond), base_out, 0.0, 0.0, "zero-initialized LoRA");

  // 6 transformer blocks (down0: 2, mid: 1, up1: 3) x 2 attentions x {q, k, v, out} x {A, B}.
  const TensorMap lora = model->trainable_state_dict();
  EXPECT_EQ(lora.size(), 96u);
  for (const auto& kv : lora) {
    EXPECT_EQ(kv.first.rfind("unet.", 0), 0u) << kv.first;
    const bool a = kv.first.find(".lora_A.weight") != std::string::npos;
    const bool b = kv.first.find(".lora_B.weight") != std::string::npos;
    EXPECT_TRUE(a || b) << kv.first;
    EXPECT_EQ(kv.second.scalar_type(), at::kFloat);
  }
  EXPECT_EQ(
      lora.at("unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.lora_A.weight").sizes(), (Shape{4, 16}));
  EXPECT_EQ(
      lora.at("unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight").sizes(),
      (Shape{32, 4}));
  // state_dict() = base weights (diffusers names) + the same LoRA keys.
  const TensorMap full = model->state_dict();
  EXPECT_EQ(full.size(), base->state_dict().size() + lora.size());
  EXPECT_TRUE(full.count("conv_in.weight"));

  // Only the adapter trains: at init B = 0, so only the B matrices see a gradient.
  const std::vector<at::Tensor> params = model->trainable_parameters();
  ASSERT_EQ(params.size(), lora.size());
  model->forward(in.x, in.t, in.cond).pow(2).mean().backward();
  std::int64_t nonzero = 0;
  for (const auto& p : params) {
    ASSERT_TRUE(p.requires_grad());
    ASSERT_TRUE(p.grad().defined());
    if (p.grad().abs().max().item<double>() > 0) ++nonzero;
  }
  EXPECT_EQ(nonzero, 48);
  EXPECT_EQ(base->trainable_parameters().size(), base->state_dict().size());  // rank 0: everything

  // Perturb B: outputs move; with the adapter off they are the base model's again.
  TensorMap perturbed = lora;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  for (auto& kv : perturbed) {
    if (kv.first.find("lora_B") != std::string::npos) kv.second = at::randn(kv.second.sizes(), gen) * 0.1;
  }
  model->load_state_dict(perturbed, /*strict=*/false, "perturbed");
  const at::Tensor tuned = model->forward(in.x, in.t, in.cond).detach();
  EXPECT_GT((tuned - base_out).abs().max().item<double>(), 1e-3);
  model->set_adapter_enabled(false);
  test::expect_close(model->forward(in.x, in.t, in.cond), base_out, 0.0, 0.0, "adapter disabled");
  model->set_adapter_enabled(true);
  test::expect_close(model->forward(in.x, in.t, in.cond), tuned, 0.0, 0.0, "adapter enabled again");

  // The saved adapter starts a fresh model at the same outputs (option lora_weights) ...
  const std::string lora_file = test::temp_dir("sd_unet_lora") + "/pytorch_lora_weights.safetensors";
  safetensors_save(lora_file, model->trainable_state_dict(), {{"format", "pt"}});
  auto resumed = make_model(path, R"("seed": 99, "lora_weights": ")" + lora_file + "\"");
  test::expect_close(resumed->forward(in.x, in.t, in.cond), tuned, 0.0, 0.0, "lora_weights");
  // ... and through load_state_dict; the full state dict round-trips strictly.
  auto other = make_model(path, R"("seed": 98)");
  other->load_state_dict(safetensors_load(lora_file), /*strict=*/false, lora_file);
  test::expect_close(other->forward(in.x, in.t, in.cond), tuned, 0.0, 0.0, "load_state_dict");
  auto strict = make_model(path, R"("seed": 97)");
  strict->load_state_dict(model->state_dict(), /*strict=*/true, "full");
  test::expect_close(strict->forward(in.x, in.t, in.cond), tuned, 0.0, 0.0, "strict full");
  expect_error_with(
      [&] { strict->load_state_dict(lora, true, "only_lora.safetensors"); }, {"only_lora.safetensors", "missing"});

  // A LoRA file with a foreign key, or lacking one, is refused naming the file and the key.
  TensorMap foreign = lora;
  foreign["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = at::zeros({4, 16});
  safetensors_save(lora_file, foreign);
  expect_error_with(
      [&] { make_model(path, R"("lora_weights": ")" + lora_file + "\""); },
      {lora_file, "unexpected", "text_encoder.text_model"});
  TensorMap partial = lora;
  partial.erase("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight");
  safetensors_save(lora_file, partial);
  expect_error_with(
      [&] { make_model(path, R"("lora_weights": ")" + lora_file + "\""); },
      {lora_file, "missing", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B"});
}

TEST(SDUNetPlugin, LoRAOptions) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 12);
  const std::string path = write_pipeline(kTinyConfig, reference);
  // Other targets and rank: only the feed-forward output layers, rank 2.
  auto ff = make_model(path, R"("lora_rank": 2, "lora_targets": ["ff.net.2"])");
  const TensorMap lora = ff->trainable_state_dict();
  EXPECT_EQ(lora.size(), 12u);
  EXPECT_EQ(
      lora.at("unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2.lora_A.weight").sizes(), (Shape{2, 256}));
  // Same seed, same adapter init.
  auto again = make_model(path, R"("lora_rank": 2, "lora_targets": ["ff.net.2"])");
  for (const auto& kv : lora) test::expect_close(again->trainable_state_dict().at(kv.first), kv.second, 0.0, 0.0);

  try {
    make_model(path, R"("lora_targets": ["to_q", "conv1"])");
    ADD_FAILURE() << "expected a ManifestError";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "model.options.lora_targets");
    EXPECT_NE(std::string(e.what()).find("conv1"), std::string::npos) << e.what();
  }
  expect_error_with([&] { make_model(path, R"("lora_targets": "to_q")"); }, {"lora_targets", "list of strings"});
  expect_error_with([&] { make_model(path, R"("lora_rank": 0, "lora_weights": "x.safetensors")"); }, {"lora_weights"});
}

TEST(SDUNetPlugin, BFloat16BaseIsCloseToFloat32AndFloat16IsRefusedOnCPU) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 13);
  const std::string path = write_pipeline(kTinyConfig, reference);
  Inputs in = inputs(2, 16, 14);
  const at::Tensor full = make_model(path)->forward(in.x, in.t, in.cond).detach();
  auto bf16 = make_model(path, R"("dtype": "bfloat16")");
  EXPECT_EQ(bf16->state_dict().at("conv_in.weight").scalar_type(), at::kBFloat16);
  EXPECT_EQ(bf16->trainable_state_dict().begin()->second.scalar_type(), at::kFloat);  // the adapter stays fp32
  const at::Tensor out = bf16->forward(in.x, in.t, in.cond);
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  const double scale = full.abs().max().item<double>();
  EXPECT_LT((out - full).abs().max().item<double>(), 0.05 * scale);
  // The adapter still trains beside bf16 base weights.
  out.pow(2).mean().backward();
  for (const auto& p : bf16->trainable_parameters()) ASSERT_TRUE(p.grad().defined());

  auto check_dtype_error = [](const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "model.options.dtype");
    EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
  };
  try {
    auto half = make_model(path, R"("dtype": "float16")");
    ASSERT_TRUE(at::hasCUDA()) << "float16 without a GPU must be refused at construction";
    half->to(c10::Device(c10::kCPU));
    ADD_FAILURE() << "expected moving a float16 model to the CPU to be refused";
  } catch (const ManifestError& e) {
    check_dtype_error(e);
  }
}

TEST(SDUNetPlugin, PredictionTypeComesFromTheSchedulerConfig) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 15);
  const std::string path = write_pipeline(kTinyConfig, reference);
  write_text(
      fs::path(path) / "scheduler" / "scheduler_config.json",
      R"({"_class_name": "EulerDiscreteScheduler", "prediction_type": "v_prediction"})");
  EXPECT_EQ(make_model(path, R"("lora_rank": 0)")->prediction_type(), "v_prediction");
  EXPECT_EQ(make_model(path, R"("lora_rank": 0, "prediction_type": "epsilon")")->prediction_type(), "epsilon");
  EXPECT_EQ(make_model(path + "/unet/", R"("lora_rank": 0)")->prediction_type(), "v_prediction");  // unet folder
  write_text(fs::path(path) / "scheduler" / "scheduler_config.json", R"({"prediction_type": "sample"})");
  expect_error_with([&] { make_model(path, R"("lora_rank": 0)"); }, {"scheduler_config.json", "prediction_type"});
}

TEST(SDUNetPlugin, UnsupportedConfigValuesNameTheFileAndKey) {
  auto expect_refused = [](const std::string& edit_from, const std::string& edit_to, const std::string& key) {
    std::string json = kSDTurboConfig;
    const auto at = json.find(edit_from);
    ASSERT_NE(at, std::string::npos) << edit_from;
    json.replace(at, edit_from.size(), edit_to);
    const fs::path root = test::temp_dir("sd_unet_bad");
    write_text(root / "unet" / "config.json", json);
    try {
      make_model(root.string());
      ADD_FAILURE() << "expected a ManifestError for " << key;
    } catch (const ManifestError& e) {
      EXPECT_EQ(e.file(), (root / "unet" / "config.json").string());
      EXPECT_EQ(e.json_path(), key);
    }
  };
  expect_refused(
      R"(["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])",
      R"(["CrossAttnDownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])", "down_block_types");
  expect_refused(R"("class_embed_type": null)", R"("class_embed_type": "timestep")", "class_embed_type");
  expect_refused(R"("addition_embed_type": null)", R"("addition_embed_type": "text_time")", "addition_embed_type");
  expect_refused(
      R"("resnet_time_scale_shift": "default")", R"("resnet_time_scale_shift": "scale_shift")",
      "resnet_time_scale_shift");
  expect_refused(
      R"("mid_block_type": "UNetMidBlock2DCrossAttn")", R"("mid_block_type": "UNetMidBlock2DSimpleCrossAttn")",
      "mid_block_type");
  expect_refused(
      R"("attention_head_dim": [5, 10, 20, 20])", R"("attention_head_dim": [5, 10, 20])", "attention_head_dim");
  expect_refused(
      R"("attention_head_dim": [5, 10, 20, 20])", R"("attention_head_dim": [5, 10, 30, 20])", "attention_head_dim");
  expect_refused(R"("dual_cross_attention": false)", R"("dual_cross_attention": true)", "dual_cross_attention");
}

TEST(SDUNetPlugin, MissingFilesNameThePath) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 16);
  const std::string path = write_pipeline(kTinyConfig, reference);
  try {
    make_model(path, R"("variant": "fp16")");
    ADD_FAILURE() << "expected a FileError";
  } catch (const FileError& e) {
    EXPECT_EQ(e.path(), path + "/unet/diffusion_pytorch_model.fp16.safetensors");
  }
  fs::remove(fs::path(path) / "unet" / "diffusion_pytorch_model.safetensors");
  try {
    make_model(path);
    ADD_FAILURE() << "expected a FileError";
  } catch (const FileError& e) {
    EXPECT_EQ(e.path(), path + "/unet/diffusion_pytorch_model.safetensors");
  }
  const std::string empty = test::temp_dir("sd_unet_empty");
  try {
    make_model(empty);
    ADD_FAILURE() << "expected a FileError";
  } catch (const FileError& e) {
    EXPECT_EQ(e.path(), empty + "/unet/config.json");
  }
  // `path` is required.
  expect_error_with([] { Registry::global().create<Model>(model_config("{}")); }, {"model.options.path"});
}

TEST(SDUNetPlugin, BadInputShapesAreRefused) {
  const SDUNetConfig cfg = parse_config(kTinyConfig);
  SDUNet reference = random_unet(cfg, 17);
  auto model = make_model(write_pipeline(kTinyConfig, reference), R"("lora_rank": 0)");
  Inputs in = inputs(2, 16, 18);
  expect_error_with([&] { model->forward(at::randn({2, 3, 8, 8}), in.t, in.cond); }, {"x_t"});
  expect_error_with([&] { model->forward(in.x, in.t, at::randn({2, 7, 12})); }, {"cond", "16"});
  expect_error_with([&] { model->forward(in.x, at::zeros({3}, at::kLong), in.cond); }, {"timestep"});
}

// guidance_embedding_w (models.md 8.3): the plugin passes the LCM w embedding as timestep_cond.
// With w = 0.0005 (w' = 0.5) and time_cond_proj_dim 8 the embedding is, by hand, [sin(0.5 f_i),
// cos(0.5 f_i)] with f_i = 10000^(-i/3); without the option the UNet gets no timestep_cond.
TEST(SDUNetPlugin, GuidanceEmbeddingWReachesTheUNetAsTimestepCond) {
  const SDUNetConfig cfg = parse_config(kTinySD1Config);
  SDUNet reference = random_unet(cfg, 21);
  const std::string path = write_pipeline(kTinySD1Config, reference);
  Inputs in = inputs(2, 12, 22);
  std::vector<float> emb;
  for (const char* fn : {"sin", "cos"}) {
    for (int i = 0; i < 4; ++i) {
      const double a = 0.5 * std::pow(10000.0, -i / 3.0);
      emb.push_back(static_cast<float>(std::string(fn) == "sin" ? std::sin(a) : std::cos(a)));
    }
  }
  const at::Tensor hand = at::tensor(emb).view({1, 8}).expand({2, 8});
  at::NoGradGuard no_grad;
  const at::Tensor with_hand = reference->forward(in.x, in.t, in.cond, hand);
  const at::Tensor plain = reference->forward(in.x, in.t, in.cond);
  // The plugin computes the embedding in float32, the hand in double: about 1e-7 apart, which the
  // network amplifies to about 1e-6 here (libtorch 2.6's attention kernels more than 1.13's).
  test::expect_close(
      make_model(path, R"("guidance_embedding_w": 0.0005)")->forward(in.x, in.t, in.cond), with_hand, 1e-4, 1e-5,
      "w = 0.0005");
  EXPECT_GT((with_hand - plain).abs().max().item<double>(), 1e-3);
  test::expect_close(make_model(path)->forward(in.x, in.t, in.cond), plain, 0.0, 0.0, "no option: no timestep_cond");
  test::expect_close(
      make_model(path, R"("guidance_embedding_w": -1)")->forward(in.x, in.t, in.cond), plain, 0.0, 0.0,
      "negative w: no timestep_cond");
  // w = 0 is an embedding too ([0, 0, 0, 0, 1, 1, 1, 1]), not the absence of one.
  const at::Tensor zero_w = at::tensor(std::vector<float>{0, 0, 0, 0, 1, 1, 1, 1}).view({1, 8}).expand({2, 8});
  const at::Tensor w0 = make_model(path, R"("guidance_embedding_w": 0)")->forward(in.x, in.t, in.cond);
  test::expect_close(w0, reference->forward(in.x, in.t, in.cond, zero_w), 1e-4, 1e-5, "w = 0");
  EXPECT_GT((w0 - plain).abs().max().item<double>(), 1e-4);
  // A UNet without cond_proj refuses the option, naming it.
  SDUNet no_cond = random_unet(parse_config(kTinyConfig), 23);
  const std::string no_cond_path = write_pipeline(kTinyConfig, no_cond);
  expect_error_with(
      [&] { make_model(no_cond_path, R"("guidance_embedding_w": 7)"); },
      {"model.options.guidance_embedding_w", "time_cond_proj_dim"});
}

}  // namespace
}  // namespace sdpo::sd_unet
