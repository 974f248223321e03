#pragma once
// `sdpo pretrain` with `pretrain.method: "few_step_distillation"`: distills the manifest's model
// (loaded from its checkpoint: the teacher) into a few-step model that the unchanged `ddim`
// sampler samples (the toy world's SD-Turbo, experiments/toy/pretrain_turbo.json). The math and
// the reasons are few_step_distillation.h; this runs it.
//
// Example:
//   sdpo::run_few_step_distillation(sdpo::Manifest::load("experiments/toy/pretrain_turbo.json"), std::cout);
//
// Per step (B = pretrain.batch_size labelled images from the prompt source, x0 = 2 * image - 1;
// D = pretrain.distill_batch_size <= B of their prompts; K = pretrain.teacher_steps):
//   no grad: z ~ N(0, I) (D, ...), the teacher's K-step trailing DDIM (eta 0) trajectory from z
//            with the D prompts, its states at distillation_positions() and its output x0^T;
//   the denoising batch as the base model's training (pretrain.h): t from uniform and few-step
//            timesteps, x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, target by the prediction type;
//   one student forward over both (B + D * P inputs), x0_hat of the distilled states by
//   ddim_prediction; loss = few_step_distillation_loss(...); AdamW (weight decay 0.01, gradient
//   norm clipped at 1, the denoising method's learning-rate schedule).
// The teacher and the student are two instances of the model section, both from its checkpoint;
// the text encoder is loaded from its own and stays frozen. Writes the student's state_dict to
// `pretrain.model_out` (metadata: component, method, steps, final_loss, seed, batch_size,
// learning_rate, teacher_steps, distill_steps, distill_batch_size, denoise_weight) and logs like
// the other methods, with the two losses of the last window. `pretrain.rewards` and
// `text_encoder_out` are refused. Throws ManifestError, NumericError (non-finite loss), FileError.
//
// Thread safety: call from one thread.

#include <ostream>

#include "sdpo/train/manifest.h"

namespace sdpo {

void run_few_step_distillation(const Manifest& m, std::ostream& log);

}  // namespace sdpo
