// The `sd_vae` decoder: the AutoencoderKL decoder's real parameter count on the meta device
// (research/models.md 4.3), its blocks and a tiny decoder against a hand-written reference of
// models.md 4.2, and the plugin reached through the registry on a tiny pipeline folder.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "sdpo/core/decoder.h"
#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/sd_vae/vae_decoder.h"
#include "support/test_support.h"

namespace sdpo::sd_vae {
namespace {

namespace fs = std::filesystem;
using Shape = std::vector<std::int64_t>;

SDVAEConfig config_from_json(const std::string& json) {
  return SDVAEConfig::from_hf(nn::HFConfig(boost::json::parse(json).as_object(), "<test config>"));
}

// SD-Turbo's vae/config.json (models.md 4.1).
const std::string kSDTurboVAE = R"({"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
    "latent_channels": 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "act_fn": "silu", "norm_num_groups": 32, "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": true})";

TEST(SDVAEDecoder, RealConfigOnTheMetaDevice) {
  const SDVAEConfig cfg = config_from_json(kSDTurboVAE);
  EXPECT_EQ(cfg.upsampling_factor(), 8);
  EXPECT_TRUE(cfg.use_post_quant_conv && cfg.mid_block_add_attention && cfg.force_upcast);
  SDVAEDecoder vae(cfg, at::TensorOptions().device(at::kMeta));
  EXPECT_EQ(nn::parameter_count(*vae), 49490199);
  const TensorMap sd = module_state_dict(*vae);
  EXPECT_EQ(sd.size(), 140u);
  auto shape = [&](const std::string& k) { return sd.count(k) ? sd.at(k).sizes().vec() : Shape{}; };
  EXPECT_EQ(shape("post_quant_conv.weight"), (Shape{4, 4, 1, 1}));
  EXPECT_EQ(shape("decoder.conv_in.weight"), (Shape{512, 4, 3, 3}));
  EXPECT_EQ(shape("decoder.mid_block.resnets.1.conv2.weight"), (Shape{512, 512, 3, 3}));
  EXPECT_EQ(shape("decoder.mid_block.attentions.0.group_norm.weight"), (Shape{512}));
  EXPECT_EQ(shape("decoder.mid_block.attentions.0.to_q.weight"), (Shape{512, 512}));
  EXPECT_EQ(shape("decoder.mid_block.attentions.0.to_out.0.bias"), (Shape{512}));
  EXPECT_EQ(shape("decoder.up_blocks.2.resnets.0.conv_shortcut.weight"), (Shape{256, 512, 1, 1}));
  EXPECT_EQ(shape("decoder.up_blocks.3.resnets.0.conv_shortcut.weight"), (Shape{128, 256, 1, 1}));
  EXPECT_EQ(shape("decoder.up_blocks.3.resnets.2.norm2.weight"), (Shape{128}));
  EXPECT_EQ(shape("decoder.up_blocks.2.upsamplers.0.conv.weight"), (Shape{256, 256, 3, 3}));
  EXPECT_EQ(shape("decoder.conv_norm_out.weight"), (Shape{128}));
  EXPECT_EQ(shape("decoder.conv_out.weight"), (Shape{3, 128, 3, 3}));
  EXPECT_EQ(sd.count("decoder.up_blocks.3.upsamplers.0.conv.weight"), 0u) << "the last block does not upsample";
  EXPECT_EQ(sd.count("decoder.up_blocks.0.resnets.0.conv_shortcut.weight"), 0u);
  const SDVAEConfig loaded_defaults = config_from_json("{}");  // diffusers' AutoencoderKL defaults
  EXPECT_EQ(loaded_defaults.block_out_channels, (Shape{64}));
  EXPECT_EQ(loaded_defaults.upsampling_factor(), 1);
}

