#pragma once
// Run manifests (DESIGN.md section 5): one component per kind with its options, plus train,
// sample, eval, output and pretrain sections. Every error names the file, the JSON path and what
// was expected; unknown keys are errors.
//
// Example:
//   Manifest m = Manifest::load("experiments/toy/quickstart.json", {"train.epochs=2"});
//   auto model = Registry::global().create<Model>(m.model);

#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/optimizer.h"
#include "sdpo/core/options.h"

namespace sdpo {

struct TrainOptions {
  std::int64_t epochs = 10;
  std::int64_t batch_size = 8;         ///< prompts per sampling batch (B_s); pairs for paired algorithms
  std::int64_t batches_per_epoch = 1;  ///< n_b
  std::int64_t train_batch_size = 2;   ///< B_t: trajectories (or pairs) per micro-batch
  std::int64_t seed = 42;
  OptimizerOptions optimizer;         ///< includes learning rate, clipping and accumulation
  std::int64_t checkpoint_every = 1;  ///< epochs between checkpoints (the last epoch always)
  /// "epoch": sample all n_b batches, then one algorithm update over the epoch's buffer.
  /// "per_batch" (RLCM's loop, research/algorithms.md 5.4): for each batch, sample it, compute
  /// its returns and advantages (the normalizer's state advancing batch by batch) and run the
  /// algorithm's update on it alone; the epoch's train row then holds the metrics averaged over
  /// the batches (`updates`, a running count, after the last), counters, rewards and phase
  /// times over the whole epoch. Identical to "epoch" when n_b = 1.
  std::string update_schedule = "epoch";
  /// "auto": dynamic loss scaling (sdpo/core/loss_scaler.h) exactly when the policy's trained
  /// path computes in float16 (Model::trained_dtype); "on" / "off" force it. The scale's
  /// settings are optimizer.loss_scaling's.
  std::string loss_scaling = "auto";

  /// Reads the manifest's `train` section (Manifest::parse calls finish()).
  static TrainOptions read(OptionReader& r);
};

struct SampleOptions {
  std::int64_t steps = 50;  ///< T: denoising steps of training trajectories (the largest of step_choices)
  /// `sample.steps` given as a list (mixed-step training): each epoch draws its T uniformly from
  /// it with the trainer's generator, and every batch of that epoch uses it (an epoch's rollout
  /// buffer holds one trajectory length, so each algorithm's update runs unchanged). Empty when
  /// `sample.steps` is an integer (no draw).
  std::vector<std::int64_t> step_choices;
  double guidance = 1.0;  ///< classifier-free guidance scale w (1: none; sdpo/train/guidance.h)
  /// Latents per model call in sampling and evaluation (0: the whole batch in one call). Other
  /// values change the samples at float round-off only (sdpo/train/sampling.h).
  std::int64_t forward_batch = 0;

  /// Reads the `sample` section; `steps` is its raw `steps` value (a list: mixed-step training).
  static SampleOptions read(OptionReader& r, const boost::json::value* steps);
};

struct EvalOptions {
  std::vector<std::int64_t> steps{1, 2, 4, 8, 16, 50};
  std::int64_t every = 1;  ///< epochs between evaluations (0: never; epoch 0 = base model)
  std::int64_t seeds = 2;  ///< images per evaluation prompt (seed = eval_seed + i)
  std::int64_t seed = 1234;
  std::string prompt_set = "eval";  ///< "eval", "train" or "unseen"
  std::int64_t max_prompts = 0;     ///< 0: all prompts of the set

  /// Reads the `eval` section.
  static EvalOptions read(OptionReader& r);
};

struct OutputOptions {
  std::string dir = "runs";       ///< run folder is <dir>/<name>
  bool save_trajectories = true;  ///< /trajectories/epoch_<k> (per-step arrays)
  bool save_latents = false;      ///< also latents and predicted x0
  bool progress = true;           ///< progress bar on stderr
  std::int64_t grid_prompts = 8;  ///< prompts in the PNG grid of evaluation samples

  /// Reads the `output` section.
  static OutputOptions read(OptionReader& r);
};

struct PretrainOptions {
  /// "denoising": train the base model and text encoder from random init (pretrain.h);
  /// "latent_consistency_distillation": distill the model (from its checkpoint) into a few-step
  /// consistency model with the text encoder frozen (consistency_distillation_driver.h);
  /// "few_step_distillation": distill it into a few-step model for the unchanged ddim sampler
  /// (few_step_distillation_driver.h).
  std::string method = "denoising";
  std::int64_t steps = 1500;
  std::int64_t batch_size = 64;
  double learning_rate = 2e-3;
  std::int64_t seed = 0;
  std::string model_out;                 ///< safetensors for the model weights
  std::string text_encoder_out;          ///< safetensors for the text encoder weights
  std::vector<ComponentConfig> rewards;  ///< learned rewards to fit (reward.fit)
  std::int64_t reward_steps = 600;
  std::int64_t reward_batch_size = 64;
  double reward_learning_rate = 2e-3;
  // latent_consistency_distillation only (consistency_distillation.h):
  std::int64_t original_inference_steps = 50;  ///< N: the teacher's DDIM schedule, skip T_train / N
  double ema_decay = 0.95;                     ///< mu of the target network's EMA
  std::string consistency_loss = "l2";         ///< "l2" or "huber"
  double huber_c = 0.001;
  double timestep_scaling = 10.0;  ///< as the lcm sampler's option of that name
  // few_step_distillation only (few_step_distillation.h):
  std::int64_t teacher_steps = 8;                    ///< the teacher's trailing DDIM (eta 0) trajectory length
  std::vector<std::int64_t> distill_steps{1, 2, 4};  ///< student step counts whose timesteps are distilled
  std::int64_t distill_batch_size = 16;              ///< teacher trajectories per step
  double denoise_weight = 1.0;                       ///< weight of the denoising loss on labelled images
  std::string prediction_type;                       ///< the student's (set as its model option); "": the teacher's

  /// Reads the `pretrain` section's options (`rewards`, its components, are read by Manifest::parse).
  static PretrainOptions read(OptionReader& r);
};

struct Manifest {
  std::string file;          ///< path it was read from ("<string>" otherwise)
  boost::json::object root;  ///< the resolved JSON (after --set overrides)
  std::string name;
  std::string device = "cpu";  ///< "cpu", "cuda", "cuda:1"
  std::vector<std::string> plugin_paths;

  ComponentConfig model, text_encoder, decoder, sampler, prompts, reward, dense_reward, normalizer, algorithm;

  TrainOptions train;
  SampleOptions sample;
  EvalOptions eval;
  OutputOptions output;
  PretrainOptions pretrain;

  /// Reads `path`, applies `overrides` ("json.path=value", value parsed as JSON, else as a
  /// string), validates every section. Throws FileError or ManifestError.
  static Manifest load(const std::string& path, const std::vector<std::string>& overrides = {});
  /// Same from JSON text (`file` names it in errors).
  static Manifest parse(
      const std::string& text, const std::string& file, const std::vector<std::string>& overrides = {});

  /// The resolved manifest as pretty JSON (stored in the run file).
  std::string text() const;
};

}  // namespace sdpo
