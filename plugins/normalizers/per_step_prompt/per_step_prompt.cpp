// Normalizer `per_step_prompt`: SDPO's PerStepPromptStatTracker (research/algorithms.md 7.3).
// One running buffer per (prompt, step index k), persistent across epochs; until a buffer holds
// `min_count` values, the batch statistics of step k (all prompts) are the fallback.
#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <cmath>
#include <deque>
#include <map>

#include "sdpo/core/normalizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/statistics.h"

namespace {

struct TrackerOptions {
  std::int64_t buffer_size = 32;
  std::int64_t min_count = 16;
  double std_eps = 1e-6;

  static TrackerOptions read(sdpo::OptionReader& r) {
    TrackerOptions o;
    o.buffer_size = r.integer("buffer_size", o.buffer_size, 1, 1 << 24, "values kept per (prompt, step)");
    o.min_count =
        r.integer("min_count", o.min_count, 0, 1 << 24, "values needed before a buffer's statistics are used");
    o.std_eps = r.number("std_eps", o.std_eps, 0.0, 1.0, "added to the standard deviation");
    if (o.min_count > o.buffer_size) r.fail("min_count", "expected min_count <= buffer_size");
    return o;
  }
};

class PerStepPromptNormalizer final : public sdpo::Normalizer {
 public:
  explicit PerStepPromptNormalizer(const TrackerOptions& o) : o_(o) {}

  at::Tensor normalize(const at::Tensor& returns, const std::vector<std::string>& prompts) override {
    TORCH_CHECK(
        returns.dim() == 2 && returns.size(0) == static_cast<int64_t>(prompts.size()),
        "normalizer 'per_step_prompt': returns must be (N, T) with N = number of prompts (", prompts.size(), "), got ",
        returns.sizes());
    auto g = returns.detach().to(at::kDouble).cpu().contiguous();
    const int64_t n = g.size(0), t = g.size(1);
    auto acc = g.accessor<double, 2>();
    auto adv = at::empty_like(g);
    auto out = adv.accessor<double, 2>();

    // Batch statistics per step k: the fallback for young buffers.
    std::vector<std::pair<double, double>> batch(static_cast<size_t>(t));
    for (int64_t k = 0; k < t; ++k) {
      std::deque<double> col;
      for (int64_t i = 0; i < n; ++i) col.push_back(acc[i][k]);
      batch[static_cast<size_t>(k)] = sdpo::population_mean_std(col);
    }
    std::map<std::string, std::vector<int64_t>> rows;
    for (int64_t i = 0; i < n; ++i) rows[prompts[static_cast<size_t>(i)]].push_back(i);
    for (const auto& [prompt, idx] : rows) {
      for (int64_t k = 0; k < t; ++k) {
        // The buffer is updated before its statistics are read (reference order).
        auto& buf = buffers_[prompt][k];
        for (int64_t i : idx) {
          buf.push_back(acc[i][k]);
          while (static_cast<int64_t>(buf.size()) > o_.buffer_size) buf.pop_front();
        }
        const bool young = static_cast<int64_t>(buf.size()) < o_.min_count;
        auto [mu, sigma] = young ? batch[static_cast<size_t>(k)] : sdpo::population_mean_std(buf);
        for (int64_t i : idx) out[i][k] = (acc[i][k] - mu) / (sigma + o_.std_eps);
      }
    }
    return adv.to(returns.scalar_type()).to(returns.device());
  }

  boost::json::value state() const override {
    boost::json::object s;
    for (const auto& [prompt, steps] : buffers_) {
      boost::json::object per_step;
      for (const auto& [k, buf] : steps) {
        boost::json::array a;
        for (double x : buf) a.push_back(x);
        per_step[std::to_string(k)] = std::move(a);
      }
      s[prompt] = std::move(per_step);
    }
    return boost::json::object{{"buffers", std::move(s)}};
  }

  void load_state(const boost::json::value& state) override {
    buffers_.clear();
    const auto& b = state.at("buffers").as_object();
    for (const auto& p : b) {
      for (const auto& ks : p.value().as_object()) {
        auto& buf = buffers_[std::string(p.key())][std::stoll(std::string(ks.key()))];
        for (const auto& x : ks.value().as_array()) buf.push_back(x.to_number<double>());
      }
    }
  }

 private:
  TrackerOptions o_;
  std::map<std::string, std::map<int64_t, std::deque<double>>> buffers_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Normalizer, TrackerOptions>(
      "per_step_prompt", "running mean/std per (prompt, step), batch statistics until min_count (SDPO)",
      &TrackerOptions::read, [](const TrackerOptions& o, const sdpo::ComponentConfig&) {
        return std::make_shared<PerStepPromptNormalizer>(o);
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("per_step_prompt", "0.1.0", register_plugin)
