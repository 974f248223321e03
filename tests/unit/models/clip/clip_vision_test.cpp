// CLIP's vision side (plugins/text_encoders/clip_text, library sdpo_models_clip): the vision transformer (real
// parameter counts on the meta device, the config forms, a plain-tensor reference forward on a tiny model whose weights
// carry transformers' key names, no causal mask) and the image preprocessing of research/models.md 6.0 (quantization,
// shortest-edge resize, center crop, normalization, and the resize against a fixed-point reference of Pillow's
// resampling).

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <boost/json/parse.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/models/clip/clip_image.h"
#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/clip/clip_vision_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "support/test_support.h"
#include "support/tiny_clip.h"

namespace sdpo::clip_text {
namespace {

using Shape = std::vector<std::int64_t>;

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);

nn::HFConfig hf(const std::string& json) { return nn::HFConfig(boost::json::parse(json).as_object(), "<test config>"); }

// ---------------------------------------------------------------------------------------------
// The transformer.

TEST(CLIPVisionModel, RealConfigsOnTheMetaDevice) {
  // openai/clip-vit-large-patch14 as recent transformers re-save it: the vision_config lists only
  // the keys that differ from CLIPVisionConfig's defaults (quick_gelu, image 224, eps 1e-5).
  const CLIPVisionConfig l = CLIPVisionConfig::from_hf(hf(
      R"({"architectures": ["CLIPModel"], "projection_dim": 768,
          "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                          "projection_dim": 768},
          "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                            "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768}})"));
  EXPECT_EQ(l.hidden_act, "quick_gelu");
  EXPECT_EQ(l.image_size, 224);
  EXPECT_EQ(l.num_positions(), 257);
  CLIPVisionModelWithProjection large(l, kMeta);
  EXPECT_EQ(nn::parameter_count(*large), 303966208);  // models.md 7
  const TensorMap sd = module_state_dict(*large);
  // 3 embeddings + 2 pre_layrnorm + 24 x 16 layer tensors + 2 post_layernorm + 1 projection.
  EXPECT_EQ(sd.size(), 392u);
  auto shape = [&](const std::string& k) { return sd.count(k) ? sd.at(k).sizes().vec() : Shape{}; };
  EXPECT_EQ(shape("vision_model.embeddings.class_embedding"), (Shape{1024}));
  EXPECT_EQ(shape("vision_model.embeddings.patch_embedding.weight"), (Shape{1024, 3, 14, 14}));
  EXPECT_EQ(sd.count("vision_model.embeddings.patch_embedding.bias"), 0u);
  EXPECT_EQ(shape("vision_model.embeddings.position_embedding.weight"), (Shape{257, 1024}));
  EXPECT_EQ(shape("vision_model.pre_layrnorm.weight"), (Shape{1024}));
  EXPECT_EQ(shape("vision_model.encoder.layers.23.self_attn.k_proj.bias"), (Shape{1024}));
  EXPECT_EQ(shape("vision_model.encoder.layers.0.mlp.fc1.weight"), (Shape{4096, 1024}));
  EXPECT_EQ(shape("vision_model.encoder.layers.23.mlp.fc2.weight"), (Shape{1024, 4096}));
  EXPECT_EQ(shape("vision_model.post_layernorm.bias"), (Shape{1024}));
  EXPECT_EQ(shape("visual_projection.weight"), (Shape{768, 1024}));
  EXPECT_EQ(sd.count("visual_projection.bias"), 0u);

