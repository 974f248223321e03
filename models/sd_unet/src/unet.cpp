#include "sdpo/models/sd_unet/unet.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace sdpo::sd_unet {
namespace {

const char* const kCrossAttnDown = "CrossAttnDownBlock2D";
const char* const kDown = "DownBlock2D";
const char* const kCrossAttnUp = "CrossAttnUpBlock2D";
const char* const kUp = "UpBlock2D";

std::string list_text(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Config keys of UNet2DConditionModel that select features this implementation does not have:
// any non-null value is refused rather than silently ignored.
void refuse_non_null(const nn::HFConfig& cfg, const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    if (cfg.has(key)) cfg.fail(key, "is not supported by sd_unet (only null is implemented)");
  }
}

void refuse_true(const nn::HFConfig& cfg, const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    if (cfg.boolean(key, false)) cfg.fail(key, "true is not supported by sd_unet (only false is implemented)");
  }
}

std::vector<std::string> block_types(
    const nn::HFConfig& cfg,
    const std::string& key,
    const std::vector<std::string>& fallback,
    const char* attn,
    const char* plain) {
  std::vector<std::string> types = cfg.strings(key, fallback);
  for (const auto& type : types) {
    if (type != attn && type != plain) {
      cfg.fail(key, "block type \"" + type + "\" is not supported (expected \"" + attn + "\" or \"" + plain + "\")");
    }
  }
  return types;
}

}  // namespace

