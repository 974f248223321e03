#pragma once
// A model for tests of the algorithms' updates: every stored transition has parameters of its own.
//
//   eps(x, t, c) = 0.5 x + W[i, t]   (W: (rows, 1000, 4), reshaped to the (1, 2, 2) latent)
//
// for the row i whose one-hot conditioning c ((N, 1, rows), row i one-hot at i) is given, so an
// update can raise one transition's log-probability without touching any other's, and the
// parameters an update moved tell which (row, timestep) transitions it trained. W starts at zero
// (the same policy for every row). Training-mode forwards are recorded (rows and timesteps).

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "sdpo/core/model.h"
#include "sdpo/core/rollout.h"
#include "sdpo/core/sampler.h"
#include "sdpo/train/sampling.h"

namespace sdpo::test {

class TransitionBiasModel final : public sdpo::Model {
 public:
  explicit TransitionBiasModel(std::int64_t rows) : weight_(at::zeros({rows, 1000, 4}).requires_grad_(true)) {}

  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override {
    const at::Tensor row = cond.squeeze(1).argmax(1);
    const at::Tensor step = t.to(at::kLong).expand({x_t.size(0)});
    if (training_) calls.push_back({row.clone(), step.clone()});
    const at::Tensor bias = weight_.index({row, step});
    return x_t * 0.5 + bias.view({x_t.size(0), 1, 2, 2});
  }
  std::string prediction_type() const override { return "epsilon"; }
  std::vector<std::int64_t> latent_shape() const override { return {1, 2, 2}; }
  std::vector<at::Tensor> trainable_parameters() override { return {weight_}; }
  sdpo::TensorMap state_dict() const override { return {{"weight", weight_}}; }
  sdpo::TensorMap trainable_state_dict() const override { return state_dict(); }
  void load_state_dict(const sdpo::TensorMap&, bool, const std::string&) override {}
  void set_training(bool training) override { training_ = training; }
  void to(c10::Device) override {}

  /// (rows, 1000): whether W[row, t] is not zero (the transition was trained).
  at::Tensor moved() const { return weight_.detach().abs().sum(-1) > 0; }

  struct Call {
    at::Tensor rows;       ///< (b,) buffer rows of the forward
    at::Tensor timesteps;  ///< (b,) their timesteps
  };
  std::vector<Call> calls;  ///< every training-mode forward, in order

 private:
  at::Tensor weight_;
  bool training_ = false;
};

/// n trajectories of num_steps steps sampled from `model` by `sampler`, row i conditioned on
/// one-hot i ((n, 1, n), the rows a TransitionBiasModel(n) tells apart), prompts "p". Paired:
/// rows i and i + n/2 are a pair, sharing x_T when `shared_noise`. Rewards and advantages are
/// left for the test to write.
inline sdpo::RolloutBuffer sampled_buffer(
    sdpo::Model& model,
    sdpo::Sampler& sampler,
    std::int64_t n,
    std::int64_t num_steps,
    bool paired,
    bool shared_noise,
    at::Generator& gen) {
  at::Tensor x_T = at::randn({n, 1, 2, 2}, gen);
  if (paired && shared_noise) {
    const at::Tensor a = x_T.slice(0, 0, n / 2);
    x_T = at::cat({a, a});
  }
  const at::Tensor cond = at::eye(n).unsqueeze(1);
  const sdpo::Trajectories tr = sdpo::sample_trajectories(model, sampler, cond, x_T, num_steps, gen, true);
  sdpo::RolloutBuffer buf;
  buf.num_steps = num_steps;
  buf.paired = paired;
  buf.prompts.assign(static_cast<std::size_t>(n), "p");
  buf.cond = cond;
  buf.timesteps = tr.timesteps;
  buf.latents = tr.latents;
  buf.next_latents = tr.next_latents;
  buf.log_probs = tr.log_probs;
  return buf;
}

}  // namespace sdpo::test
