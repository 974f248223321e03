// Direction checks (issue 22): one update through each algorithm plugin's real update() on a
// hand-made buffer in which one member of every pair (or one half of the trajectories) is
// preferred. The model gives every stored transition parameters of its own (a bias selected by the
// row's one-hot conditioning and the timestep), so an update can raise one transition's
// log-probability without touching another's. Expected sign, for every algorithm and form: the
// log-probability of every transition of a preferred trajectory rises, and every transition of the
// others falls. A loss or an advantage of the wrong sign, or members a and b swapped, flips both.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/rollout_ops.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/update_loop.h"
#include "support/component_config.h"
#include "support/test_support.h"
#include "support/transition_bias_model.h"

namespace {

sdpo::ComponentConfig config(const std::string& kind, const std::string& name, const std::string& options) {
  return sdpo::test::component_config(kind, name, options, "direction.json");
}

struct Case {
  std::string algorithm;
  std::string options;
};

std::string label(const Case& c) { return c.algorithm + " " + c.options; }

// gtest prints the case by this (ctest lists it beside the test name).
void PrintTo(const Case& c, std::ostream* os) { *os << label(c); }

constexpr std::int64_t kGroups = 4;  // pairs, or DDPO's trajectories per sign
constexpr std::int64_t kSteps = 3;

// Every stored transition's log-probability under `model`: (N, T).
at::Tensor transition_log_probs(sdpo::Model& model, const sdpo::Sampler& sampler, const sdpo::RolloutBuffer& buf) {
  at::NoGradGuard no_grad;
  const std::int64_t n = buf.size();
  auto rows = at::arange(n, at::kLong);
  std::vector<at::Tensor> steps;
  for (std::int64_t k = 0; k < buf.num_steps; ++k)
    steps.push_back(sdpo::rollout_log_prob(model, sampler, buf, rows, at::full({n}, k, at::kLong)).to(at::kDouble));
  return at::stack(steps, 1);
}

// One update of `c` on 2 * kGroups trajectories of kSteps steps. Rows [0, kGroups) are preferred
// (advantage +1, final reward 1) and rows [kGroups, 2 kGroups) are not (-1, 0); for the paired
// algorithms they are members a and b of kGroups pairs. Returns the change of every transition's
// log-probability, (N, T).
at::Tensor log_prob_change(const Case& c) {
  sdpo::test::load_plugins_once();
  auto algorithm = sdpo::Registry::global().create<sdpo::Algorithm>(config("algorithm", c.algorithm, c.options));
  auto sampler = sdpo::Registry::global().create<sdpo::Sampler>(config("sampler", "ddim", "{}"));
  const std::int64_t n = 2 * kGroups;
  sdpo::test::TransitionBiasModel model(n), reference(n);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  sdpo::RolloutBuffer buf = sdpo::test::sampled_buffer(
      model, *sampler, n, kSteps, algorithm->spec().paired, algorithm->spec().shared_noise, gen);
  auto preferred = at::cat({at::ones({kGroups}), at::zeros({kGroups})});
  buf.final_rewards = preferred.clone();
  buf.advantages = (2 * preferred - 1).unsqueeze(1).repeat({1, kSteps});
  buf.returns = buf.advantages.clone();
  buf.dense_rewards = buf.advantages.clone();

  const at::Tensor before = transition_log_probs(model, *sampler, buf);
  sdpo::OptimizerOptions oo;
  oo.learning_rate = 1e-3;
  sdpo::Optimizer optimizer(model.trainable_parameters(), oo);
  sdpo::UpdateContext ctx{model, *sampler, optimizer, gen, 1, 2, &reference};
  sdpo::run_update_phase(*algorithm, buf, ctx);
  EXPECT_GT(optimizer.updates(), 0) << label(c);
  return transition_log_probs(model, *sampler, buf) - before;
}

class AlgorithmDirection : public ::testing::TestWithParam<Case> {};

TEST_P(AlgorithmDirection, PreferredTransitionsGainLogProbabilityOthersLose) {
  const at::Tensor change = log_prob_change(GetParam());
  for (std::int64_t i = 0; i < 2 * kGroups; ++i)
    for (std::int64_t k = 0; k < kSteps; ++k) {
      const double d = change[i][k].item<double>();
      if (i < kGroups)
        EXPECT_GT(d, 0.0) << label(GetParam()) << ": preferred row " << i << ", step " << k << " changed by " << d;
      else
        EXPECT_LT(d, 0.0) << label(GetParam()) << ": other row " << i << ", step " << k << " changed by " << d;
    }
}

INSTANTIATE_TEST_SUITE_P(
    EveryAlgorithmAndForm,
    AlgorithmDirection,
    ::testing::Values(
        Case{"sdpo", "{}"},
        Case{"sdpo", R"({"eta": 0.5})"},
        Case{"sdpo", R"({"update": "step_accumulated"})"},
        Case{"sdpo", R"({"returns": "none"})"},
        Case{"ddpo", R"({"estimator": "is"})"},
        Case{"ddpo", R"({"estimator": "sf"})"},
        Case{"rebel", R"({"form": "per_step"})"},
        Case{"rebel", R"({"form": "trajectory"})"},
        Case{"d3po", "{}"}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = info.param.algorithm + "_" + std::to_string(info.index);
      return name;
    });

}  // namespace
