#include "sdpo/commands/few_step_distillation_driver.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

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
#include "sdpo/math/ddim.h"
#include "sdpo/math/few_step_distillation.h"

namespace sdpo {
namespace {

/// The teacher's trajectories of one step: its states at the distilled positions, stacked
/// position-major ((P * D, ...), the positions' timesteps alike), and its clamped output.
struct TeacherTargets {
  at::Tensor states;     ///< (P * D, C, H, W)
  at::Tensor timesteps;  ///< (P * D,) int64
  at::Tensor x0;         ///< (D, C, H, W) in [-1, 1]
};

TeacherTargets teacher_trajectories(
    Model& teacher,
    const at::Tensor& alphas_cumprod,
    const std::vector<std::int64_t>& grid,
    const std::vector<std::int64_t>& positions,
    at::Tensor x,
    const at::Tensor& cond,
    const std::string& prediction) {
  at::NoGradGuard no_grad;
  const std::int64_t d = x.size(0);
  const auto steps = static_cast<std::int64_t>(grid.size());
  std::vector<at::Tensor> states, timesteps;
  std::size_t next = 0;
  for (std::int64_t k = 0; k < steps; ++k) {
    const at::Tensor t =
        at::full({d}, grid[static_cast<std::size_t>(k)], at::TensorOptions().dtype(at::kLong).device(x.device()));
    if (next < positions.size() && positions[next] == k) {
      states.push_back(x);
      timesteps.push_back(t);
      ++next;
    }
    x = ddim_step(
            alphas_cumprod, teacher.forward(x, t, cond), t, x, steps, /*eta=*/0.0, prediction, at::Tensor(),
            c10::nullopt)
            .prev_sample;
  }
  // The identity decoder clamps to the image range; the student learns an image, not the
  // teacher's overshoot.
  return {at::cat(states), at::cat(timesteps), x.clamp(-1.0, 1.0)};
}

}  // namespace

void run_few_step_distillation(const Manifest& m, std::ostream& log) {
  const PretrainOptions& p = m.pretrain;
  detail::refuse_denoising_only_options(m);
  detail::require_output(m, p.model_out, "pretrain.model_out");
  if (p.distill_batch_size > p.batch_size) {
    throw ManifestError(
        m.file, "pretrain.distill_batch_size",
        "the teacher's trajectories take their prompts from the batch: expected at most batch_size = " +
            std::to_string(p.batch_size) + ", got " + std::to_string(p.distill_batch_size));
  }
  const DDIMSchedule schedule;
  std::vector<std::int64_t> positions;
  try {
    positions = distillation_positions(schedule, p.teacher_steps, p.distill_steps);
  } catch (const Error& e) {
    throw ManifestError(m.file, "pretrain.distill_steps", e.what());
  }
  const std::vector<std::int64_t> grid = ddim_timesteps(schedule, p.teacher_steps);

  const c10::Device device(m.device);
  Registry& registry = Registry::global();
  std::shared_ptr<Model> teacher = registry.create<Model>(m.model);
  ComponentConfig student_config = m.model;
  if (!p.prediction_type.empty()) student_config.options["prediction_type"] = p.prediction_type;
  std::shared_ptr<Model> student = registry.create<Model>(student_config);
  std::shared_ptr<TextEncoder> text_encoder = registry.create<TextEncoder>(m.text_encoder);
  std::shared_ptr<PromptSource> prompts = registry.create<PromptSource>(m.prompts);
  if (!prompts->has_labelled_data()) {
    throw ManifestError(
        m.file, "prompts.name", "prompt source '" + m.prompts.name + "' has no labelled images to distill on");
  }
  teacher->to(device);
  student->to(device);
  text_encoder->to(device);
  teacher->set_training(false);
  text_encoder->set_training(false);
  student->set_training(true);

  const at::Tensor alphas_cumprod = ddim_alphas_cumprod(schedule).to(device);
  const at::Tensor few_step_pool = detail::few_step_timestep_pool(schedule);
  const std::string prediction = student->prediction_type();
  const std::string teacher_prediction = teacher->prediction_type();
  std::vector<at::Tensor> params = student->trainable_parameters();
  detail::PretrainOptimizer optimizer(params, p.learning_rate, p.steps);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(p.seed));

