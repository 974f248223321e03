#pragma once
// A tiny diffusers pipeline folder written by the tests (no downloaded weights): the real SD-Turbo
// layout (model_index.json, scheduler/, unet/, text_encoder/, tokenizer/, vae/) with random weights
// of the same architectures at toy sizes, loadable by the `sd_unet`, `clip_text` and `sd_vae`
// plugins. Latents are (4, 8, 8), images (3, 16, 16), text states (B, 77, 16).

#include <string>

namespace sdpo::test {

/// Writes the folder under a fresh temp directory and returns its path. Deterministic in `seed`.
std::string write_tiny_sd_pipeline(unsigned seed = 1);

}  // namespace sdpo::test
