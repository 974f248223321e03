// AutoencoderKL decoder (research/models.md 4.1 config, 4.2 decode path, 4.3 keys, 8A numerics).

#include "sdpo/models/sd_vae/vae_decoder.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <memory>

#include "sdpo/core/error.h"

namespace sdpo::sd_vae {
namespace {

constexpr double kVAEEps = 1e-6;  // resnet_eps of the VAE decoder, its mid attention and conv_norm_out

bool is_half_type(const at::Tensor& x) { return x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16; }

// A ModuleList of `modules`, registered under `name`.
template <class M>
torch::nn::ModuleList register_list(torch::nn::Module& parent, const std::string& name, const std::vector<M>& modules) {
  auto list = parent.register_module(name, torch::nn::ModuleList());
  for (const auto& m : modules) list->push_back(m);
  return list;
}

}  // namespace

SDVAEConfig SDVAEConfig::from_hf(const nn::HFConfig& hf) {
  SDVAEConfig c;
  c.out_channels = hf.positive_integer("out_channels", c.out_channels);
  c.latent_channels = hf.positive_integer("latent_channels", c.latent_channels);
  c.layers_per_block = hf.positive_integer("layers_per_block", c.layers_per_block);
  c.norm_num_groups = hf.positive_integer("norm_num_groups", c.norm_num_groups);
  c.block_out_channels = hf.integers("block_out_channels", c.block_out_channels);
  if (c.block_out_channels.empty()) hf.fail("block_out_channels", "expected at least one block");
  for (std::int64_t ch : c.block_out_channels) {
    if (ch < 1 || ch % c.norm_num_groups != 0) {
      hf.fail(
          "block_out_channels", std::to_string(ch) + " channels are not a positive multiple of norm_num_groups = " +
                                    std::to_string(c.norm_num_groups));
    }
  }
  const auto up =
      hf.strings("up_block_types", std::vector<std::string>(c.block_out_channels.size(), "UpDecoderBlock2D"));
  if (up.size() != c.block_out_channels.size()) {
    hf.fail(
        "up_block_types", "expected one entry per block_out_channels entry (" +
                              std::to_string(c.block_out_channels.size()) + "), got " + std::to_string(up.size()));
  }
  for (const auto& t : up) {
    if (t != "UpDecoderBlock2D") hf.fail("up_block_types", "\"" + t + "\" is not supported (only UpDecoderBlock2D)");
  }
  hf.string("act_fn", "silu", {"silu"});
  c.scaling_factor = hf.number("scaling_factor", c.scaling_factor);
  if (!(c.scaling_factor > 0.0)) hf.fail("scaling_factor", "expected a positive number");
  // Keys that would change the latent scaling beyond 1 / scaling_factor (SD3 / SDXL-style VAEs).
  for (const char* key : {"shift_factor", "latents_mean", "latents_std"}) {
    if (hf.has(key)) hf.fail(key, "not supported (the decoder only divides by scaling_factor); expected null");
  }
  c.use_post_quant_conv = hf.boolean("use_post_quant_conv", c.use_post_quant_conv);
  c.mid_block_add_attention = hf.boolean("mid_block_add_attention", c.mid_block_add_attention);
  c.force_upcast = hf.boolean("force_upcast", c.force_upcast);
  return c;
}

SDVAEConfig SDVAEConfig::load(const std::string& path) { return from_hf(nn::HFConfig::load(path)); }

std::int64_t SDVAEConfig::upsampling_factor() const {
  return std::int64_t{1} << (static_cast<std::int64_t>(block_out_channels.size()) - 1);
}

VAEResnetBlockImpl::VAEResnetBlockImpl(
    std::int64_t in, std::int64_t out, std::int64_t groups, const at::TensorOptions& options) {
  norm1_ = register_module("norm1", nn::GroupNorm(groups, in, kVAEEps, options));
  conv1_ = register_module("conv1", nn::Conv2d(in, out, 3, 1, 1, options));
  norm2_ = register_module("norm2", nn::GroupNorm(groups, out, kVAEEps, options));
  conv2_ = register_module("conv2", nn::Conv2d(out, out, 3, 1, 1, options));
  if (in != out) conv_shortcut_ = register_module("conv_shortcut", nn::Conv2d(in, out, 1, 1, 0, options));
}

at::Tensor VAEResnetBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv1_(at::silu(norm1_(x)));
  h = conv2_(at::silu(norm2_(h)));                      // dropout 0
  return (conv_shortcut_ ? conv_shortcut_(x) : x) + h;  // output_scale_factor 1
}

VAEAttentionImpl::VAEAttentionImpl(std::int64_t channels, std::int64_t groups, const at::TensorOptions& options) {
  group_norm_ = register_module("group_norm", nn::GroupNorm(groups, channels, kVAEEps, options));
  to_q_ = register_module("to_q", nn::Linear(channels, channels, true, options));
  to_k_ = register_module("to_k", nn::Linear(channels, channels, true, options));
  to_v_ = register_module("to_v", nn::Linear(channels, channels, true, options));
  to_out0_ = nn::Linear(channels, channels, true, options);
  register_list(*this, "to_out", std::vector<nn::Linear>{to_out0_});  // to_out.1 is a parameterless Dropout
}

at::Tensor VAEAttentionImpl::forward(const at::Tensor& x) {
  const std::int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  // (B, C, H, W) -> (B, HW, C) tokens; one head of width C (models.md 4.2).
  at::Tensor t = group_norm_(x).reshape({b, c, h * w}).transpose(1, 2);
  at::Tensor a = nn::multi_head_attention(to_q_(t), to_k_(t), to_v_(t), /*heads=*/1);
  return to_out0_(a).transpose(1, 2).reshape({b, c, h, w}) + x;  // residual; rescale_output_factor 1
}

