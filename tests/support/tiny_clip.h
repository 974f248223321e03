#pragma once
// Tiny CLIP checkpoints for the CLIP tests, the CLIP reward models' tests (aesthetic, pickscore,
// hpsv2) and the reward conformance suite: a CLIPModel folder in transformers' format
// (config.json, model.safetensors with both towers, both projections and logit_scale, and the
// tokenizer files of a byte-level vocabulary), the same weights in open_clip's naming (HPSv2's
// checkpoint layout) and the aesthetic predictor's head; plus plain-tensor reference forwards.
// The key names, shapes and the open_clip layout are spelled out here from research/models.md
// 3.4, 6.1, 6.3 and 7, independently of the module and mapping code, so that loading them checks
// that code.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/tensor_map.h"

namespace sdpo::test {

/// Sizes of a tiny CLIPModel. The text tower's vocabulary is the byte-level one of
/// write_tiny_clip_tokenizer (514 ids) unless changed.
struct TinyCLIPSpec {
  std::int64_t hidden = 32, layers = 2, heads = 4, mlp = 64, patch = 8, image = 32, projection = 16;
  std::int64_t text_hidden = 16, text_layers = 1, text_heads = 2, text_mlp = 32, vocab = 514, positions = 77;
  std::string act = "quick_gelu";  ///< both towers
  double logit_scale = 2.6592;
  std::string pad_token = "<|endoftext|>";  ///< special_tokens_map.json's pad_token ("" = no such file)
  bool position_ids = true;                 ///< add the int64 position_ids buffers older transformers files hold
  std::int64_t tokens() const { return (image / patch) * (image / patch) + 1; }
};

/// Random weights of a CLIPModel with `spec`'s sizes, under transformers' names:
/// "vision_model.*", "visual_projection.weight", "text_model.*", "text_projection.weight",
/// "logit_scale" (and the position_ids buffers when spec.position_ids). Norm weights near 1.
TensorMap tiny_clip_weights(const TinyCLIPSpec& spec, std::uint64_t seed);

/// A CLIPModel config.json for `spec` ("vision_config" with every vision key, "text_config",
/// "projection_dim", "logit_scale_init_value").
std::string tiny_clip_config(const TinyCLIPSpec& spec);

/// Writes `dir`/config.json, `dir`/model.safetensors (tiny_clip_weights) and the tokenizer files
/// (write_tiny_clip_tokenizer with spec.pad_token); returns the weights.
TensorMap write_tiny_clip(const std::string& dir, const TinyCLIPSpec& spec, std::uint64_t seed);

/// Writes `dir`/vocab.json (CLIP's layout of models.md 3.5 items 1-2 without merged symbols:
/// ids 0..255 the byte symbols, printable bytes first, so a printable ASCII byte c has id c - 33;
/// 256..511 the same with "</w>", c + 223; <|startoftext|> 512, <|endoftext|> 513), an empty
/// merges.txt (header only) and, unless `pad_token` is empty, special_tokens_map.json.
void write_tiny_clip_tokenizer(const std::string& dir, const std::string& pad_token);

/// The ids write_tiny_clip_tokenizer's vocabulary gives `prompt`, computed by hand: lower-case
/// ASCII letters and digits in words separated by single spaces only. <start>, per word its
/// characters (c - 33) with the last one (c + 223), <end>, then `pad` up to `length`; an
/// overlong prompt keeps its first length - 2 content ids.
std::vector<std::int64_t> tiny_token_ids(const std::string& prompt, std::int64_t length, std::int64_t pad);

/// `weights` (tiny_clip_weights for `spec`) in open_clip's names and layouts (models.md 6.3):
/// q/k/v rows fused into attn.in_proj_weight / in_proj_bias, the projections transposed into
/// visual.proj / text_projection, the position_ids buffers dropped.
TensorMap to_open_clip(const TensorMap& weights, const TinyCLIPSpec& spec);

/// An open_clip model config JSON for `spec` (embed_dim, quick_gelu, vision_cfg, text_cfg).
std::string tiny_open_clip_config(const TinyCLIPSpec& spec);

/// HPSv2's files for `spec` under `dir`: hpsv2.safetensors (to_open_clip of tiny_clip_weights),
/// open_clip_config.json (tiny_open_clip_config) and the tokenizer files. Returns the weights in
/// transformers' names.
TensorMap write_tiny_hpsv2(const std::string& dir, const TinyCLIPSpec& spec, std::uint64_t seed);

/// Plain-tensor reference of CLIPModel.get_image_features (models.md 7) from transformers-named
/// `weights`: pixel_values (B, 3, image, image) -> (B, projection).
at::Tensor reference_image_features(const TensorMap& weights, const at::Tensor& pixels, const TinyCLIPSpec& spec);

/// Plain-tensor reference of CLIPModel.get_text_features (models.md 3.3, 6.2): ids (B, L) ->
/// causal tower, final norm, the state at each row's first <|endoftext|> (id 513), projection.
at::Tensor reference_text_features(const TensorMap& weights, const at::Tensor& ids, const TinyCLIPSpec& spec);

/// Random aesthetic head for `in`-wide features: layers.{0,2,4,6,7}.{weight,bias} with shapes
/// [1024, in], [128, 1024], [64, 128], [16, 64], [1, 16] (models.md 6.1).
TensorMap aesthetic_head_weights(std::int64_t in, std::uint64_t seed);

/// Writes the head to `path` (safetensors, format "pt"); returns the weights.
TensorMap write_aesthetic_head(const std::string& path, std::int64_t in, std::uint64_t seed);

/// The vision half of `weights`: keys starting with "vision_model." or equal to
/// "visual_projection.weight", without the position_ids buffer.
TensorMap vision_side(const TensorMap& weights);

}  // namespace sdpo::test
