#include "sdpo/train/run_file.h"

#include <ATen/ATen.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include "sdpo/core/error.h"

namespace sdpo {
namespace {

constexpr hsize_t kCurveChunk = 256;
constexpr unsigned kGzipLevel = 4;
constexpr std::uint64_t kMaxChunkBytes = 1u << 20;  // 1 MiB: small enough to read one epoch fast
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// HDF5 prints its error stack to stderr by default; we report errors as exceptions instead.
// The library is built thread-safe, where this setting is per thread.
void quiet_hdf5_errors() {
  // HDF5's own exit handler closes what is still open and flushes it; after a failed write (a
  // full disk) that flush crashed the process at exit (SIGSEGV inside H5_term_library). Every
  // file here is closed by its RunFile/TableFile, so the handler has nothing to do: skipped. It
  // must be requested before the library's first call, hence here.
  static const bool no_atexit = [] {
    H5dont_atexit();
    return true;
  }();
  (void)no_atexit;
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

herr_t innermost_error(unsigned n, const H5E_error2_t* e, void* out) {
  if (n == 0 && e && e->desc) *static_cast<std::string*>(out) = e->desc;
  return 0;
}

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  void reset() noexcept {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

herr_t collect_link_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  try {
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
  } catch (...) {
    return -1;  // stops the iteration; H5Literate then fails and is reported
  }
}

herr_t collect_attribute_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  try {
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
  } catch (...) {
    return -1;  // stops the iteration; H5Aiterate2 then fails and is reported
  }
}

// One path component: what HDF5 accepts as a link name and what h5py users can type.
bool valid_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos && s.find('\0') == std::string::npos;
}

// Chunk shape for an N-d array: the whole array, halving its largest dimension until a chunk
// fits kMaxChunkBytes.
std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims, std::uint64_t itemsize) {
  std::vector<hsize_t> c = dims;
  auto bytes = [&] {
    std::uint64_t b = itemsize;
    for (auto d : c) b *= d;
    return b;
  };
  while (bytes() > kMaxChunkBytes) {
    auto it = std::max_element(c.begin(), c.end());
    if (*it <= 1) break;
    *it = (*it + 1) / 2;
  }
  return c;
}

}  // namespace

struct RunFile::Impl {
  std::string path;
  Handle file;

  explicit Impl(std::string p) : path(std::move(p)) {}
  ~Impl() {
    if (file.valid()) H5Fflush(file.get(), H5F_SCOPE_GLOBAL);  // errors ignored: destructor
  }

  // Every H5* call goes through here: a negative status becomes a FileError naming the file,
  // the object, the call and HDF5's innermost message.
  template <class T>
  T check(T status, const std::string& object, const char* call) const {
    if (status < 0) fail(object, call);
    return status;
  }
  Handle check(hid_t id, Handle::Closer close, const std::string& object, const char* call) const {
    return Handle(check(id, object, call), close);
  }

