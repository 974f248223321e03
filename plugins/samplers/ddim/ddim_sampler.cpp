// Sampler `ddim`: DDIM with log-probabilities (research/algorithms.md section 2). The math is the
// framework's pure ddim_step(); this plugin holds the schedule and options.
#include <ATen/ATen.h>

#include <mutex>

#include "sdpo/core/plugin.h"
#include "sdpo/core/sampler.h"
#include "sdpo/math/ddim.h"

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
    auto r = sdpo::ddim_step(
        schedule_on(in.sample.device()), in.model_output, in.timestep, in.sample, in.num_steps, o_.eta,
        in.prediction_type, in.prev_sample, in.generator);
    return {r.prev_sample, r.pred_x0, r.log_prob};
  }

 private:
  // The schedule on the samples' device, copied once: ddim_step's alphas_cumprod.to(device) is
  // then a no-op instead of a blocking host-to-device copy (a stream synchronize) at every step
  // on a GPU. The same float values, so the same numbers.
  at::Tensor schedule_on(c10::Device device) const {
    if (device.is_cpu()) return alphas_cumprod_;
    std::lock_guard<std::mutex> lock(device_mutex_);
    if (!on_device_.defined() || on_device_.device() != device) on_device_ = alphas_cumprod_.to(device);
    return on_device_;
  }

  DDIMOptions o_;
  at::Tensor alphas_cumprod_;  // CPU float32
  mutable std::mutex device_mutex_;
  mutable at::Tensor on_device_;  // alphas_cumprod_ on the last non-CPU device asked for
};

void register_ddim(sdpo::Registry& r) {
  r.add<sdpo::Sampler, DDIMOptions>(
      "ddim", "DDIM with the Gaussian log-prob of each transition (trailing spacing by default)", &DDIMOptions::read,
      [](const DDIMOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<DDIMSampler>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("ddim", "0.1.0", register_ddim)
