// The `sdpo` plugin's ablation options (research/algorithms.md 9.2, 9.4, 9.5) through the
// registry: returns none vs gamma, option conflicts, and the update schedules observed on a
// recording model (which steps each backward trains, and how many optimizer updates an epoch makes).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <functional>
#include <map>
#include <set>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/rollout.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"
#include "sdpo/math/returns.h"
#include "sdpo/train/sampling.h"
#include "support/component_config.h"
#include "support/test_support.h"

namespace {

sdpo::ComponentConfig config(const std::string& kind, const std::string& name, const std::string& options) {
  return sdpo::test::component_config(kind, name, options, "variants.json");
}

std::shared_ptr<sdpo::Algorithm> make_sdpo(const std::string& options) {
  sdpo::test::load_plugins_once();
  return sdpo::Registry::global().create<sdpo::Algorithm>(config("algorithm", "sdpo", options));
}

// eps(x, t) = scale * x with one trainable scalar; records the timesteps of every forward made in
// training mode (the algorithm's update), one entry per micro-batch.
class RecordingModel final : public sdpo::Model {
 public:
  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor&) override {
    if (training_) calls.push_back(t.clone());
    return x_t * scale_;
  }
  std::string prediction_type() const override { return "epsilon"; }
  std::vector<std::int64_t> latent_shape() const override { return {1, 2, 2}; }
  std::vector<at::Tensor> trainable_parameters() override { return {scale_}; }
  sdpo::TensorMap state_dict() const override { return {{"scale", scale_}}; }
  sdpo::TensorMap trainable_state_dict() const override { return state_dict(); }
  void load_state_dict(const sdpo::TensorMap&, bool, const std::string&) override {}
  void set_training(bool training) override { training_ = training; }
  void to(c10::Device) override {}

  std::vector<at::Tensor> calls;

 private:
  at::Tensor scale_ = at::full({1}, 0.5).requires_grad_(true);
  bool training_ = false;
};

struct Schedule {
  std::vector<std::vector<std::int64_t>> steps;  ///< per backward: the trained step of each a row
  std::int64_t updates = 0;
  double loss = 0;  ///< the update's mean micro-batch loss
};

// One update of `algorithm` on `pairs` pairs of T-step trajectories sampled from the recording
// model, micro-batches of `batch` pairs, accumulation `g_acc`. `tweak` may edit the buffer
// (random advantages by default) before the update.
Schedule run_update(
    sdpo::Algorithm& algorithm,
    std::int64_t pairs,
    std::int64_t T,
    std::int64_t batch,
    std::int64_t g_acc,
    const std::function<void(sdpo::RolloutBuffer&)>& tweak = {},
    double learning_rate = 1e-4) {
  auto sampler = sdpo::Registry::global().create<sdpo::Sampler>(config("sampler", "ddim", "{}"));
  RecordingModel model;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto x_a = at::randn({pairs, 1, 2, 2}, gen);
  auto cond = at::zeros({2 * pairs, 1, 1});
  auto tr = sdpo::sample_trajectories(model, *sampler, cond, at::cat({x_a, x_a}), T, gen, true);
  sdpo::RolloutBuffer buf;
  buf.num_steps = T;
  buf.paired = true;
  buf.prompts.assign(static_cast<size_t>(2 * pairs), "p");
  buf.cond = cond;
  buf.timesteps = tr.timesteps;
  buf.latents = tr.latents;
  buf.next_latents = tr.next_latents;
  buf.log_probs = tr.log_probs;
  buf.advantages = at::randn({2 * pairs, T}, gen);
  if (tweak) tweak(buf);
  sdpo::OptimizerOptions oo;
  oo.gradient_accumulation = g_acc;
  oo.learning_rate = learning_rate;
  sdpo::Optimizer optimizer(model.trainable_parameters(), oo);
  sdpo::UpdateContext ctx{model, *sampler, optimizer, gen, 1, batch, nullptr};
  auto metrics = sdpo::run_update_phase(algorithm, buf, ctx);

  const auto ts = sampler->timesteps(T);
  std::map<std::int64_t, std::int64_t> step_of;
  for (std::int64_t k = 0; k < T; ++k) step_of[ts[static_cast<size_t>(k)]] = k;
  Schedule s;
  for (const auto& t : model.calls) {
    const std::int64_t b = t.size(0) / 2;
    std::vector<std::int64_t> row;
    for (std::int64_t i = 0; i < b; ++i) {
      EXPECT_EQ(t[i].item<std::int64_t>(), t[i + b].item<std::int64_t>()) << "a and b train the same step";
      row.push_back(step_of.at(t[i].item<std::int64_t>()));
    }
    s.steps.push_back(row);
  }
  s.updates = optimizer.updates();
  s.loss = metrics.at("loss");
  EXPECT_EQ(metrics.at("updates"), static_cast<double>(s.updates));
  return s;
}

