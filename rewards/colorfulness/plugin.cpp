// Reward `colorfulness`: Hasler and Suesstrunk's colorfulness metric M (D. Hasler,
// S. Suesstrunk, "Measuring colourfulness in natural images", SPIE Human Vision and Electronic
// Imaging VIII, 2003, eq. 3), per image, on 0..255 RGB values:
//   rg = R - G,  yb = (R + G) / 2 - B
//   M  = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)
// with population standard deviations over the image's pixels. A gray image scores 0; the
// paper's "not colorful" ... "extremely colorful" scale runs from 0 to about 110 (its Table 2:
// 15 slightly, 33 moderately, 45 averagely, 59 quite, 82 highly, 109 extremely colorful).
// The reward is scale * M: scale 1 (default) keeps those units.

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <memory>

#include "sdpo/core/error.h"
#include "sdpo/core/reward.h"

namespace {

struct ColorfulnessOptions {
  double scale = 1.0;

  static ColorfulnessOptions read(sdpo::OptionReader& r) {
    ColorfulnessOptions o;
    o.scale = r.number(
        "scale", 1.0, 1e-6, 1e6, "multiplies the metric; 1 keeps Hasler-Suesstrunk units (gray 0, very colorful ~100)");
    return o;
  }
};

class ColorfulnessReward : public sdpo::Reward {
 public:
  explicit ColorfulnessReward(ColorfulnessOptions options) : options_(options) {}

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    if (images.dim() != 4 || images.size(1) != 3)
      throw sdpo::Error(
          "reward 'colorfulness': expected images (B, 3, H, W), got a " + std::to_string(images.dim()) + "-d tensor");
    // Float64 so that a flat image gives exactly 0 and the hand-checked cases match to 1e-9.
    const at::Tensor x = images.detach().to(at::kDouble).clamp(0.0, 1.0).mul(255.0).flatten(2);
    const at::Tensor r = x.select(1, 0), g = x.select(1, 1), b = x.select(1, 2);
    const at::Tensor rg = r - g;  // (B, H*W)
    const at::Tensor yb = 0.5 * (r + g) - b;
    // Population variances (numpy's default, as in the usual reference implementation).
    const auto var = [](const at::Tensor& v) { return (v - v.mean(1, true)).square().mean(1); };
    const at::Tensor std_root = (var(rg) + var(yb)).sqrt();
    const at::Tensor mean_root = (rg.mean(1).square() + yb.mean(1).square()).sqrt();
    return ((std_root + 0.3 * mean_root) * options_.scale).to(at::kFloat);
  }

  bool needs_prompts() const override { return false; }

 private:
  ColorfulnessOptions options_;
};

void register_colorfulness(sdpo::Registry& r) {
  r.add<sdpo::Reward, ColorfulnessOptions>(
      "colorfulness", "Hasler-Suesstrunk colorfulness of the image (0 for gray)", &ColorfulnessOptions::read,
      [](const ColorfulnessOptions& o, const sdpo::ComponentConfig&) {
        return std::make_shared<ColorfulnessReward>(o);
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("colorfulness", "0.1.0", register_colorfulness)