TEST(SDVAEDecoder, UnsupportedConfigValuesAreRefusedNamingTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"act_fn": "relu"})", "act_fn"},
      {R"({"block_out_channels": [64, 64], "up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]})",
       "up_block_types"},
      {R"({"block_out_channels": [64, 64], "up_block_types": ["UpDecoderBlock2D"]})", "up_block_types"},
      {R"({"block_out_channels": [48], "norm_num_groups": 32})", "block_out_channels"},
      {R"({"block_out_channels": []})", "block_out_channels"},
      {R"({"shift_factor": 0.0609})", "shift_factor"},
      {R"({"latents_mean": [0.1, 0.2, 0.3, 0.4]})", "latents_mean"},
      {R"({"layers_per_block": 0})", "layers_per_block"},
      {R"({"scaling_factor": 0})", "scaling_factor"},
      {R"({"use_post_quant_conv": 1})", "use_post_quant_conv"},
  };
  for (const auto& [json, key] : cases) {
    try {
      config_from_json(json);
      ADD_FAILURE() << json << " must be refused";
    } catch (const ManifestError& e) {
      EXPECT_EQ(e.json_path(), key) << e.what();
      EXPECT_EQ(e.file(), "<test config>");
    }
  }
  EXPECT_NO_THROW(config_from_json(R"({"shift_factor": null, "latents_mean": null, "use_quant_conv": false})"));
}

// --- A reference decoder from models.md 4.2, written with plain tensor ops on a state dict. ---

struct Ref {
  const TensorMap& w;
  std::int64_t groups;
  at::Tensor W(const std::string& k) const { return w.at(k); }
  at::Tensor group_norm(const at::Tensor& x, const std::string& p) const {
    const auto b = x.size(0), c = x.size(1);
    at::Tensor g = x.reshape({b, groups, -1});
    g = (g - g.mean(-1, true)) / (g.var(-1, false, true) + 1e-6).sqrt();
    return g.reshape_as(x) * W(p + ".weight").view({1, c, 1, 1}) + W(p + ".bias").view({1, c, 1, 1});
  }
  at::Tensor conv(const at::Tensor& x, const std::string& p) const {
    const at::Tensor k = W(p + ".weight");
    return at::conv2d(x, k, W(p + ".bias"), 1, k.size(2) / 2);
  }
  at::Tensor silu(const at::Tensor& x) const { return x * at::sigmoid(x); }
  // `p`: the block's key prefix with its trailing dot ("" for a standalone block).
  at::Tensor resnet(const at::Tensor& x, const std::string& p) const {
    at::Tensor h = conv(silu(group_norm(x, p + "norm1")), p + "conv1");
    h = conv(silu(group_norm(h, p + "norm2")), p + "conv2");
    return (w.count(p + "conv_shortcut.weight") ? conv(x, p + "conv_shortcut") : x) + h;
  }
  at::Tensor attention(const at::Tensor& x, const std::string& p) const {
    const auto b = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
    at::Tensor t = group_norm(x, p + "group_norm").flatten(2).transpose(1, 2);  // (B, HW, C)
    auto lin = [&](const at::Tensor& v, const std::string& k) {
      return at::matmul(v, W(k + ".weight").t()) + W(k + ".bias");
    };
    at::Tensor s = at::matmul(lin(t, p + "to_q"), lin(t, p + "to_k").transpose(1, 2)) / std::sqrt(double(c));
    at::Tensor o = lin(at::matmul(at::softmax(s, -1), lin(t, p + "to_v")), p + "to_out.0");
    return o.transpose(1, 2).reshape({b, c, h, wd}) + x;
  }
  at::Tensor decode(const at::Tensor& z, const SDVAEConfig& cfg) const {
    at::Tensor h = cfg.use_post_quant_conv ? conv(z, "post_quant_conv") : z;
    h = resnet(conv(h, "decoder.conv_in"), "decoder.mid_block.resnets.0.");
    if (cfg.mid_block_add_attention) h = attention(h, "decoder.mid_block.attentions.0.");
    h = resnet(h, "decoder.mid_block.resnets.1.");
    const auto n = static_cast<std::int64_t>(cfg.block_out_channels.size());
    for (std::int64_t i = 0; i < n; ++i) {
      const std::string p = "decoder.up_blocks." + std::to_string(i);
      for (std::int64_t j = 0; j <= cfg.layers_per_block; ++j) h = resnet(h, p + ".resnets." + std::to_string(j) + ".");
      if (i + 1 < n) h = conv(h.repeat_interleave(2, 2).repeat_interleave(2, 3), p + ".upsamplers.0.conv");
    }
    return conv(silu(group_norm(h, "decoder.conv_norm_out")), "decoder.conv_out");
  }
};