  // ViT-H/14 (LAION, PickScore): vision 1280 / 32 layers / 16 heads / 5120, patch 14, image 224,
  // gelu, projection 1024. models.md 7 gives only the CLIPModel total, 986,109,441; it is
  // consistent with this tower: total = vision + visual_projection (counted here) + the text
  // tower (1024 wide, 24 layers, 16 heads, 4096, vocabulary 49408, 77 positions; built here) +
  // text_projection (1024 x 1024) + logit_scale (1). By hand: 632,076,800 + 352,984,064 +
  // 1,048,576 + 1 = 986,109,441.
  const CLIPVisionConfig h = CLIPVisionConfig::from_hf(hf(
      R"({"projection_dim": 1024,
          "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16,
                            "num_hidden_layers": 32, "patch_size": 14, "hidden_act": "gelu"}})"));
  CLIPVisionModelWithProjection huge(h, kMeta);
  const std::int64_t vision = nn::parameter_count(*huge);
  EXPECT_EQ(vision, 632076800);
  const CLIPTextConfig ht = CLIPTextConfig::from_hf(hf(
      R"({"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
          "hidden_act": "gelu", "vocab_size": 49408, "max_position_embeddings": 77})"));
  CLIPTextModel text(ht, kMeta);
  EXPECT_EQ(nn::parameter_count(*text), 352984064);
  EXPECT_EQ(vision + nn::parameter_count(*text) + 1024 * 1024 + 1, 986109441);
}

TEST(CLIPVisionModel, ConfigFormsDefaultsAndValidation) {
  // A CLIPVisionModelWithProjection config has the keys at the top level.
  const CLIPVisionConfig top = CLIPVisionConfig::from_hf(hf(
      R"({"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": 1024, "intermediate_size": 4096,
          "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "image_size": 224,
          "hidden_act": "quick_gelu", "projection_dim": 768, "layer_norm_eps": 1e-05, "num_channels": 3})"));
  EXPECT_EQ(top.hidden_size, 1024);
  EXPECT_EQ(top.num_hidden_layers, 24);
  EXPECT_EQ(top.projection_dim, 768);
  // transformers' defaults (CLIPVisionConfig, CLIPConfig.projection_dim).
  const CLIPVisionConfig d = CLIPVisionConfig::from_hf(hf(R"({"vision_config": {}})"));
  EXPECT_EQ(d.hidden_size, 768);
  EXPECT_EQ(d.intermediate_size, 3072);
  EXPECT_EQ(d.num_hidden_layers, 12);
  EXPECT_EQ(d.num_attention_heads, 12);
  EXPECT_EQ(d.patch_size, 32);
  EXPECT_EQ(d.image_size, 224);
  EXPECT_EQ(d.projection_dim, 512);
  EXPECT_EQ(d.hidden_act, "quick_gelu");
  // A legacy "vision_config_dict" wins over "vision_config"; the text side is never read.
  const CLIPVisionConfig legacy = CLIPVisionConfig::from_hf(
      hf(R"({"vision_config": {"hidden_size": 96, "patch_size": 16}, "vision_config_dict": {"patch_size": 14},
             "text_config": {"hidden_act": "relu"}})"));
  EXPECT_EQ(legacy.hidden_size, 96);
  EXPECT_EQ(legacy.patch_size, 14);

  auto json_path_of = [](const std::string& json) {
    try {
      CLIPVisionConfig::from_hf(hf(json));
    } catch (const ManifestError& e) {
      return e.json_path();
    }
    return std::string("<accepted>");
  };
  EXPECT_EQ(json_path_of(R"({"vision_config": {"hidden_act": "relu"}})"), "vision_config.hidden_act");
  EXPECT_EQ(
      json_path_of(R"({"vision_config": {"hidden_size": 30, "num_attention_heads": 4}})"),
      "vision_config.num_attention_heads");
  EXPECT_EQ(json_path_of(R"({"vision_config": {"image_size": 224, "patch_size": 15}})"), "vision_config.patch_size");
  EXPECT_EQ(json_path_of(R"({"vision_config": {"num_hidden_layers": 0}})"), "vision_config.num_hidden_layers");
  EXPECT_EQ(json_path_of(R"({"vision_config": 3})"), "vision_config");
  EXPECT_EQ(json_path_of(R"({"vision_config": {}, "projection_dim": 0})"), "projection_dim");
  EXPECT_EQ(json_path_of(R"({"hidden_act": "gelu_new"})"), "hidden_act");
}

CLIPVisionConfig tiny_config(const test::TinyCLIPSpec& spec) {
  return CLIPVisionConfig::from_hf(hf(test::tiny_clip_config(spec)));
}

