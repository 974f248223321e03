#include "sdpo/core/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <utility>
#include <vector>

#include "sdpo/core/error.h"

// The format is little-endian; so is every platform we build for. Refuse to compile elsewhere
// rather than silently byte-swap nothing.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace sdpo {
namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // as the reference implementation
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  std::uint64_t itemsize;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo* dtype_by_type(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

std::string quoted(const std::string& key) { return "tensor \"" + key + "\": "; }

// Read-only mapping of a whole file; unmapped and closed on scope exit.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw FileError(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      int err = errno;
      ::close(fd_);
      throw FileError(path, std::string("cannot stat: ") + std::strerror(err));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ == 0) return;  // mmap refuses length 0; the size check below reports it
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd_);
      throw FileError(path, std::string("cannot map: ") + std::strerror(err));
    }
    data_ = static_cast<const std::uint8_t*>(p);
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
};

// A JSON number that is a non-negative integer (Boost.JSON keeps large ones as uint64).
bool as_count(const boost::json::value& v, std::uint64_t* out) {
  if (v.is_uint64()) {
    *out = v.get_uint64();
    return true;
  }
  if (v.is_int64() && v.get_int64() >= 0) {
    *out = static_cast<std::uint64_t>(v.get_int64());
    return true;
  }
  return false;
}

StringMap parse_metadata(const std::string& path, const boost::json::value& v) {
  if (!v.is_object()) throw FileError(path, "\"__metadata__\" must be an object of strings");
  StringMap out;
  for (const auto& kv : v.get_object()) {
    if (!kv.value().is_string()) {
      throw FileError(path, "\"__metadata__\": value of \"" + std::string(kv.key()) + "\" is not a string");
    }
    out[std::string(kv.key())] = std::string(kv.value().get_string());
  }
  return out;
}

at::Tensor parse_tensor(
    const std::string& path,
    const std::string& key,
    const boost::json::value& v,
    const std::uint8_t* data,
    std::uint64_t data_size,
    std::uint64_t* begin_out,
    std::uint64_t* end_out) {
  const std::string where = quoted(key);
  if (!v.is_object()) throw FileError(path, where + "entry is not an object");
  const auto& obj = v.get_object();

  const auto* dtype_v = obj.if_contains("dtype");
  if (!dtype_v || !dtype_v->is_string()) throw FileError(path, where + "missing string \"dtype\"");
  const std::string dtype_name(dtype_v->get_string());
  const DtypeInfo* dtype = dtype_by_name(dtype_name);
  if (!dtype) {
    throw FileError(
        path, where + "unsupported dtype \"" + dtype_name +
                  "\" (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
  }

  const auto* shape_v = obj.if_contains("shape");
  if (!shape_v || !shape_v->is_array()) throw FileError(path, where + "missing array \"shape\"");
  std::vector<std::int64_t> shape;
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape_v->get_array()) {
    std::uint64_t n = 0;
    if (!as_count(d, &n)) throw FileError(path, where + "shape entries must be non-negative integers");
    if (n > static_cast<std::uint64_t>(INT64_MAX)) overflow = true;
    overflow = overflow || __builtin_mul_overflow(numel, n, &numel);
    shape.push_back(static_cast<std::int64_t>(n));
  }
  std::uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype->itemsize, &nbytes);
  if (overflow) throw FileError(path, where + "shape is too large");

  const auto* off_v = obj.if_contains("data_offsets");
  std::uint64_t begin = 0, end = 0;
  if (!off_v || !off_v->is_array() || off_v->get_array().size() != 2 || !as_count(off_v->get_array()[0], &begin) ||
      !as_count(off_v->get_array()[1], &end)) {
    throw FileError(path, where + "\"data_offsets\" must be [begin, end] of non-negative integers");
  }
  if (begin > end) {
    throw FileError(
        path, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] have begin > end");
  }
  if (end > data_size) {
    throw FileError(
        path, where + "data_offsets end " + std::to_string(end) + " is past the data section (" +
                  std::to_string(data_size) + " bytes; file truncated?)");
  }
  if (end - begin != nbytes) {
    throw FileError(
        path, where + "data_offsets span " + std::to_string(end - begin) + " bytes but dtype " + dtype_name +
                  " and shape hold " + std::to_string(nbytes));
  }

  *begin_out = begin;
  *end_out = end;
  // BOOL is read as bytes and normalized, so a byte other than 0/1 cannot make an invalid bool.
  const at::ScalarType storage = dtype->type == at::kBool ? at::kByte : dtype->type;
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(storage));
  if (nbytes > 0) std::memcpy(t.data_ptr(), data + begin, nbytes);
  if (dtype->type == at::kBool) t = t.ne(0);
  return t;
}

void write_all(std::ofstream& out, const std::string& tmp, const void* data, std::uint64_t n) {
  errno = 0;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  // The stream keeps no error code; errno is the failed write(2)'s (e.g. ENOSPC, a full disk).
  if (!out) throw FileError(tmp, std::string("write failed: ") + (errno ? std::strerror(errno) : "stream error"));
}

}  // namespace