TEST(SDPOVariants, ReturnsNoneIsGammaZero) {
  EXPECT_DOUBLE_EQ(make_sdpo("{}")->spec().gamma, 0.99);
  EXPECT_DOUBLE_EQ(make_sdpo(R"({"gamma": 0.5})")->spec().gamma, 0.5);
  EXPECT_DOUBLE_EQ(make_sdpo(R"({"returns": "none"})")->spec().gamma, 0.0);
  // gamma only applies to discounted returns: "none" ignores it (quickstart.json sets gamma).
  EXPECT_DOUBLE_EQ(make_sdpo(R"({"returns": "none", "gamma": 0.99})")->spec().gamma, 0.0);
  // R = (1, 2, 3): discounted with gamma 0.5 gives G = (1 + 0.5 (2 + 0.5 3), 2 + 0.5 3, 3) =
  // (2.75, 3.5, 3); "none" (gamma 0) gives G = R.
  auto r = at::tensor({1.0, 2.0, 3.0}, at::kDouble).view({1, 3});
  auto g = sdpo::returns_discounted(r, make_sdpo(R"({"returns": "discounted", "gamma": 0.5})")->spec().gamma);
  sdpo::test::expect_close(g, at::tensor({2.75, 3.5, 3.0}, at::kDouble).view({1, 3}), 0, 1e-15, "gamma 0.5");
  auto none = sdpo::returns_discounted(r, make_sdpo(R"({"returns": "none", "gamma": 0.5})")->spec().gamma);
  sdpo::test::expect_close(none, r, 0, 0, "none");
  auto zero = sdpo::returns_discounted(r, make_sdpo(R"({"gamma": 0})")->spec().gamma);
  sdpo::test::expect_close(zero, none, 0, 0, "gamma 0 = none");
}

TEST(SDPOVariants, UnknownChoicesAndDisagreeingFlagsNameThePath) {
  sdpo::test::load_plugins_once();
  auto expect_error = [](const std::string& options, const std::string& path, const std::string& text) {
    try {
      make_sdpo(options);
      ADD_FAILURE() << "expected a ManifestError for " << options;
    } catch (const sdpo::ManifestError& e) {
      EXPECT_EQ(e.file(), "variants.json");
      EXPECT_EQ(e.json_path(), path) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"weighting": "backward"})", "algorithm.options.weighting", "forward, reverse");
  expect_error(R"({"returns": "sparse"})", "algorithm.options.returns", "discounted, none");
  expect_error(R"({"update": "shuffled"})", "algorithm.options.update", "step_accumulated");
  expect_error(
      R"({"update": "stepwise_ordered", "shuffle_timestep": true})", "algorithm.options.shuffle_timestep",
      "disagrees with update 'stepwise_ordered'");
  expect_error(
      R"({"update": "step_shuffled", "shuffle_timestep": false})", "algorithm.options.shuffle_timestep",
      "disagrees with update 'step_shuffled'");
  // Agreeing spellings are accepted, and shuffle_timestep false alone (the legacy spelling).
  EXPECT_NO_THROW(make_sdpo(R"({"update": "step_shuffled", "shuffle_timestep": true})"));
  EXPECT_NO_THROW(make_sdpo(R"({"update": "stepwise_ordered", "shuffle_timestep": false})"));
  EXPECT_NO_THROW(make_sdpo(R"({"update": "step_accumulated", "shuffle_timestep": false})"));
  EXPECT_NO_THROW(make_sdpo(R"({"shuffle_timestep": false})"));
}

// The step that backward `call` trained for the i-th pair of its micro-batch.
std::int64_t step_at(const Schedule& s, std::int64_t call, std::int64_t i) {
  return s.steps[static_cast<size_t>(call)][static_cast<size_t>(i)];
}

TEST(SDPOVariants, StepwiseOrderedVisitsStepsInOrderWithTheSameUpdates) {
  const std::int64_t pairs = 4, T = 3, batch = 2, n_mb = 2;
  for (const char* options : {R"({"update": "stepwise_ordered"})", R"({"shuffle_timestep": false})"}) {
    SCOPED_TRACE(options);
    auto ordered = run_update(*make_sdpo(options), pairs, T, batch, 1);
    ASSERT_EQ(ordered.steps.size(), static_cast<size_t>(T * n_mb));
    // Position j is step j for every pair: steps 0, 0, 1, 1, 2, 2 over the six backwards.
    for (std::int64_t j = 0; j < T; ++j) {
      for (std::int64_t m = 0; m < n_mb; ++m) {
        EXPECT_EQ(ordered.steps[static_cast<size_t>(j * n_mb + m)], std::vector<std::int64_t>(batch, j));
      }
    }
    EXPECT_EQ(ordered.updates, T * n_mb) << "7.5: T * n_mb / G_acc updates";
  }
  auto shuffled = run_update(*make_sdpo("{}"), pairs, T, batch, 1);
  ASSERT_EQ(shuffled.steps.size(), static_cast<size_t>(T * n_mb));
  EXPECT_EQ(shuffled.updates, T * n_mb) << "stepwise_ordered and step_shuffled make the same number of updates";
  // Every pair still trains each step once, now in its own shuffled order.
  bool any_out_of_order = false;
  for (std::int64_t m = 0; m < n_mb; ++m) {
    for (std::int64_t i = 0; i < batch; ++i) {
      std::set<std::int64_t> seen;
      for (std::int64_t j = 0; j < T; ++j) {
        const auto k = step_at(shuffled, j * n_mb + m, i);
        seen.insert(k);
        any_out_of_order = any_out_of_order || k != j;
      }
      EXPECT_EQ(seen.size(), static_cast<size_t>(T));
    }
  }
  EXPECT_TRUE(any_out_of_order) << "step_shuffled permutes the steps";
}