// Random values in every tensor (norms included), so a weight that fails to load shows.
TensorMap random_weights(torch::nn::Module& m, std::uint64_t seed) {
  ScopedSeed s(seed);
  TensorMap sd = module_state_dict(m);
  at::NoGradGuard g;
  for (auto& [k, t] : sd) {
    const bool norm = k.find("norm") != std::string::npos;
    const double mean = norm && k.find("weight") != std::string::npos ? 1.0 : 0.0;
    const double fan_in = t.dim() > 1 ? static_cast<double>(t[0].numel()) : 1.0;
    const double scale = norm ? 0.2 : (t.dim() == 1 ? 0.1 : 1.0 / std::sqrt(fan_in));
    t.copy_(at::randn(t.sizes()) * scale + mean);
  }
  return sd;
}

const std::string kTinyVAE = R"({"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
    "latent_channels": 4, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "act_fn": "silu", "norm_num_groups": 4, "scaling_factor": 0.5, "force_upcast": true})";

TEST(SDVAEDecoder, BlocksAndTheWholeDecoderMatchTheReference) {
  ScopedSeed seed(1);
  const SDVAEConfig cfg = config_from_json(kTinyVAE);
  SDVAEDecoder vae(cfg, at::TensorOptions());
  const TensorMap w = random_weights(*vae, 2);
  const Ref ref{w, 4};
  at::NoGradGuard g;
  const at::Tensor z = at::randn({2, 4, 3, 5});
  const at::Tensor out = vae->forward(z);
  EXPECT_EQ(out.sizes(), (Shape{2, 3, 24, 40}));
  test::expect_close(out, ref.decode(z, cfg), 1e-4, 1e-4, "decoder");
  // One block at a time, for a pointed failure.
  VAEResnetBlock res(8, 16, 4, at::TensorOptions());
  const TensorMap rw = random_weights(*res, 3);
  const Ref rref{rw, 4};
  const at::Tensor x = at::randn({1, 8, 4, 4});
  test::expect_close(res->forward(x), rref.resnet(x, "").detach(), 1e-5, 1e-5, "resnet with shortcut");
  VAEAttention attn(8, 4, at::TensorOptions());
  const TensorMap aw = random_weights(*attn, 4);
  test::expect_close(attn->forward(x), Ref{aw, 4}.attention(x, ""), 1e-5, 1e-5, "mid attention");
}

// --- The plugin. ---

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::shared_ptr<Decoder> make_decoder(const std::string& options_json) {
  return Registry::global().create<Decoder>(
      ComponentConfig{"decoder", "sd_vae", boost::json::parse(options_json).as_object(), "<test>", "decoder.options"});
}

std::string path_option(const std::string& dir, const std::string& extra = "") {
  return R"({"path": ")" + dir + "\"" + extra + "}";
}

struct TinyVAE {
  std::string dir, file;
  SDVAEConfig cfg;
  TensorMap weights;  // decoder keys only
};

// vae/config.json and vae/diffusion_pytorch_model.safetensors holding the decoder's random
// weights plus `extra` (e.g. encoder keys).
TinyVAE write_vae(const std::string& config = kTinyVAE, const TensorMap& extra = {}) {
  TinyVAE t{test::temp_dir("sd_vae"), "", config_from_json(config), {}};
  t.file = t.dir + "/vae/diffusion_pytorch_model.safetensors";
  write_text(t.dir + "/vae/config.json", config);
  SDVAEDecoder vae(t.cfg, at::TensorOptions());
  t.weights = random_weights(*vae, 5);
  TensorMap all = t.weights;
  for (const auto& kv : extra) all.insert(kv);
  safetensors_save(t.file, all, {{"format", "pt"}});
  return t;
}

// The encoder half of an AutoencoderKL file (a few of its keys): skipped on load.
const TensorMap& encoder_keys() {
  static const TensorMap k{
      {"encoder.conv_in.weight", at::ones({8, 3, 3, 3})},
      {"encoder.down_blocks.0.resnets.0.norm1.weight", at::ones({8})},
      {"quant_conv.weight", at::ones({8, 8, 1, 1})},
      {"quant_conv.bias", at::ones({8})}};
  return k;
}

