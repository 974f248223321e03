#include "sdpo/core/safetensors.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "sdpo/core/error.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

// Writes a safetensors file by hand: 8-byte length, `header` verbatim, then `data_bytes` zeros.
void write_raw(const std::string& path, const std::string& header, std::size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out << std::string(data_bytes, '\0');
}

// Expects loading `path` to throw a FileError naming the file and containing each of `parts`.
void expect_refused(const std::string& path, const std::vector<std::string>& parts) {
  try {
    sdpo::safetensors_load(path);
    ADD_FAILURE() << "expected a FileError for " << path;
  } catch (const sdpo::FileError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.path(), path);
    EXPECT_NE(what.find(path), std::string::npos) << what;
    for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

TEST(Safetensors, RoundTripEveryDtype) {
  const std::string path = sdpo::test::temp_dir("st") + "/sub/dir/all.safetensors";
  at::manual_seed(0);
  sdpo::TensorMap in{
      {"f64", at::randn({2, 3}, at::kDouble)},
      {"f32", at::randn({4}, at::kFloat)},
      {"f16", at::randn({3, 2}, at::kFloat).to(at::kHalf)},
      {"bf16", at::randn({5}, at::kFloat).to(at::kBFloat16)},
      {"i64", at::randint(-1000000, 1000000, {2, 2}, at::kLong)},
      {"i32", at::randint(-1000, 1000, {3}, at::kInt)},
      {"i16", at::randint(-300, 300, {3}, at::kShort)},
      {"i8", at::randint(-128, 128, {4}, at::kChar)},
      {"u8", at::randint(0, 256, {2, 1, 2}, at::kByte)},
      {"bool", at::randint(0, 2, {5}, at::kLong).to(at::kBool)},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},
      {"empty", at::empty({0, 3}, at::kFloat)},
      {"strided", at::arange(12, at::kFloat).reshape({3, 4}).t()},
  };
  sdpo::safetensors_save(path, in);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const sdpo::TensorMap out = sdpo::safetensors_load(path);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [key, t] : in) {
    ASSERT_TRUE(out.count(key)) << key;
    const at::Tensor& u = out.at(key);
    EXPECT_EQ(u.scalar_type(), t.scalar_type()) << key;
    EXPECT_EQ(u.sizes(), t.sizes()) << key;
    EXPECT_TRUE(u.is_contiguous()) << key;
    EXPECT_TRUE(at::equal(u, t.contiguous())) << key;
  }
}

TEST(Safetensors, MetadataRoundTrip) {
  const std::string path = sdpo::test::temp_dir("st") + "/meta.safetensors";
  sdpo::safetensors_save(path, {{"w", at::ones({2})}}, {{"format", "pt"}, {"step", "12"}});
  sdpo::StringMap meta;
  auto out = sdpo::safetensors_load(path, &meta);
  EXPECT_EQ(meta, (sdpo::StringMap{{"format", "pt"}, {"step", "12"}}));
  EXPECT_EQ(out.size(), 1u);
  EXPECT_NO_THROW(sdpo::safetensors_load(path));  // metadata pointer is optional
}

TEST(Safetensors, FormatPtIsWrittenByDefault) {
  const std::string path = sdpo::test::temp_dir("st") + "/format.safetensors";
  sdpo::safetensors_save(path, {{"w", at::ones({2})}});
  sdpo::StringMap meta;
  sdpo::safetensors_load(path, &meta);
  EXPECT_EQ(meta, (sdpo::StringMap{{"format", "pt"}}));
}

TEST(Safetensors, OverlappingHoleyOrUntiledDataRefused) {
  const std::string path = sdpo::test::temp_dir("st") + "/tiling.safetensors";
  // b starts inside a: two tensors would alias the same bytes.
  write_raw(
      path,
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12);
  expect_refused(path, {"\"b\"", "overlap"});
  // A gap of 4 bytes between a and b.
  write_raw(
      path,
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
      12);
  expect_refused(path, {"\"b\"", "hole"});
  // Bytes after the last tensor that no entry describes.
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12);
  expect_refused(path, {"cover 4 bytes of a 12-byte data section"});
  // Key order in the JSON is free: tiles given out of order load.
  write_raw(
      path,
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      8);
  EXPECT_EQ(sdpo::safetensors_load(path).size(), 2u);
}