  [[noreturn]] void fail(const std::string& object, const char* call) const {
    std::string detail;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, &detail);
    H5Eclear2(H5E_DEFAULT);
    // The sec2 driver's message spans lines (time, buffer address, sizes); its errno text is the
    // part a user needs ("file write failed: No space left on device").
    const auto at = detail.find("error message = '");
    if (at != std::string::npos) {
      const auto begin = at + std::strlen("error message = '");
      const auto end = detail.find('\'', begin);
      const auto what = detail.substr(0, detail.find(':'));
      detail = what + ": " + detail.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    }
    throw FileError(
        path, std::string(call) + " on " + object + " failed" + (detail.empty() ? std::string() : ": " + detail));
  }

  [[noreturn]] void fail_with(const std::string& message) const { throw FileError(path, message); }

  Handle access_plist() const {
    Handle fapl = check(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, path, "H5Pcreate");
    // HDF5 >= 1.10 locks a file opened for writing, which would stop h5py from reading a run in
    // progress. Runs write from one process, so the lock buys nothing.
    check(H5Pset_file_locking(fapl.get(), false, true), path, "H5Pset_file_locking");
    return fapl;
  }

  // True when every component of the absolute `object` path exists (H5Lexists alone fails
  // when an intermediate group is missing).
  bool exists(const std::string& object) const {
    std::size_t pos = 0;
    while (pos != std::string::npos) {
      pos = object.find('/', pos + 1);
      const std::string prefix = object.substr(0, pos);
      if (!check(H5Lexists(file.get(), prefix.c_str(), H5P_DEFAULT), prefix, "H5Lexists")) return false;
    }
    return true;
  }

  Handle open_group(const std::string& object, bool create) const {
    if (create && !exists(object)) {
      Handle lcpl = check(H5Pcreate(H5P_LINK_CREATE), H5Pclose, object, "H5Pcreate");
      check(H5Pset_create_intermediate_group(lcpl.get(), 1), object, "H5Pset_create_intermediate_group");
      return check(
          H5Gcreate2(file.get(), object.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose, object, "H5Gcreate2");
    }
    return check(H5Gopen2(file.get(), object.c_str(), H5P_DEFAULT), H5Gclose, object, "H5Gopen2");
  }

  // The links directly in `group`, in name order, with the type of the object each names. The one
  // place the object-info call is made: HDF5 1.12 added H5Oget_info_by_name3 (H5O_info2_t) and
  // made the plain H5O_info_t that struct, so the 1.10 call (Debian 12) must not be used on 1.12+
  // (Debian 13's 1.14).
  std::vector<std::pair<std::string, H5O_type_t>> children(const Handle& group, const std::string& object) const {
    std::vector<std::string> links;
    hsize_t idx = 0;
    check(H5Literate(group.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link_name, &links), object, "H5Literate");
    std::vector<std::pair<std::string, H5O_type_t>> out;
    for (const auto& name : links) {
#if H5_VERSION_GE(1, 12, 0)
      H5O_info2_t info;
      check(
          H5Oget_info_by_name3(group.get(), name.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT), object + "/" + name,
          "H5Oget_info_by_name3");
#else
      H5O_info_t info;
      check(
          H5Oget_info_by_name2(group.get(), name.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT), object + "/" + name,
          "H5Oget_info_by_name2");
#endif
      out.emplace_back(name, info.type);
    }
    return out;
  }

  // Names of the datasets directly in `group`, sorted.
  std::vector<std::string> dataset_names(const Handle& group, const std::string& object) const {
    std::vector<std::string> out;
    for (const auto& [name, type] : children(group, object)) {
      if (type == H5O_TYPE_DATASET) out.push_back(name);
    }
    return out;
  }

  Handle open_dataset(const Handle& group, const std::string& name, const std::string& object) const {
    return check(H5Dopen2(group.get(), name.c_str(), H5P_DEFAULT), H5Dclose, object, "H5Dopen2");
  }

  hsize_t curve_length(const Handle& dataset, const std::string& object) const {
    Handle space = check(H5Dget_space(dataset.get()), H5Sclose, object, "H5Dget_space");
    const int rank = check(H5Sget_simple_extent_ndims(space.get()), object, "H5Sget_simple_extent_ndims");
    if (rank != 1) fail_with(object + " is not a 1-D curve (rank " + std::to_string(rank) + ")");
    hsize_t n = 0;
    check(H5Sget_simple_extent_dims(space.get(), &n, nullptr), object, "H5Sget_simple_extent_dims");
    return n;
  }

  Handle create_curve(const Handle& group, const std::string& name, const std::string& object) const {
    const hsize_t dims = 0, maxdims = H5S_UNLIMITED;
    Handle space = check(H5Screate_simple(1, &dims, &maxdims), H5Sclose, object, "H5Screate_simple");
    Handle dcpl = check(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, object, "H5Pcreate");
    check(H5Pset_chunk(dcpl.get(), 1, &kCurveChunk), object, "H5Pset_chunk");
    check(H5Pset_fill_value(dcpl.get(), H5T_NATIVE_DOUBLE, &kNaN), object, "H5Pset_fill_value");
    return check(
        H5Dcreate2(group.get(), name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
        H5Dclose, object, "H5Dcreate2");
  }

  // Grows a curve to start + values.size() rows and writes `values` from row `start`.
  void write_curve_tail(
      const Handle& dataset, hsize_t start, const std::vector<double>& values, const std::string& object) const {
    const hsize_t count = values.size(), size = start + count;
    check(H5Dset_extent(dataset.get(), &size), object, "H5Dset_extent");
    Handle fspace = check(H5Dget_space(dataset.get()), H5Sclose, object, "H5Dget_space");
    check(
        H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr), object,
        "H5Sselect_hyperslab");
    Handle mspace = check(H5Screate_simple(1, &count, nullptr), H5Sclose, object, "H5Screate_simple");
    check(
        H5Dwrite(dataset.get(), H5T_NATIVE_DOUBLE, mspace.get(), fspace.get(), H5P_DEFAULT, values.data()), object,
        "H5Dwrite");
  }

  Handle utf8_string_type(const std::string& object) const {
    Handle type = check(H5Tcopy(H5T_C_S1), H5Tclose, object, "H5Tcopy");
    check(H5Tset_size(type.get(), H5T_VARIABLE), object, "H5Tset_size");
    check(H5Tset_cset(type.get(), H5T_CSET_UTF8), object, "H5Tset_cset");
    return type;
  }

  void write_root_attribute(const std::string& name, hid_t file_type, hid_t mem_type, const void* value) const {
    const std::string object = "attribute \"" + name + "\" of /";
    if (check(H5Aexists(file.get(), name.c_str()), object, "H5Aexists")) {
      check(H5Adelete(file.get(), name.c_str()), object, "H5Adelete");
    }
    Handle space = check(H5Screate(H5S_SCALAR), H5Sclose, object, "H5Screate");
    Handle attr = check(
        H5Acreate2(file.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, object,
        "H5Acreate2");
    check(H5Awrite(attr.get(), mem_type, value), object, "H5Awrite");
  }

  std::string read_root_attribute(const std::string& name) const {
    const std::string object = "attribute \"" + name + "\" of /";
    if (!check(H5Aexists(file.get(), name.c_str()), object, "H5Aexists")) {
      fail_with("no root attribute \"" + name + "\"");
    }
    Handle attr = check(H5Aopen(file.get(), name.c_str(), H5P_DEFAULT), H5Aclose, object, "H5Aopen");
    Handle space = check(H5Aget_space(attr.get()), H5Sclose, object, "H5Aget_space");
    if (check(H5Sget_simple_extent_npoints(space.get()), object, "H5Sget_simple_extent_npoints") != 1) {
      fail_with(object + " is not a single value");
    }
    Handle type = check(H5Aget_type(attr.get()), H5Tclose, object, "H5Aget_type");
    const H5T_class_t cls = check(H5Tget_class(type.get()), object, "H5Tget_class");
    if (cls == H5T_INTEGER) {
      std::int64_t v = 0;
      check(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), object, "H5Aread");
      return std::to_string(v);
    }
    if (cls != H5T_STRING) fail_with(object + " is neither a string nor an integer");
    if (check(H5Tis_variable_str(type.get()), object, "H5Tis_variable_str")) {
      Handle mem = utf8_string_type(object);
      char* p = nullptr;
      check(H5Aread(attr.get(), mem.get(), &p), object, "H5Aread");
      std::string s = p ? p : "";
      check(H5free_memory(p), object, "H5free_memory");
      return s;
    }
    // Fixed-length (as other writers may store it): read the raw bytes, stop at the first NUL.
    const std::size_t size = H5Tget_size(type.get());
    if (size == 0) fail(object, "H5Tget_size");
    std::string buf(size, '\0');
    check(H5Aread(attr.get(), type.get(), buf.data()), object, "H5Aread");
    return buf.substr(0, std::strlen(buf.c_str()));
  }

  void write_array(
      const Handle& group, const std::string& name, const at::Tensor& tensor, const std::string& object) const {
    if (!tensor.defined()) fail_with(object + ": tensor is undefined");
    if (tensor.is_complex()) fail_with(object + ": complex tensors are not supported");
    // Floats of any width are stored as float32 (enough for logs); integers and bools as int64.
    const bool floating = tensor.is_floating_point();
    const at::Tensor t = tensor.detach().to(at::kCPU, floating ? at::kFloat : at::kLong).contiguous();
    const hid_t file_type = floating ? H5T_IEEE_F32LE : H5T_STD_I64LE;
    const hid_t mem_type = floating ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64;

    std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
    Handle dcpl = check(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, object, "H5Pcreate");
    Handle space;
    if (dims.empty()) {
      space = check(H5Screate(H5S_SCALAR), H5Sclose, object, "H5Screate");  // scalars cannot be chunked
    } else {
      space = check(
          H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, object, "H5Screate_simple");
      if (t.numel() > 0) {  // a chunk may not exceed a fixed dimension of size 0
        const auto chunk = chunk_dims(dims, t.element_size());
        check(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), object, "H5Pset_chunk");
        check(H5Pset_shuffle(dcpl.get()), object, "H5Pset_shuffle");
        check(H5Pset_deflate(dcpl.get(), kGzipLevel), object, "H5Pset_deflate");
      }
    }
    Handle dataset = check(
        H5Dcreate2(group.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose,
        object, "H5Dcreate2");
    if (t.numel() > 0) {
      check(H5Dwrite(dataset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), object, "H5Dwrite");
    }
  }

  void write_strings(
      const Handle& group,
      const std::string& name,
      const std::vector<std::string>& values,
      const std::string& object) const {
    Handle type = utf8_string_type(object);
    const hsize_t n = values.size();
    Handle space = check(H5Screate_simple(1, &n, nullptr), H5Sclose, object, "H5Screate_simple");
    Handle dcpl = check(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, object, "H5Pcreate");
    if (n > 0) {
      const hsize_t chunk = std::min<hsize_t>(n, 1024);
      check(H5Pset_chunk(dcpl.get(), 1, &chunk), object, "H5Pset_chunk");
      check(H5Pset_deflate(dcpl.get(), kGzipLevel), object, "H5Pset_deflate");
    }
    Handle dataset = check(
        H5Dcreate2(group.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose,
        object, "H5Dcreate2");
    std::vector<const char*> ptrs;
    for (const auto& v : values) ptrs.push_back(v.c_str());
    if (n > 0) {
      check(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), object, "H5Dwrite");
    }
  }

  // A plain (unchunked) 1-D dataset of `n` values: the columns of a TableFile.
  void write_column(
      const Handle& group,
      const std::string& name,
      hid_t file_type,
      hid_t mem_type,
      const void* data,
      hsize_t n,
      const std::string& object) const {
    Handle space = check(H5Screate_simple(1, &n, nullptr), H5Sclose, object, "H5Screate_simple");
    Handle dataset = check(
        H5Dcreate2(group.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose,
        object, "H5Dcreate2");
    if (n > 0) {
      check(H5Dwrite(dataset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), object, "H5Dwrite");
    }
  }

  // Class of a dataset's or attribute's element type.
  H5T_class_t type_class(hid_t type, const std::string& object) const {
    const H5T_class_t cls = H5Tget_class(type);
    if (cls == H5T_NO_CLASS) fail(object, "H5Tget_class");
    return cls;
  }

  // Reads a whole 1-D dataset of `n` elements as strings (variable- or fixed-length).
  std::vector<std::string> read_strings(
      const Handle& dataset, hid_t file_type, hsize_t n, const std::string& object) const {
    std::vector<std::string> out;
    if (n == 0) return out;
    if (check(H5Tis_variable_str(file_type), object, "H5Tis_variable_str")) {
      Handle mem = utf8_string_type(object);
      std::vector<char*> ptrs(n, nullptr);
      check(H5Dread(dataset.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), object, "H5Dread");
      for (char* p : ptrs) {
        out.emplace_back(p ? p : "");
        if (p) H5free_memory(p);
      }
      return out;
    }
    const std::size_t size = H5Tget_size(file_type);
    if (size == 0) fail(object, "H5Tget_size");
    std::string buf(size * n, '\0');
    check(H5Dread(dataset.get(), file_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), object, "H5Dread");
    for (hsize_t i = 0; i < n; ++i) {
      const std::string item = buf.substr(i * size, size);
      out.push_back(item.substr(0, std::strlen(item.c_str())));
    }
    return out;
  }

  std::string curves_path(const std::string& group) const {
    // group: "train" or "eval/steps_<n>"; any relative path of valid names is accepted.
    std::size_t start = 0;
    while (true) {
      const std::size_t slash = group.find('/', start);
      if (!valid_name(group.substr(start, slash == std::string::npos ? std::string::npos : slash - start))) {
        fail_with("invalid curve group \"" + group + "\" (expected e.g. \"train\" or \"eval/steps_4\")");
      }
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    return "/curves/" + group;
  }
};

RunFile::RunFile() = default;
RunFile::RunFile(RunFile&&) noexcept = default;
RunFile& RunFile::operator=(RunFile&&) noexcept = default;
RunFile::~RunFile() = default;  // Impl flushes; Handle closes

RunFile RunFile::create(const std::string& path, const std::map<std::string, std::string>& attributes) {
  quiet_hdf5_errors();
  namespace fs = std::filesystem;
  if (fs::path(path).has_parent_path()) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) throw FileError(path, "cannot create parent folder: " + ec.message());
  }
  RunFile f;
  f.path_ = path;
  f.impl_ = std::make_unique<Impl>(path);
  Impl& m = *f.impl_;
  Handle fapl = m.access_plist();
  m.file = m.check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose, path, "H5Fcreate");

  m.write_root_attribute("schema_version", H5T_STD_I64LE, H5T_NATIVE_INT64, &kRunFileSchemaVersion);
  Handle str = m.utf8_string_type("root attributes");
  for (const auto& [name, value] : attributes) {
    if (name == "schema_version") m.fail_with("attribute \"schema_version\" is reserved");
    const char* p = value.c_str();
    m.write_root_attribute(name, str.get(), str.get(), &p);
  }
  m.open_group("/curves", true);
  m.open_group("/trajectories", true);
  m.check(H5Fflush(m.file.get(), H5F_SCOPE_GLOBAL), path, "H5Fflush");
  return f;
}

