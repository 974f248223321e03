// CLIP image preprocessing (research/models.md 6.0: quantize, PIL bicubic shortest-edge resize,
// center crop, rescale, OpenAI mean/std).

#include "sdpo/models/clip/clip_image.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace sdpo::clip_text {
namespace {

// PIL writes each pass to a uint8 image: its fixed-point sum carries a +0.5 offset before the
// shift, i.e. rounds half up, then clips to 0..255.
at::Tensor to_levels(const at::Tensor& x) { return at::floor(x + 0.5).clamp_(0.0, 255.0); }

}  // namespace

std::array<std::int64_t, 2> clip_resize_size(std::int64_t height, std::int64_t width, std::int64_t shortest_edge) {
  TORCH_CHECK(
      height >= 1 && width >= 1 && shortest_edge >= 1, "clip_resize_size: sizes must be positive, got ", height, "x",
      width, " -> ", shortest_edge);
  const std::int64_t short_side = std::min(height, width), long_side = std::max(height, width);
  if (short_side == shortest_edge) return {height, width};
  // Python's int(size * long / short): a correctly rounded quotient, then truncated.
  const auto new_long =
      static_cast<std::int64_t>(static_cast<double>(shortest_edge * long_side) / static_cast<double>(short_side));
  if (width <= height) return {new_long, shortest_edge};
  return {shortest_edge, new_long};
}

at::Tensor resize_levels(const at::Tensor& levels, std::int64_t height, std::int64_t width) {
  TORCH_CHECK(levels.dim() == 4, "resize_levels: expected (B, C, H, W), got ", levels.sizes());
  TORCH_CHECK(height >= 1 && width >= 1, "resize_levels: output size must be positive, got ", height, "x", width);
  at::Tensor x = levels.to(at::kFloat);
  // Pillow resamples horizontally first, then vertically, into uint8 images each time, and
  // skips a pass whose size does not change. Its support (2 * scale when shrinking), tap centers
  // ((i + 0.5) * scale) and kernel (a = -0.5) are those of libtorch's antialiased bicubic.
  if (width != x.size(3)) {
    x = to_levels(at::_upsample_bicubic2d_aa(x, {x.size(2), width}, /*align_corners=*/false));
  }
  if (height != x.size(2)) {
    x = to_levels(at::_upsample_bicubic2d_aa(x, {height, width}, /*align_corners=*/false));
  }
  return x;
}

at::Tensor clip_preprocess(const at::Tensor& images, std::int64_t shortest_edge, std::int64_t crop_size) {
  TORCH_CHECK(
      images.dim() == 4 && images.size(1) == 3, "clip_preprocess: expected images (B, 3, H, W), got ", images.sizes());
  TORCH_CHECK(at::isFloatingType(images.scalar_type()), "clip_preprocess: expected floating-point images in [0, 1]");
  TORCH_CHECK(
      crop_size >= 1 && crop_size <= shortest_edge, "clip_preprocess: crop_size ", crop_size,
      " must be in 1 .. shortest_edge ", shortest_edge);
  // models.md 6.0: uint8 = clamp(round(img * 255), 0, 255) (torch.round: half to even).
  at::Tensor x = at::round(images.detach().to(at::kFloat) * 255.0).clamp_(0.0, 255.0);
  const auto size = clip_resize_size(x.size(2), x.size(3), shortest_edge);
  x = resize_levels(x, size[0], size[1]);
  // transformers' center_crop: floor division, so an odd margin leaves the extra row/column at
  // the bottom/right.
  const std::int64_t top = (size[0] - crop_size) / 2, left = (size[1] - crop_size) / 2;
  x = x.narrow(2, top, crop_size).narrow(3, left, crop_size);
  auto per_channel = [&](const std::array<double, 3>& v) {
    return at::tensor(at::ArrayRef<double>(v.data(), v.size()), at::kDouble)
        .to(x.device(), at::kFloat)
        .view({1, 3, 1, 1});
  };
  return ((x / 255.0 - per_channel(kCLIPMean)) / per_channel(kCLIPStd)).contiguous();
}

}  // namespace sdpo::clip_text
