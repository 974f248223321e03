#pragma once
// The one place that calls libturbojpeg: an encoder that reports the size of an RGB image's
// JPEG encoding. Every TurboJPEG call is wrapped once and a failure throws sdpo::Error with
// TurboJPEG's own message.
//
// Thread safety: one encoder per thread (it owns a TurboJPEG handle and an output buffer).

#include <cstddef>
#include <cstdint>

namespace sdpo::jpeg {

class JpegEncoder {
 public:
  JpegEncoder();
  ~JpegEncoder();
  JpegEncoder(const JpegEncoder&) = delete;
  JpegEncoder& operator=(const JpegEncoder&) = delete;

  /// Bytes of the JPEG encoding of a packed RGB image (height x width x 3, row-major) at
  /// `quality` (1..100), 4:2:0 chroma subsampling, accurate (islow) DCT, no optimized Huffman
  /// tables: the settings PIL's `Image.save(buf, "JPEG", quality=q)` uses.
  std::size_t encoded_size(const std::uint8_t* rgb, int width, int height, int quality);

 private:
  void* handle_ = nullptr;           // tjhandle
  unsigned char* buffer_ = nullptr;  // tjAlloc'd, reused across images
  unsigned long capacity_ = 0;
};

}  // namespace sdpo::jpeg