RunFile RunFile::open(const std::string& path, bool writable) {
  quiet_hdf5_errors();
  if (!std::filesystem::exists(path)) throw FileError(path, "run file does not exist");
  RunFile f;
  f.path_ = path;
  f.impl_ = std::make_unique<Impl>(path);
  Impl& m = *f.impl_;
  Handle fapl = m.access_plist();
  m.file =
      m.check(H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get()), H5Fclose, path, "H5Fopen");
  const std::string version = m.read_root_attribute("schema_version");
  if (version != std::to_string(kRunFileSchemaVersion)) {
    m.fail_with("schema_version " + version + ", expected " + std::to_string(kRunFileSchemaVersion));
  }
  return f;
}

void RunFile::append_row(const std::string& group, const std::map<std::string, double>& row) {
  quiet_hdf5_errors();
  Impl& m = *impl_;
  const std::string gpath = m.curves_path(group);
  for (const auto& kv : row) {
    if (!valid_name(kv.first)) m.fail_with("invalid metric name \"" + kv.first + "\" in " + gpath);
  }
  Handle g = m.open_group(gpath, true);
  std::map<std::string, hsize_t> lengths;  // existing curves
  hsize_t rows = 0;
  for (const auto& name : m.dataset_names(g, gpath)) {
    Handle d = m.open_dataset(g, name, gpath + "/" + name);
    rows = std::max(rows, lengths[name] = m.curve_length(d, gpath + "/" + name));
  }
  std::set<std::string> names;
  for (const auto& kv : lengths) names.insert(kv.first);
  for (const auto& kv : row) names.insert(kv.first);

  // Every curve grows to rows + 1: NaN for rows it never had (a metric new this row, or one
  // left short by a crash), then this row's value or NaN.
  for (const auto& name : names) {
    const std::string object = gpath + "/" + name;
    const auto known = lengths.find(name);
    const hsize_t start = known == lengths.end() ? 0 : known->second;
    Handle d = known == lengths.end() ? m.create_curve(g, name, object) : m.open_dataset(g, name, object);
    std::vector<double> values(rows + 1 - start, kNaN);
    const auto value = row.find(name);
    if (value != row.end()) values.back() = value->second;
    m.write_curve_tail(d, start, values, object);
  }
}

