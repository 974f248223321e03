#pragma once
// Writes a diffusers pipeline folder (model_index.json, scheduler/, unet/, text_encoder/,
// tokenizer/, vae/) with random float32 weights, loadable by the `sd_unet`, `clip_text` and
// `sd_vae` plugins: at toy sizes for the tests (tiny_sd.h), at SD-Turbo's real sizes for timing
// (benchmarks/random_pipeline.cpp). Nothing is downloaded. No GoogleTest dependency.

#include <cstdint>
#include <functional>
#include <string>

namespace sdpo::test {

/// The three config.json texts of a pipeline.
struct SDPipelineConfigs {
  std::string unet, text_encoder, vae;
};

/// SD-Turbo's configs (research/models.md 2.1, 3.1, 4.1).
const SDPipelineConfigs& sd_turbo_configs();

/// Toy sizes: latents (4, 8, 8), images (3, 16, 16), text states (B, 77, 16), vocabulary 514.
const SDPipelineConfigs& tiny_sd_configs();

/// Called after each weights file: component ("unet", "text_encoder", "vae"), parameters, file.
using SDPipelineProgress = std::function<void(const std::string&, std::int64_t, const std::string&)>;

/// Writes the folder at `root`. Each module is built under ScopedSeed(seed), (seed + 1),
/// (seed + 2) with its default initialization, then `noise` * N(0, 1) is added to every parameter
/// under the same seed (0: none), so the files depend on `seed` and `noise` only. The tokenizer is
/// byte-level without merges (every character one token, ids < 514). Throws on a write error.
void write_sd_pipeline(
    const std::string& root,
    const SDPipelineConfigs& configs,
    unsigned seed,
    double noise,
    const SDPipelineProgress& progress = {});

}  // namespace sdpo::test
