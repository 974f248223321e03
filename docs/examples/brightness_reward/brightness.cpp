// Reward `brightness`: the mean luminance of the image, in [0, 1] (0 black, 1 white).
// Per pixel, Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma weights) on values clamped to
// [0, 1]; the reward is the mean over pixels of Y^gamma. gamma = 1 (default) is the plain mean;
// gamma > 1 favors a few very bright pixels over evenly lit images of the same mean.

#include <ATen/ATen.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/reward.h"

namespace {

struct BrightnessOptions {
  double gamma = 1.0;

  // Runs when a manifest names the reward (validation, then construction) and for `sdpo plugins`,
  // which prints each key's type, default, help and range from these calls: keep it cheap. A value
  // of the wrong type or outside [lo, hi] is an error naming the manifest file and
  // reward.options.gamma; so is an option key that nothing reads.
  static BrightnessOptions read(sdpo::OptionReader& r) {
    BrightnessOptions o;
    o.gamma = r.number("gamma", 1.0, 0.1, 10.0, "exponent applied to each pixel's luminance before averaging");
    return o;
  }
};

class BrightnessReward : public sdpo::Reward {
 public:
  explicit BrightnessReward(BrightnessOptions options) : options_(options) {}

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& /*prompts*/) override {
    if (images.dim() != 4 || images.size(1) != 3) {
      std::ostringstream got;
      got << images.sizes();
      // sdpo::Error (framework/core/include/sdpo/core/error.h) crosses the library boundary: the host
      // catches it and reports it; so would any std::exception.
      throw sdpo::Error("reward 'brightness': expected images (B, 3, H, W), got " + got.str());
    }
    const at::Tensor x = images.detach().to(at::kFloat).clamp(0.0, 1.0);
    const at::Tensor luma = 0.299 * x.select(1, 0) + 0.587 * x.select(1, 1) + 0.114 * x.select(1, 2);
    return luma.pow(options_.gamma).mean({1, 2});  // (B,), on the images' device
  }

  bool needs_prompts() const override { return false; }

 private:
  BrightnessOptions options_;
};

void register_brightness(sdpo::Registry& registry) {
  registry.add<sdpo::Reward, BrightnessOptions>(
      "brightness", "mean luminance of the image, in [0, 1] (example out-of-tree plugin)", &BrightnessOptions::read,
      [](const BrightnessOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<BrightnessReward>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("brightness", "0.1.0", register_brightness)