std::int64_t RunFile::rows(const std::string& group) const {
  quiet_hdf5_errors();
  const Impl& m = *impl_;
  const std::string gpath = m.curves_path(group);
  if (!m.exists(gpath)) return 0;
  Handle g = m.open_group(gpath, false);
  hsize_t n = 0;
  for (const auto& name : m.dataset_names(g, gpath)) {
    n = std::max(n, m.curve_length(m.open_dataset(g, name, gpath + "/" + name), gpath + "/" + name));
  }
  return static_cast<std::int64_t>(n);
}

void RunFile::truncate_rows(const std::string& group, std::int64_t rows) {
  quiet_hdf5_errors();
  Impl& m = *impl_;
  const std::string gpath = m.curves_path(group);
  if (rows < 0) m.fail_with("truncate_rows(" + gpath + ", " + std::to_string(rows) + "): negative row count");
  if (!m.exists(gpath)) return;
  Handle g = m.open_group(gpath, false);
  const hsize_t keep = static_cast<hsize_t>(rows);
  for (const auto& name : m.dataset_names(g, gpath)) {
    const std::string object = gpath + "/" + name;
    Handle d = m.open_dataset(g, name, object);
    if (m.curve_length(d, object) > keep) m.check(H5Dset_extent(d.get(), &keep), object, "H5Dset_extent");
  }
}

