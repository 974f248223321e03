#include "sdpo/train/image_io.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include "sdpo/core/error.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

// 2x1 PNGs written by hand (zlib + CRC): RGBA pixels (255,0,0,10), (0,128,255,255) and 8-bit
// gray pixels 0, 51.
const std::vector<std::uint8_t> kRgbaPng = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0xf4, 0x22, 0x7f, 0x8a, 0x00, 0x00, 0x00, 0x11, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xc0, 0xc5, 0xd0, 0xf0, 0xff, 0x3f, 0x00, 0x0c, 0xb0, 0x03,
    0x88, 0x79, 0x52, 0xd1, 0xd9, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
const std::vector<std::uint8_t> kGrayPng = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
    0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0xd1, 0x49, 0x20, 0x56, 0x00,
    0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x30, 0x06, 0x00, 0x00, 0x36, 0x00,
    0x34, 0x39, 0x32, 0xd3, 0x91, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// Expects png_read(path) to throw a FileError naming the file.
void expect_read_refused(const std::string& path) {
  try {
    sdpo::png_read(path);
    ADD_FAILURE() << "expected a FileError for " << path;
  } catch (const sdpo::FileError& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(ImageIo, RoundTripExactForByteValues) {
  const std::string path = sdpo::test::temp_dir("png") + "/nested/img.png";
  at::manual_seed(1);
  const at::Tensor image = at::randint(0, 256, {3, 7, 5}, at::kLong).to(at::kFloat) / 255.0;
  sdpo::png_write(path, image);
  const at::Tensor back = sdpo::png_read(path);
  EXPECT_EQ(back.scalar_type(), at::kFloat);
  sdpo::test::expect_close(back, image, 0.0, 1e-7, "png round trip");
}

TEST(ImageIo, WriteClampsAndRounds) {
  const std::string path = sdpo::test::temp_dir("png") + "/clamp.png";
  const at::Tensor image =
      at::tensor({-0.5, 2.0, 0.5 / 255.0 + 1e-4, 10.4 / 255.0}, at::kFloat).reshape({1, 1, 4}).expand({3, 1, 4});
  sdpo::png_write(path, image);
  const at::Tensor expected =
      at::tensor({0.0, 1.0, 1.0 / 255.0, 10.0 / 255.0}, at::kFloat).reshape({1, 1, 4}).expand({3, 1, 4});
  sdpo::test::expect_close(sdpo::png_read(path), expected, 0.0, 1e-7, "clamped");
}

TEST(ImageIo, ReadsRgbaAndGray) {
  const std::string dir = sdpo::test::temp_dir("png");
  write_bytes(dir + "/rgba.png", kRgbaPng);
  write_bytes(dir + "/gray.png", kGrayPng);
  const at::Tensor rgba = sdpo::png_read(dir + "/rgba.png");
  const at::Tensor rgba_expected =
      at::tensor({255.0, 0.0, 0.0, 128.0, 0.0, 255.0}, at::kFloat).reshape({3, 1, 2}) / 255.0;
  sdpo::test::expect_close(rgba, rgba_expected, 0.0, 1e-7, "rgba");
  const at::Tensor gray = sdpo::png_read(dir + "/gray.png");
  const at::Tensor gray_expected = at::tensor({0.0, 51.0}, at::kFloat).reshape({1, 1, 2}).expand({3, 1, 2}) / 255.0;
  sdpo::test::expect_close(gray, gray_expected, 0.0, 1e-7, "gray");
}

TEST(ImageIo, BadFilesRefused) {
  const std::string dir = sdpo::test::temp_dir("png");
  expect_read_refused(dir + "/missing.png");
  std::ofstream(dir + "/text.png") << "not an image at all";
  expect_read_refused(dir + "/text.png");
  // Valid signature, cut mid-stream: libpng's own error path (longjmp) must become a FileError.
  std::vector<std::uint8_t> cut(kRgbaPng.begin(), kRgbaPng.begin() + 45);
  write_bytes(dir + "/cut.png", cut);
  expect_read_refused(dir + "/cut.png");
  std::vector<std::uint8_t> corrupt = kRgbaPng;
  corrupt[50] ^= 0xff;  // inside IDAT: CRC mismatch
  write_bytes(dir + "/corrupt.png", corrupt);
  expect_read_refused(dir + "/corrupt.png");
}

TEST(ImageIo, WriteRejectsWrongShape) {
  const std::string dir = sdpo::test::temp_dir("png");
  EXPECT_THROW(sdpo::png_write(dir + "/a.png", at::zeros({4, 2, 2})), sdpo::Error);
  EXPECT_THROW(sdpo::png_write(dir + "/b.png", at::zeros({2, 2})), sdpo::Error);
  EXPECT_FALSE(fs::exists(dir + "/a.png"));
}

TEST(ImageIo, GridShapeAndPad) {
  // Five 3x2x3 tiles, each filled with its index / 10, into 3 columns, pad 2, scale 2.
  const at::Tensor images = (at::arange(5, at::kFloat) / 10.0).reshape({5, 1, 1, 1}).expand({5, 3, 2, 3});
  const at::Tensor grid = sdpo::image_grid(images, 3, 2, 2);
  ASSERT_EQ(grid.sizes(), (at::IntArrayRef{3, 2 * 4 + 2, 3 * 6 + 2 * 2}));
  // Tile i sits at row i / 3, column i % 3, each 4x6 pixels after scaling, 2 pixels apart.
  for (int i = 0; i < 5; ++i) {
    const at::Tensor tile = grid.narrow(1, (i / 3) * 6, 4).narrow(2, (i % 3) * 8, 6);
    sdpo::test::expect_close(tile, at::full({3, 4, 6}, i / 10.0), 0.0, 1e-7, "tile " + std::to_string(i));
  }
  // Padding between tiles and the missing sixth tile are white.
  sdpo::test::expect_close(grid.narrow(1, 4, 2), at::ones({3, 2, 22}), 0.0, 0.0, "row pad");
  sdpo::test::expect_close(grid.narrow(2, 6, 2), at::ones({3, 10, 2}), 0.0, 0.0, "column pad");
  sdpo::test::expect_close(grid.narrow(1, 6, 4).narrow(2, 16, 6), at::ones({3, 4, 6}), 0.0, 0.0, "empty slot");
}

TEST(ImageIo, GridSingleTileHasNoPad) {
  const at::Tensor images = at::rand({1, 3, 4, 5});
  const at::Tensor grid = sdpo::image_grid(images, 1, 3, 1);
  sdpo::test::expect_close(grid, images[0], 0.0, 0.0, "single");
  EXPECT_THROW(sdpo::image_grid(images, 0), sdpo::Error);
  EXPECT_THROW(sdpo::image_grid(at::rand({2, 4, 4}), 1), sdpo::Error);
}

}  // namespace
