#include "sdpo/train/image_io.h"

#include <ATen/ATen.h>
#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <vector>

#include "sdpo/core/error.h"

namespace sdpo {
namespace {

std::string shape_string(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

void png_error_to_session(png_structp png, png_const_charp message);
void png_ignore_warning(png_structp, png_const_charp) {}

// One libpng read or write struct with its info struct. libpng reports errors by calling our
// error function, which must not return: it records the message and longjmps back into
// `guarded`, which turns it into a FileError. Code inside `guarded` calls only libpng (no C++
// objects with destructors live in the frames a longjmp skips).
class PngSession {
 public:
  PngSession(std::string path, bool writing) : path_(std::move(path)), writing_(writing) {
    png_ = writing_ ? png_create_write_struct(PNG_LIBPNG_VER_STRING, this, png_error_to_session, png_ignore_warning)
                    : png_create_read_struct(PNG_LIBPNG_VER_STRING, this, png_error_to_session, png_ignore_warning);
    if (!png_) throw FileError(path_, "libpng could not allocate its state");
    info_ = png_create_info_struct(png_);
    if (!info_) {
      destroy();
      throw FileError(path_, "libpng could not allocate its info struct");
    }
  }
  ~PngSession() { destroy(); }
  PngSession(const PngSession&) = delete;
  PngSession& operator=(const PngSession&) = delete;

  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

  template <class F>
  void guarded(const char* step, F&& f) {
    if (setjmp(png_jmpbuf(png_))) {
      throw FileError(path_, std::string(step) + ": " + message_);
    }
    f();
  }

  void set_message(const char* m) { std::snprintf(message_, sizeof message_, "%s", m ? m : "libpng error"); }

 private:
  void destroy() {
    if (!png_) return;
    if (writing_) {
      png_destroy_write_struct(&png_, info_ ? &info_ : nullptr);
    } else {
      png_destroy_read_struct(&png_, info_ ? &info_ : nullptr, nullptr);
    }
    png_ = nullptr;
    info_ = nullptr;
  }

  std::string path_;
  bool writing_;
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
  char message_[256] = {};
};

void png_error_to_session(png_structp png, png_const_charp message) {
  static_cast<PngSession*>(png_get_error_ptr(png))->set_message(message);
  png_longjmp(png, 1);
}

FilePtr open_file(const std::string& path, const char* mode) {
  FilePtr f(std::fopen(path.c_str(), mode));
  if (!f) throw FileError(path, std::string("cannot open: ") + std::strerror(errno));
  return f;
}

}  // namespace

void png_write(const std::string& path, const at::Tensor& image) {
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3) {
    throw Error(
        "png_write " + path + ": expected a (3, H, W) image, got " +
        (image.defined() ? shape_string(image) : std::string("an undefined tensor")));
  }
  const std::int64_t h = image.size(1), w = image.size(2);
  if (h < 1 || w < 1 || h > PNG_UINT_31_MAX || w > PNG_UINT_31_MAX) {
    throw Error("png_write " + path + ": image size " + shape_string(image) + " cannot be a PNG");
  }
  const at::Tensor hwc = image.detach()
                             .to(at::kCPU, at::kFloat)
                             .clamp(0.0, 1.0)
                             .mul(255.0)
                             .round()
                             .to(at::kByte)
                             .permute({1, 2, 0})
                             .contiguous();
  std::vector<png_bytep> rows(static_cast<std::size_t>(h));
  auto* base = hwc.data_ptr<std::uint8_t>();
  for (std::int64_t y = 0; y < h; ++y) rows[y] = base + y * w * 3;

  namespace fs = std::filesystem;
  if (fs::path(path).has_parent_path()) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) throw FileError(path, "cannot create parent folder: " + ec.message());
  }
  try {
    FilePtr file = open_file(path, "wb");
    PngSession s(path, true);
    s.guarded("writing PNG", [&] {
      png_init_io(s.png(), file.get());
      png_set_IHDR(
          s.png(), s.info(), static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8, PNG_COLOR_TYPE_RGB,
          PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
      png_write_info(s.png(), s.info());
      png_write_image(s.png(), rows.data());
      png_write_end(s.png(), nullptr);
    });
    if (std::fclose(file.release()) != 0) {
      throw FileError(path, std::string("write failed: ") + std::strerror(errno));
    }
  } catch (const FileError&) {
    std::error_code ec;
    fs::remove(path, ec);  // leave no half-written image behind
    throw;
  }
}