std::vector<std::string> RunFile::curve_groups() const {
  quiet_hdf5_errors();
  const Impl& m = *impl_;
  std::vector<std::string> out;
  if (!m.exists("/curves")) return out;
  // Depth-first over the groups below /curves; a group with at least one dataset is a curve group.
  std::vector<std::string> todo{""};
  while (!todo.empty()) {
    const std::string rel = todo.back();
    todo.pop_back();
    const std::string gpath = rel.empty() ? "/curves" : "/curves/" + rel;
    Handle g = m.open_group(gpath, false);
    bool has_dataset = false;
    for (const auto& [name, type] : m.children(g, gpath)) {
      if (type == H5O_TYPE_GROUP) todo.push_back(rel.empty() ? name : rel + "/" + name);
      if (type == H5O_TYPE_DATASET) has_dataset = true;
    }
    if (has_dataset && !rel.empty()) out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> RunFile::metrics(const std::string& group) const {
  quiet_hdf5_errors();
  const Impl& m = *impl_;
  const std::string gpath = m.curves_path(group);
  if (!m.exists(gpath)) return {};
  return m.dataset_names(m.open_group(gpath, false), gpath);
}

void RunFile::remove_trajectories_after(std::int64_t epoch) {
  quiet_hdf5_errors();
  Impl& m = *impl_;
  if (!m.exists("/trajectories")) return;
  Handle g = m.open_group("/trajectories", false);
  std::vector<std::string> links;
  hsize_t idx = 0;
  m.check(
      H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link_name, &links), "/trajectories", "H5Literate");
  const std::string prefix = "epoch_";
  for (const auto& name : links) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    if (std::stoll(digits) <= epoch) continue;
    const std::string object = "/trajectories/" + name;
    m.check(H5Ldelete(m.file.get(), object.c_str(), H5P_DEFAULT), object, "H5Ldelete");
  }
}

