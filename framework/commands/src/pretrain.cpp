#include "sdpo/commands/pretrain.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "pretrain_support.h"
#include "sdpo/commands/consistency_distillation_driver.h"
#include "sdpo/commands/few_step_distillation_driver.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/math/ddim.h"

namespace sdpo {
namespace {

using detail::parameter_count;
using detail::require_output;
using detail::without_checkpoint;

struct Components {
  std::shared_ptr<Model> model;
  std::shared_ptr<TextEncoder> text_encoder;
  std::shared_ptr<PromptSource> prompts;
  std::vector<std::shared_ptr<Reward>> rewards;
  std::vector<std::string> reward_outputs;
};

Components create_components(const Manifest& m) {
  const PretrainOptions& p = m.pretrain;
  require_output(m, p.model_out, "pretrain.model_out");
  require_output(m, p.text_encoder_out, "pretrain.text_encoder_out");
  Components c;
  Registry& registry = Registry::global();
  c.model = registry.create<Model>(without_checkpoint(m.model));
  c.text_encoder = registry.create<TextEncoder>(without_checkpoint(m.text_encoder));
  c.prompts = registry.create<PromptSource>(m.prompts);
  if (!c.prompts->has_labelled_data()) {
    throw ManifestError(
        m.file, "prompts.name", "prompt source '" + m.prompts.name + "' has no labelled images to pretrain on");
  }
  // Rewards are built before training so that an option error shows in seconds, not after it.
  for (const ComponentConfig& rc : p.rewards) {
    const auto* out = rc.options.if_contains("checkpoint");
    if (!out || !out->is_string() || out->as_string().empty()) {
      throw ManifestError(
          m.file, rc.json_path + ".checkpoint",
          "reward '" + rc.name + "' needs a checkpoint path: the fitted weights are written there");
    }
    c.reward_outputs.emplace_back(out->as_string().c_str());
    require_output(m, c.reward_outputs.back(), rc.json_path + ".checkpoint");
    c.rewards.push_back(registry.create<Reward>(without_checkpoint(rc)));
  }
  return c;
}

}  // namespace

void run_pretrain(const Manifest& m, std::ostream& log) {
  const PretrainOptions& p = m.pretrain;
  if (p.method == "latent_consistency_distillation") {
    run_consistency_distillation(m, log);
    return;
  }
  if (p.method == "few_step_distillation") {
    run_few_step_distillation(m, log);
    return;
  }
  const c10::Device device(m.device);
  Components c = create_components(m);
  Model& model = *c.model;
  TextEncoder& text_encoder = *c.text_encoder;
  model.to(device);
  text_encoder.to(device);
  model.set_training(true);
  text_encoder.set_training(true);

  const DDIMSchedule schedule;
  const at::Tensor alphas_cumprod = ddim_alphas_cumprod(schedule).to(device);
  const at::Tensor few_step_pool = detail::few_step_timestep_pool(schedule);

  std::vector<at::Tensor> params = model.trainable_parameters();
  const std::int64_t model_params = parameter_count(params);
  std::vector<at::Tensor> text_params = text_encoder.trainable_parameters();
  params.insert(params.end(), text_params.begin(), text_params.end());
  detail::PretrainOptimizer optimizer(params, p.learning_rate, p.steps);

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(p.seed));
  const std::string prediction = model.prediction_type();
  log << "pretrain: model '" << m.model.name << "' (" << model_params << " parameters, predicts " << prediction
      << "), text encoder '" << m.text_encoder.name << "' (" << parameter_count(text_params) << " parameters), "
      << p.steps << " steps at batch " << p.batch_size << ", lr " << p.learning_rate << ", device " << device
      << std::endl;

  detail::PretrainProgress progress(p.steps, log);
  for (std::int64_t step = 0; step < p.steps; ++step) {
    LabelledBatch batch = c.prompts->labelled_batch(p.batch_size, gen);
    const detail::DenoisingBatch d =
        detail::denoising_batch(batch.images, alphas_cumprod, few_step_pool, gen, prediction);

    at::Tensor pred = model.forward(d.x_t, d.t, text_encoder.encode(batch.prompts));
    at::Tensor loss = at::mse_loss(pred, d.target);
    const double lr = optimizer.step(step, loss);
    progress.record(step, loss.item<double>(), lr);
  }
  model.set_training(false);
  text_encoder.set_training(false);

  char loss_text[32];
  std::snprintf(loss_text, sizeof loss_text, "%.6g", progress.final_loss());
  const StringMap common{
      {"steps", std::to_string(p.steps)},
      {"final_loss", loss_text},
      {"seed", std::to_string(p.seed)},
      {"batch_size", std::to_string(p.batch_size)},
      {"learning_rate", std::to_string(p.learning_rate)}};
  StringMap model_meta = common, text_meta = common;
  model_meta["component"] = "model:" + m.model.name;
  text_meta["component"] = "text_encoder:" + m.text_encoder.name;
  safetensors_save(p.model_out, model.state_dict(), model_meta);
  safetensors_save(p.text_encoder_out, text_encoder.state_dict(), text_meta);
  log << "pretrain: wrote " << p.model_out << " and " << p.text_encoder_out << " (final loss " << loss_text << ")"
      << std::endl;

  for (std::size_t i = 0; i < c.rewards.size(); ++i) {
    const ComponentConfig& rc = p.rewards[i];
    // Its own stream, so a reward's fit does not depend on how many steps the model trained.
    RewardFitContext ctx{
        *c.prompts,
        at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(p.seed) + 1 + i),
        p.reward_steps,
        p.reward_batch_size,
        p.reward_learning_rate,
        c.reward_outputs[i]};
    c.rewards[i]->to(device);
    log << "pretrain: fitting reward '" << rc.name << "' (" << p.reward_steps << " steps) -> " << ctx.output
        << std::endl;
    if (c.rewards[i]->fit(ctx)) {
      log << "pretrain: wrote " << ctx.output << std::endl;
    } else {
      log << "pretrain: reward '" << rc.name << "' has nothing to fit; skipped" << std::endl;
    }
  }
}

}  // namespace sdpo