at::Tensor expected_images(const TinyVAE& t, const at::Tensor& latents) {
  const at::Tensor x = Ref{t.weights, t.cfg.norm_num_groups}.decode(latents / t.cfg.scaling_factor, t.cfg);
  return (x / 2 + 0.5).clamp(0, 1);
}

using test::expect_error_names;

TEST(SDVAEPlugin, DecodesLatentsToImagesInTheUnitRange) {
  const TinyVAE t = write_vae(kTinyVAE, encoder_keys());  // the encoder half is skipped
  auto decoder = make_decoder(path_option(t.dir));
  ScopedSeed seed(6);
  const at::Tensor latents = at::randn({2, 4, 3, 2}).requires_grad_(true);
  const at::Tensor images = decoder->decode(latents);
  EXPECT_EQ(images.sizes(), (Shape{2, 3, 24, 16})) << "x8 for four blocks";
  EXPECT_EQ(images.scalar_type(), at::kFloat);
  EXPECT_FALSE(images.requires_grad());
  EXPECT_GE(images.min().item<float>(), 0.0f);
  EXPECT_LE(images.max().item<float>(), 1.0f);
  const at::Tensor expected = expected_images(t, latents.detach());
  test::expect_close(images, expected, 1e-4, 1e-4, "clamp(decoder(latents / scaling_factor) / 2 + 0.5)");
  const double inside = ((expected > 0) & (expected < 1)).to(at::kDouble).mean().item<double>();
  EXPECT_GT(inside, 0.2) << "the test should not be all clamped";
  // bfloat16 parameters run on the CPU and return float32.
  const at::Tensor bf = make_decoder(path_option(t.dir, R"(, "dtype": "bfloat16")"))->decode(latents);
  EXPECT_EQ(bf.scalar_type(), at::kFloat);
  test::expect_close(bf, expected, 0.05, 0.05, "bfloat16");
}

TEST(SDVAEPlugin, UpsamplingFactorFollowsTheConfig) {
  for (const auto& [blocks, factor] :
       std::vector<std::pair<std::string, std::int64_t>>{{"[8]", 1}, {"[8, 16]", 2}, {"[8, 8, 16]", 4}}) {
    auto o = boost::json::parse(kTinyVAE).as_object();
    o["block_out_channels"] = boost::json::parse(blocks);
    o.erase("up_block_types");  // one UpDecoderBlock2D per block by default
    const TinyVAE t = write_vae(boost::json::serialize(o));
    const at::Tensor images = make_decoder(path_option(t.dir))->decode(at::randn({1, 4, 3, 4}));
    EXPECT_EQ(images.sizes(), (Shape{1, 3, 3 * factor, 4 * factor})) << blocks;
  }
}