void RunFile::write_trajectories(
    std::int64_t epoch, const std::map<std::string, at::Tensor>& arrays, const std::vector<std::string>& prompts) {
  quiet_hdf5_errors();
  Impl& m = *impl_;
  if (epoch < 0) m.fail_with("write_trajectories: negative epoch " + std::to_string(epoch));
  const std::string gpath = "/trajectories/epoch_" + std::to_string(epoch);
  for (const auto& kv : arrays) {
    if (!valid_name(kv.first) || kv.first == "prompts") {
      m.fail_with("invalid trajectory array name \"" + kv.first + "\" in " + gpath);
    }
  }
  // An epoch written again (resume after a crash) replaces the earlier, possibly partial one.
  if (m.exists(gpath)) m.check(H5Ldelete(m.file.get(), gpath.c_str(), H5P_DEFAULT), gpath, "H5Ldelete");
  Handle g = m.open_group(gpath, true);
  for (const auto& [name, tensor] : arrays) m.write_array(g, name, tensor, gpath + "/" + name);
  m.write_strings(g, "prompts", prompts, gpath + "/prompts");
}

std::vector<double> RunFile::read_curve(const std::string& group, const std::string& metric) const {
  quiet_hdf5_errors();
  const Impl& m = *impl_;
  const std::string gpath = m.curves_path(group);
  const std::string object = gpath + "/" + metric;
  if (!valid_name(metric) || !m.exists(object)) m.fail_with("no curve " + object);
  Handle g = m.open_group(gpath, false);
  Handle d = m.open_dataset(g, metric, object);
  const hsize_t n = m.curve_length(d, object);
  std::vector<double> out(n);
  if (n > 0) {
    m.check(H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), object, "H5Dread");
  }
  return out;
}

std::string RunFile::attribute(const std::string& name) const {
  quiet_hdf5_errors();
  return impl_->read_root_attribute(name);
}

void RunFile::set_attribute(const std::string& name, const std::string& value) {
  quiet_hdf5_errors();
  Impl& m = *impl_;
  if (name == "schema_version") m.fail_with("attribute \"schema_version\" is reserved");
  Handle str = m.utf8_string_type("attribute \"" + name + "\" of /");
  const char* p = value.c_str();
  m.write_root_attribute(name, str.get(), str.get(), &p);
}