VAEMidBlockImpl::VAEMidBlockImpl(
    std::int64_t channels, std::int64_t groups, bool add_attention, const at::TensorOptions& options) {
  for (int i = 0; i < 2; ++i) resnets_.emplace_back(channels, channels, groups, options);
  register_list(*this, "resnets", resnets_);
  if (add_attention) {
    attention_ = VAEAttention(channels, groups, options);
    register_list(*this, "attentions", std::vector<VAEAttention>{attention_});
  }
}

at::Tensor VAEMidBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = resnets_[0](x);
  if (attention_) h = attention_(h);
  return resnets_[1](h);
}

VAEUpBlockImpl::VAEUpBlockImpl(
    std::int64_t in,
    std::int64_t out,
    std::int64_t layers,
    std::int64_t groups,
    bool add_upsample,
    const at::TensorOptions& options) {
  for (std::int64_t i = 0; i < layers; ++i) resnets_.emplace_back(i == 0 ? in : out, out, groups, options);
  register_list(*this, "resnets", resnets_);
  if (add_upsample) {
    // upsamplers.0 is diffusers' Upsample2D: its only parameters are those of "conv".
    auto upsampler = std::make_shared<torch::nn::Module>();
    upsample_conv_ = upsampler->register_module("conv", nn::Conv2d(out, out, 3, 1, 1, options));
    register_list(*this, "upsamplers", std::vector<std::shared_ptr<torch::nn::Module>>{upsampler});
  }
}

at::Tensor VAEUpBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (auto& r : resnets_) h = r(h);
  if (!upsample_conv_) return h;
  // Nearest x2, in fp32 for half inputs as diffusers' Upsample2D does for bfloat16.
  const at::Tensor in = is_half_type(h) ? h.to(at::kFloat) : h;
  at::Tensor up = at::upsample_nearest2d(in, {h.size(2) * 2, h.size(3) * 2}).to(h.scalar_type());
  return upsample_conv_(up);
}

VAEDecoderImpl::VAEDecoderImpl(const SDVAEConfig& cfg, const at::TensorOptions& options) {
  const auto& ch = cfg.block_out_channels;
  const std::int64_t g = cfg.norm_num_groups, n = static_cast<std::int64_t>(ch.size());
  conv_in_ = register_module("conv_in", nn::Conv2d(cfg.latent_channels, ch.back(), 3, 1, 1, options));
  mid_block_ = register_module("mid_block", VAEMidBlock(ch.back(), g, cfg.mid_block_add_attention, options));
  // Up blocks walk block_out_channels backwards; every block but the last doubles the size.
  std::int64_t prev = ch.back();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t out = ch[static_cast<std::size_t>(n - 1 - i)];
    up_blocks_.emplace_back(prev, out, cfg.layers_per_block + 1, g, /*add_upsample=*/i + 1 < n, options);
    prev = out;
  }
  register_list(*this, "up_blocks", up_blocks_);
  conv_norm_out_ = register_module("conv_norm_out", nn::GroupNorm(g, ch.front(), kVAEEps, options));
  conv_out_ = register_module("conv_out", nn::Conv2d(ch.front(), cfg.out_channels, 3, 1, 1, options));
}

at::Tensor VAEDecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = mid_block_(conv_in_(z));
  for (auto& block : up_blocks_) h = block(h);
  return conv_out_(at::silu(conv_norm_out_(h)));
}

SDVAEDecoderImpl::SDVAEDecoderImpl(const SDVAEConfig& cfg, const at::TensorOptions& options) : cfg_(cfg) {
  if (cfg.use_post_quant_conv) {
    post_quant_conv_ =
        register_module("post_quant_conv", nn::Conv2d(cfg.latent_channels, cfg.latent_channels, 1, 1, 0, options));
  }
  decoder_ = register_module("decoder", VAEDecoder(cfg, options));
}

at::Tensor SDVAEDecoderImpl::forward(const at::Tensor& z) {
  TORCH_CHECK(
      z.dim() == 4 && z.size(1) == cfg_.latent_channels, "VAE decoder: expected (B, ", cfg_.latent_channels,
      ", h, w) latents, got ", z.sizes());
  return decoder_(post_quant_conv_ ? post_quant_conv_(z) : z);
}

TensorMap decoder_weights(const TensorMap& vae_weights, const std::string& file) {
  static const std::pair<const char*, const char*> kLegacy[] = {
      {"query", "to_q"}, {"key", "to_k"}, {"value", "to_v"}, {"proj_attn", "to_out.0"}};
  TensorMap out;
  for (const auto& [key, tensor] : vae_weights) {
    // The encoder half is never run (models.md 1.3): skipped on purpose, not an unexpected key.
    if (key.rfind("encoder.", 0) == 0 || key.rfind("quant_conv.", 0) == 0) continue;
    std::string name = key;
    if (key.find(".attentions.") != std::string::npos) {
      // "<...>.attentions.<i>.<legacy>.<weight|bias>"
      const auto last = key.rfind('.');
      const auto before = (last == std::string::npos || last == 0) ? std::string::npos : key.rfind('.', last - 1);
      if (before != std::string::npos) {
        const std::string module = key.substr(before + 1, last - before - 1);
        for (const auto& [old_name, new_name] : kLegacy) {
          if (module == old_name) name = key.substr(0, before + 1) + new_name + key.substr(last);
        }
      }
    }
    if (name != key && vae_weights.count(name)) {
      throw FileError(file, "key '" + key + "' (legacy name of '" + name + "') and '" + name + "' are both present");
    }
    out.emplace(std::move(name), tensor);
  }
  return out;
}

}  // namespace sdpo::sd_vae