// A model holding the vision half of a tiny CLIPModel's weights, loaded strictly by name.
CLIPVisionModelWithProjection tiny_model(const test::TinyCLIPSpec& spec, const TensorMap& weights) {
  CLIPVisionModelWithProjection m(tiny_config(spec), at::TensorOptions());
  module_load_state_dict(*m, test::vision_side(weights), /*strict=*/true, "<tiny clip>", "test");
  m->eval();
  return m;
}

struct Reference {
  at::Tensor last_hidden_state, pooled, features;
};

// The forward of models.md 7 with plain tensor ops on the state dict: patches cut out by
// reshaping (row-major over the grid) and multiplied by the flattened kernel, no mask.
Reference reference_forward(const TensorMap& w, const at::Tensor& pixels, const test::TinyCLIPSpec& s) {
  auto W = [&](const std::string& k) { return w.at(k); };
  const std::int64_t b = pixels.size(0), p = s.patch, g = s.image / s.patch, dim = s.hidden, d = dim / s.heads;
  const std::int64_t n = g * g + 1;
  const at::Tensor patches = pixels.view({b, 3, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}).reshape({b, g * g, 3 * p * p});
  at::Tensor x = at::matmul(patches, W("vision_model.embeddings.patch_embedding.weight").view({dim, -1}).t());
  x = at::cat({W("vision_model.embeddings.class_embedding").view({1, 1, dim}).expand({b, 1, dim}), x}, 1) +
      W("vision_model.embeddings.position_embedding.weight");
  auto ln = [&](const at::Tensor& t, const std::string& k) {
    return (t - t.mean(-1, true)) / (t.var(-1, false, true) + 1e-5).sqrt() * W(k + ".weight") + W(k + ".bias");
  };
  auto lin = [&](const at::Tensor& t, const std::string& k) {
    return at::matmul(t, W(k + ".weight").t()) + W(k + ".bias");
  };
  x = ln(x, "vision_model.pre_layrnorm");
  for (std::int64_t i = 0; i < s.layers; ++i) {
    const std::string pre = "vision_model.encoder.layers." + std::to_string(i) + ".";
    const at::Tensor h = ln(x, pre + "layer_norm1");
    auto split = [&](const at::Tensor& t) { return t.view({b, n, s.heads, d}).permute({0, 2, 1, 3}); };
    const at::Tensor q = split(lin(h, pre + "self_attn.q_proj")), k = split(lin(h, pre + "self_attn.k_proj")),
                     v = split(lin(h, pre + "self_attn.v_proj"));
    const at::Tensor o =
        at::matmul(at::softmax(at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)), -1), v);
    x = x + lin(o.permute({0, 2, 1, 3}).reshape({b, n, dim}), pre + "self_attn.out_proj");
    at::Tensor m = lin(ln(x, pre + "layer_norm2"), pre + "mlp.fc1");
    m = s.act == "gelu" ? 0.5 * m * (1 + at::erf(m / std::sqrt(2.0))) : m * at::sigmoid(1.702 * m);
    x = x + lin(m, pre + "mlp.fc2");
  }
  Reference r;
  r.last_hidden_state = x;
  r.pooled = ln(x.select(1, 0), "vision_model.post_layernorm");
  r.features = at::matmul(r.pooled, W("visual_projection.weight").t());
  return r;
}

