// Sampler `lcm`: the latent-consistency-model sampler with RLCM's stochastic policy and its
// Gaussian log-prob (research/models.md 8.2, research/algorithms.md 5.2, 7.7). The math is the
// framework's pure lcm_step(); this plugin holds the schedule and options. pred_x0 is the step's
// consistency output `denoised` (algorithms.md 7.7): the dense-reward queries and the evaluation
// images decode it, as RLCM decodes the last step's `denoised`.
#include <ATen/ATen.h>

#include "sdpo/core/plugin.h"
#include "sdpo/core/sampler.h"
#include "sdpo/math/lcm.h"

namespace {

struct LCMOptions {
  sdpo::LCMSchedule schedule;
  std::string policy = "rlcm";

  static LCMOptions read(sdpo::OptionReader& r) {
    LCMOptions o;
    auto& s = o.schedule;
    o.policy = r.string(
        "policy", o.policy,
        "rlcm: noise on every step of a multi-step trajectory, the last included (RLCM); "
        "diffusers: no noise on the last step (its log-prob is 0)",
        {"rlcm", "diffusers"});
    s.original_inference_steps = r.integer(
        "original_inference_steps", s.original_inference_steps, 1, 100000,
        "length of the LCM's distillation schedule (origin timesteps)");
    s.spacing = r.string(
        "spacing", s.spacing,
        "which origin timesteps an n-step trajectory uses: linspace (diffusers) or stride "
        "(every (original_inference_steps // n)-th, the diffusers version RLCM ran)",
        {"linspace", "stride"});
    s.timestep_scaling = r.number(
        "timestep_scaling", s.timestep_scaling, 0.0, 1e6,
        "s = t * timestep_scaling in the boundary scalings c_skip, c_out");
    s.num_train_timesteps = r.integer("num_train_timesteps", s.num_train_timesteps, 2, 100000, "training timesteps");
    s.beta_start = r.number("beta_start", s.beta_start, 0.0, 1.0, "first beta");
    s.beta_end = r.number("beta_end", s.beta_end, 0.0, 1.0, "last beta");
    s.beta_schedule = r.string("beta_schedule", s.beta_schedule, "beta schedule", {"scaled_linear", "linear"});
    if (s.beta_end <= s.beta_start) r.fail("beta_end", "expected beta_end > beta_start");
    if (s.original_inference_steps > s.num_train_timesteps) {
      r.fail("original_inference_steps", "expected at most num_train_timesteps");
    }
    return o;
  }
};

class LCMSampler final : public sdpo::Sampler {
 public:
  explicit LCMSampler(const LCMOptions& o)
      : o_(o), policy_(sdpo::parse_lcm_policy(o.policy)), alphas_cumprod_(sdpo::lcm_alphas_cumprod(o.schedule)) {}

  std::vector<std::int64_t> timesteps(std::int64_t n) const override { return sdpo::lcm_timesteps(o_.schedule, n); }

  sdpo::SamplerStepOutput step(const sdpo::SamplerStepInput& in) const override {
    // The next timestep follows from the schedule of the whole trajectory (n = in.num_steps).
    auto plan = sdpo::lcm_step_plan(o_.schedule, in.timestep, in.num_steps, policy_);
    auto r = sdpo::lcm_step(
        alphas_cumprod_, in.model_output, in.timestep, plan.next_timestep, plan.stochastic, in.sample,
        o_.schedule.timestep_scaling, o_.schedule.sigma_data, in.prediction_type, in.prev_sample, in.generator);
    return {r.prev_sample, r.denoised, r.log_prob};
  }

  // Under RLCM's policy the last sample is re-noised; either policy's final image is `denoised`.
  bool final_image_is_pred_x0() const override { return true; }

 private:
  LCMOptions o_;
  sdpo::LCMPolicy policy_;
  at::Tensor alphas_cumprod_;
};

void register_lcm(sdpo::Registry& r) {
  r.add<sdpo::Sampler, LCMOptions>(
      "lcm", "latent consistency model sampler, RLCM's Gaussian policy and log-prob (pred_x0 = denoised)",
      &LCMOptions::read,
      [](const LCMOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<LCMSampler>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("lcm", "0.1.0", register_lcm)
