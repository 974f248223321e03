#pragma once
// CLIP's image preprocessing as the reward models use it (research/models.md 6.0): what
// transformers' CLIPProcessor for openai/clip-vit-large-patch14 does to the quantized images
// SDPO passes it, batched on the images' device.
//
//   images (B, 3, H, W) float in [0, 1]
//   -> uint8 levels: clamp(round(x * 255), 0, 255)           (the reward code's conversion)
//   -> resize the shortest edge to `shortest_edge` (the long edge int(shortest_edge * long /
//      short)), bicubic (a = -0.5) with antialiasing, horizontal pass then vertical pass, each
//      rounded half up and clamped to 0..255 (PIL resizes uint8 images that way)
//   -> center crop crop_size x crop_size (top = (h - crop) // 2, left = (w - crop) // 2)
//   -> / 255 -> (x - mean) / std per channel (OpenAI CLIP's constants below)
//   = pixel_values (B, 3, crop_size, crop_size) float32
//
// Not bit-exact against PIL: PIL weighs with 22-bit fixed-point coefficients, libtorch with float
// ones, so a resized level can differ by one where the exact value lies near a half (see the
// plugin README). Without a resize (the short edge already `shortest_edge`) it is exact.
//
// Example:
//   at::Tensor pixels = sdpo::clip_text::clip_preprocess(images);         // (B, 3, 224, 224)
//   at::Tensor features = clip->get_image_features(pixels);
//
// Thread safety: pure functions.

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

namespace sdpo::clip_text {

/// OpenAI CLIP's normalization constants (RGB), also used by open_clip, ImageReward and HPSv2.
inline constexpr std::array<double, 3> kCLIPMean{0.48145466, 0.4578275, 0.40821073};
inline constexpr std::array<double, 3> kCLIPStd{0.26862954, 0.26130258, 0.27577711};

/// (height, width) after resizing the shortest edge of a height x width image to
/// `shortest_edge`: transformers' rule, the long edge truncated (300 x 600 -> 224 x 448,
/// 512 x 700 -> 224 x 306); unchanged when the short edge already has that length.
std::array<std::int64_t, 2> clip_resize_size(std::int64_t height, std::int64_t width, std::int64_t shortest_edge);

/// PIL-style bicubic resize of uint8 levels held in a float tensor: (B, C, H, W) with values in
/// 0..255 -> (B, C, height, width) levels, each pass (width first, then height; a pass whose size
/// does not change is skipped) antialiased bicubic with align_corners false, rounded half up and
/// clamped to 0..255.
at::Tensor resize_levels(const at::Tensor& levels, std::int64_t height, std::int64_t width);

/// The whole chain above: images (B, 3, H, W) float (any floating dtype, values clamped to
/// [0, 1] by the quantization) -> pixel_values (B, 3, crop_size, crop_size) float32 on the same
/// device. Requires crop_size <= shortest_edge (CLIP's processors use 224 for both).
at::Tensor clip_preprocess(const at::Tensor& images, std::int64_t shortest_edge = 224, std::int64_t crop_size = 224);

}  // namespace sdpo::clip_text
