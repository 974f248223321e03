#pragma once
// Interface kind `algorithm`: declares what the rollout must contain and performs the parameter
// updates from a filled buffer (DESIGN.md section 3, trainer step 5).
//
// Thread safety: not thread-safe.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "sdpo/core/api.h"
#include "sdpo/core/rollout.h"

namespace sdpo {

class Model;
class Sampler;
class Optimizer;

/// What the trainer must collect for this algorithm.
struct RolloutSpec {
  bool paired = false;        ///< two trajectories per prompt
  bool shared_noise = false;  ///< the pair shares its initial noise x_T
  double gamma = 0.0;         ///< discount for returns over dense rewards; <= 0: returns = rewards
  /// Score only the decoded final sample x^(T) (DDPO, REBEL, D3PO: one query per trajectory)
  /// and copy that reward to every step; the manifest's dense_reward predictor is not used.
  bool final_image_reward = false;
  /// The trainer builds a frozen second copy of the manifest's model (the pretrained weights)
  /// and passes it as UpdateContext::reference (D3PO's reference policy).
  bool needs_reference_model = false;
};

/// Everything an update may touch.
struct UpdateContext {
  Model& model;
  Sampler& sampler;
  Optimizer& optimizer;
  at::Generator generator;  ///< shuffles and any other randomness
  std::int64_t epoch = 0;
  std::int64_t train_batch_size = 1;  ///< B_t: trajectories (or pairs) per micro-batch
  Model* reference = nullptr;         ///< frozen pretrained model when spec().needs_reference_model
};

/// Scalar metrics of one update phase, logged under /curves/train/<name>.
using Metrics = std::map<std::string, double>;

class SDPO_API Algorithm {
 public:
  static constexpr const char* kKind = "algorithm";
  virtual ~Algorithm() = default;

  virtual RolloutSpec spec() const = 0;

  /// Performs this epoch's updates from `buffer` (advantages filled): the backwards and the
  /// optimizer's micro-steps (update_loop.h has the shared pieces). Returns the update's own
  /// metrics, e.g. the mean micro-batch loss and clip fractions, each logged under
  /// /curves/train/<name>. It is called through run_update_phase (update_loop.h), which sets the
  /// model's training mode around it, flushes the optimizer after it and adds `grad_norm` and
  /// `updates`: update() does none of those. Throws sdpo::NumericError on a non-finite loss and
  /// sdpo::Error on a buffer it cannot train on.
  virtual Metrics update(RolloutBuffer& buffer, UpdateContext& ctx) = 0;
};

}  // namespace sdpo
