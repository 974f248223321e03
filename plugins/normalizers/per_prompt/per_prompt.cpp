// Normalizer `per_prompt`: DDPO's PerPromptStatTracker (research/algorithms.md 4.2) extended to
// (N, T) returns as the per-prompt ablation of 9.3 (a PROPOSAL): one running buffer per prompt,
// persistent across epochs, pooling all T returns of each trajectory. `buffer_size` and
// `min_count` count trajectories; the pooled buffer holds buffer_size·T values and needs
// min_count·T of them (9.3: DDPO's maxlen applied to flattened values would keep less than one
// trajectory). With identical columns (a sparse final reward copied along the trajectory) this is
// exactly DDPO's tracker on the scalar rewards. Until a buffer is full enough, the fallback is the
// mean and std over all N·T values of the batch.
#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <cmath>
#include <deque>
#include <map>

#include "sdpo/core/normalizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/math/statistics.h"

namespace {

struct PerPromptOptions {
  std::int64_t buffer_size = 32;
  std::int64_t min_count = 16;
  double std_eps = 1e-6;

  static PerPromptOptions read(sdpo::OptionReader& r) {
    PerPromptOptions o;
    o.buffer_size =
        r.integer("buffer_size", o.buffer_size, 1, 1 << 20, "trajectories kept per prompt (x T pooled values)");
    o.min_count = r.integer(
        "min_count", o.min_count, 0, 1 << 20,
        "trajectories needed before a prompt's statistics are used (x T pooled values)");
    o.std_eps = r.number("std_eps", o.std_eps, 0.0, 1.0, "added to the standard deviation");
    if (o.min_count > o.buffer_size) r.fail("min_count", "expected min_count <= buffer_size");
    return o;
  }
};

class PerPromptNormalizer final : public sdpo::Normalizer {
 public:
  explicit PerPromptNormalizer(const PerPromptOptions& o) : o_(o) {}

  at::Tensor normalize(const at::Tensor& returns, const std::vector<std::string>& prompts) override {
    TORCH_CHECK(
        returns.dim() == 2 && returns.size(0) == static_cast<int64_t>(prompts.size()),
        "normalizer 'per_prompt': returns must be (N, T) with N = number of prompts (", prompts.size(), "), got ",
        returns.sizes());
    auto g = returns.detach().to(at::kDouble).cpu().contiguous();
    const int64_t n = g.size(0), t = g.size(1);
    auto acc = g.accessor<double, 2>();
    auto adv = at::empty_like(g);
    auto out = adv.accessor<double, 2>();

    // Fallback: all N·T values of the batch (9.3), i.e. all gathered rewards of the epoch (4.2).
    const double* first = g.data_ptr<double>();
    const auto batch = sdpo::population_mean_std(std::vector<double>(first, first + n * t));
    const auto capacity = static_cast<size_t>(o_.buffer_size * t);
    const auto needed = static_cast<size_t>(o_.min_count * t);

    std::map<std::string, std::vector<int64_t>> rows;
    for (int64_t i = 0; i < n; ++i) rows[prompts[static_cast<size_t>(i)]].push_back(i);
    for (const auto& [prompt, idx] : rows) {
      // 4.2: the buffer is updated before its statistics are read; whole trajectories are
      // appended in row order, so the oldest trajectories leave first.
      auto& buf = buffers_[prompt];
      for (int64_t i : idx) {
        for (int64_t k = 0; k < t; ++k) buf.push_back(acc[i][k]);
      }
      while (buf.size() > capacity) buf.pop_front();
      auto [mu, sigma] = buf.size() < needed ? batch : sdpo::population_mean_std(buf);
      for (int64_t i : idx) {
        for (int64_t k = 0; k < t; ++k) out[i][k] = (acc[i][k] - mu) / (sigma + o_.std_eps);
      }
    }
    return adv.to(returns.scalar_type()).to(returns.device());
  }

  boost::json::value state() const override {
    boost::json::object s;
    for (const auto& [prompt, buf] : buffers_) {
      boost::json::array a;
      for (double x : buf) a.push_back(x);
      s[prompt] = std::move(a);
    }
    return boost::json::object{{"buffers", std::move(s)}};
  }

  void load_state(const boost::json::value& state) override {
    buffers_.clear();
    for (const auto& p : state.at("buffers").as_object()) {
      auto& buf = buffers_[std::string(p.key())];
      for (const auto& x : p.value().as_array()) buf.push_back(x.to_number<double>());
    }
  }

 private:
  PerPromptOptions o_;
  std::map<std::string, std::deque<double>> buffers_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Normalizer, PerPromptOptions>(
      "per_prompt", "running mean/std per prompt pooling all steps, batch statistics until min_count (DDPO)",
      &PerPromptOptions::read,
      [](const PerPromptOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<PerPromptNormalizer>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("per_prompt", "0.1.0", register_plugin)
