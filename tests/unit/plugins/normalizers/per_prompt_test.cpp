// The per-prompt running normalizer (research/algorithms.md 9.3, DDPO's PerPromptStatTracker of
// 4.2) by hand, and against a scalar re-implementation of DDPO's tracker.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <cmath>
#include <deque>
#include <map>

#include "sdpo/core/error.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/registry.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::Normalizer> make_tracker(int64_t buffer, int64_t min_count) {
  sdpo::ComponentConfig cfg{
      "normalizer", "per_prompt", boost::json::object{{"buffer_size", buffer}, {"min_count", min_count}}, "<test>",
      "normalizer.options"};
  return sdpo::Registry::global().create<sdpo::Normalizer>(cfg);
}

at::Tensor rows(std::vector<std::vector<double>> v) {
  std::vector<at::Tensor> r;
  for (auto& x : v) r.push_back(at::tensor(x, at::kDouble));
  return at::stack(r);
}

// DDPO's ddpo_pytorch/stat_tracking.py::PerPromptStatTracker on scalar rewards.
class ScalarTracker {
 public:
  ScalarTracker(size_t buffer, size_t min_count) : buffer_(buffer), min_count_(min_count) {}
  std::vector<double> update(const std::vector<std::string>& prompts, const std::vector<double>& rewards) {
    auto stats = [](const std::vector<double>& v) {
      double m = 0, s = 0;
      for (double x : v) m += x;
      m /= static_cast<double>(v.size());
      for (double x : v) s += (x - m) * (x - m);
      return std::make_pair(m, std::sqrt(s / static_cast<double>(v.size())));
    };
    std::vector<double> out(rewards.size());
    std::map<std::string, bool> seen;
    for (const auto& p : prompts) {
      if (seen[p]) continue;
      seen[p] = true;
      auto& d = deques_[p];
      std::vector<size_t> idx;
      for (size_t i = 0; i < prompts.size(); ++i) {
        if (prompts[i] == p) {
          idx.push_back(i);
          d.push_back(rewards[i]);
          if (d.size() > buffer_) d.pop_front();
        }
      }
      auto [mu, sigma] = d.size() < min_count_ ? stats(rewards) : stats(std::vector<double>(d.begin(), d.end()));
      for (size_t i : idx) out[i] = (rewards[i] - mu) / (sigma + 1e-6);
    }
    return out;
  }

 private:
  size_t buffer_, min_count_;
  std::map<std::string, std::deque<double>> deques_;
};

TEST(PerPrompt, PoolsAllStepsOfAPrompt) {
  // "p": {1, 3} -> mean 2, std 1; "q": {10, 10} -> std 0, advantages 0.
  auto t = make_tracker(2, 1);
  auto adv = t->normalize(rows({{1, 3}, {10, 10}}), {"p", "q"});
  sdpo::test::expect_close(adv, rows({{-1 / (1 + 1e-6), 1 / (1 + 1e-6)}, {0, 0}}), 1e-12, 1e-12);
}

TEST(PerPrompt, FallsBackToAllBatchValuesBelowMinCount) {
  // min_count 2 trajectories (= 4 values at T = 2); each prompt has 1 trajectory: the fallback is
  // mean 4 and population std sqrt(5) over the 4 values {1, 3, 5, 7}.
  auto t = make_tracker(4, 2);
  auto adv = t->normalize(rows({{1, 3}, {5, 7}}), {"p", "q"});
  const double s = std::sqrt(5.0) + 1e-6;
  sdpo::test::expect_close(adv, rows({{-3 / s, -1 / s}, {1 / s, 3 / s}}), 1e-12, 1e-12, "epoch 1");
  // Epoch 2: "p" now holds 2 trajectories {1, 3, 1, 3}: mean 2, std 1, its own statistics.
  auto adv2 = t->normalize(rows({{1, 3}, {50, 70}}), {"p", "q"});
  EXPECT_NEAR(adv2[0][0].item<double>(), -1 / (1 + 1e-6), 1e-12);
  EXPECT_NEAR(adv2[0][1].item<double>(), 1 / (1 + 1e-6), 1e-12);
  // "q" still has 2 trajectories {5, 7, 50, 70} = min_count: its own statistics too.
  const double m = (5 + 7 + 50 + 70) / 4.0;
  const double sd = std::sqrt(((5 - m) * (5 - m) + (7 - m) * (7 - m) + (50 - m) * (50 - m) + (70 - m) * (70 - m)) / 4);
  EXPECT_NEAR(adv2[1][0].item<double>(), (50 - m) / (sd + 1e-6), 1e-9);
}

TEST(PerPrompt, BufferKeepsTheNewestWholeTrajectories) {
  // buffer 2 trajectories (4 values): after [0, 2], [10, 12] and then [20, 22] the buffer holds
  // {10, 12, 20, 22}: mean 16, population std sqrt(26).
  auto t = make_tracker(2, 2);
  t->normalize(rows({{0, 2}, {10, 12}}), {"p", "p"});
  auto adv = t->normalize(rows({{20, 22}}), {"p"});
  const double s = std::sqrt(26.0) + 1e-6;
  sdpo::test::expect_close(adv, rows({{4 / s, 6 / s}}), 1e-12, 1e-12);
  auto state = t->state().at("buffers").at("p").as_array();
  EXPECT_EQ(state.size(), 4u);
}

TEST(PerPrompt, EqualsTheScalarTrackerWhenColumnsAreIdentical) {
  // DDPO's setting: a final reward copied along T steps. Buffer 3, min_count 2, several epochs
  // with unequal prompt counts so that the fallback, the buffer limit and the own statistics all occur.
  const int64_t T = 5;
  auto tracker = make_tracker(3, 2);
  ScalarTracker scalar(3, 2);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const std::vector<std::vector<std::string>> epochs{
      {"a", "b", "a", "c"}, {"a", "b", "b", "c", "a"}, {"c", "a", "b"}, {"a", "a", "a", "b", "d"}};
  for (size_t e = 0; e < epochs.size(); ++e) {
    const auto& prompts = epochs[e];
    auto r = at::randn({static_cast<int64_t>(prompts.size())}, gen, at::kDouble);
    std::vector<double> rv(r.data_ptr<double>(), r.data_ptr<double>() + r.numel());
    auto expected = at::tensor(scalar.update(prompts, rv), at::kDouble).view({-1, 1}).expand({-1, T});
    auto adv = tracker->normalize(r.view({-1, 1}).expand({-1, T}).contiguous(), prompts);
    sdpo::test::expect_close(adv, expected, 1e-9, 1e-12, "epoch " + std::to_string(e));
  }
}

TEST(PerPrompt, StateRoundTripGivesSameAdvantages) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  std::vector<std::string> prompts{"x", "y", "x", "x"};
  auto a = make_tracker(4, 2);
  a->normalize(at::randn({4, 3}, gen, at::kDouble), prompts);
  auto b = make_tracker(4, 2);
  b->load_state(boost::json::parse(boost::json::serialize(a->state())));
  auto r2 = at::randn({4, 3}, gen, at::kDouble);
  sdpo::test::expect_close(b->normalize(r2, prompts), a->normalize(r2, prompts), 0, 0, "restored tracker");
}

TEST(PerPrompt, RejectsMinCountAboveBuffer) { EXPECT_THROW(make_tracker(4, 8), sdpo::ManifestError); }

}  // namespace
