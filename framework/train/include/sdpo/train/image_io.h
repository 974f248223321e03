#pragma once
// Images on disk (libpng, wrapped once here) and image grids.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace sdpo {

/// image: (3, H, W) float in [0, 1] (clamped), any device. Writes an 8-bit RGB PNG.
void png_write(const std::string& path, const at::Tensor& image);
/// Reads an 8-bit RGB or RGBA PNG as (3, H, W) float in [0, 1].
at::Tensor png_read(const std::string& path);

/// images: (N, 3, H, W). Tiles them row-major into `ncol` columns with `pad` pixels of white
/// between tiles, each pixel repeated `scale` times (nearest). Returns (3, H', W').
at::Tensor image_grid(const at::Tensor& images, std::int64_t ncol, std::int64_t pad = 2, std::int64_t scale = 1);

}  // namespace sdpo