TEST(SDVAEPlugin, LegacyMidAttentionNamesLoadToTheSameOutputs) {
  TinyVAE t = write_vae();
  const at::Tensor latents = at::randn({1, 4, 2, 3});
  const at::Tensor current = make_decoder(path_option(t.dir))->decode(latents);
  TensorMap legacy;
  const std::string p = "decoder.mid_block.attentions.0.";
  const std::pair<std::string, std::string> names[] = {
      {"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
  for (const auto& [k, v] : t.weights) {
    std::string name = k;
    for (const auto& [now, old] : names) {
      for (const char* param : {"weight", "bias"}) {
        if (k == p + now + "." + param) name = p + old + "." + param;
      }
    }
    legacy[name] = v;
  }
  ASSERT_TRUE(legacy.count(p + "proj_attn.bias") && !legacy.count(p + "to_q.weight"));
  for (const auto& kv : encoder_keys()) legacy.insert(kv);
  safetensors_save(t.file, legacy);
  test::expect_close(make_decoder(path_option(t.dir))->decode(latents), current, 0, 0, "legacy names");
  // Both spellings of one tensor: refused, naming both.
  legacy[p + "to_q.weight"] = t.weights.at(p + "to_q.weight");
  safetensors_save(t.file, legacy);
  expect_error_names([&] { make_decoder(path_option(t.dir)); }, {p + "query.weight", p + "to_q.weight", t.file});
}

TEST(SDVAEPlugin, MissingOrUnexpectedKeysAreNamedWithTheFile) {
  TinyVAE t = write_vae();
  TensorMap missing = t.weights;
  missing.erase("decoder.up_blocks.1.resnets.0.conv1.weight");
  safetensors_save(t.file, missing);
  expect_error_names([&] { make_decoder(path_option(t.dir)); }, {"decoder.up_blocks.1.resnets.0.conv1.weight", t.file});
  TensorMap extra = t.weights;
  extra["decoder.up_blocks.0.attentions.0.to_q.weight"] = at::zeros({16, 16});
  safetensors_save(t.file, extra);
  expect_error_names(
      [&] { make_decoder(path_option(t.dir)); }, {"decoder.up_blocks.0.attentions.0.to_q.weight", t.file});
  // A config without post_quant_conv and mid attention has no such keys: a file with them is refused.
  auto o = boost::json::parse(kTinyVAE).as_object();
  o["use_post_quant_conv"] = false;
  o["mid_block_add_attention"] = false;
  write_text(t.dir + "/vae/config.json", boost::json::serialize(o));
  safetensors_save(t.file, t.weights);
  expect_error_names([&] { make_decoder(path_option(t.dir)); }, {"unexpected key", t.file});
  TensorMap reduced;
  for (const auto& [k, v] : t.weights) {
    if (k.rfind("post_quant_conv.", 0) != 0 && k.find(".attentions.") == std::string::npos) reduced[k] = v;
  }
  EXPECT_LT(reduced.size(), t.weights.size());
  safetensors_save(t.file, reduced);
  auto decoder = make_decoder(path_option(t.dir));
  SDVAEConfig cfg = config_from_json(boost::json::serialize(o));
  const at::Tensor latents = at::randn({1, 4, 2, 2});
  const at::Tensor x = Ref{reduced, 4}.decode(latents / cfg.scaling_factor, cfg);
  test::expect_close(
      decoder->decode(latents), (x / 2 + 0.5).clamp(0, 1), 1e-4, 1e-4, "no post_quant_conv, no attention");
}

TEST(SDVAEPlugin, OptionsAndInputsAreChecked) {
  const TinyVAE t = write_vae();
  EXPECT_THROW(make_decoder("{}"), ManifestError);  // path is required
  try {
    make_decoder(path_option(t.dir, R"(, "dtype": "float16")"))->decode(at::randn({1, 4, 2, 2}));
    ADD_FAILURE() << "float16 on the CPU must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "decoder.options.dtype");
  }
  EXPECT_THROW(make_decoder(path_option(t.dir, R"(, "variant": "fp16")")), FileError);
  EXPECT_THROW(make_decoder(path_option(t.dir, R"(, "variant": "bf16")")), ManifestError);
  EXPECT_THROW(make_decoder(path_option(t.dir, R"(, "dtype": "float64")")), ManifestError);
  auto decoder = make_decoder(path_option(t.dir));
  expect_error_names([&] { decoder->decode(at::randn({1, 3, 2, 2})); }, {"sd_vae", "(B, 4, h, w)"});
  // An fp16 variant file loads (its values rounded to half precision).
  TensorMap half;
  for (const auto& [k, v] : t.weights) half[k] = v.to(at::kHalf);
  safetensors_save(t.dir + "/vae/diffusion_pytorch_model.fp16.safetensors", half);
  EXPECT_NO_THROW(make_decoder(path_option(t.dir, R"(, "variant": "fp16")"))->decode(at::randn({1, 4, 2, 2})));
  // Only RGB decoders: out_channels is checked against the interface.
  auto o = boost::json::parse(kTinyVAE).as_object();
  o["out_channels"] = 1;
  write_text(t.dir + "/vae/config.json", boost::json::serialize(o));
  try {
    make_decoder(path_option(t.dir));
    ADD_FAILURE() << "out_channels 1 must be refused";
  } catch (const ManifestError& e) {
    EXPECT_EQ(e.json_path(), "out_channels");
    EXPECT_NE(e.file().find("config.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace sdpo::sd_vae
