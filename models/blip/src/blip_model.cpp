// ImageReward's network (research/models.md 6.4 "Vision", "Text", "Head", key pattern; 8A
// numerics: ViT LayerNorm eps 1e-6, BERT 1e-12, exact GELU everywhere, attention scale 1/8).

#include "sdpo/models/blip/blip_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>
#include <memory>

#include "sdpo/models/clip/clip_image.h"

namespace sdpo::imagereward {
namespace {

// A plain container module, so that parameter paths follow the published nesting
// ("encoder.layer.3.crossattention.self.key.weight").
std::shared_ptr<torch::nn::Module> child_module(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

bool is_meta_options(const at::TensorOptions& options) { return options.device().type() == c10::DeviceType::Meta; }

// A (dims) parameter drawn N(0, 0.02) as timm initializes BLIP's cls_token / pos_embed (real runs
// overwrite it from the checkpoint); empty on the meta device.
at::Tensor normal_parameter(at::IntArrayRef dims, const at::TensorOptions& options) {
  at::Tensor t = at::empty(dims, options);
  if (!is_meta_options(options)) {
    at::NoGradGuard no_grad;
    t.normal_(0.0, 0.02);
  }
  return t;
}

// Scaled dot-product attention of (B, N, H*d) projections with an additive (B, 1, 1, Nk) key mask;
// nn::multi_head_attention has no mask argument and BERT's self-attention needs one. Softmax in
// float32 for half inputs.
at::Tensor masked_attention(
    const at::Tensor& q,
    const at::Tensor& k,
    const at::Tensor& v,
    std::int64_t heads,
    const at::Tensor& additive_mask) {
  const std::int64_t b = q.size(0), nq = q.size(1), c = q.size(2), nk = k.size(1), d = c / heads;
  auto split = [&](const at::Tensor& t, std::int64_t n) { return t.reshape({b, n, heads, d}).transpose(1, 2); };
  at::Tensor scores = at::matmul(split(q, nq), split(k, nk).transpose(-1, -2));
  scores = scores.to(at::kFloat) * (1.0 / std::sqrt(static_cast<double>(d))) + additive_mask;
  const at::Tensor probs = at::softmax(scores, -1).to(v.scalar_type());
  return at::matmul(probs, split(v, nk)).transpose(1, 2).reshape({b, nq, c});
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Configs

BLIPVisionConfig BLIPVisionConfig::from_hf(const nn::HFConfig& hf) {
  static const char* const kKeys[] = {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"};
  for (const auto& kv : hf.object()) {
    const std::string key(kv.key());
    if (key.rfind('_', 0) == 0) continue;  // metadata, as HFConfig treats it
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      hf.fail(
          key,
          "not a BLIP VisionTransformer size (expected img_size, patch_size, embed_dim, depth, num_heads, "
          "mlp_ratio)");
    }
  }
  BLIPVisionConfig c;
  c.img_size = hf.positive_integer("img_size", c.img_size);
  c.patch_size = hf.positive_integer("patch_size", c.patch_size);
  c.embed_dim = hf.positive_integer("embed_dim", c.embed_dim);
  c.depth = hf.positive_integer("depth", c.depth);
  c.num_heads = hf.positive_integer("num_heads", c.num_heads);
  c.mlp_ratio = hf.number("mlp_ratio", c.mlp_ratio);
  if (!(c.mlp_ratio > 0.0) || c.mlp_hidden() < 1) hf.fail("mlp_ratio", "expected a positive number");
  if (c.embed_dim % c.num_heads != 0) {
    hf.fail("num_heads", std::to_string(c.num_heads) + " heads do not divide embed_dim " + std::to_string(c.embed_dim));
  }
  if (c.img_size % c.patch_size != 0) {
    hf.fail("patch_size", std::to_string(c.patch_size) + " does not divide img_size " + std::to_string(c.img_size));
  }
  return c;
}

MedConfig MedConfig::from_hf(const nn::HFConfig& hf) {
  // The architecture switches first: a config of another BERT variant is named as such rather
  // than by whichever size happens not to fit.
  hf.string("hidden_act", "gelu", {"gelu"});
  hf.string("position_embedding_type", "absolute", {"absolute"});
  if (!hf.boolean("add_cross_attention", true)) {
    hf.fail(
        "add_cross_attention", "ImageReward's text encoder cross-attends to the image in every layer: expected true");
  }
  MedConfig c;
  c.hidden_size = hf.positive_integer("hidden_size", c.hidden_size);
  c.num_hidden_layers = hf.positive_integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = hf.positive_integer("num_attention_heads", c.num_attention_heads);
  c.intermediate_size = hf.positive_integer("intermediate_size", c.intermediate_size);
  c.max_position_embeddings = hf.positive_integer("max_position_embeddings", c.max_position_embeddings);
  c.vocab_size = hf.positive_integer("vocab_size", c.vocab_size);
  c.layer_norm_eps = hf.number("layer_norm_eps", c.layer_norm_eps);
  if (!(c.layer_norm_eps > 0.0)) hf.fail("layer_norm_eps", "expected a positive number");
  if (c.hidden_size % c.num_attention_heads != 0) {
    hf.fail(
        "num_attention_heads",
        std::to_string(c.num_attention_heads) + " heads do not divide hidden_size " + std::to_string(c.hidden_size));
  }
  return c;
}

MedConfig MedConfig::load(const std::string& path) { return from_hf(nn::HFConfig::load(path)); }

// ---------------------------------------------------------------------------------------------
// Vision

BLIPViTImpl::BLIPViTImpl(const BLIPVisionConfig& cfg, const at::TensorOptions& options) : cfg_(cfg) {
  const std::int64_t w = cfg.embed_dim;
  constexpr double kEps = 1e-6;  // BLIP's partial(nn.LayerNorm, eps=1e-6)
  cls_token = register_parameter("cls_token", normal_parameter({1, 1, w}, options));
  pos_embed = register_parameter("pos_embed", normal_parameter({1, cfg.tokens(), w}, options));
  patch_proj_ = child_module(*this, "patch_embed")
                    ->register_module("proj", nn::Conv2d(3, w, cfg.patch_size, cfg.patch_size, 0, options));
  auto blocks = child_module(*this, "blocks");
  for (std::int64_t i = 0; i < cfg.depth; ++i) {
    auto block = child_module(*blocks, std::to_string(i));
    Block b;
    b.norm1 = block->register_module("norm1", nn::LayerNorm(w, kEps, options));
    auto attn = child_module(*block, "attn");
    b.qkv = attn->register_module("qkv", nn::Linear(w, 3 * w, /*bias=*/true, options));
    b.proj = attn->register_module("proj", nn::Linear(w, w, true, options));
    b.norm2 = block->register_module("norm2", nn::LayerNorm(w, kEps, options));
    auto mlp = child_module(*block, "mlp");
    b.fc1 = mlp->register_module("fc1", nn::Linear(w, cfg.mlp_hidden(), true, options));
    b.fc2 = mlp->register_module("fc2", nn::Linear(cfg.mlp_hidden(), w, true, options));
    blocks_.push_back(b);
  }
  norm_ = register_module("norm", nn::LayerNorm(w, kEps, options));
}

at::Tensor BLIPViTImpl::forward(const at::Tensor& pixels) {
  TORCH_CHECK(
      pixels.dim() == 4 && pixels.size(1) == 3 && pixels.size(2) == cfg_.img_size && pixels.size(3) == cfg_.img_size,
      "BLIP ViT: expected pixels (B, 3, ", cfg_.img_size, ", ", cfg_.img_size, "), got ", pixels.sizes());
  const std::int64_t b = pixels.size(0);
  // Patches (B, W, g, g) -> (B, g*g, W), class token first, plus the learned positions.
  const at::Tensor patches = patch_proj_(pixels.to(cls_token.scalar_type())).flatten(2).transpose(1, 2);
  at::Tensor x = at::cat({cls_token.expand({b, 1, cfg_.embed_dim}), patches}, 1) + pos_embed;
  for (auto& blk : blocks_) {
    // Pre-LN blocks; the fused qkv output is laid out (3, heads, head_dim): q | k | v.
    const std::vector<at::Tensor> qkv = blk.qkv(blk.norm1(x)).chunk(3, -1);
    x = x + blk.proj(nn::multi_head_attention(qkv[0], qkv[1], qkv[2], cfg_.num_heads));
    x = x + blk.fc2(at::gelu(blk.fc1(blk.norm2(x))));
  }
  return norm_(x);  // every token: the text encoder cross-attends to all of them
}

// ---------------------------------------------------------------------------------------------
// Text

BertCrossEncoderImpl::BertCrossEncoderImpl(
    const MedConfig& cfg, std::int64_t encoder_width, const at::TensorOptions& options)
    : cfg_(cfg) {
  const std::int64_t h = cfg.hidden_size;
  const double eps = cfg.layer_norm_eps;
  auto embeddings = child_module(*this, "embeddings");
  word_embeddings_ = embeddings->register_module("word_embeddings", nn::Embedding(cfg.vocab_size, h, options));
  position_embeddings_ =
      embeddings->register_module("position_embeddings", nn::Embedding(cfg.max_position_embeddings, h, options));
  embeddings_norm_ = embeddings->register_module("LayerNorm", nn::LayerNorm(h, eps, options));

  // BertAttention: "self.{query,key,value}" then "output.{dense,LayerNorm}"; the cross-attention's
  // key/value read the image tokens (encoder_width wide).
  auto make_attention = [&](torch::nn::Module& parent, const std::string& name, std::int64_t kv_width) {
    auto attention = child_module(parent, name);
    auto self = child_module(*attention, "self");
    auto output = child_module(*attention, "output");
    Attention a;
    a.query = self->register_module("query", nn::Linear(h, h, true, options));
    a.key = self->register_module("key", nn::Linear(kv_width, h, true, options));
    a.value = self->register_module("value", nn::Linear(kv_width, h, true, options));
    a.dense = output->register_module("dense", nn::Linear(h, h, true, options));
    a.norm = output->register_module("LayerNorm", nn::LayerNorm(h, eps, options));
    return a;
  };
  auto layers = child_module(*child_module(*this, "encoder"), "layer");
  for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    auto layer = child_module(*layers, std::to_string(i));
    Layer l;
    l.self_attention = make_attention(*layer, "attention", h);
    l.cross_attention = make_attention(*layer, "crossattention", encoder_width);
    l.intermediate = child_module(*layer, "intermediate")
                         ->register_module("dense", nn::Linear(h, cfg.intermediate_size, true, options));
    auto output = child_module(*layer, "output");
    l.output = output->register_module("dense", nn::Linear(cfg.intermediate_size, h, true, options));
    l.output_norm = output->register_module("LayerNorm", nn::LayerNorm(h, eps, options));
    layers_.push_back(l);
  }
}

at::Tensor BertCrossEncoderImpl::forward(
    const at::Tensor& ids, const at::Tensor& attention_mask, const at::Tensor& image_embeds) {
  TORCH_CHECK(
      ids.dim() == 2 && attention_mask.sizes() == ids.sizes(), "BLIP text encoder: expected ids and mask (B, L), got ",
      ids.sizes(), " and ", attention_mask.sizes());
  const std::int64_t len = ids.size(1);
  TORCH_CHECK(
      len <= cfg_.max_position_embeddings, "BLIP text encoder: ", len, " tokens exceed max_position_embeddings ",
      cfg_.max_position_embeddings);
  TORCH_CHECK(
      image_embeds.dim() == 3 && image_embeds.size(0) == ids.size(0), "BLIP text encoder: expected image_embeds (",
      ids.size(0), ", N, W), got ", image_embeds.sizes());
  const std::int64_t heads = cfg_.num_attention_heads;
  // Word + absolute position embeddings (no token types in med.py), then LayerNorm.
  const at::Tensor positions = position_embeddings_->weight.narrow(0, 0, len).unsqueeze(0);
  at::Tensor x = embeddings_norm_(word_embeddings_(ids) + positions);
  // BERT's extended mask: 0 on real tokens, -10000 on padding, added to every query's scores.
  const at::Tensor additive = ((1.0 - attention_mask.to(at::kFloat)) * -10000.0).view({ids.size(0), 1, 1, len});
  const at::Tensor image = image_embeds.to(x.scalar_type());
  for (auto& l : layers_) {
    // Post-LN: LN(x + dense(attention)) for self- and cross-attention, then the MLP. The image
    // mask ImageReward passes is all ones, so the cross-attention needs none.
    Attention& s = l.self_attention;
    x = s.norm(x + s.dense(masked_attention(s.query(x), s.key(x), s.value(x), heads, additive)));
    Attention& c = l.cross_attention;
    x = c.norm(x + c.dense(nn::multi_head_attention(c.query(x), c.key(image), c.value(image), heads)));
    x = l.output_norm(x + l.output(at::gelu(l.intermediate(x))));
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// The whole model

ImageRewardModelImpl::ImageRewardModelImpl(
    const BLIPVisionConfig& vision, const MedConfig& text, const at::TensorOptions& options) {
  auto blip = child_module(*this, "blip");
  visual_encoder = blip->register_module("visual_encoder", BLIPViT(vision, options));
  text_encoder = blip->register_module("text_encoder", BertCrossEncoder(text, vision.embed_dim, options));
  // ImageReward's MLP(768): Linear(H,1024), Dropout, Linear(1024,128), Dropout, Linear(128,64),
  // Dropout, Linear(64,16), Linear(16,1); the dropouts hold the indices 1, 3, 5 and are identity at
  // evaluation; no activations (commented out in the original).
  auto layers = child_module(*child_module(*this, "mlp"), "layers");
  const at::TensorOptions head_options = options.dtype(at::kFloat);
  const std::int64_t index[] = {0, 2, 4, 6, 7};
  const std::int64_t width[] = {text.hidden_size, 1024, 128, 64, 16, 1};
  for (int i = 0; i < 5; ++i) {
    head_.push_back(
        layers->register_module(std::to_string(index[i]), nn::Linear(width[i], width[i + 1], true, head_options)));
  }
}

at::Tensor ImageRewardModelImpl::forward(
    const at::Tensor& pixels, const at::Tensor& ids, const at::Tensor& attention_mask) {
  const at::Tensor image_embeds = visual_encoder->forward(pixels);
  at::Tensor h = text_encoder->forward(ids, attention_mask, image_embeds).select(1, 0).to(at::kFloat);
  for (auto& l : head_) h = l(h);
  return h.squeeze(1);
}

bool unused_checkpoint_key(const std::string& key) {
  return key.rfind("blip.vision_proj.", 0) == 0 || key.rfind("blip.text_proj.", 0) == 0 ||
         key == "blip.text_encoder.embeddings.position_ids";
}

at::Tensor imagereward_preprocess(const at::Tensor& images, std::int64_t image_size) {
  return clip_text::clip_preprocess(images, image_size, image_size);
}

}  // namespace sdpo::imagereward
