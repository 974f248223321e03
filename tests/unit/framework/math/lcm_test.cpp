// LCM sampler math (sdpo/math/lcm.h): the schedule, the boundary scalings, one step and its
// log-density, both policies' last step and the guidance embedding, against values computed by
// hand (research/models.md 8.2-8.3, research/algorithms.md 5.2).
#include "sdpo/math/lcm.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <cmath>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/sampler.h"
#include "support/test_support.h"

namespace {

using Steps = std::vector<int64_t>;

at::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

// origin = 19, 39, ..., 999 (k = 20); reversed index j holds 999 - 20 j.
TEST(LCMSchedule, LinspaceTimesteps) {
  sdpo::LCMSchedule s;
  EXPECT_EQ(sdpo::lcm_timesteps(s, 1), (Steps{999}));
  EXPECT_EQ(sdpo::lcm_timesteps(s, 2), (Steps{999, 499}));                                // j = 0, 25
  EXPECT_EQ(sdpo::lcm_timesteps(s, 4), (Steps{999, 759, 499, 259}));                      // j = 0, 12, 25, 37
  EXPECT_EQ(sdpo::lcm_timesteps(s, 8), (Steps{999, 879, 759, 639, 499, 379, 259, 139}));  // 0,6,12,18,25,31,37,43
  EXPECT_EQ(sdpo::lcm_timesteps(s, 50).back(), 19);
  EXPECT_EQ(sdpo::lcm_timesteps(s, 3), (Steps{999, 679, 339}));  // j = 0, 16, 33
}

TEST(LCMSchedule, StrideTimestepsAsRLCM) {
  sdpo::LCMSchedule s;
  s.spacing = "stride";
  EXPECT_EQ(sdpo::lcm_timesteps(s, 1), (Steps{999}));
  EXPECT_EQ(sdpo::lcm_timesteps(s, 4), (Steps{999, 759, 519, 279}));  // skip 12
  // algorithms.md 5.1: N = 8 -> 999, 879, ..., 159 (skip 6).
  EXPECT_EQ(sdpo::lcm_timesteps(s, 8), (Steps{999, 879, 759, 639, 519, 399, 279, 159}));
}

TEST(LCMSchedule, RefusesMoreStepsThanTheOrigin) {
  sdpo::LCMSchedule s;
  EXPECT_THROW(sdpo::lcm_timesteps(s, 51), c10::Error);
  EXPECT_THROW(sdpo::lcm_timesteps(s, 0), c10::Error);
  s.original_inference_steps = 4;  // k = 250: origin 249, 499, 749, 999
  EXPECT_EQ(sdpo::lcm_timesteps(s, 2), (Steps{999, 499}));
}

TEST(LCMScalings, HandComputedValues) {
  // t = 0: s = 0 -> c_skip = 1, c_out = 0.
  // t = 1, scaling 10: s = 10 -> c_skip = 0.25 / 100.25, c_out = 10 / sqrt(100.25).
  // t = 5, scaling 0.1: s = 0.5 -> c_skip = 0.25 / 0.5 = 0.5, c_out = 0.5 / sqrt(0.5) = 0.70710678.
  auto [skip0, out0] = sdpo::lcm_boundary_scalings(at::tensor({0, 1}, at::kLong), 10.0);
  EXPECT_DOUBLE_EQ(skip0[0].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(out0[0].item<double>(), 0.0);
  EXPECT_NEAR(skip0[1].item<double>(), 0.0024937655860349127, 1e-15);
  EXPECT_NEAR(out0[1].item<double>(), 0.99875233887784, 1e-12);
  auto [skip5, out5] = sdpo::lcm_boundary_scalings(at::tensor({5}, at::kLong), 0.1);
  EXPECT_NEAR(skip5[0].item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(out5[0].item<double>(), 0.7071067811865476, 1e-15);
  // t = 999, scaling 10: the consistency output is x0 up to ~1e-9.
  auto [skip9, out9] = sdpo::lcm_boundary_scalings(at::tensor({999}, at::kLong), 10.0);
  EXPECT_NEAR(skip9[0].item<double>(), 0.25 / (9990.0 * 9990.0 + 0.25), 1e-20);
  EXPECT_NEAR(out9[0].item<double>(), 1.0, 2e-9);
}

TEST(LCMPlan, NextTimestepAndNoiseOfBothPolicies) {
  sdpo::LCMSchedule s;
  auto t = at::tensor({999, 759, 499, 259}, at::kLong);
  auto rlcm = sdpo::lcm_step_plan(s, t, 4, sdpo::LCMPolicy::kRLCM);
  EXPECT_TRUE(rlcm.next_timestep.equal(at::tensor({759, 499, 259, 259}, at::kLong))) << "t' = t on the last step";
  EXPECT_TRUE(rlcm.stochastic.all().item<bool>()) << "RLCM: noise on every step, the last included";
  auto diff = sdpo::lcm_step_plan(s, t, 4, sdpo::LCMPolicy::kDiffusers);
  EXPECT_TRUE(diff.next_timestep.equal(rlcm.next_timestep));
  EXPECT_TRUE(diff.stochastic.equal(at::tensor({1, 1, 1, 0}, at::kLong).to(at::kBool)));
  // One step: deterministic under both policies.
  auto one = sdpo::lcm_step_plan(s, at::tensor({999}, at::kLong), 1, sdpo::LCMPolicy::kRLCM);
  EXPECT_EQ(one.next_timestep.item<int64_t>(), 999);
  EXPECT_FALSE(one.stochastic.item<bool>());
  EXPECT_THROW(sdpo::lcm_step_plan(s, at::tensor({749}, at::kLong), 4, sdpo::LCMPolicy::kRLCM), sdpo::Error);
  EXPECT_THROW(sdpo::parse_lcm_policy("ddim"), sdpo::Error);
}

// One step of one element at t = 759 -> t' = 499 with timestep_scaling 0.001 (so c_skip matters):
// every quantity written out by hand from the schedule's alpha_bar values.
TEST(LCMStep, HandComputedStepAndDensity) {
  auto ac = sdpo::lcm_alphas_cumprod({});
  const double ab_t = ac[759].item<double>(), ab_n = ac[499].item<double>();
  const double x = 0.3, eps = -0.8, x_next = 0.1, scaling = 0.001;
  const double s = 759 * scaling;
  const double c_skip = 0.25 / (s * s + 0.25), c_out = s / std::sqrt(s * s + 0.25);
  const double x0 = (x - std::sqrt(1 - ab_t) * eps) / std::sqrt(ab_t);
  const double denoised = c_out * x0 + c_skip * x;
  const double mean = std::sqrt(ab_n) * denoised, var = 1 - ab_n;
  const double logp = -(x_next - mean) * (x_next - mean) / (2 * var) - 0.5 * std::log(var) - 0.5 * std::log(2 * M_PI);
  auto r = sdpo::lcm_step(
      ac, at::full({1, 1}, eps), at::full({1}, 759, at::kLong), at::full({1}, 499, at::kLong), at::full({1}, true),
      at::full({1, 1}, x), scaling, 0.5, "epsilon", at::full({1, 1}, x_next), c10::nullopt);
  EXPECT_NEAR(r.pred_x0.item<double>(), x0, 1e-5 * std::abs(x0));
  EXPECT_NEAR(r.denoised.item<double>(), denoised, 1e-5 * std::abs(denoised));
  EXPECT_NEAR(r.log_prob.item<double>(), logp, 1e-5 * std::abs(logp));
  EXPECT_EQ(r.prev_sample.item<double>(), static_cast<float>(x_next)) << "a given transition is returned";

  // v-prediction and sample prediction give their own x0 (algorithms.md 2.4 step 4).
  auto v = sdpo::lcm_step(
      ac, at::full({1, 1}, eps), at::full({1}, 759, at::kLong), at::full({1}, 499, at::kLong), at::full({1}, true),
      at::full({1, 1}, x), scaling, 0.5, "v_prediction", at::full({1, 1}, x_next), c10::nullopt);
  EXPECT_NEAR(v.pred_x0.item<double>(), std::sqrt(ab_t) * x - std::sqrt(1 - ab_t) * eps, 1e-6);
  auto smp = sdpo::lcm_step(
      ac, at::full({1, 1}, eps), at::full({1}, 759, at::kLong), at::full({1}, 499, at::kLong), at::full({1}, true),
      at::full({1, 1}, x), scaling, 0.5, "sample", at::full({1, 1}, x_next), c10::nullopt);
  EXPECT_NEAR(smp.denoised.item<double>(), c_out * eps + c_skip * x, 1e-6);
}

// The drawn transition is sqrt(ab') denoised + sqrt(1 - ab') z with z from the generator, and
// the log-prob is the mean of the per-element Gaussian log-densities.
TEST(LCMStep, DrawnTransitionAndMeanOverDimensions) {
  auto ac = sdpo::lcm_alphas_cumprod({});
  const double ab_n = ac[259].item<double>();
  auto x = at::tensor({0.2f, -0.4f}).view({1, 2});
  auto o = at::tensor({0.5f, 0.1f}).view({1, 2});
  auto t = at::full({1}, 499, at::kLong), tn = at::full({1}, 259, at::kLong);
  auto g = seeded(11);
  auto r = sdpo::lcm_step(ac, o, t, tn, at::full({1}, true), x, 10.0, 0.5, "epsilon", at::Tensor(), g);
  auto z = at::randn({1, 2}, seeded(11));
  sdpo::test::expect_close(
      r.prev_sample, std::sqrt(ab_n) * r.denoised + std::sqrt(1 - ab_n) * z, 1e-6, 1e-6,
      "x' = sqrt(ab') d + sqrt(1-ab') z");
  double sum = 0;
  for (int i = 0; i < 2; ++i) {
    const double d = r.denoised[0][i].item<double>(), xp = r.prev_sample[0][i].item<double>();
    const double m = std::sqrt(ab_n) * d, var = 1 - ab_n;
    sum += -(xp - m) * (xp - m) / (2 * var) - 0.5 * std::log(var) - 0.5 * std::log(2 * M_PI);
  }
  EXPECT_NEAR(r.log_prob.item<double>(), sum / 2, 1e-5);
}

// The last step of a 4-step trajectory (t = t' = 259): RLCM draws and scores a noisy
// transition; diffusers returns denoised itself with log-prob 0. The sampler plugin does the same.
TEST(LCMStep, LastStepOfBothPolicies) {
  auto reg_opts = [](const char* policy) { return boost::json::object{{"policy", policy}}; };
  auto x = at::randn({2, 1, 2, 2}, seeded(1));
  auto o = at::randn({2, 1, 2, 2}, seeded(2));
  auto t = at::full({2}, 259, at::kLong);
  for (const char* policy : {"rlcm", "diffusers"}) {
    SCOPED_TRACE(policy);
    sdpo::ComponentConfig cfg{"sampler", "lcm", reg_opts(policy), "<test>", "sampler.options"};
    auto s = sdpo::Registry::global().create<sdpo::Sampler>(cfg);
    ASSERT_EQ(s->timesteps(4).back(), 259);
    auto r = s->step({o, t, x, 4, at::Tensor(), seeded(3)});
    // Rewards on final images score the denoised image, not the re-noised last sample.
    EXPECT_TRUE(s->final_image_is_pred_x0());
    const bool noisy = std::string(policy) == "rlcm";
    EXPECT_EQ(r.prev_sample.equal(r.pred_x0), !noisy);
    EXPECT_EQ((r.log_prob != 0).all().item<bool>(), noisy);
    if (noisy) {
      // The noise has the variance 1 - ab_259 of the last step's own timestep.
      auto ab = sdpo::lcm_alphas_cumprod({})[259].item<double>();
      auto z = at::randn({2, 1, 2, 2}, seeded(3));
      sdpo::test::expect_close(r.prev_sample, std::sqrt(ab) * r.pred_x0 + std::sqrt(1 - ab) * z, 1e-5, 1e-6, "x'");
    }
  }
  sdpo::ComponentConfig ddim_cfg{"sampler", "ddim", {}, "<test>", "sampler.options"};
  EXPECT_FALSE(sdpo::Registry::global().create<sdpo::Sampler>(ddim_cfg)->final_image_is_pred_x0());
  // A one-step trajectory is deterministic under RLCM's policy too.
  sdpo::ComponentConfig cfg{"sampler", "lcm", {}, "<test>", "sampler.options"};
  auto s = sdpo::Registry::global().create<sdpo::Sampler>(cfg);
  auto r = s->step({o, at::full({2}, 999, at::kLong), x, 1, at::Tensor(), seeded(3)});
  EXPECT_TRUE(r.prev_sample.equal(r.pred_x0));
  EXPECT_TRUE((r.log_prob == 0).all().item<bool>());
}

// d = 8: half = 4, freq_i = 10000^(-i/3); emb = [sin(1000 w freq), cos(1000 w freq)].
TEST(LCMGuidanceEmbedding, HandComputedSinusoids) {
  auto w = at::tensor({0.0, 0.0005, 0.01, 7.0}, at::kDouble);
  auto emb = sdpo::lcm_guidance_embedding(w, 8);
  ASSERT_EQ(emb.sizes(), (at::IntArrayRef{4, 8}));
  EXPECT_EQ(emb.scalar_type(), at::kFloat);
  const double freq[4] = {1.0, 0.046415888336127795, 0.0021544346900318843, 0.0001};
  for (int b = 0; b < 4; ++b) {
    const double wp = 1000 * w[b].item<double>();
    // float32 arguments: w' = 7000 is represented to ~5e-4, so the sines are compared to 1e-3 there.
    const double tol = wp > 100 ? 1e-3 : 1e-6;
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(emb[b][i].item<double>(), std::sin(wp * freq[i]), tol) << "b=" << b << " sin " << i;
      EXPECT_NEAR(emb[b][4 + i].item<double>(), std::cos(wp * freq[i]), tol) << "b=" << b << " cos " << i;
    }
  }
  // w = 0.0005 (w' = 0.5): sin(0.5) first, cos(0.5) at index 4 (no flip).
  EXPECT_NEAR(emb[1][0].item<double>(), 0.479425538604203, 1e-6);
  EXPECT_NEAR(emb[1][4].item<double>(), 0.8775825618903728, 1e-6);
  // Odd d: a zero column appended; d < 4 is refused.
  auto odd = sdpo::lcm_guidance_embedding(w, 9);
  ASSERT_EQ(odd.size(1), 9);
  EXPECT_TRUE(odd.narrow(1, 0, 8).equal(emb));
  EXPECT_TRUE((odd.select(1, 8) == 0).all().item<bool>());
  EXPECT_THROW(sdpo::lcm_guidance_embedding(w, 3), c10::Error);
}

}  // namespace
