#pragma once
// The shape_alignment classifier: a small CNN that reads a toy-world image's attributes, and
// the pure math that turns its outputs into a loss (fitting) and a match score (the reward).
//
// Factorization (README.md): six softmax heads over one shared trunk,
//   shape0 (3), color0 (6)  the object of a single-object scene, or one object of a pair
//   shape1 (3), color1 (6)  the other object of a pair (untrained on single-object scenes)
//   count (4)               one, two, three copies of one object, or a pair of two objects
//   location (5)            center, left, right, top, bottom
// A pair's two objects are unordered in the prompt ("a red circle and a blue square" says
// nothing of which is left), so the loss and the score take the better of the two assignments
// of the prompt's objects to the slots.
//
// Thread safety: none; the reward serializes calls.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "sdpo/models/toy/world.h"

namespace sdpo::shape_alignment {

/// Side of the images the network reads; other sizes are resampled to it.
inline constexpr std::int64_t kInputSize = 32;
/// Count class of a composition (after the classes of 1, 2, 3 copies).
inline constexpr std::int64_t kPairCount = 3;

/// Logits of every head, (B, classes) each.
struct HeadLogits {
  at::Tensor shape0, color0, shape1, color1, count, location;
};

/// A batch of scenes as class indices, (B,) int64 each. For single-object scenes the "b"
/// object repeats the "a" object (and is ignored).
struct SceneLabels {
  at::Tensor shape_a, color_a, shape_b, color_b, count, location;
  at::Tensor pair;  ///< (B,) bool: the scene is a composition
};

SceneLabels scene_labels(const std::vector<toy::Scene>& scenes, c10::Device device);

/// conv(3->16) pool conv(16->32) pool conv(32->48) pool, 48x4x4 -> 64 -> 27 logits; ReLU
/// between layers. About 70k parameters.
class ShapeClassifierImpl : public torch::nn::Module {
 public:
  ShapeClassifierImpl();
  /// images: (B, 3, H, W) float in [0, 1].
  HeadLogits forward(const at::Tensor& images);
  /// PyTorch's default initialization (uniform in +-1/sqrt(fan_in)) drawn from `gen`, so a
  /// fit is reproducible under its seed. Parameters must be on the generator's device.
  void reset_parameters(at::Generator& gen);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::Linear hidden_{nullptr}, heads_{nullptr};
};
TORCH_MODULE(ShapeClassifier);

/// Mean over the batch of the summed cross-entropies of the prompt's attributes (for pairs,
/// of the better object assignment).
at::Tensor classifier_loss(const HeadLogits& logits, const SceneLabels& labels);

/// (B,) mean over the prompt's attributes of the predicted probability of the prompt's value,
/// in [0, 1]: shape, color, count, location for one object; for a pair, its two shapes and
/// two colors (better assignment), count "pair" and location "center".
at::Tensor match_probability(const HeadLogits& logits, const SceneLabels& labels);

/// Argmax accuracy of the same attributes: (attribute accuracy, fraction of images whose every
/// attribute is right).
std::pair<double, double> match_accuracy(const HeadLogits& logits, const SceneLabels& labels);

}  // namespace sdpo::shape_alignment
