// Conformance suites, one per component kind (diffusers' SchedulerCommonTest is the model): every
// registered sampler, reward, dense-reward predictor and normalizer must pass its kind's suite.
// Test fixtures (names starting with "fixture_") are excluded.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "sdpo/core/dense_reward.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/sampler.h"
#include "support/test_support.h"
#include "support/tiny_clip.h"
#include "support/tiny_imagereward.h"

namespace {

namespace json = boost::json;

// The aesthetic reward's files at toy size, written once per process: a tiny CLIPModel folder
// (image size 32, the suite's image size) and a head for its 16-wide features.
const std::pair<std::string, std::string>& tiny_aesthetic_files() {
  static const std::pair<std::string, std::string> files = [] {
    const std::string dir = sdpo::test::temp_dir("conformance_aesthetic");
    sdpo::test::write_tiny_clip(dir + "/clip", sdpo::test::TinyCLIPSpec{}, 7);
    sdpo::test::write_aesthetic_head(dir + "/head.safetensors", sdpo::test::TinyCLIPSpec{}.projection, 8);
    return std::make_pair(dir + "/clip", dir + "/head.safetensors");
  }();
  return files;
}

// The pickscore and hpsv2 rewards' files at toy size, written once per process: a tiny CLIPModel
// folder with its tokenizer files, and the same kind of weights in open_clip's naming with an
// open_clip model config (tests/support/tiny_clip.h).
const std::string& tiny_pickscore_dir() {
  static const std::string dir = [] {
    const std::string d = sdpo::test::temp_dir("conformance_pickscore") + "/PickScore_v1";
    sdpo::test::write_tiny_clip(d, sdpo::test::TinyCLIPSpec{}, 9);
    return d;
  }();
  return dir;
}
const std::string& tiny_hpsv2_dir() {
  static const std::string dir = [] {
    const std::string d = sdpo::test::temp_dir("conformance_hpsv2");
    sdpo::test::write_tiny_hpsv2(d, sdpo::test::TinyCLIPSpec{}, 10);
    return d;
  }();
  return dir;
}

// The imagereward reward's folder at toy size, written once per process (tests/support/tiny_imagereward.h).
const std::string& tiny_imagereward_dir() {
  static const std::string dir = [] {
    const std::string d = sdpo::test::temp_dir("conformance_imagereward");
    sdpo::test::write_tiny_imagereward(d, sdpo::test::TinyImageRewardSpec{}, 11);
    return d;
  }();
  return dir;
}

// Options a component needs to be built in a test (weights the tests ship or create).
json::object test_options(const std::string& kind, const std::string& name) {
  if (kind == "reward" && name == "shape_alignment") {
    return {{"checkpoint", std::string(SDPO_SOURCE_DIR) + "/experiments/assets/shape_classifier.safetensors"}};
  }
  if (kind == "reward" && name == "aesthetic") {
    return {{"clip", tiny_aesthetic_files().first}, {"head", tiny_aesthetic_files().second}};
  }
  if (kind == "reward" && name == "pickscore") return {{"clip", tiny_pickscore_dir()}};
  if (kind == "reward" && name == "hpsv2") {
    return {
        {"checkpoint", tiny_hpsv2_dir() + "/hpsv2.safetensors"},
        {"tokenizer", tiny_hpsv2_dir()},
        {"config", tiny_hpsv2_dir() + "/open_clip_config.json"}};
  }
  if (kind == "reward" && name == "imagereward") {
    return {{"path", tiny_imagereward_dir()}, {"vision_config", tiny_imagereward_dir() + "/vision_config.json"}};
  }
  if (kind == "reward" && name == "reward_server") {
    return {
        {"command",
         json::array{"/usr/bin/python3", std::string(SDPO_SOURCE_DIR) + "/rewards/reward_server/example_server.py"}}};
  }
  return {};
}

// Why a reward cannot be built on this machine ("" when it can): reward_server's reference server
// needs Debian's python3 with numpy (scripts/setup.sh installs both).
std::string unavailable(const std::string& name) {
  if (name != "reward_server") return "";
  static const bool ok = std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
  return ok ? "" : "/usr/bin/python3 with numpy is missing";
}

std::vector<std::string> names(const std::string& kind) {
  std::vector<std::string> out;
  for (const auto& n : sdpo::Registry::global().names(kind)) {
    if (n.rfind("fixture_", 0) != 0) out.push_back(n);
  }
  return out;
}

template <class Kind>
std::shared_ptr<Kind> build(const std::string& name, json::object options) {
  sdpo::ComponentConfig cfg{
      Kind::kKind, name, std::move(options), "<conformance>", std::string(Kind::kKind) + ".options"};
  return sdpo::Registry::global().create<Kind>(cfg);
}

// Option round trip: the defaults that `sdpo plugins` documents are accepted when given
// explicitly, and a component built from them behaves like one built from no options.
json::object documented_defaults(const std::string& kind, const std::string& name) {
  json::object o;
  for (const auto& d : sdpo::Registry::global().options(kind, name)) {
    if (d.type != "object") o[d.key] = d.default_value;
  }
  for (const auto& kv : test_options(kind, name)) o[kv.key()] = kv.value();
  return o;
}

at::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

TEST(SamplerConformance, EverySamplerPassesTheSuite) {
  auto all = names("sampler");
  ASSERT_FALSE(all.empty());
  for (const auto& name : all) {
    SCOPED_TRACE("sampler " + name);
    auto s = build<sdpo::Sampler>(name, test_options("sampler", name));
    auto s2 = build<sdpo::Sampler>(name, documented_defaults("sampler", name));
    for (int64_t n : {1, 2, 4, 8}) {
      auto ts = s->timesteps(n);
      ASSERT_EQ(static_cast<int64_t>(ts.size()), n);
      EXPECT_EQ(ts, s2->timesteps(n));
      for (size_t i = 1; i < ts.size(); ++i) EXPECT_LT(ts[i], ts[i - 1]) << "denoising order";
    }
    auto x = at::randn({3, 2, 4, 4}, seeded(1));
    auto out = at::randn({3, 2, 4, 4}, seeded(2));
    auto t = at::full({3}, s->timesteps(4)[1], at::kLong);
    auto g1 = seeded(5), g2 = seeded(5);
    auto a = s->step({out, t, x, 4, at::Tensor(), g1});
    auto b = s2->step({out, t, x, 4, at::Tensor(), g2});
    EXPECT_EQ(a.prev_sample.sizes(), x.sizes());
    EXPECT_EQ(a.pred_x0.sizes(), x.sizes());
    EXPECT_EQ(a.log_prob.sizes(), (at::IntArrayRef{3}));
    EXPECT_TRUE(a.prev_sample.equal(b.prev_sample)) << "determinism under a seed";
    // The log-prob returned while sampling equals the log-prob recomputed for the same transition.
    auto again = s->step({out, t, x, 4, a.prev_sample, c10::nullopt});
    sdpo::test::expect_close(again.log_prob, a.log_prob, 1e-5, 1e-6, "recomputed log-prob");
    sdpo::test::expect_close(again.pred_x0, a.pred_x0, 0, 0, "pred_x0");
    // Gradients reach the model output through the log-prob.
    auto o = out.clone().requires_grad_(true);
    s->step({o, t, x, 4, a.prev_sample, c10::nullopt}).log_prob.sum().backward();
    ASSERT_TRUE(o.grad().defined());
    EXPECT_GT(o.grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(RewardConformance, EveryRewardPassesTheSuite) {
  auto all = names("reward");
  ASSERT_FALSE(all.empty());
  auto images = at::rand({4, 3, 32, 32}, seeded(3));
  images[0].fill_(0.5);
  std::vector<std::string> prompts{"a red circle", "a blue square", "a green triangle", "two yellow circles"};
  for (const auto& name : all) {
    SCOPED_TRACE("reward " + name);
    if (!unavailable(name).empty()) {
      std::cout << "[ SKIPPED  ] reward " << name << ": " << unavailable(name) << "\n";
      continue;
    }
    auto r = build<sdpo::Reward>(name, test_options("reward", name));
    auto r2 = build<sdpo::Reward>(name, documented_defaults("reward", name));
    auto s = r->score(images, prompts);
    ASSERT_EQ(s.sizes(), (at::IntArrayRef{4}));
    EXPECT_TRUE(at::isfinite(s).all().item<bool>());
    sdpo::test::expect_close(r->score(images, prompts), s, 0, 0, "deterministic");
    sdpo::test::expect_close(r2->score(images, prompts), s, 1e-6, 1e-6, "documented defaults");
    // Scoring is per image: a sub-batch gets the same scores.
    sdpo::test::expect_close(
        r->score(images.slice(0, 1, 3), {prompts[1], prompts[2]}), s.slice(0, 1, 3), 1e-4, 1e-5, "batch independence");
  }
}

TEST(DenseRewardConformance, EveryPredictorPassesTheSuite) {
  auto all = names("dense_reward");
  ASSERT_FALSE(all.empty());
  const int64_t n = 3;
  for (int64_t T : {1, 2, 3, 5, 8, 50}) {
    auto x0 = at::randn({n, T, 2, 3, 3}, seeded(static_cast<uint64_t>(T)));
    for (const auto& name : all) {
      SCOPED_TRACE("dense_reward " + name + " T=" + std::to_string(T));
      auto d = build<sdpo::DenseRewardPredictor>(name, test_options("dense_reward", name));
      auto d2 = build<sdpo::DenseRewardPredictor>(name, documented_defaults("dense_reward", name));
      const int64_t queries = d->queries_per_trajectory(T);
      EXPECT_GE(queries, 1);
      EXPECT_LE(queries, T);
      EXPECT_EQ(d2->queries_per_trajectory(T), queries);
      auto g1 = seeded(9), g2 = seeded(9);
      auto plan = d->plan(x0, g1);
      auto plan2 = d2->plan(x0, g2);
      EXPECT_EQ(plan.num_steps, T);
      ASSERT_EQ(plan.steps.dim(), 2);
      EXPECT_EQ(plan.steps.scalar_type(), at::kLong);
      EXPECT_EQ(plan.steps.size(0), n);
      EXPECT_EQ(plan.steps.size(1), queries) << "queries_per_trajectory reports what plan() queries";
      EXPECT_TRUE(plan.steps.equal(plan2.steps)) << "determinism under a seed";
      EXPECT_TRUE((plan.steps >= 0).all().item<bool>() && (plan.steps < T).all().item<bool>());
      // The logged plan fields (run.h5 `similarities`, `anchor_step`) have their documented shapes.
      if (plan.similarities.defined()) {
        ASSERT_EQ(plan.similarities.sizes(), (at::IntArrayRef{n, plan.steps.size(1), T}));
        EXPECT_TRUE(at::isfinite(plan.similarities).all().item<bool>());
        // Cosine of each queried step to itself.
        auto self = plan.similarities.gather(2, plan.steps.unsqueeze(-1)).squeeze(-1);
        sdpo::test::expect_close(self, at::ones_like(self), 0, 1e-5, "self-similarity of the queried steps");
      }
      if (plan.anchor.defined()) {
        ASSERT_EQ(plan.anchor.sizes(), (at::IntArrayRef{n}));
        EXPECT_EQ(plan.anchor.scalar_type(), at::kLong);
        EXPECT_TRUE(plan.steps.eq(plan.anchor.unsqueeze(1)).any(1).all().item<bool>()) << "the anchor is queried";
      }
      auto q = at::randn({n, plan.steps.size(1)}, seeded(11));
      auto q_before = q.clone();
      auto dense = d->predict(plan, q);
      ASSERT_EQ(dense.sizes(), (at::IntArrayRef{n, T}));
      EXPECT_TRUE(at::isfinite(dense).all().item<bool>());
      EXPECT_TRUE(q.equal(q_before)) << "predict leaves the queried rewards unchanged";
      sdpo::test::expect_close(d2->predict(plan2, q), dense, 0, 0, "documented defaults");
      // Queried steps keep their exact rewards (the last query of a step wins).
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < plan.steps.size(1); ++j) {
          int64_t k = plan.steps[i][j].item<int64_t>();
          int64_t last = j;
          for (int64_t j2 = j + 1; j2 < plan.steps.size(1); ++j2) {
            if (plan.steps[i][j2].item<int64_t>() == k) last = j2;
          }
          EXPECT_FLOAT_EQ(dense[i][k].item<float>(), q[i][last].item<float>());
        }
      }
      // A query plan of the wrong width is refused.
      EXPECT_ANY_THROW(d->predict(plan, at::randn({n, plan.steps.size(1) + 1}, seeded(12))));
    }
  }
}

TEST(NormalizerConformance, EveryNormalizerPassesTheSuite) {
  auto all = names("normalizer");
  ASSERT_FALSE(all.empty());
  std::vector<std::string> prompts{"a", "b", "a", "c", "a", "b"};
  for (const auto& name : all) {
    SCOPED_TRACE("normalizer " + name);
    auto a = build<sdpo::Normalizer>(name, test_options("normalizer", name));
    auto r1 = at::randn({6, 4}, seeded(1));
    auto adv = a->normalize(r1, prompts);
    ASSERT_EQ(adv.sizes(), r1.sizes());
    EXPECT_TRUE(at::isfinite(adv).all().item<bool>());
    // State round trip: a restored normalizer continues exactly like the original.
    auto b = build<sdpo::Normalizer>(name, documented_defaults("normalizer", name));
    b->load_state(json::parse(json::serialize(a->state())));
    auto r2 = at::randn({6, 4}, seeded(2));
    sdpo::test::expect_close(b->normalize(r2, prompts), a->normalize(r2, prompts), 0, 0, "restored state");
  }
}

}  // namespace
