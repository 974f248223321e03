#include "support/tiny_sd.h"

#include "support/sd_pipeline.h"
#include "support/test_support.h"

namespace sdpo::test {

// Noise 0.05 on top of each module's init keeps activations O(1) through the tiny networks while
// making every weight (LoRA's zero-initialized B aside) differ from its default.
std::string write_tiny_sd_pipeline(unsigned seed) {
  const std::string root = temp_dir("tiny_sd");
  write_sd_pipeline(root, tiny_sd_configs(), seed, 0.05);
  return root;
}

}  // namespace sdpo::test
