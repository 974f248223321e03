#pragma once
// Comparing two finished run folders for the exact-resume tests (resume_test.cpp,
// experiment_test.cpp): the final checkpoint's weights, optimizer and RNG state bit for bit, the
// normalizer state and counters, and every logged curve except the clocks (is_clock()).

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "sdpo/core/safetensors.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"

namespace sdpo::test {

/// Equal length and equal bits (NaN rows compare equal to NaN rows).
inline bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

/// Curves that measure time (wall_seconds, device_seconds, the per-phase time_<phase>): they
/// differ between any two runs, resumed or not.
inline bool is_clock(const std::string& metric) {
  const std::string suffix = "_seconds";
  return metric.rfind("time_", 0) == 0 ||
         (metric.size() >= suffix.size() && metric.compare(metric.size() - suffix.size(), suffix.size(), suffix) == 0);
}

/// Every tensor of two safetensors files equal, bit for bit.
inline void expect_same_tensors(const std::string& a, const std::string& b) {
  auto ta = safetensors_load(a), tb = safetensors_load(b);
  ASSERT_EQ(ta.size(), tb.size()) << a;
  for (const auto& [k, v] : ta) {
    ASSERT_TRUE(tb.count(k)) << b << " lacks " << k;
    EXPECT_TRUE(v.equal(tb.at(k))) << a << ": " << k << " differs (bit-exact expected)";
  }
}

/// Runs `a` and `b` (folders) end alike after `epochs` epochs, up to the clocks.
inline void expect_same_run(const std::string& a, const std::string& b, std::int64_t epochs) {
  const auto ck_a = checkpoint_dir(a, epochs), ck_b = checkpoint_dir(b, epochs);
  expect_same_tensors(ck_a + "/model.safetensors", ck_b + "/model.safetensors");
  expect_same_tensors(ck_a + "/optimizer.safetensors", ck_b + "/optimizer.safetensors");
  expect_same_tensors(ck_a + "/trainer.safetensors", ck_b + "/trainer.safetensors");  // rng_state
  StringMap meta_a, meta_b;
  safetensors_load(ck_a + "/trainer.safetensors", &meta_a);
  safetensors_load(ck_b + "/trainer.safetensors", &meta_b);
  const auto state_a = boost::json::parse(meta_a.at("state")).as_object();
  const auto state_b = boost::json::parse(meta_b.at("state")).as_object();
  EXPECT_EQ(state_a.at("normalizer"), state_b.at("normalizer")) << "normalizer state";
  for (const char* k : {"epoch", "samples", "reward_queries"}) EXPECT_EQ(state_a.at(k), state_b.at(k)) << k;

  auto fa = RunFile::open(a + "/run.h5", false), fb = RunFile::open(b + "/run.h5", false);
  const auto groups = fa.curve_groups();
  ASSERT_EQ(groups, fb.curve_groups());
  EXPECT_NE(std::find(groups.begin(), groups.end(), "train"), groups.end());
  for (const auto& g : groups) {
    const auto metrics = fa.metrics(g);
    ASSERT_EQ(metrics, fb.metrics(g)) << g;
    for (const auto& metric : metrics) {
      const auto ca = fa.read_curve(g, metric), cb = fb.read_curve(g, metric);
      if (is_clock(metric)) {
        EXPECT_EQ(ca.size(), cb.size()) << g << "/" << metric;
        continue;
      }
      EXPECT_TRUE(same_bits(ca, cb)) << g << "/" << metric << " differs";
    }
  }
  EXPECT_EQ(fa.read_curve("train", "epoch").size(), static_cast<std::size_t>(epochs));
}

}  // namespace sdpo::test
