#include "jpeg_encoder.h"

#include <turbojpeg.h>

#include <string>

#include "sdpo/core/error.h"

namespace sdpo::jpeg {
namespace {

[[noreturn]] void fail(tjhandle handle, const std::string& call) {
  throw Error(std::string("libturbojpeg: ") + call + " failed: " + tjGetErrorStr2(handle));
}

tjhandle tj_init_compress() {
  tjhandle h = tjInitCompress();
  if (h == nullptr) fail(nullptr, "tjInitCompress");
  return h;
}

unsigned long tj_buf_size(tjhandle handle, int width, int height, int subsamp) {
  const unsigned long n = tjBufSize(width, height, subsamp);
  if (n == static_cast<unsigned long>(-1)) fail(handle, "tjBufSize");
  return n;
}

unsigned char* tj_alloc(tjhandle handle, unsigned long bytes) {
  unsigned char* p = tjAlloc(static_cast<int>(bytes));
  if (p == nullptr) fail(handle, "tjAlloc");
  return p;
}

unsigned long tj_compress(
    tjhandle handle,
    const std::uint8_t* rgb,
    int width,
    int height,
    unsigned char* buffer,
    unsigned long capacity,
    int subsamp,
    int quality,
    int flags) {
  unsigned long size = capacity;
  if (tjCompress2(handle, rgb, width, 0, height, TJPF_RGB, &buffer, &size, subsamp, quality, flags) != 0)
    fail(handle, "tjCompress2");
  return size;
}

}  // namespace

JpegEncoder::JpegEncoder() : handle_(tj_init_compress()) {}

JpegEncoder::~JpegEncoder() {
  if (buffer_ != nullptr) tjFree(buffer_);
  if (handle_ != nullptr) tjDestroy(handle_);
}

std::size_t JpegEncoder::encoded_size(const std::uint8_t* rgb, int width, int height, int quality) {
  if (width <= 0 || height <= 0) throw Error("jpeg: image must be non-empty");
  // The worst-case size bounds every encoding, so TJFLAG_NOREALLOC never truncates and the
  // buffer is allocated once per image size rather than per image.
  const unsigned long needed = tj_buf_size(handle_, width, height, TJSAMP_420);
  if (needed > capacity_) {
    if (buffer_ != nullptr) tjFree(buffer_);
    buffer_ = nullptr;
    buffer_ = tj_alloc(handle_, needed);
    capacity_ = needed;
  }
  // NOTE: TurboJPEG picks the fast integer DCT below quality 96 unless told otherwise; PIL (and
  // so DDPO's reward) uses libjpeg's default, the accurate islow DCT.
  return tj_compress(
      handle_, rgb, width, height, buffer_, capacity_, TJSAMP_420, quality, TJFLAG_ACCURATEDCT | TJFLAG_NOREALLOC);
}

}  // namespace sdpo::jpeg
