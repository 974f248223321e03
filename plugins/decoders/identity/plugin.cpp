// Plugin `identity`: the decoder of pixel-space models. Latents are images scaled to [-1, 1]
// (x = 2 * image - 1, as the toy model is trained), so decoding is (x + 1) / 2, clamped to [0, 1].

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <memory>
#include <sstream>

#include "sdpo/core/decoder.h"
#include "sdpo/core/error.h"
#include "sdpo/core/options.h"

namespace sdpo::identity {
namespace {

struct IdentityOptions {
  std::int64_t channels = 3;  ///< latent channels: 3 (RGB) or 1 (gray, repeated to RGB)
};

IdentityOptions read_options(OptionReader& r) {
  IdentityOptions o;
  o.channels = r.integer("channels", o.channels, 1, 3, "latent channels: 3 (RGB) or 1 (gray, repeated to RGB)");
  if (o.channels == 2) r.fail("channels", "expected 1 or 3 (the output is an RGB image), got 2");
  return o;
}

class IdentityDecoder final : public Decoder {
 public:
  explicit IdentityDecoder(const IdentityOptions& o) : channels_(o.channels) {}

  at::Tensor decode(const at::Tensor& latents) override {
    if (latents.dim() != 4 || latents.size(1) != channels_) {
      std::ostringstream s;
      s << "decoder 'identity': latents must be (B, " << channels_ << ", H, W) (option channels), got "
        << latents.sizes();
      throw Error(s.str());
    }
    at::Tensor images = latents.add(1.0).mul_(0.5).clamp_(0.0, 1.0);
    return channels_ == 1 ? images.expand({-1, 3, -1, -1}).contiguous() : images;
  }

  void to(c10::Device) override {}  // stateless: output follows the latents' device

 private:
  std::int64_t channels_;
};

void register_identity(Registry& r) {
  r.add<Decoder, IdentityOptions>(
      "identity", "pixel-space decoder: latents in [-1, 1] -> images (x + 1) / 2 in [0, 1]", &read_options,
      [](const IdentityOptions& o, const ComponentConfig&) -> std::shared_ptr<Decoder> {
        return std::make_shared<IdentityDecoder>(o);
      });
}

}  // namespace
}  // namespace sdpo::identity

SDPO_DECLARE_PLUGIN("identity", "0.1.0", sdpo::identity::register_identity)