TEST(CLIPVisionModel, MatchesThePlainTensorReferenceWithEitherActivation) {
  const at::Tensor pixels = at::randn({3, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(5));
  at::Tensor features[2];
  int i = 0;
  for (const std::string act : {"quick_gelu", "gelu"}) {
    test::TinyCLIPSpec spec;
    spec.act = act;
    const TensorMap w = test::tiny_clip_weights(spec, 21);  // the same values for both activations
    CLIPVisionModelWithProjection model = tiny_model(spec, w);
    at::NoGradGuard g;
    const CLIPVisionOutput out = model->forward(pixels);
    const Reference ref = reference_forward(w, pixels, spec);
    EXPECT_EQ(out.last_hidden_state.sizes(), (Shape{3, 17, 32}));
    test::expect_close(out.last_hidden_state, ref.last_hidden_state, 1e-4, 1e-4, act + " last_hidden_state");
    test::expect_close(out.pooled, ref.pooled, 1e-4, 1e-4, act + " pooled");
    features[i] = model->get_image_features(pixels);
    EXPECT_EQ(features[i].sizes(), (Shape{3, 16}));
    test::expect_close(features[i++], ref.features, 1e-4, 1e-4, act + " image features");
  }
  EXPECT_GT((features[0] - features[1]).abs().max().item<double>(), 1e-3) << "the activation must matter";
  // Pixel values of the wrong size are refused.
  test::TinyCLIPSpec spec;
  CLIPVisionModelWithProjection model = tiny_model(spec, test::tiny_clip_weights(spec, 21));
  EXPECT_THROW(model->get_image_features(at::zeros({1, 3, 40, 40})), c10::Error);
}

TEST(CLIPVisionModel, TheClassTokenSeesEveryPatch) {
  // Not causal: changing only the last (bottom-right) patch changes the pooled class token, which
  // under a causal mask would see nothing but itself.
  test::TinyCLIPSpec spec;
  CLIPVisionModelWithProjection model = tiny_model(spec, test::tiny_clip_weights(spec, 22));
  at::NoGradGuard g;
  const at::Tensor pixels = at::randn({1, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(6));
  at::Tensor changed = pixels.clone();
  changed.narrow(2, 24, 8).narrow(3, 24, 8).add_(1.0);
  const at::Tensor a = model->forward(pixels).pooled, b = model->forward(changed).pooled;
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-3);
}

// ---------------------------------------------------------------------------------------------
// Preprocessing.

at::Tensor normalized_level(double level, std::int64_t c) {
  return at::scalar_tensor((level / 255.0 - kCLIPMean[c]) / kCLIPStd[c]);
}

TEST(CLIPImage, ConstantImagesMapToTheirNormalizedLevel) {
  // Levels 51, 131, 212 and 204, 124, 43 (none near a half, in float or double).
  const double colors[3] = {0.2, 0.5137, 0.83};
  at::Tensor images = at::empty({2, 3, 512, 512});
  for (std::int64_t c = 0; c < 3; ++c) {
    images[0][c].fill_(colors[c]);
    images[1][c].fill_(1.0 - colors[c]);
  }
  const at::Tensor out = clip_preprocess(images);
  ASSERT_EQ(out.sizes(), (Shape{2, 3, 224, 224}));
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  for (std::int64_t b = 0; b < 2; ++b) {
    for (std::int64_t c = 0; c < 3; ++c) {
      const double v = b == 0 ? colors[c] : 1.0 - colors[c];
      const double level = std::round(v * 255.0);
      test::expect_close(
          out[b][c], normalized_level(level, c).expand({224, 224}), 0, 1e-5,
          "image " + std::to_string(b) + " channel " + std::to_string(c));
    }
  }
}

TEST(CLIPImage, QuantizationToLevelsIsVisible) {
  // 100.4/255 and 100.6/255 differ by less than a level but land on different levels; values
  // outside [0, 1] clamp to 0 and 255. 224 x 224 inputs are not resized, so this is exact.
  const double in[4] = {100.4 / 255.0, 100.6 / 255.0, -0.3, 1.4};
  const double level[4] = {100, 101, 0, 255};
  for (int i = 0; i < 4; ++i) {
    const at::Tensor out = clip_preprocess(at::full({1, 3, 224, 224}, in[i]));
    for (std::int64_t c = 0; c < 3; ++c) {
      test::expect_close(
          out[0][c], normalized_level(level[i], c).expand({224, 224}), 0, 1e-5, "input " + std::to_string(in[i]));
    }
  }
  // Double-precision input quantizes the same.
  test::expect_close(
      clip_preprocess(at::full({1, 3, 224, 224}, in[1], at::kDouble)),
      clip_preprocess(at::full({1, 3, 224, 224}, in[1])), 0, 0, "float64 input");
}

TEST(CLIPImage, ShortestEdgeResizeThenCenterCrop) {
  EXPECT_EQ(clip_resize_size(448, 448, 224), (std::array<std::int64_t, 2>{224, 224}));
  EXPECT_EQ(clip_resize_size(300, 600, 224), (std::array<std::int64_t, 2>{224, 448}));
  EXPECT_EQ(clip_resize_size(600, 300, 224), (std::array<std::int64_t, 2>{448, 224}));
  EXPECT_EQ(clip_resize_size(512, 700, 224), (std::array<std::int64_t, 2>{224, 306}));  // 306.25 truncated
  EXPECT_EQ(clip_resize_size(224, 500, 224), (std::array<std::int64_t, 2>{224, 500}));  // already short enough
  EXPECT_EQ(clip_resize_size(100, 150, 224), (std::array<std::int64_t, 2>{224, 336}));  // upscaling

  EXPECT_EQ(clip_preprocess(at::rand({1, 3, 448, 448})).sizes(), (Shape{1, 3, 224, 224}));
  // 300 x 600 with a horizontal ramp: resized to 224 x 448, then columns 112 .. 335 kept.
  const at::Tensor ramp = at::linspace(0, 1, 600).view({1, 1, 1, 600}).expand({1, 3, 300, 600}).contiguous();
  const at::Tensor out = clip_preprocess(ramp);
  ASSERT_EQ(out.sizes(), (Shape{1, 3, 224, 224}));
  const at::Tensor levels = resize_levels(at::round(ramp * 255.0), 224, 448);
  ASSERT_EQ(levels.sizes(), (Shape{1, 3, 224, 448}));
  for (std::int64_t c = 0; c < 3; ++c) {
    const at::Tensor expected = (levels[0][c].narrow(1, 112, 224) / 255.0 - kCLIPMean[c]) / kCLIPStd[c];
    test::expect_close(out[0][c], expected, 0, 1e-5, "crop of the resized ramp, channel " + std::to_string(c));
  }
  // The crop is central: the kept columns span the ramp's middle half (levels about 64 .. 191).
  const double first = levels[0][0][100][112].item<double>(), last = levels[0][0][100][335].item<double>();
  EXPECT_NEAR(first, 63.75, 1.5);
  EXPECT_NEAR(last, 191.25, 1.5);
  // Resized levels are whole numbers in 0..255 (PIL's uint8 intermediate).
  const at::Tensor hard = resize_levels(at::randint(0, 256, {1, 3, 37, 61}, at::kFloat), 20, 33);
  EXPECT_TRUE(hard.eq(hard.round()).all().item<bool>());
  EXPECT_GE(hard.min().item<double>(), 0.0);
  EXPECT_LE(hard.max().item<double>(), 255.0);
  EXPECT_THROW(clip_preprocess(at::rand({1, 4, 32, 32})), c10::Error);
  EXPECT_THROW(clip_preprocess(at::rand({1, 3, 32, 32}), 24, 32), c10::Error);  // crop larger than the edge
}

// Pillow's resampling of uint8 images, written from its documented behavior: per output pixel
// the taps of the bicubic kernel (a = -0.5) stretched by the reduction factor, normalized to sum
// 1, converted to 22-bit fixed point, accumulated with a half-unit offset and clipped to 0..255;
// the horizontal pass first, into a uint8 image, then the vertical pass.
double bicubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// (R, n) int64 levels -> (R, out) along the last dimension.
at::Tensor pil_resample_rows(const at::Tensor& rows, std::int64_t out) {
  const std::int64_t count = rows.size(0), n = rows.size(1);
  const double scale = static_cast<double>(n) / static_cast<double>(out), filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  constexpr int kBits = 22;
  const auto src = rows.accessor<std::int64_t, 2>();
  at::Tensor result = at::empty({count, out}, at::kLong);
  auto dst = result.accessor<std::int64_t, 2>();
  for (std::int64_t xx = 0; xx < out; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const std::int64_t xmin = std::max<std::int64_t>(static_cast<std::int64_t>(center - support + 0.5), 0);
    const std::int64_t xmax = std::min<std::int64_t>(static_cast<std::int64_t>(center + support + 0.5), n) - xmin;
    std::vector<double> k(static_cast<std::size_t>(xmax));
    double sum = 0.0;
    for (std::int64_t x = 0; x < xmax; ++x) sum += (k[x] = bicubic((x + xmin - center + 0.5) / filterscale));
    std::vector<std::int64_t> fixed(k.size());
    for (std::size_t x = 0; x < k.size(); ++x) {
      const double v = sum != 0.0 ? k[x] / sum : 0.0;
      fixed[x] = static_cast<std::int64_t>(v < 0 ? -0.5 + v * (1 << kBits) : 0.5 + v * (1 << kBits));
    }
    for (std::int64_t r = 0; r < count; ++r) {
      std::int64_t acc = std::int64_t{1} << (kBits - 1);
      for (std::int64_t x = 0; x < xmax; ++x) acc += src[r][x + xmin] * fixed[x];
      dst[r][xx] = acc <= 0 ? 0 : std::min<std::int64_t>(acc >> kBits, 255);
    }
  }
  return result;
}

// (C, H, W) int64 levels -> (C, height, width), horizontal pass then vertical pass.
at::Tensor pil_resize(const at::Tensor& image, std::int64_t height, std::int64_t width) {
  const std::int64_t c = image.size(0), h = image.size(1), w = image.size(2);
  at::Tensor x = image;
  if (width != w) x = pil_resample_rows(x.reshape({c * h, w}), width).view({c, h, width});
  if (height != h) {
    x = pil_resample_rows(x.transpose(1, 2).reshape({c * width, h}).contiguous(), height)
            .view({c, width, height})
            .transpose(1, 2);
  }
  return x.contiguous();
}

TEST(CLIPImage, ResizeAgreesWithAFixedPointPillowReferenceWithinOneLevel) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(13);
  struct Case {
    std::int64_t h, w, edge;
  };
  // Downscales by 1.67 and 2.3 (as 512 -> 224), an upscale, and a smooth image at 512 -> 224.
  for (const Case& k : {Case{40, 52, 24}, Case{64, 64, 28}, Case{20, 30, 24}}) {
    const at::Tensor image = at::randint(0, 256, {3, k.h, k.w}, gen, at::kLong);
    const auto size = clip_resize_size(k.h, k.w, k.edge);
    const at::Tensor ours = resize_levels(image.unsqueeze(0).to(at::kFloat), size[0], size[1])[0].to(at::kLong);
    const at::Tensor pil = pil_resize(image, size[0], size[1]);
    const std::string what = std::to_string(k.h) + "x" + std::to_string(k.w) + " -> " + std::to_string(k.edge);
    EXPECT_LE((ours - pil).abs().max().item<std::int64_t>(), 1) << what;
    // Measured: 0, 0.13% and 0 of the levels differ, by one (values within a hair of a half,
    // which float and fixed-point weights round differently).
    EXPECT_LE(ours.ne(pil).to(at::kDouble).mean().item<double>(), 0.005) << what;
  }
  const at::Tensor smooth =
      (at::linspace(0, 1, 512).view({1, 512, 1}) * at::linspace(0, 1, 512).view({1, 1, 512}) * 255.0)
          .round()
          .expand({3, 512, 512})
          .to(at::kLong)
          .contiguous();
  const at::Tensor ours = resize_levels(smooth.unsqueeze(0).to(at::kFloat), 224, 224)[0].to(at::kLong);
  const at::Tensor pil = pil_resize(smooth, 224, 224);
  // A smooth ramp is full of exact halves (averages of locally linear integer levels): measured
  // 3.3% of the levels one apart, none further.
  EXPECT_LE((ours - pil).abs().max().item<std::int64_t>(), 1);
  EXPECT_LE(ours.ne(pil).to(at::kDouble).mean().item<double>(), 0.05);
}

}  // namespace
}  // namespace sdpo::clip_text