SDUNetConfig SDUNetConfig::from_hf(const nn::HFConfig& cfg) {
  SDUNetConfig c;
  // Features outside SD 1.x / 2.x (models.md 2.1 lists SD-Turbo's values: all null / false /
  // "default" here).
  refuse_non_null(
      cfg, {"class_embed_type", "num_class_embeds", "addition_embed_type", "addition_time_embed_dim", "encoder_hid_dim",
            "encoder_hid_dim_type", "projection_class_embeddings_input_dim", "time_embedding_act_fn",
            "timestep_post_act", "reverse_transformer_layers_per_block", "cross_attention_norm"});
  refuse_true(
      cfg, {"only_cross_attention", "dual_cross_attention", "resnet_skip_time_act", "class_embeddings_concat",
            "mid_block_only_cross_attention"});
  cfg.string("time_embedding_type", "positional", {"positional"});
  cfg.string("resnet_time_scale_shift", "default", {"default"});
  cfg.string("act_fn", "silu", {"silu"});
  cfg.string("attention_type", "default", {"default"});
  cfg.string("mid_block_type", "UNetMidBlock2DCrossAttn", {"UNetMidBlock2DCrossAttn"});
  if (cfg.number("resnet_out_scale_factor", 1.0) != 1.0) cfg.fail("resnet_out_scale_factor", "only 1.0 is supported");
  if (cfg.number("dropout", 0.0) != 0.0) cfg.fail("dropout", "only 0.0 is supported (SD checkpoints train without it)");

  c.sample_size = cfg.integer("sample_size", c.sample_size);
  c.in_channels = cfg.integer("in_channels", c.in_channels);
  c.out_channels = cfg.integer("out_channels", c.out_channels);
  c.center_input_sample = cfg.boolean("center_input_sample", c.center_input_sample);
  c.flip_sin_to_cos = cfg.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = cfg.number("freq_shift", c.freq_shift);
  c.down_block_types = block_types(cfg, "down_block_types", c.down_block_types, kCrossAttnDown, kDown);
  c.up_block_types = block_types(cfg, "up_block_types", c.up_block_types, kCrossAttnUp, kUp);
  c.block_out_channels = cfg.integers("block_out_channels", c.block_out_channels);
  c.layers_per_block = cfg.integer("layers_per_block", c.layers_per_block);
  c.downsample_padding = cfg.integer("downsample_padding", c.downsample_padding);
  c.mid_block_scale_factor = cfg.number("mid_block_scale_factor", c.mid_block_scale_factor);
  c.norm_num_groups = cfg.integer("norm_num_groups", c.norm_num_groups);
  c.norm_eps = cfg.number("norm_eps", c.norm_eps);
  c.cross_attention_dim = cfg.integer("cross_attention_dim", c.cross_attention_dim);
  c.use_linear_projection = cfg.boolean("use_linear_projection", c.use_linear_projection);
  c.upcast_attention = cfg.boolean("upcast_attention", c.upcast_attention);
  c.time_embedding_dim = cfg.integer("time_embedding_dim", 0);
  c.time_cond_proj_dim = cfg.integer("time_cond_proj_dim", 0);
  c.conv_in_kernel = cfg.integer("conv_in_kernel", c.conv_in_kernel);
  c.conv_out_kernel = cfg.integer("conv_out_kernel", c.conv_out_kernel);

  const std::int64_t n = c.blocks();
  if (n < 1) cfg.fail("block_out_channels", "expected at least one block");
  if (static_cast<std::int64_t>(c.down_block_types.size()) != n) {
    cfg.fail("down_block_types", "expected " + std::to_string(n) + " entries (one per block_out_channels entry)");
  }
  if (static_cast<std::int64_t>(c.up_block_types.size()) != n) {
    cfg.fail("up_block_types", "expected " + std::to_string(n) + " entries (one per block_out_channels entry)");
  }
  // models.md 2.1: `num_attention_heads or attention_head_dim`, and either is a HEAD COUNT.
  const std::string heads_key = cfg.has("num_attention_heads") ? "num_attention_heads" : "attention_head_dim";
  c.heads = cfg.integer_or_list(heads_key, n, std::vector<std::int64_t>(static_cast<std::size_t>(n), 8));
  c.transformer_layers =
      cfg.integer_or_list("transformer_layers_per_block", n, std::vector<std::int64_t>(static_cast<std::size_t>(n), 1));

  auto positive = [&](const char* key, std::int64_t v) {
    if (v < 1) cfg.fail(key, "expected a positive integer, got " + std::to_string(v));
  };
  positive("sample_size", c.sample_size);
  positive("in_channels", c.in_channels);
  positive("out_channels", c.out_channels);
  positive("layers_per_block", c.layers_per_block);
  positive("norm_num_groups", c.norm_num_groups);
  positive("cross_attention_dim", c.cross_attention_dim);
  if (c.time_embedding_dim < 0) cfg.fail("time_embedding_dim", "expected a positive integer");
  if (c.time_cond_proj_dim < 0) cfg.fail("time_cond_proj_dim", "expected a positive integer");
  if (c.downsample_padding < 0) cfg.fail("downsample_padding", "expected 0 or more");
  if (!(c.norm_eps > 0)) cfg.fail("norm_eps", "expected a positive number");
  if (!(c.mid_block_scale_factor > 0)) cfg.fail("mid_block_scale_factor", "expected a positive number");
  for (const auto& [key, k] :
       {std::pair<const char*, std::int64_t>{"conv_in_kernel", c.conv_in_kernel},
        {"conv_out_kernel", c.conv_out_kernel}}) {
    if (k < 1 || k % 2 == 0) cfg.fail(key, "expected an odd positive kernel size, got " + std::to_string(k));
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t ch = c.block_out_channels[i];
    if (ch < 1 || ch % c.norm_num_groups != 0) {
      cfg.fail(
          "block_out_channels", list_text(c.block_out_channels) +
                                    ": every width must be a positive multiple of "
                                    "norm_num_groups = " +
                                    std::to_string(c.norm_num_groups));
    }
    if (c.transformer_layers[i] < 1) cfg.fail("transformer_layers_per_block", "expected positive integers");
    // Heads of block i serve down block i, up block n-1-i (reversed list) and, for the last
    // block, the mid block: they must divide that width wherever attention runs.
    const bool used =
        c.down_block_types[i] == kCrossAttnDown || c.up_block_types[n - 1 - i] == kCrossAttnUp || i == n - 1;
    if (c.heads[i] < 1 || (used && ch % c.heads[i] != 0)) {
      cfg.fail(
          heads_key,
          list_text(c.heads) + " (head counts) do not divide block_out_channels " + list_text(c.block_out_channels));
    }
  }
  return c;
}

DownBlockImpl::DownBlockImpl(
    const SDUNetConfig& cfg, std::int64_t index, std::int64_t in, const at::TensorOptions& options) {
  const std::int64_t out = cfg.block_out_channels[index];
  const bool attention = cfg.down_block_types[index] == kCrossAttnDown;
  resnet_list_ = register_module("resnets", torch::nn::ModuleList());
  if (attention) attention_list_ = register_module("attentions", torch::nn::ModuleList());
  for (std::int64_t j = 0; j < cfg.layers_per_block; ++j) {
    resnets_.push_back(
        ResnetBlock2D(j == 0 ? in : out, out, cfg.time_embed_dim(), cfg.norm_num_groups, cfg.norm_eps, 1.0, options));
    resnet_list_->push_back(resnets_.back());
    if (attention) {
      attentions_.push_back(Transformer2D(
          out, cfg.heads[index], cfg.transformer_layers[index], cfg.cross_attention_dim, cfg.norm_num_groups,
          cfg.use_linear_projection, cfg.upcast_attention, options));
      attention_list_->push_back(attentions_.back());
    }
  }
  // models.md 2.2: every block but the deepest halves the resolution.
  if (index + 1 < cfg.blocks()) {
    downsampler_list_ = register_module("downsamplers", torch::nn::ModuleList());
    downsampler_ = Downsample2D(out, cfg.downsample_padding, options);
    downsampler_list_->push_back(downsampler_);
  }
}

