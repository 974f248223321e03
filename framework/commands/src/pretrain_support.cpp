#include "pretrain_support.h"

#include <ATen/ATen.h>
// clip_grad.h is not self-contained: torch/types.h must come first.
// clang-format off
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
// clang-format on
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "sdpo/core/error.h"

namespace sdpo::detail {

// The same manifest may point `checkpoint` at the very file pretraining is about to regenerate.
ComponentConfig without_checkpoint(ComponentConfig cfg) {
  cfg.options.erase("checkpoint");
  return cfg;
}

void require_output(const Manifest& m, const std::string& path, const std::string& key) {
  if (path.empty()) throw ManifestError(m.file, key, "expected a safetensors path to write to");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) throw FileError(parent.string(), "cannot create the folder for " + key + ": " + ec.message());
}

void refuse_denoising_only_options(const Manifest& m) {
  const PretrainOptions& p = m.pretrain;
  if (!p.text_encoder_out.empty()) {
    throw ManifestError(
        m.file, "pretrain.text_encoder_out", p.method + " keeps the text encoder frozen and writes no copy; remove it");
  }
  if (!p.rewards.empty()) {
    throw ManifestError(m.file, "pretrain.rewards", p.method + " fits no rewards; fit them with the denoising method");
  }
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Warm-up keeps AdamW's first, badly-estimated steps from wrecking the init at a high lr; the
// decay buys a lower final loss for the same number of steps.
double learning_rate_at(std::int64_t step, std::int64_t steps, double lr) {
  constexpr double kFinalLrFraction = 0.1;
  const std::int64_t warmup = std::min<std::int64_t>(100, std::max<std::int64_t>(1, steps / 20));
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, steps - warmup));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return lr * (kFinalLrFraction + (1.0 - kFinalLrFraction) * cosine);
}

at::Tensor few_step_timestep_pool(const DDIMSchedule& schedule) {
  std::vector<std::int64_t> pool;
  for (std::int64_t n : {1, 2, 4, 8}) {
    for (std::int64_t t : ddim_timesteps(schedule, n)) pool.push_back(t);
  }
  return at::tensor(pool, at::kLong);
}

// The first half keeps the model a denoiser at every noise level. Few-step sampling evaluates the
// model only at the pool's timesteps, and first at t = 999 where x_t is almost pure noise and the
// whole layout is decided: 999 is in all four lists, so it gets 4/15 of the second half.
at::Tensor sample_denoising_timesteps(
    std::int64_t batch, const at::Tensor& few_step_pool, at::Generator& gen, std::int64_t num_train_timesteps) {
  const std::int64_t uniform = (batch + 1) / 2;
  at::Tensor t_uniform = at::randint(0, num_train_timesteps, {uniform}, gen, at::kLong);
  at::Tensor pick = at::randint(0, few_step_pool.size(0), {batch - uniform}, gen, at::kLong);
  return at::cat({t_uniform, few_step_pool.index_select(0, pick)});
}

DenoisingBatch denoising_batch(
    const at::Tensor& images,
    const at::Tensor& alphas_cumprod,
    const at::Tensor& few_step_pool,
    at::Generator& gen,
    const std::string& prediction) {
  const c10::Device device = alphas_cumprod.device();
  const std::int64_t b = images.size(0);
  at::Tensor x0 = images.to(device).mul(2.0).sub_(1.0);
  at::Tensor t = sample_denoising_timesteps(b, few_step_pool, gen, alphas_cumprod.size(0)).to(device);
  at::Tensor eps = at::randn(images.sizes(), gen, images.options()).to(device);
  at::Tensor ab = alphas_cumprod.index_select(0, t).view({b, 1, 1, 1});
  at::Tensor a = ab.sqrt(), s = (1.0 - ab).sqrt();
  at::Tensor target = prediction == "epsilon" ? eps : prediction == "v_prediction" ? a * eps - s * x0 : x0;
  return {a * x0 + s * eps, t, target};
}

StringMap pretrain_metadata(const Manifest& m, double final_loss) {
  const PretrainOptions& p = m.pretrain;
  return {
      {"component", "model:" + m.model.name},
      {"method", p.method},
      {"steps", std::to_string(p.steps)},
      {"final_loss", number_text(final_loss)},
      {"seed", std::to_string(p.seed)},
      {"batch_size", std::to_string(p.batch_size)},
      {"learning_rate", number_text(p.learning_rate)}};
}

namespace {
constexpr double kMaxGradNorm = 1.0;
constexpr double kWeightDecay = 0.01;
}  // namespace

PretrainOptimizer::PretrainOptimizer(std::vector<at::Tensor> params, double learning_rate, std::int64_t steps)
    : params_(std::move(params)),
      learning_rate_(learning_rate),
      steps_(steps),
      adamw_(std::make_unique<torch::optim::AdamW>(
          params_, torch::optim::AdamWOptions(learning_rate).weight_decay(kWeightDecay))) {}

PretrainOptimizer::~PretrainOptimizer() = default;

double PretrainOptimizer::step(std::int64_t step, const at::Tensor& loss) {
  const double lr = learning_rate_at(step, steps_, learning_rate_);
  for (auto& group : adamw_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  adamw_->zero_grad();
  loss.backward();
  torch::nn::utils::clip_grad_norm_(params_, kMaxGradNorm);
  adamw_->step();
  return lr;
}

std::int64_t parameter_count(const std::vector<at::Tensor>& params) {
  std::int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

std::string duration_text(double seconds) {
  const auto s = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%llds", s);
  }
  return buf;
}

PretrainProgress::PretrainProgress(std::int64_t steps, std::ostream& log, std::int64_t every)
    : steps_(steps), every_(every), log_(log), start_(std::chrono::steady_clock::now()) {}

void PretrainProgress::record(std::int64_t step, double loss, double lr) {
  if (!std::isfinite(loss)) {
    throw NumericError(
        "pretrain: loss is " + std::to_string(loss) + " at step " + std::to_string(step + 1) +
        " (lower pretrain.learning_rate?)");
  }
  window_loss_ += loss;
  ++window_steps_;
  if ((step + 1) % every_ != 0 && step + 1 != steps_) return;
  final_loss_ = window_loss_ / static_cast<double>(window_steps_);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = elapsed / static_cast<double>(step + 1) * static_cast<double>(steps_ - step - 1);
  char line[160];
  std::snprintf(
      line, sizeof line, "pretrain %lld/%lld  loss %.4f  lr %.2e  elapsed %s  eta %s", static_cast<long long>(step + 1),
      static_cast<long long>(steps_), final_loss_, lr, duration_text(elapsed).c_str(), duration_text(eta).c_str());
  log_ << line << std::endl;
  window_loss_ = 0.0;
  window_steps_ = 0;
}

}  // namespace sdpo::detail
