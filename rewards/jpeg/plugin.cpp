// Rewards `jpeg_compressibility` and `jpeg_incompressibility` (DDPO, Black et al. 2023,
// ddpo_pytorch/rewards.py): the size in kB (1 kB = 1000 bytes) of the image saved as a
// quality-95 JPEG; compressibility is its negative. Images are quantized as DDPO does,
// round(x * 255) clamped to 0..255, and encoded as 8-bit RGB.

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <memory>

#include "jpeg_encoder.h"
#include "sdpo/core/reward.h"

namespace {

struct JpegOptions {
  std::int64_t quality = 95;

  static JpegOptions read(sdpo::OptionReader& r) {
    JpegOptions o;
    o.quality = r.integer("quality", 95, 1, 100, "JPEG quality the image is encoded at (DDPO: 95)");
    return o;
  }
};

class JpegSizeReward : public sdpo::Reward {
 public:
  /// sign +1: incompressibility (bigger files score higher); -1: compressibility.
  JpegSizeReward(JpegOptions options, double sign, std::string name)
      : options_(options), sign_(sign), name_(std::move(name)) {}

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    if (images.dim() != 4 || images.size(1) != 3)
      throw sdpo::Error(
          "reward '" + name_ + "': expected images (B, 3, H, W), got " + std::to_string(images.dim()) + "-d tensor");
    const at::Tensor bytes = images.detach()
                                 .to(at::kCPU, at::kFloat)
                                 .mul(255.0)
                                 .round()
                                 .clamp(0.0, 255.0)
                                 .to(at::kByte)
                                 .permute({0, 2, 3, 1})
                                 .contiguous();
    const std::int64_t batch = bytes.size(0);
    const int height = static_cast<int>(bytes.size(1));
    const int width = static_cast<int>(bytes.size(2));
    // One encoder per call: score() may run on a worker thread, and a handle is cheap.
    sdpo::jpeg::JpegEncoder encoder;
    at::Tensor out = at::empty({batch}, at::TensorOptions().dtype(at::kFloat));
    float* o = out.data_ptr<float>();
    const std::uint8_t* data = bytes.data_ptr<std::uint8_t>();
    const std::int64_t stride = static_cast<std::int64_t>(height) * width * 3;
    for (std::int64_t i = 0; i < batch; ++i) {
      const std::size_t size =
          encoder.encoded_size(data + i * stride, width, height, static_cast<int>(options_.quality));
      o[i] = static_cast<float>(sign_ * static_cast<double>(size) / 1000.0);
    }
    return out.to(images.device());
  }

  bool needs_prompts() const override { return false; }

 private:
  JpegOptions options_;
  double sign_;
  std::string name_;
};

void register_jpeg(sdpo::Registry& r) {
  r.add<sdpo::Reward, JpegOptions>(
      "jpeg_compressibility", "minus the image's JPEG size in kB (DDPO); higher = simpler image", &JpegOptions::read,
      [](const JpegOptions& o, const sdpo::ComponentConfig&) {
        return std::make_shared<JpegSizeReward>(o, -1.0, "jpeg_compressibility");
      });
  r.add<sdpo::Reward, JpegOptions>(
      "jpeg_incompressibility", "the image's JPEG size in kB (DDPO); higher = more detail", &JpegOptions::read,
      [](const JpegOptions& o, const sdpo::ComponentConfig&) {
        return std::make_shared<JpegSizeReward>(o, 1.0, "jpeg_incompressibility");
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("jpeg", "0.1.0", register_jpeg)