at::Tensor png_read(const std::string& path) {
  FilePtr file = open_file(path, "rb");
  png_byte signature[8];
  if (std::fread(signature, 1, 8, file.get()) != 8 || png_sig_cmp(signature, 0, 8) != 0) {
    throw FileError(path, "not a PNG file");
  }

  PngSession s(path, false);
  png_uint_32 width = 0, height = 0;
  png_size_t rowbytes = 0;
  int channels = 0;
  s.guarded("reading PNG header", [&] {
    png_init_io(s.png(), file.get());
    png_set_sig_bytes(s.png(), 8);
    png_read_info(s.png(), s.info());
    width = png_get_image_width(s.png(), s.info());
    height = png_get_image_height(s.png(), s.info());
    const int depth = png_get_bit_depth(s.png(), s.info());
    const int color = png_get_color_type(s.png(), s.info());
    // Normalize every PNG flavour to 8-bit RGB: palette and gray expand, alpha is dropped.
    if (depth == 16) png_set_strip_16(s.png());
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s.png());
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(s.png());
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(s.png());
    if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(s.png());
    png_set_interlace_handling(s.png());
    png_read_update_info(s.png(), s.info());
    rowbytes = png_get_rowbytes(s.png(), s.info());
    channels = png_get_channels(s.png(), s.info());
  });
  if (channels != 3 || rowbytes != static_cast<png_size_t>(width) * 3) {
    throw FileError(path, "unsupported PNG layout (" + std::to_string(channels) + " channels after conversion)");
  }
  // Refuse absurd sizes before allocating (libpng's own limit is 1e6 x 1e6).
  if (static_cast<std::uint64_t>(width) * height > (1ull << 28)) {
    throw FileError(path, "image of " + std::to_string(width) + "x" + std::to_string(height) + " is too large");
  }

  std::vector<png_byte> pixels(static_cast<std::size_t>(height) * rowbytes);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = pixels.data() + y * rowbytes;
  s.guarded("reading PNG pixels", [&] {
    png_read_image(s.png(), rows.data());
    png_read_end(s.png(), nullptr);
  });

  return at::from_blob(
             pixels.data(), {static_cast<std::int64_t>(height), static_cast<std::int64_t>(width), 3}, at::kByte)
      .permute({2, 0, 1})
      .to(at::kFloat)
      .div_(255.0)
      .contiguous();
}

at::Tensor image_grid(const at::Tensor& images, std::int64_t ncol, std::int64_t pad, std::int64_t scale) {
  if (!images.defined() || images.dim() != 4 || images.size(1) != 3 || images.size(0) < 1) {
    throw Error(
        "image_grid: expected (N, 3, H, W) images with N >= 1, got " +
        (images.defined() ? shape_string(images) : std::string("an undefined tensor")));
  }
  if (ncol < 1 || pad < 0 || scale < 1) {
    throw Error(
        "image_grid: need ncol >= 1, pad >= 0, scale >= 1; got ncol " + std::to_string(ncol) + ", pad " +
        std::to_string(pad) + ", scale " + std::to_string(scale));
  }
  at::Tensor x = images.detach();
  if (scale > 1) x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3);
  const std::int64_t n = x.size(0), th = x.size(2), tw = x.size(3);
  const std::int64_t nrow = (n + ncol - 1) / ncol;
  // Exactly `ncol` columns even when n < ncol: grids of one figure line up.
  at::Tensor grid = at::full({3, nrow * th + (nrow - 1) * pad, ncol * tw + (ncol - 1) * pad}, 1.0, x.options());
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t r = i / ncol, c = i % ncol;
    grid.narrow(1, r * (th + pad), th).narrow(2, c * (tw + pad), tw).copy_(x[i]);
  }
  return grid;
}

}  // namespace sdpo