TensorMap safetensors_load(const std::string& path, StringMap* metadata) {
  MappedFile file(path);
  const std::uint64_t size = file.size();
  if (size < 8) {
    throw FileError(path, "file is " + std::to_string(size) + " bytes, too short for a safetensors header");
  }
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  if (header_len > size - 8) {
    throw FileError(
        path, "header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(size) +
                  " bytes; truncated or not a safetensors file)");
  }
  if (header_len > kMaxHeaderBytes) {
    throw FileError(path, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  }

  boost::json::error_code ec;
  boost::json::value header =
      boost::json::parse(boost::json::string_view(reinterpret_cast<const char*>(file.data() + 8), header_len), ec);
  if (ec) throw FileError(path, "header is not valid JSON: " + ec.message());
  if (!header.is_object()) throw FileError(path, "header is not a JSON object");

  if (header_len == 0 || file.data()[8] != '{') throw FileError(path, "header does not start with '{'");

  const std::uint8_t* data = file.data() + 8 + header_len;
  const std::uint64_t data_size = size - 8 - header_len;
  TensorMap tensors;
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> spans;  // (begin, end, key)
  for (const auto& kv : header.get_object()) {
    const std::string key(kv.key());
    if (key == kMetadataKey) {
      StringMap m = parse_metadata(path, kv.value());
      if (metadata) *metadata = std::move(m);
      continue;
    }
    std::uint64_t begin = 0, end = 0;
    tensors[key] = parse_tensor(path, key, kv.value(), data, data_size, &begin, &end);
    spans.emplace_back(begin, end, key);
  }
  // The data section must be covered exactly, in offset order, with no overlap and no hole (the
  // reference implementation's validate(), research/models.md 1.1 item 3): an overlap means two
  // tensors alias the same bytes, a hole or a tail means the header does not describe the file.
  std::sort(spans.begin(), spans.end());
  std::uint64_t expected = 0;
  for (const auto& [begin, end, key] : spans) {
    if (begin < expected) {
      throw FileError(
          path, quoted(key) + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                    "] overlap the previous tensor (ending at " + std::to_string(expected) + ")");
    }
    if (begin > expected) {
      throw FileError(
          path, quoted(key) + "data_offsets begin " + std::to_string(begin) + " leaves a hole after byte " +
                    std::to_string(expected));
    }
    expected = end;
  }
  if (expected != data_size) {
    throw FileError(
        path, "the tensors cover " + std::to_string(expected) + " bytes of a " + std::to_string(data_size) +
                  "-byte data section (trailing bytes not described)");
  }
  return tensors;
}

void safetensors_save(const std::string& path, const TensorMap& tensors, const StringMap& metadata) {
  // Materialize every tensor first, so an unsupported dtype fails before anything is written.
  std::vector<std::pair<std::string, at::Tensor>> cpu;
  boost::json::object header;
  {
    // {"format": "pt"} unless the caller says otherwise: older transformers refuse a file
    // without it, and it is what diffusers writes for LoRA files (research/models.md 1.1 item 7).
    boost::json::object m;
    m["format"] = "pt";
    for (const auto& [k, v] : metadata) m[k] = v;
    header[kMetadataKey] = std::move(m);
  }
  std::uint64_t offset = 0;
  for (const auto& [key, tensor] : tensors) {  // std::map: keys already sorted
    if (key == kMetadataKey) throw FileError(path, quoted(key) + "name is reserved for metadata");
    if (!tensor.defined()) throw FileError(path, quoted(key) + "tensor is undefined");
    const DtypeInfo* dtype = dtype_by_type(tensor.scalar_type());
    if (!dtype) {
      throw FileError(
          path,
          quoted(key) + "dtype " + std::string(c10::toString(tensor.scalar_type())) + " has no safetensors equivalent");
    }
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const std::uint64_t nbytes = static_cast<std::uint64_t>(t.numel()) * dtype->itemsize;
    boost::json::array shape;
    for (auto s : t.sizes()) shape.push_back(s);
    header[key] = boost::json::object{
        {"dtype", dtype->name},
        {"shape", std::move(shape)},
        {"data_offsets", boost::json::array{offset, offset + nbytes}}};
    offset += nbytes;
    cpu.emplace_back(key, std::move(t));
  }

  std::string text = boost::json::serialize(header);
  // Spaces pad the header so the data section starts 8-byte aligned (the reference writer does).
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t header_len = text.size();

  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code fec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), fec);
    if (fec) throw FileError(path, "cannot create parent folder: " + fec.message());
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw FileError(tmp, std::string("cannot open for writing: ") + std::strerror(errno));
    write_all(out, tmp, &header_len, 8);
    write_all(out, tmp, text.data(), text.size());
    for (const auto& [key, t] : cpu) {
      write_all(out, tmp, t.data_ptr(), static_cast<std::uint64_t>(t.numel()) * t.element_size());
    }
    errno = 0;
    out.close();
    if (!out) throw FileError(tmp, std::string("closing failed: ") + (errno ? std::strerror(errno) : "stream error"));
  }
  fs::rename(tmp, target, fec);
  if (fec) throw FileError(path, "cannot rename " + tmp + ": " + fec.message());
}

}  // namespace sdpo