  std::string distilled;
  for (std::int64_t k : positions)
    distilled += (distilled.empty() ? "" : ", ") + std::to_string(grid[static_cast<std::size_t>(k)]);
  log << "pretrain: few-step distillation of model '" << m.model.name << "' (" << detail::parameter_count(params)
      << " trainable parameters, predicts " << prediction << ", teacher " << teacher_prediction << "), " << p.steps
      << " steps at batch " << p.batch_size << " + " << p.distill_batch_size << " teacher trajectories of "
      << p.teacher_steps << " DDIM steps (eta 0), distilled at t = " << distilled << ", denoise weight "
      << p.denoise_weight << ", lr " << p.learning_rate << ", device " << device << std::endl;

  detail::PretrainProgress progress(p.steps, log);
  double window_distill = 0.0, window_denoise = 0.0;
  std::int64_t window = 0;
  for (std::int64_t step = 0; step < p.steps; ++step) {
    LabelledBatch batch = prompts->labelled_batch(p.batch_size, gen);
    const std::int64_t b = batch.images.size(0);
    const std::int64_t d = std::min<std::int64_t>(p.distill_batch_size, b);
    const auto n_pos = static_cast<std::int64_t>(positions.size());

    // The denoising half, drawn as the base model's training draws it.
    const detail::DenoisingBatch noised =
        detail::denoising_batch(batch.images, alphas_cumprod, few_step_pool, gen, prediction);

    at::Tensor cond;
    {
      at::NoGradGuard no_grad;
      cond = text_encoder->encode(batch.prompts);
    }
    const at::Tensor cond_d = cond.narrow(0, 0, d);
    at::Tensor z = at::randn(batch.images.narrow(0, 0, d).sizes(), gen, batch.images.options()).to(device);
    TeacherTargets teach =
        teacher_trajectories(*teacher, alphas_cumprod, grid, positions, z, cond_d, teacher_prediction);

    // One student forward over both parts.
    const at::Tensor cond_states = at::cat(std::vector<at::Tensor>(static_cast<std::size_t>(n_pos), cond_d));
    at::Tensor out = student->forward(
        at::cat({noised.x_t, teach.states}), at::cat({noised.t, teach.timesteps}), at::cat({cond, cond_states}));
    at::Tensor student_x0 =
        ddim_prediction(alphas_cumprod, out.narrow(0, b, d * n_pos), teach.timesteps, teach.states, prediction).pred_x0;
    at::Tensor teacher_x0 = at::cat(std::vector<at::Tensor>(static_cast<std::size_t>(n_pos), teach.x0));
    FewStepLoss loss =
        few_step_distillation_loss(student_x0, teacher_x0, out.narrow(0, 0, b), noised.target, p.denoise_weight);

    const double lr = optimizer.step(step, loss.total);
    window_distill += loss.distill.item<double>();
    window_denoise += loss.denoise.item<double>();
    ++window;
    progress.record(step, loss.total.item<double>(), lr);
    if ((step + 1) % 50 == 0 || step + 1 == p.steps) {
      log << "  distill " << detail::number_text(window_distill / static_cast<double>(window)) << "  denoise "
          << detail::number_text(window_denoise / static_cast<double>(window)) << std::endl;
      window_distill = window_denoise = 0.0;
      window = 0;
    }
  }
  student->set_training(false);

  std::string steps_text;
  for (std::int64_t n : p.distill_steps) steps_text += (steps_text.empty() ? "" : ",") + std::to_string(n);
  StringMap meta = detail::pretrain_metadata(m, progress.final_loss());
  meta["teacher_steps"] = std::to_string(p.teacher_steps);
  meta["distill_steps"] = steps_text;
  meta["distill_batch_size"] = std::to_string(p.distill_batch_size);
  meta["denoise_weight"] = detail::number_text(p.denoise_weight);
  meta["prediction_type"] = prediction;
  safetensors_save(p.model_out, student->state_dict(), meta);
  log << "pretrain: wrote " << p.model_out << " (final loss " << meta.at("final_loss") << ")" << std::endl;
}

}  // namespace sdpo
