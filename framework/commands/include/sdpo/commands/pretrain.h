#pragma once
// `sdpo pretrain`: trains the base model and its text encoder on the prompt source's labelled
// images (the toy world's generator, DESIGN.md section 7), writes both checkpoints, then fits the
// learned rewards listed in the manifest's `pretrain.rewards`.
//
// Example:
//   sdpo::Manifest m = sdpo::Manifest::load("experiments/toy/pretrain.json");
//   sdpo::run_pretrain(m, std::cout);
//
// What it does (the choices are documented at their lines in pretrain.cpp):
//   - model, text_encoder and prompts come from the manifest's sections; both networks start
//     from their random init (a `checkpoint` option of either is ignored, so one manifest can both
//     regenerate and use the shipped weights);
//   - loss: mean squared error of the model's prediction against its target for
//     x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, x0 = 2 * image - 1, ab_t from the scaled-linear
//     schedule (target eps, v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0, or x0, per the model's
//     prediction_type());
//   - timesteps: half of each batch uniform in {0..999}, half drawn from the trailing timesteps of
//     1-, 2-, 4- and 8-step sampling (so t = 999 gets about a quarter of that half);
//   - AdamW (weight decay 0.01, gradient norm clipped at 1), learning rate warmed up linearly over
//     the first 5% of steps (at most 100) then cosine-decayed to 10%;
//   - progress to `log` every 50 steps (mean loss of those steps, lr, elapsed, ETA);
//   - writes `pretrain.model_out` and `pretrain.text_encoder_out` (safetensors with metadata:
//     component, steps, final_loss, seed, batch_size, learning_rate);
//   - each `pretrain.rewards[i]` is created with its `checkpoint` option removed and fitted with
//     Reward::fit, writing to that `checkpoint` path (required).
//
// Throws ManifestError (missing outputs, a prompt source without labelled data), NumericError
// (non-finite loss), FileError (unwritable outputs) and whatever the components throw.
//
// Thread safety: call from one thread.

#include <ostream>

#include "sdpo/train/manifest.h"

namespace sdpo {

void run_pretrain(const Manifest& m, std::ostream& log);

}  // namespace sdpo
