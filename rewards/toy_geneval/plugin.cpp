// Reward `toy_geneval`: the toy world's GenEval (README.md). Each image is segmented by color
// into connected components whose shape and location come from geometry (detector.h, no learned
// part, so it checks the `shape_alignment` classifier rather than repeating it), and its
// prompt's GenEval requirements are checked on them (geneval.h). `strict` gives GenEval's
// per-image correctness (1 if every requirement holds, else 0; the evaluation number); `soft`
// (the default, for training) the mean of the requirements' smooth scores, in [0, 1].

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <memory>
#include <optional>

#include "detector.h"
#include "geneval.h"
#include "sdpo/core/error.h"
#include "sdpo/core/reward.h"
#include "sdpo/models/toy/world.h"

namespace {

namespace tg = sdpo::toy_geneval;

constexpr const char* kName = "toy_geneval";
constexpr const char* kComponent = "reward 'toy_geneval'";

struct ToyGenevalOptions {
  bool strict = false;
  tg::DetectorOptions detector;

  static ToyGenevalOptions read(sdpo::OptionReader& r) {
    ToyGenevalOptions o;
    o.strict = r.string(
                   "mode", "soft",
                   "strict: 1 if the image meets every requirement of its prompt, else 0 (GenEval's "
                   "per-image correctness, for evaluation); soft: mean of the requirements' smooth "
                   "scores in [0, 1] (for training)",
                   {"soft", "strict"}) == "strict";
    o.detector.color_threshold = r.number(
        "color_threshold", o.detector.color_threshold, 0.01, 1.0,
        "largest RGB distance from a pixel to a palette color's blend line (background to color) "
        "for the pixel to take that color");
    o.detector.min_area = r.number(
        "min_area", o.detector.min_area, 1.0, 1024.0,
        "smallest object in pixels of a 32x32 image (scaled by H*W/1024); smaller components are specks");
    return o;
  }
};

class ToyGenevalReward : public sdpo::Reward {
 public:
  explicit ToyGenevalReward(ToyGenevalOptions options) : options_(options) {}

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    sdpo::check_reward_inputs(kComponent, images, prompts, /*needs_prompts=*/true);
    // Every prompt first, so that a foreign prompt fails before any work.
    const std::vector<sdpo::toy::Scene> scenes = sdpo::toy::parse_all(prompts, kComponent);
    // One copy to the CPU for the whole batch: the detector is a plain loop over pixels.
    const at::Tensor x = images.detach().to(at::kCPU, at::kFloat).contiguous();
    at::Tensor out = at::empty({x.size(0)}, at::TensorOptions().dtype(at::kFloat));
    float* o = out.data_ptr<float>();
    for (std::int64_t i = 0; i < x.size(0); ++i) {
      const tg::Evaluation e = tg::evaluate(scenes[i], tg::detect(x[i], options_.detector));
      o[i] = static_cast<float>(options_.strict ? e.strict : e.soft);
    }
    return out.to(images.device());
  }

  bool needs_prompts() const override { return true; }

 private:
  ToyGenevalOptions options_;
};

void register_toy_geneval(sdpo::Registry& r) {
  r.add<sdpo::Reward, ToyGenevalOptions>(
      kName,
      "toy-world GenEval: color segmentation and shape geometry check a prompt's objects, colors, "
      "count and position; strict 0/1 or soft [0, 1]",
      &ToyGenevalOptions::read,
      [](const ToyGenevalOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<ToyGenevalReward>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("toy_geneval", "0.1.0", register_toy_geneval)
