#include "sdpo/commands/consistency_distillation_driver.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "pretrain_support.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/math/consistency_distillation.h"
#include "sdpo/math/ddim.h"
#include "sdpo/math/lcm.h"

namespace sdpo {
namespace {

/// sigma_data of the LCM boundary scalings (models.md 8.2); the lcm sampler fixes it too.
constexpr double kSigmaData = 0.5;

}  // namespace

void run_consistency_distillation(const Manifest& m, std::ostream& log) {
  const PretrainOptions& p = m.pretrain;
  detail::refuse_denoising_only_options(m);
  detail::require_output(m, p.model_out, "pretrain.model_out");
  const c10::Device device(m.device);
  Registry& registry = Registry::global();
  // Three copies of the model section, each loaded from its checkpoint: the frozen teacher, the
  // student (trained) and the EMA target (theta^-; equal to the student at step 0, as in LCD).
  std::shared_ptr<Model> teacher = registry.create<Model>(m.model);
  std::shared_ptr<Model> student = registry.create<Model>(m.model);
  std::shared_ptr<Model> target = registry.create<Model>(m.model);
  std::shared_ptr<TextEncoder> text_encoder = registry.create<TextEncoder>(m.text_encoder);
  std::shared_ptr<PromptSource> prompts = registry.create<PromptSource>(m.prompts);
  if (!prompts->has_labelled_data()) {
    throw ManifestError(
        m.file, "prompts.name", "prompt source '" + m.prompts.name + "' has no labelled images to distill on");
  }
  for (Model* model : {teacher.get(), student.get(), target.get()}) model->to(device);
  text_encoder->to(device);
  teacher->set_training(false);
  target->set_training(false);
  text_encoder->set_training(false);
  student->set_training(true);

  const DDIMSchedule schedule;
  const at::Tensor alphas_cumprod = ddim_alphas_cumprod(schedule).to(device);
  const std::string prediction = student->prediction_type();
  std::vector<at::Tensor> params = student->trainable_parameters();
  const std::vector<at::Tensor> target_params = target->trainable_parameters();
  detail::PretrainOptimizer optimizer(params, p.learning_rate, p.steps);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(p.seed));

  log << "pretrain: latent consistency distillation of model '" << m.model.name << "' ("
      << detail::parameter_count(params) << " trainable parameters, predicts " << prediction << "), " << p.steps
      << " steps at batch " << p.batch_size << ", lr " << p.learning_rate << ", N " << p.original_inference_steps
      << ", EMA " << p.ema_decay << ", " << p.consistency_loss << " loss, device " << device << std::endl;

  detail::PretrainProgress progress(p.steps, log);
  for (std::int64_t step = 0; step < p.steps; ++step) {
    LabelledBatch batch = prompts->labelled_batch(p.batch_size, gen);
    const std::int64_t b = batch.images.size(0);
    at::Tensor x0 = batch.images.to(device).mul(2.0).sub_(1.0);
    at::Tensor index = at::randint(0, p.original_inference_steps, {b}, gen, at::kLong);
    LCDTimesteps t = lcd_timesteps(index, schedule.num_train_timesteps, p.original_inference_steps);
    t = {t.start.to(device), t.target.to(device)};
    at::Tensor eps = at::randn(batch.images.sizes(), gen, batch.images.options()).to(device);
    at::Tensor ab = alphas_cumprod.index_select(0, t.start).view({b, 1, 1, 1});
    at::Tensor x = ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps;

    at::Tensor cond, goal;
    {
      at::NoGradGuard no_grad;
      cond = text_encoder->encode(batch.prompts);
      at::Tensor x_prev = lcd_teacher_step(alphas_cumprod, teacher->forward(x, t.start, cond), t, x, prediction);
      goal = lcm_consistency_output(
                 alphas_cumprod, target->forward(x_prev, t.target, cond), t.target, x_prev, p.timestep_scaling,
                 kSigmaData, prediction)
                 .denoised;
    }
    at::Tensor f =
        lcm_consistency_output(
            alphas_cumprod, student->forward(x, t.start, cond), t.start, x, p.timestep_scaling, kSigmaData, prediction)
            .denoised;
    at::Tensor loss = consistency_loss(f, goal, p.consistency_loss, p.huber_c);
    const double lr = optimizer.step(step, loss);
    ema_update(target_params, params, p.ema_decay);
    progress.record(step, loss.item<double>(), lr);
  }
  student->set_training(false);

  StringMap meta = detail::pretrain_metadata(m, progress.final_loss());
  meta["ema_decay"] = detail::number_text(p.ema_decay);
  meta["original_inference_steps"] = std::to_string(p.original_inference_steps);
  meta["consistency_loss"] = p.consistency_loss;
  safetensors_save(p.model_out, student->state_dict(), meta);
  log << "pretrain: wrote " << p.model_out << " (final loss " << meta.at("final_loss") << ")" << std::endl;
}

}  // namespace sdpo
