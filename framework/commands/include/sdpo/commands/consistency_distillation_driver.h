#pragma once
// `sdpo pretrain` with `pretrain.method: "latent_consistency_distillation"`: distills the manifest's
// model (loaded from its checkpoint: the teacher) into a few-step consistency model for the lcm
// sampler, on the prompt source's labelled images (the toy world's generator). The math is
// consistency_distillation.h; this runs it.
//
// Example (experiments/toy/pretrain_lcm.json):
//   sdpo::run_consistency_distillation(sdpo::Manifest::load("experiments/toy/pretrain_lcm.json"), std::cout);
//
// Per step (batch B from prompts.labelled_batch, x0 = 2 * image - 1):
//   index ~ U{0..N-1}, (t_{n+1}, t_n) = lcd_timesteps(index), eps ~ N(0, I),
//   x = sqrt(ab) x0 + sqrt(1 - ab) eps at t_{n+1};
//   student: f = lcm_consistency_output(model(x, t_{n+1}, c)) (with gradients);
//   no grad: x^ = lcd_teacher_step(teacher(x, t_{n+1}, c)), f^- = lcm_consistency_output(
//            target(x^, t_n, c)) at t_n;
//   loss = consistency_loss(f, f^-); AdamW (weight decay 0.01, gradient norm clipped at 1, the
//   learning-rate schedule of the denoising method); then ema_update(target, student, ema_decay).
// Teacher, student and target are three instances of the model section, all starting from its
// checkpoint; the text encoder is loaded from its own and stays frozen. Writes the student's
// state_dict to `pretrain.model_out` (metadata: component, method, steps, final_loss, seed,
// batch_size, learning_rate, ema_decay, original_inference_steps, consistency_loss) and logs like
// the denoising method. `pretrain.rewards` and `text_encoder_out` are refused (nothing to fit or
// write). Throws ManifestError, NumericError (non-finite loss), FileError.
//
// Thread safety: call from one thread.

#include <ostream>

#include "sdpo/train/manifest.h"

namespace sdpo {

void run_consistency_distillation(const Manifest& m, std::ostream& log);

}  // namespace sdpo
