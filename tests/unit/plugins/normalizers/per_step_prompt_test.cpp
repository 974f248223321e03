// The per-(prompt, step) running normalizer against the reference stat tracker's outputs.
#include <ATen/ATen.h>

#include <boost/json.hpp>

#include "sdpo/core/normalizer.h"
#include "sdpo/core/registry.h"
#include "support/test_support.h"

namespace {

using sdpo::test::golden;
using sdpo::test::json_tensor;

std::shared_ptr<sdpo::Normalizer> make_tracker(int64_t buffer, int64_t min_count) {
  sdpo::ComponentConfig cfg{
      "normalizer", "per_step_prompt", boost::json::object{{"buffer_size", buffer}, {"min_count", min_count}}, "<test>",
      "normalizer.options"};
  return sdpo::Registry::global().create<sdpo::Normalizer>(cfg);
}

std::vector<std::string> strings(const boost::json::value& v) {
  std::vector<std::string> out;
  for (const auto& s : v.as_array()) out.emplace_back(s.as_string());
  return out;
}

TEST(PerStepPrompt, MatchesReferenceTrackerOverEpochs) {
  const auto& g = golden().at("tracker");
  auto tracker = make_tracker(g.at("buffer_size").to_number<int64_t>(), g.at("min_count").to_number<int64_t>());
  int epoch = 0;
  for (const auto& e : g.at("epochs").as_array()) {
    auto adv = tracker->normalize(json_tensor(e.at("returns")), strings(e.at("prompts")));
    sdpo::test::expect_close(adv, json_tensor(e.at("advantages")), 1e-5, 1e-7, "epoch " + std::to_string(epoch++));
  }
}

TEST(PerStepPrompt, StateRoundTripGivesSameAdvantages) {
  const auto& g = golden().at("tracker");
  auto a = make_tracker(4, 3);
  const auto& epochs = g.at("epochs").as_array();
  a->normalize(json_tensor(epochs[0].at("returns")), strings(epochs[0].at("prompts")));
  auto b = make_tracker(4, 3);
  b->load_state(boost::json::parse(boost::json::serialize(a->state())));
  auto ra = a->normalize(json_tensor(epochs[1].at("returns")), strings(epochs[1].at("prompts")));
  auto rb = b->normalize(json_tensor(epochs[1].at("returns")), strings(epochs[1].at("prompts")));
  sdpo::test::expect_close(ra, rb, 0, 0, "restored tracker");
}

TEST(PerStepPrompt, FallsBackToBatchStatisticsBelowMinCount) {
  // Buffer of prompt "x" holds 1 value < min_count 2: batch mean 2, population std 1 at that step.
  auto t = make_tracker(4, 2);
  auto adv = t->normalize(at::tensor({1.0, 3.0}).view({2, 1}), {"x", "y"});
  sdpo::test::expect_close(adv, at::tensor({-1.0, 1.0}).view({2, 1}) / (1.0 + 1e-6), 1e-9, 1e-12);
}

TEST(PerStepPrompt, BufferKeepsOnlyTheNewestValues) {
  // buffer 2, min_count 2: after epochs [0, 10] and [20] the buffer of "p" is {10, 20}:
  // mean 15, std 5, so 20 -> (20 - 15) / 5 = 1.
  auto t = make_tracker(2, 2);
  t->normalize(at::tensor({0.0, 10.0}).view({2, 1}), {"p", "p"});
  auto adv = t->normalize(at::tensor({20.0}).view({1, 1}), {"p"});
  EXPECT_NEAR(adv.item<double>(), 5.0 / (5.0 + 1e-6), 1e-9);
}

TEST(PerStepPrompt, RejectsMinCountAboveBuffer) { EXPECT_THROW(make_tracker(4, 8), sdpo::ManifestError); }

}  // namespace