TEST(SDPOVariants, StepAccumulatedMakesTTimesFewerUpdatesMiniBatchOuter) {
  const std::int64_t pairs = 4, T = 3, batch = 2, n_mb = 2;
  for (std::int64_t g_acc : {1, 2}) {
    SCOPED_TRACE(g_acc);
    auto shuffled = run_update(*make_sdpo(R"({"update": "step_shuffled"})"), pairs, T, batch, g_acc);
    auto accumulated = run_update(*make_sdpo(R"({"update": "step_accumulated"})"), pairs, T, batch, g_acc);
    EXPECT_EQ(shuffled.updates, T * n_mb / g_acc);
    EXPECT_EQ(accumulated.updates, n_mb / g_acc) << "9.5: accumulation G_acc * T";
    EXPECT_EQ(shuffled.updates, T * accumulated.updates);
    // Same backwards, regrouped: mini-batch m's T positions are the consecutive calls m*T .. m*T+T-1,
    // and each pair covers every step there.
    ASSERT_EQ(accumulated.steps.size(), static_cast<size_t>(T * n_mb));
    for (std::int64_t m = 0; m < n_mb; ++m) {
      for (std::int64_t i = 0; i < batch; ++i) {
        std::set<std::int64_t> seen;
        for (std::int64_t j = 0; j < T; ++j) seen.insert(step_at(accumulated, m * T + j, i));
        EXPECT_EQ(seen.size(), static_cast<size_t>(T)) << "mini-batch " << m << " pair " << i;
      }
    }
  }
  // Without the step shuffle the inner loop runs 0..T-1 within each mini-batch.
  auto ordered =
      run_update(*make_sdpo(R"({"update": "step_accumulated", "shuffle_timestep": false})"), pairs, T, batch, 1);
  for (std::int64_t m = 0; m < n_mb; ++m) {
    for (std::int64_t j = 0; j < T; ++j) {
      EXPECT_EQ(ordered.steps[static_cast<size_t>(m * T + j)], std::vector<std::int64_t>(batch, j));
    }
  }
  EXPECT_EQ(ordered.updates, n_mb);
}

// The plugin applies the weighting it is given: with learning rate 0 the model never changes, so
// every backward sees rho_a - rho_b = 0.2 (old log-probs of the a rows lowered by 0.2) and
// dA_k = k + 1 at step k of T = 3. No clipping, lambda = 0.5, each (pair, step) trained once in
// equal micro-batches, so the logged loss is mean_k (w_k 0.2 - (k + 1))^2:
//   forward w = (1, 0.5, 0.25): (0.64 + 3.61 + 8.7025) / 3 = 4.3175
//   reverse w = (0.25, 0.5, 1): (0.9025 + 3.61 + 7.84) / 3 = 4.1175
TEST(SDPOVariants, WeightingReachesTheLoss) {
  auto tweak = [](sdpo::RolloutBuffer& buf) {
    const std::int64_t pairs = buf.groups();
    buf.log_probs = buf.log_probs.clone();
    buf.log_probs.slice(0, 0, pairs).sub_(0.2);
    auto half = at::tensor({0.5f, 1.0f, 1.5f}).view({1, 3}).expand({pairs, 3});
    buf.advantages = at::cat({half, -half}).contiguous();
  };
  for (auto [weighting, expected] : {std::pair<const char*, double>{"forward", 4.3175}, {"reverse", 4.1175}}) {
    SCOPED_TRACE(weighting);
    auto options = std::string(R"({"lambda": 0.5, "clip_range": 0, "weighting": ")") + weighting + "\"}";
    for (const char* update : {"step_shuffled", "step_accumulated"}) {
      auto with_update = options.substr(0, options.size() - 1) + R"(, "update": ")" + update + "\"}";
      auto s = run_update(*make_sdpo(with_update), 4, 3, 2, 1, tweak, 0.0);
      EXPECT_NEAR(s.loss, expected, 1e-4) << update;
    }
  }
}

}  // namespace