at::Tensor DownBlockImpl::forward(
    at::Tensor h, const at::Tensor& temb, const at::Tensor& context, std::vector<at::Tensor>& skips) {
  // models.md 2.3: push every layer's output, then the downsampler's.
  for (std::size_t j = 0; j < resnets_.size(); ++j) {
    h = resnets_[j]->forward(h, temb);
    if (!attentions_.empty()) h = attentions_[j]->forward(h, context);
    skips.push_back(h);
  }
  if (!downsampler_.is_empty()) {
    h = downsampler_->forward(h);
    skips.push_back(h);
  }
  return h;
}

UpBlockImpl::UpBlockImpl(const SDUNetConfig& cfg, std::int64_t index, const at::TensorOptions& options) {
  const std::int64_t n = cfg.blocks();
  auto reversed_channels = [&](std::int64_t i) { return cfg.block_out_channels[n - 1 - i]; };
  // models.md 2.3: the constructor's channel bookkeeping.
  const std::int64_t out = reversed_channels(index);
  const std::int64_t prev_out = reversed_channels(std::max<std::int64_t>(index - 1, 0));
  const std::int64_t in = reversed_channels(std::min(index + 1, n - 1));
  const std::int64_t heads = cfg.heads[n - 1 - index];
  const std::int64_t layers = cfg.transformer_layers[n - 1 - index];
  const bool attention = cfg.up_block_types[index] == kCrossAttnUp;
  const std::int64_t count = cfg.layers_per_block + 1;
  resnet_list_ = register_module("resnets", torch::nn::ModuleList());
  if (attention) attention_list_ = register_module("attentions", torch::nn::ModuleList());
  for (std::int64_t j = 0; j < count; ++j) {
    const std::int64_t skip_channels = j == count - 1 ? in : out;
    const std::int64_t resnet_in = j == 0 ? prev_out : out;
    resnets_.push_back(ResnetBlock2D(
        resnet_in + skip_channels, out, cfg.time_embed_dim(), cfg.norm_num_groups, cfg.norm_eps, 1.0, options));
    resnet_list_->push_back(resnets_.back());
    if (attention) {
      attentions_.push_back(Transformer2D(
          out, heads, layers, cfg.cross_attention_dim, cfg.norm_num_groups, cfg.use_linear_projection,
          cfg.upcast_attention, options));
      attention_list_->push_back(attentions_.back());
    }
  }
  if (index + 1 < n) {
    upsampler_list_ = register_module("upsamplers", torch::nn::ModuleList());
    upsampler_ = Upsample2D(out, options);
    upsampler_list_->push_back(upsampler_);
  }
}

at::Tensor UpBlockImpl::forward(
    at::Tensor h, const at::Tensor& temb, const at::Tensor& context, std::vector<at::Tensor>& skips) {
  // models.md 2.3: last in, first out; hidden first in the channel concatenation.
  for (std::size_t j = 0; j < resnets_.size(); ++j) {
    TORCH_CHECK(!skips.empty(), "sd_unet: skip stack exhausted (inconsistent block configuration)");
    h = at::cat({h, skips.back()}, 1);
    skips.pop_back();
    h = resnets_[j]->forward(h, temb);
    if (!attentions_.empty()) h = attentions_[j]->forward(h, context);
  }
  if (!upsampler_.is_empty()) {
    TORCH_CHECK(!skips.empty(), "sd_unet: no skip left to size the upsampling");
    // models.md 2.3: x2, or the next skip's exact size when the latent is not divisible.
    h = upsampler_->forward(h, skips.back().sizes().slice(2));
  }
  return h;
}

MidBlockImpl::MidBlockImpl(const SDUNetConfig& cfg, const at::TensorOptions& options) {
  const std::int64_t ch = cfg.block_out_channels.back();
  resnet_list_ = register_module("resnets", torch::nn::ModuleList());
  attention_list_ = register_module("attentions", torch::nn::ModuleList());
  resnet0_ = ResnetBlock2D(
      ch, ch, cfg.time_embed_dim(), cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor, options);
  attention_ = Transformer2D(
      ch, cfg.heads.back(), cfg.transformer_layers.back(), cfg.cross_attention_dim, cfg.norm_num_groups,
      cfg.use_linear_projection, cfg.upcast_attention, options);
  resnet1_ = ResnetBlock2D(
      ch, ch, cfg.time_embed_dim(), cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor, options);
  resnet_list_->push_back(resnet0_);
  resnet_list_->push_back(resnet1_);
  attention_list_->push_back(attention_);
}

at::Tensor MidBlockImpl::forward(const at::Tensor& h, const at::Tensor& temb, const at::Tensor& context) {
  return resnet1_->forward(attention_->forward(resnet0_->forward(h, temb), context), temb);
}

