#pragma once
// Interface kind `normalizer`: returns -> advantages, with running statistics that persist across
// epochs and are saved in checkpoints (research/algorithms.md 7.3, 9.3).
//
// Thread safety: not thread-safe (stateful).

#include <ATen/core/Tensor.h>

#include <boost/json/value.hpp>
#include <string>
#include <vector>

#include "sdpo/core/api.h"

namespace sdpo {

class SDPO_API Normalizer {
 public:
  static constexpr const char* kKind = "normalizer";
  virtual ~Normalizer() = default;

  /// returns: (N, T) float (all trajectories of the epoch, gathered); prompts: N strings.
  /// Updates the running statistics with this batch, then returns (N, T) advantages.
  virtual at::Tensor normalize(const at::Tensor& returns, const std::vector<std::string>& prompts) = 0;

  /// Serializable running state (for checkpoints); load_state() restores it exactly.
  virtual boost::json::value state() const = 0;
  virtual void load_state(const boost::json::value& state) = 0;
};

}  // namespace sdpo
