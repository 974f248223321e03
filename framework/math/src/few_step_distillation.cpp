#include "sdpo/math/few_step_distillation.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "sdpo/core/error.h"

namespace sdpo {

std::vector<std::int64_t> distillation_positions(
    const DDIMSchedule& schedule, std::int64_t teacher_steps, const std::vector<std::int64_t>& student_steps) {
  if (student_steps.empty()) throw Error("few-step distillation: distill_steps is empty; give at least one step count");
  if (teacher_steps < 1) throw Error("few-step distillation: teacher_steps must be >= 1");
  const std::vector<std::int64_t> grid = ddim_timesteps(schedule, teacher_steps);
  std::vector<std::int64_t> positions;
  for (std::int64_t n : student_steps) {
    if (n < 1) throw Error("few-step distillation: distill_steps holds " + std::to_string(n) + "; counts are >= 1");
    for (std::int64_t t : ddim_timesteps(schedule, n)) {
      const auto it = std::find(grid.begin(), grid.end(), t);
      if (it == grid.end()) {
        throw Error(
            "few-step distillation: " + std::to_string(n) + "-step sampling visits t = " + std::to_string(t) +
            ", which the teacher's " + std::to_string(teacher_steps) +
            "-step trajectory does not pass; make teacher_steps a multiple of " + std::to_string(n));
      }
      positions.push_back(it - grid.begin());
    }
  }
  std::sort(positions.begin(), positions.end());
  positions.erase(std::unique(positions.begin(), positions.end()), positions.end());
  return positions;
}

FewStepLoss few_step_distillation_loss(
    const at::Tensor& student_x0,
    const at::Tensor& teacher_x0,
    const at::Tensor& denoise_prediction,
    const at::Tensor& denoise_target,
    double denoise_weight) {
  TORCH_CHECK(
      student_x0.sizes() == teacher_x0.sizes(), "few-step distillation: student x0 ", student_x0.sizes(),
      " does not match the teacher's ", teacher_x0.sizes());
  TORCH_CHECK(
      denoise_prediction.sizes() == denoise_target.sizes(), "few-step distillation: prediction ",
      denoise_prediction.sizes(), " does not match its target ", denoise_target.sizes());
  FewStepLoss l;
  l.distill = at::mse_loss(student_x0, teacher_x0);
  l.denoise = at::mse_loss(denoise_prediction, denoise_target);
  l.total = l.distill + denoise_weight * l.denoise;
  return l;
}

}  // namespace sdpo
