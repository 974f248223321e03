#pragma once
// Tiny CLIP checkpoints written in transformers' format for the CLIP vision tests, the aesthetic
// reward's tests and the reward conformance suite: config.json + model.safetensors of a CLIPModel
// (both towers, logit_scale) and the aesthetic predictor's head. The key names and shapes are
// spelled out here from research/models.md 6.1 and 7, independently of the module code, so that
// loading them checks the modules' names.

#include <cstdint>
#include <string>

#include "sdpo/tensor_map.h"

namespace sdpo::test {

/// Vision sizes of a tiny CLIPModel (text tower: 16 wide, 1 layer, 2 heads, vocabulary 64).
struct TinyCLIPSpec {
  std::int64_t hidden = 32, layers = 2, heads = 4, mlp = 64, patch = 8, image = 32, projection = 16;
  std::string act = "quick_gelu";
  bool position_ids = true;  ///< add the int64 position_ids buffers older transformers files hold
  std::int64_t tokens() const { return (image / patch) * (image / patch) + 1; }
};

/// Random weights of a CLIPModel with `spec`'s vision sizes, under transformers' names:
/// "vision_model.*", "visual_projection.weight", "text_model.*", "text_projection.weight",
/// "logit_scale" (and the position_ids buffers when spec.position_ids). Norm weights near 1.
TensorMap tiny_clip_weights(const TinyCLIPSpec& spec, std::uint64_t seed);

/// A CLIPModel config.json for `spec` ("vision_config" with every vision key, "text_config",
/// "projection_dim").
std::string tiny_clip_config(const TinyCLIPSpec& spec);

/// Writes `dir`/config.json and `dir`/model.safetensors (tiny_clip_weights); returns the weights.
TensorMap write_tiny_clip(const std::string& dir, const TinyCLIPSpec& spec, std::uint64_t seed);

/// Random aesthetic head for `in`-wide features: layers.{0,2,4,6,7}.{weight,bias} with shapes
/// [1024, in], [128, 1024], [64, 128], [16, 64], [1, 16] (models.md 6.1).
TensorMap aesthetic_head_weights(std::int64_t in, std::uint64_t seed);

/// Writes the head to `path` (safetensors, format "pt"); returns the weights.
TensorMap write_aesthetic_head(const std::string& path, std::int64_t in, std::uint64_t seed);

/// The vision half of `weights`: keys starting with "vision_model." or equal to
/// "visual_projection.weight", without the position_ids buffer.
TensorMap vision_side(const TensorMap& weights);

}  // namespace sdpo::test