void RunFile::write_table(const std::string& path, const TableFile& table) {
  quiet_hdf5_errors();
  namespace fs = std::filesystem;
  if (fs::path(path).has_parent_path()) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) throw FileError(path, "cannot create parent folder: " + ec.message());
  }
  Impl m(path);
  // Every column name once, every column as long as the first.
  std::set<std::string> names;
  std::int64_t rows = -1;
  auto add_column = [&](const std::string& name, std::size_t size) {
    if (!valid_name(name)) m.fail_with("invalid column name \"" + name + "\"");
    if (!names.insert(name).second) m.fail_with("column \"" + name + "\" given twice");
    if (rows >= 0 && static_cast<std::int64_t>(size) != rows) {
      m.fail_with("column \"" + name + "\" has " + std::to_string(size) + " rows, expected " + std::to_string(rows));
    }
    rows = static_cast<std::int64_t>(size);
  };
  for (const auto& [name, values] : table.string_columns) add_column(name, values.size());
  for (const auto& [name, values] : table.number_columns) add_column(name, values.size());
  for (const auto& [name, values] : table.integer_columns) add_column(name, values.size());

  Handle fapl = m.access_plist();
  m.file = m.check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose, path, "H5Fcreate");
  Handle str = m.utf8_string_type("root attributes");
  for (const auto& [name, value] : table.string_attributes) {
    const char* p = value.c_str();
    m.write_root_attribute(name, str.get(), str.get(), &p);
  }
  for (const auto& [name, value] : table.integer_attributes) {
    m.write_root_attribute(name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
  }
  for (const auto& [name, values] : table.string_columns) m.write_strings(m.file, name, values, "/" + name);
  for (const auto& [name, values] : table.number_columns) {
    m.write_column(m.file, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values.data(), values.size(), "/" + name);
  }
  for (const auto& [name, values] : table.integer_columns) {
    m.write_column(m.file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, values.data(), values.size(), "/" + name);
  }
  m.check(H5Fflush(m.file.get(), H5F_SCOPE_GLOBAL), path, "H5Fflush");
}

TableFile RunFile::read_table(const std::string& path) {
  quiet_hdf5_errors();
  if (!std::filesystem::exists(path)) throw FileError(path, "table file does not exist");
  Impl m(path);
  Handle fapl = m.access_plist();
  m.file = m.check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose, path, "H5Fopen");
  TableFile t;
  std::vector<std::string> attributes;
  hsize_t idx = 0;
  m.check(
      H5Aiterate2(m.file.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attribute_name, &attributes), "/",
      "H5Aiterate2");
  for (const auto& name : attributes) {
    const std::string object = "attribute \"" + name + "\" of /";
    Handle attr = m.check(H5Aopen(m.file.get(), name.c_str(), H5P_DEFAULT), H5Aclose, object, "H5Aopen");
    Handle type = m.check(H5Aget_type(attr.get()), H5Tclose, object, "H5Aget_type");
    if (m.type_class(type.get(), object) == H5T_INTEGER) {
      t.integer_attributes[name] = std::stoll(m.read_root_attribute(name));
    } else {
      t.string_attributes[name] = m.read_root_attribute(name);  // fails on anything but a string
    }
  }
  for (const auto& name : m.dataset_names(m.file, "/")) {
    const std::string object = "/" + name;
    Handle d = m.open_dataset(m.file, name, object);
    const hsize_t n = m.curve_length(d, object);  // 1-D check
    Handle type = m.check(H5Dget_type(d.get()), H5Tclose, object, "H5Dget_type");
    switch (m.type_class(type.get(), object)) {
      case H5T_STRING:
        t.string_columns[name] = m.read_strings(d, type.get(), n, object);
        break;
      case H5T_FLOAT: {
        auto& v = t.number_columns[name];
        v.resize(n);
        if (n > 0) {
          m.check(H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), object, "H5Dread");
        }
        break;
      }
      case H5T_INTEGER: {
        auto& v = t.integer_columns[name];
        v.resize(n);
        if (n > 0) {
          m.check(H5Dread(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), object, "H5Dread");
        }
        break;
      }
      default:
        m.fail_with(object + " is neither a string, a float nor an integer column");
    }
  }
  return t;
}

void RunFile::flush() {
  quiet_hdf5_errors();
  impl_->check(H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL), path_, "H5Fflush");
}

}  // namespace sdpo
