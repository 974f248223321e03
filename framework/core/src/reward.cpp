#include "sdpo/core/reward.h"

#include <ATen/ATen.h>

#include <sstream>

#include "sdpo/core/error.h"

namespace sdpo {

void check_reward_inputs(
    const std::string& component,
    const at::Tensor& images,
    const std::vector<std::string>& prompts,
    bool needs_prompts) {
  if (!images.defined() || images.dim() != 4 || images.size(1) != 3) {
    std::ostringstream got;
    if (images.defined()) {
      got << images.sizes();
    } else {
      got << "an undefined tensor";
    }
    throw Error(component + ": expected images (B, 3, H, W), got " + got.str());
  }
  if (needs_prompts && static_cast<std::int64_t>(prompts.size()) != images.size(0)) {
    throw Error(
        component + ": " + std::to_string(images.size(0)) + " images but " + std::to_string(prompts.size()) +
        " prompts (one prompt per image)");
  }
}

}  // namespace sdpo
