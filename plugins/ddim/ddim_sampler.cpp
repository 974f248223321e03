// Sampler `ddim`: DDIM with log-probabilities (research/algorithms.md section 2). The math is the
// framework's pure ddim_step(); this plugin holds the schedule and options.
#include <ATen/ATen.h>

#include "sdpo/ddim.h"
#include "sdpo/plugin.h"
#include "sdpo/sampler.h"

namespace {

struct DDIMOptions {
  sdpo::DDIMSchedule schedule;
  double eta = 1.0;

  static DDIMOptions read(sdpo::OptionReader& r) {
    DDIMOptions o;
    auto& s = o.schedule;
    o.eta = r.number("eta", 1.0, 0.0, 10.0, "DDIM stochasticity eta_DDIM (1: the RL papers' policy; 0: deterministic)");
    s.spacing = r.string("spacing", s.spacing, "timestep spacing", {"trailing", "leading"});
    s.num_train_timesteps = r.integer("num_train_timesteps", s.num_train_timesteps, 2, 100000, "training timesteps");
    s.beta_start = r.number("beta_start", s.beta_start, 0.0, 1.0, "first beta");
    s.beta_end = r.number("beta_end", s.beta_end, 0.0, 1.0, "last beta");
    s.beta_schedule = r.string("beta_schedule", s.beta_schedule, "beta schedule", {"scaled_linear", "linear"});
    s.steps_offset = r.integer("steps_offset", s.steps_offset, 0, 1000, "offset of leading spacing");
    if (s.beta_end <= s.beta_start) r.fail("beta_end", "expected beta_end > beta_start");
    return o;
  }
};

class DDIMSampler final : public sdpo::Sampler {
 public:
  explicit DDIMSampler(const DDIMOptions& o) : o_(o), alphas_cumprod_(sdpo::ddim_alphas_cumprod(o.schedule)) {}

  std::vector<std::int64_t> timesteps(std::int64_t n) const override { return sdpo::ddim_timesteps(o_.schedule, n); }

  sdpo::SamplerStepOutput step(const sdpo::SamplerStepInput& in) const override {
    auto r = sdpo::ddim_step(alphas_cumprod_, in.model_output, in.timestep, in.sample, in.num_steps, o_.eta,
                             in.prediction_type, in.prev_sample, in.generator);
    return {r.prev_sample, r.pred_x0, r.log_prob};
  }

 private:
  DDIMOptions o_;
  at::Tensor alphas_cumprod_;
};

void register_ddim(sdpo::Registry& r) {
  r.add<sdpo::Sampler, DDIMOptions>(
      "ddim", "DDIM with the Gaussian log-prob of each transition (trailing spacing by default)",
      &DDIMOptions::read,
      [](const DDIMOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<DDIMSampler>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("ddim", "0.1.0", register_ddim)
