#include "sdpo/models/toy/shape_classifier.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

namespace sdpo::shape_alignment {
namespace {

// Head layout inside the final linear layer's 27 outputs.
constexpr std::int64_t kHidden = 64;
constexpr std::int64_t kShape0 = 0, kColor0 = 3, kShape1 = 9, kColor1 = 12, kCount = 18, kLocation = 22;
constexpr std::int64_t kOutputs = 27;

// Row-wise value at a class index: m (B, C), idx (B,) -> (B,).
at::Tensor pick(const at::Tensor& m, const at::Tensor& idx) { return m.gather(1, idx.unsqueeze(1)).squeeze(1); }

// The per-attribute terms of a prompt, from per-head tables (log-probabilities, probabilities
// or correctness as 0/1 tables); `reduce_pair` picks the better assignment of a pair.
struct AttributeTerms {
  at::Tensor single_objects;   // slot 0 = the object (B,)
  at::Tensor pair_objects;     // better of the two assignments, sum of four terms (B,)
  at::Tensor count, location;  // (B,)
};

template <class Reduce>
AttributeTerms attribute_terms(
    const at::Tensor& s0,
    const at::Tensor& c0,
    const at::Tensor& s1,
    const at::Tensor& c1,
    const at::Tensor& count,
    const at::Tensor& location,
    const SceneLabels& y,
    Reduce reduce_pair) {
  AttributeTerms t;
  t.single_objects = pick(s0, y.shape_a) + pick(c0, y.color_a);
  const at::Tensor a_first = t.single_objects + pick(s1, y.shape_b) + pick(c1, y.color_b);
  const at::Tensor b_first = pick(s0, y.shape_b) + pick(c0, y.color_b) + pick(s1, y.shape_a) + pick(c1, y.color_a);
  t.pair_objects = reduce_pair(a_first, b_first);
  t.count = pick(count, y.count);
  t.location = pick(location, y.location);
  return t;
}

// Mean over the prompt's attributes: 4 for one object, 6 for a pair.
at::Tensor attribute_mean(const AttributeTerms& t, const at::Tensor& pair) {
  const at::Tensor single = (t.single_objects + t.count + t.location) / 4.0;
  const at::Tensor both = (t.pair_objects + t.count + t.location) / 6.0;
  return at::where(pair, both, single);
}

// One-hot table of the argmax, so attribute_terms() can count correct attributes.
at::Tensor argmax_table(const at::Tensor& logits) {
  return at::one_hot(logits.argmax(1), logits.size(1)).to(at::kDouble);
}

}  // namespace

SceneLabels scene_labels(const std::vector<toy::Scene>& scenes, c10::Device device) {
  const auto n = static_cast<std::int64_t>(scenes.size());
  std::vector<std::int64_t> v(7 * n);
  for (std::int64_t i = 0; i < n; ++i) {
    const toy::Scene& s = scenes[i];
    const toy::Object& a = s.objects[0];
    const toy::Object& b = s.is_composition() ? s.objects[1] : s.objects[0];
    v[0 * n + i] = static_cast<std::int64_t>(a.shape);
    v[1 * n + i] = static_cast<std::int64_t>(a.color);
    v[2 * n + i] = static_cast<std::int64_t>(b.shape);
    v[3 * n + i] = static_cast<std::int64_t>(b.color);
    v[4 * n + i] = s.is_composition() ? kPairCount : s.count - 1;
    v[5 * n + i] = static_cast<std::int64_t>(s.location);
    v[6 * n + i] = s.is_composition() ? 1 : 0;
  }
  const at::Tensor all = at::tensor(v, at::TensorOptions().dtype(at::kLong)).view({7, n}).to(device);
  return SceneLabels{all[0], all[1], all[2], all[3], all[4], all[5], all[6].to(at::kBool)};
}

ShapeClassifierImpl::ShapeClassifierImpl() {
  namespace nn = torch::nn;
  conv1_ = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(3, 16, 3).padding(1)));
  conv2_ = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)));
  conv3_ = register_module("conv3", nn::Conv2d(nn::Conv2dOptions(32, 48, 3).padding(1)));
  hidden_ = register_module("hidden", nn::Linear(48 * 4 * 4, kHidden));
  heads_ = register_module("heads", nn::Linear(kHidden, kOutputs));
}

HeadLogits ShapeClassifierImpl::forward(const at::Tensor& images) {
  at::Tensor x = images;
  if (x.size(2) != kInputSize || x.size(3) != kInputSize) x = at::adaptive_avg_pool2d(x, {kInputSize, kInputSize});
  x = (x - 0.5) * 2.0;
  x = at::max_pool2d(at::relu(conv1_->forward(x)), {2, 2});  // 16 x 16
  x = at::max_pool2d(at::relu(conv2_->forward(x)), {2, 2});  // 8 x 8
  x = at::max_pool2d(at::relu(conv3_->forward(x)), {2, 2});  // 4 x 4: coarse position survives
  x = at::relu(hidden_->forward(x.flatten(1)));
  const at::Tensor out = heads_->forward(x);
  return HeadLogits{out.slice(1, kShape0, kColor0), out.slice(1, kColor0, kShape1),  out.slice(1, kShape1, kColor1),
                    out.slice(1, kColor1, kCount),  out.slice(1, kCount, kLocation), out.slice(1, kLocation, kOutputs)};
}

void ShapeClassifierImpl::reset_parameters(at::Generator& gen) {
  at::NoGradGuard no_grad;
  const auto reset = [&](at::Tensor& weight, at::Tensor& bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(weight[0].numel()));
    weight.uniform_(-bound, bound, gen);
    bias.uniform_(-bound, bound, gen);
  };
  reset(conv1_->weight, conv1_->bias);
  reset(conv2_->weight, conv2_->bias);
  reset(conv3_->weight, conv3_->bias);
  reset(hidden_->weight, hidden_->bias);
  reset(heads_->weight, heads_->bias);
}

at::Tensor classifier_loss(const HeadLogits& z, const SceneLabels& y) {
  const auto ls = [](const at::Tensor& logits) { return -at::log_softmax(logits, 1); };
  const AttributeTerms t = attribute_terms(
      ls(z.shape0), ls(z.color0), ls(z.shape1), ls(z.color1), ls(z.count), ls(z.location), y,
      [](const at::Tensor& a, const at::Tensor& b) { return at::minimum(a, b); });
  return (at::where(y.pair, t.pair_objects, t.single_objects) + t.count + t.location).mean();
}

at::Tensor match_probability(const HeadLogits& z, const SceneLabels& y) {
  const auto sm = [](const at::Tensor& logits) { return at::softmax(logits, 1); };
  const AttributeTerms t = attribute_terms(
      sm(z.shape0), sm(z.color0), sm(z.shape1), sm(z.color1), sm(z.count), sm(z.location), y,
      [](const at::Tensor& a, const at::Tensor& b) { return at::maximum(a, b); });
  return attribute_mean(t, y.pair);
}

std::pair<double, double> match_accuracy(const HeadLogits& z, const SceneLabels& y) {
  const AttributeTerms t = attribute_terms(
      argmax_table(z.shape0), argmax_table(z.color0), argmax_table(z.shape1), argmax_table(z.color1),
      argmax_table(z.count), argmax_table(z.location), y,
      [](const at::Tensor& a, const at::Tensor& b) { return at::maximum(a, b); });
  const at::Tensor fraction = attribute_mean(t, y.pair);
  return {fraction.mean().item<double>(), fraction.ge(1.0 - 1e-9).to(at::kDouble).mean().item<double>()};
}

}  // namespace sdpo::shape_alignment
