// sdpo_random_pipeline [--tiny] OUT_DIR: writes a diffusers pipeline folder with SD-Turbo's real
// architecture (research/models.md 2.1, 3.1, 4.1: the unet/, text_encoder/ and vae/ config.json
// values) and random float32 weights, loadable by the `sd_unet`, `clip_text` and `sd_vae` plugins,
// so that an SD-Turbo-sized epoch can be timed without downloading anything
// (benchmarks/gpu_check.sh). The images it makes are noise; only the cost is real.
//
// The weights are each module's default initialization under a fixed seed (module_state_dict of
// the same modules the plugins build, so the keys and shapes are theirs by construction):
// about 3.5 GB for the UNet, 1.4 GB for the text encoder, 0.2 GB for the VAE decoder. The
// tokenizer is byte-level (every character one token, ids < 514 of the real 49408-entry
// vocabulary): real prompts tokenize, to different ids than the real BPE. --tiny writes the same
// layout at toy sizes (the tests' tiny pipeline: latents (4, 8, 8), images 16x16), to try a
// script's steps on a CPU in seconds. The writer and the configs are tests/support/sd_pipeline.h's.
#include <exception>
#include <iostream>
#include <string>

#include "support/sd_pipeline.h"

int main(int argc, char** argv) {
  const bool tiny = argc == 3 && std::string(argv[1]) == "--tiny";
  if (!(argc == 2 || tiny) || std::string(argv[argc - 1]).rfind("-", 0) == 0) {
    std::cerr << "usage: sdpo_random_pipeline [--tiny] OUT_DIR\n"
                 "  writes OUT_DIR/{model_index.json,scheduler,unet,text_encoder,tokenizer,vae}: SD-Turbo's\n"
                 "  architecture with random float32 weights (about 5 GB), for timing only; --tiny: toy sizes\n";
    return 2;
  }
  try {
    const std::string root = argv[argc - 1];
    const auto& configs = tiny ? sdpo::test::tiny_sd_configs() : sdpo::test::sd_turbo_configs();
    sdpo::test::write_sd_pipeline(
        root, configs, /*seed=*/1, /*noise=*/0.0,
        [](const std::string& component, std::int64_t n, const std::string& file) {
          std::cout << "  " << component << ": " << n << " parameters -> " << file << "\n";
        });
    std::cout << "sdpo_random_pipeline: wrote " << root << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "sdpo_random_pipeline: " << e.what() << "\n";
    return 1;
  }
}