SDUNetImpl::SDUNetImpl(const SDUNetConfig& cfg, const at::TensorOptions& options) : cfg_(cfg) {
  const std::int64_t c0 = cfg.block_out_channels[0];
  conv_in_ = register_module(
      "conv_in", nn::Conv2d(cfg.in_channels, c0, cfg.conv_in_kernel, 1, (cfg.conv_in_kernel - 1) / 2, options));
  // models.md 2.4: the sinusoidal features are block_out_channels[0] wide.
  time_embedding_ =
      register_module("time_embedding", TimestepEmbedding(c0, cfg.time_embed_dim(), cfg.time_cond_proj_dim, options));
  down_list_ = register_module("down_blocks", torch::nn::ModuleList());
  std::int64_t in = c0;
  for (std::int64_t i = 0; i < cfg.blocks(); ++i) {
    down_.push_back(DownBlock(cfg, i, in, options));
    down_list_->push_back(down_.back());
    in = cfg.block_out_channels[i];
  }
  mid_ = register_module("mid_block", MidBlock(cfg, options));
  up_list_ = register_module("up_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < cfg.blocks(); ++i) {
    up_.push_back(UpBlock(cfg, i, options));
    up_list_->push_back(up_.back());
  }
  conv_norm_out_ = register_module("conv_norm_out", nn::GroupNorm(cfg.norm_num_groups, c0, cfg.norm_eps, options));
  conv_out_ = register_module(
      "conv_out", nn::Conv2d(c0, cfg.out_channels, cfg.conv_out_kernel, 1, (cfg.conv_out_kernel - 1) / 2, options));
}

at::Tensor SDUNetImpl::forward(
    const at::Tensor& x, const at::Tensor& t, const at::Tensor& context, const at::Tensor& timestep_cond) {
  TORCH_CHECK(
      x.dim() == 4 && x.size(1) == cfg_.in_channels, "sd_unet: x must be (B, ", cfg_.in_channels, ", h, w), got ",
      x.sizes());
  const std::int64_t b = x.size(0);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == b, "sd_unet: t must be (", b, ",), got ", t.sizes());
  TORCH_CHECK(
      context.dim() == 3 && context.size(0) == b && context.size(2) == cfg_.cross_attention_dim,
      "sd_unet: context must be (", b, ", L, ", cfg_.cross_attention_dim, "), got ", context.sizes());
  at::Tensor cond = timestep_cond;
  if (cond.defined()) {
    TORCH_CHECK(
        cond.dim() == 2 && cond.size(0) == b && cond.size(1) == cfg_.time_cond_proj_dim,
        "sd_unet: timestep_cond must be (", b, ", ", cfg_.time_cond_proj_dim, "), got ", cond.sizes());
    cond = cond.to(x.scalar_type());
  }
  // models.md 2.4: features in fp32, then cast to the UNet's dtype.
  at::Tensor features =
      timestep_features(t.to(x.device()), cfg_.block_out_channels[0], cfg_.flip_sin_to_cos, cfg_.freq_shift);
  at::Tensor temb = time_embedding_->forward(features.to(x.scalar_type()), cond);

  at::Tensor h = conv_in_->forward(cfg_.center_input_sample ? x * 2.0 - 1.0 : x);
  std::vector<at::Tensor> skips{h};
  for (auto& block : down_) h = block->forward(h, temb, context, skips);
  h = mid_->forward(h, temb, context);
  for (auto& block : up_) h = block->forward(h, temb, context, skips);
  return conv_out_->forward(at::silu(conv_norm_out_->forward(h)));
}

std::vector<std::string> apply_lora(
    torch::nn::Module& module,
    const std::vector<std::string>& targets,
    std::int64_t rank,
    double alpha,
    const at::TensorOptions& options) {
  std::vector<std::pair<std::string, nn::LinearImpl*>> matches;
  std::vector<bool> hit(targets.size(), false);
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    auto* linear = dynamic_cast<nn::LinearImpl*>(item.value().get());
    if (!linear) continue;
    bool match = false;
    for (std::size_t k = 0; k < targets.size(); ++k) {
      if (item.key() == targets[k] || ends_with(item.key(), "." + targets[k])) match = hit[k] = true;
    }
    if (match) matches.emplace_back(item.key(), linear);
  }
  for (std::size_t k = 0; k < targets.size(); ++k) {
    if (!hit[k]) throw std::invalid_argument("LoRA target \"" + targets[k] + "\" matches no Linear layer of the UNet");
  }
  for (auto& p : module.parameters()) p.requires_grad_(false);
  std::vector<std::string> adapted;
  for (auto& [name, linear] : matches) {
    linear->add_lora(rank, alpha, options);
    adapted.push_back(name);
  }
  return adapted;
}

}  // namespace sdpo::sd_unet