TEST(Safetensors, OversizedHeaderRefused) {
  // A sparse file: the 100 MB header limit is checked before anything is parsed or read.
  const std::string path = sdpo::test::temp_dir("st") + "/huge.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t n = 100ull * 1000 * 1000 + 8;
    out.write(reinterpret_cast<const char*>(&n), 8);
  }
  fs::resize_file(path, 8 + 100ull * 1000 * 1000 + 16);
  expect_refused(path, {"exceeds the 100 MB limit"});
  write_raw(path, R"( {"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0);
  expect_refused(path, {"does not start with '{'"});
}

TEST(Safetensors, HeaderIsPaddedSortedAndContiguous) {
  const std::string path = sdpo::test::temp_dir("st") + "/layout.safetensors";
  sdpo::safetensors_save(path, {{"b", at::ones({3}, at::kFloat)}, {"a", at::ones({1}, at::kHalf)}});
  std::ifstream f(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const auto header = boost::json::parse(bytes.substr(8, n)).as_object();
  EXPECT_EQ(header.at("a").at("data_offsets"), boost::json::parse("[0, 2]"));
  EXPECT_EQ(header.at("b").at("data_offsets"), boost::json::parse("[2, 14]"));
  EXPECT_EQ(bytes.size(), 8 + n + 14);
}

TEST(Safetensors, TruncatedFileRefused) {
  const std::string dir = sdpo::test::temp_dir("st");
  const std::string path = dir + "/trunc.safetensors";
  sdpo::safetensors_save(path, {{"weight", at::ones({16})}});
  fs::resize_file(path, fs::file_size(path) - 4);
  expect_refused(path, {"weight", "data_offsets"});

  const std::string tiny = dir + "/tiny.safetensors";
  std::ofstream(tiny, std::ios::binary) << "abc";
  expect_refused(tiny, {"too short"});
  expect_refused(dir + "/missing.safetensors", {"cannot open"});
}

TEST(Safetensors, HeaderLongerThanFileRefused) {
  const std::string path = sdpo::test::temp_dir("st") + "/long.safetensors";
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t n = 1000;
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << "{}";
  out.close();
  expect_refused(path, {"header length 1000"});
}

TEST(Safetensors, DataOffsetsOutOfRangeRefused) {
  const std::string path = sdpo::test::temp_dir("st") + "/range.safetensors";
  write_raw(path, R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  expect_refused(path, {"\"x\"", "past the data section"});

  write_raw(path, R"({"y":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8);
  expect_refused(path, {"\"y\"", "begin > end"});
}

TEST(Safetensors, NumelMismatchRefused) {
  const std::string path = sdpo::test::temp_dir("st") + "/numel.safetensors";
  write_raw(path, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  expect_refused(path, {"\"w\"", "8 bytes", "hold 12"});
}

TEST(Safetensors, MalformedHeaderRefused) {
  const std::string path = sdpo::test::temp_dir("st") + "/bad.safetensors";
  write_raw(path, R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1);
  expect_refused(path, {"\"w\"", "unsupported dtype \"F8\""});
  write_raw(path, R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1);
  expect_refused(path, {"\"w\"", "non-negative"});
  write_raw(path, R"({"w":{"dtype":"U8","shape":[1]}})", 1);
  expect_refused(path, {"\"w\"", "data_offsets"});
  write_raw(path, "[1, 2]", 0);
  expect_refused(path, {"not a JSON object"});
  write_raw(path, "{\"w\": ", 0);
  expect_refused(path, {"not valid JSON"});
  write_raw(path, R"({"__metadata__":{"a":1}})", 0);
  expect_refused(path, {"__metadata__"});
}

TEST(Safetensors, SaveRefusesUnsupportedDtype) {
  const std::string path = sdpo::test::temp_dir("st") + "/complex.safetensors";
  try {
    sdpo::safetensors_save(path, {{"z", at::zeros({2}, at::kComplexFloat)}});
    ADD_FAILURE() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_NE(std::string(e.what()).find("\"z\""), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

}  // namespace
