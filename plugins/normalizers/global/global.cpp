// Normalizer `global`: the code path with tracking disabled (research/algorithms.md 4.2 and 9.3):
// one mean and population std over all (N, T) returns of the current epoch, ε = 1e-8, no history.
#include <ATen/ATen.h>

#include <boost/json.hpp>
#include <cmath>

#include "sdpo/core/normalizer.h"
#include "sdpo/core/plugin.h"

namespace {

struct GlobalOptions {
  double std_eps = 1e-8;

  static GlobalOptions read(sdpo::OptionReader& r) {
    GlobalOptions o;
    o.std_eps = r.number("std_eps", o.std_eps, 0.0, 1.0, "added to the standard deviation");
    return o;
  }
};

class GlobalNormalizer final : public sdpo::Normalizer {
 public:
  explicit GlobalNormalizer(const GlobalOptions& o) : o_(o) {}

  at::Tensor normalize(const at::Tensor& returns, const std::vector<std::string>& prompts) override {
    TORCH_CHECK(
        returns.dim() == 2 && returns.size(0) == static_cast<int64_t>(prompts.size()),
        "normalizer 'global': returns must be (N, T) with N = number of prompts (", prompts.size(), "), got ",
        returns.sizes());
    // Statistics in float64 like numpy in the reference; population std (ddof 0).
    auto g = returns.detach().to(at::kDouble);
    auto mu = g.mean();
    auto sigma = (g - mu).pow(2).mean().sqrt();
    return ((g - mu) / (sigma + o_.std_eps)).to(returns.scalar_type());
  }

  // No running statistics: the state is an empty object.
  boost::json::value state() const override { return boost::json::object{}; }

  void load_state(const boost::json::value& state) override {
    TORCH_CHECK(
        state.is_object() && state.as_object().empty(),
        "normalizer 'global': has no running state; expected an empty object");
  }

 private:
  GlobalOptions o_;
};

void register_plugin(sdpo::Registry& r) {
  r.add<sdpo::Normalizer, GlobalOptions>(
      "global", "mean/std over the whole batch of returns, no history (tracking disabled)", &GlobalOptions::read,
      [](const GlobalOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<GlobalNormalizer>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("global", "0.1.0", register_plugin)
