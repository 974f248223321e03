// Reward `shape_alignment`: how well a toy-world image matches its prompt, as judged by a small
// CNN trained on the world's own labels (the toy analog of ImageReward/PickScore/HPSv2; see
// README.md). score = mean over the prompt's attributes of the classifier's probability of the
// prompt's value, in [0, 1].

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/optim/adam.h>

#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>

#include "sdpo/core/error.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/toy/shape_classifier.h"
#include "sdpo/models/toy/world.h"

namespace {

namespace sa = sdpo::shape_alignment;

constexpr const char* kName = "shape_alignment";
constexpr const char* kFormat = "sdpo.shape_alignment.v1";
constexpr std::int64_t kLogEvery = 100;

struct ShapeAlignmentOptions {
  std::string checkpoint = "experiments/assets/shape_classifier.safetensors";
  double augment_noise = 0.1;

  static ShapeAlignmentOptions read(sdpo::OptionReader& r) {
    ShapeAlignmentOptions o;
    o.checkpoint = r.string(
        "checkpoint", o.checkpoint,
        "classifier weights (safetensors, written by `sdpo pretrain`); read at the first score");
    o.augment_noise = r.number(
        "augment_noise", o.augment_noise, 0.0, 1.0,
        "fit(): each training image gets Gaussian noise of a std drawn uniformly in [0, this]");
    return o;
  }
};

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

class ShapeAlignmentReward : public sdpo::Reward {
 public:
  explicit ShapeAlignmentReward(ShapeAlignmentOptions options) : options_(std::move(options)) {}

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    if (images.dim() != 4 || images.size(1) != 3)
      throw sdpo::Error(std::string("reward '") + kName + "': expected images (B, 3, H, W)");
    if (static_cast<std::int64_t>(prompts.size()) != images.size(0))
      throw sdpo::Error(
          std::string("reward '") + kName + "': got " + std::to_string(prompts.size()) + " prompts for " +
          std::to_string(images.size(0)) + " images");
    const std::vector<sdpo::toy::Scene> scenes = parse_all(prompts, "score");
    std::lock_guard<std::mutex> lock(mutex_);
    ensure_loaded();
    at::NoGradGuard no_grad;
    const at::Tensor x = images.detach().to(device_, at::kFloat).clamp(0.0, 1.0);
    const at::Tensor p = sa::match_probability(net_->forward(x), sa::scene_labels(scenes, device_));
    return p.to(images.device(), at::kFloat);
  }

  bool needs_prompts() const override { return true; }

  // Fits a freshly initialized classifier on the prompt source's labelled images (the toy
  // world's, whose prompts parse()) and writes it to ctx.output when that is set.
  bool fit(sdpo::RewardFitContext& ctx) override {
    std::lock_guard<std::mutex> lock(mutex_);
    sa::ShapeClassifier net;
    net->reset_parameters(ctx.generator);
    net->to(device_);
    net->train();
    torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(ctx.learning_rate));
    double loss_sum = 0.0, attr_sum = 0.0, exact_sum = 0.0;
    std::int64_t window = 0;
    for (std::int64_t step = 1; step <= ctx.steps; ++step) {
      sdpo::LabelledBatch batch = ctx.data.labelled_batch(ctx.batch_size, ctx.generator);
      const sa::SceneLabels labels = sa::scene_labels(parse_all(batch.prompts, "fit"), device_);
      // Generated images are slightly noisy, especially at few sampling steps: train on a range
      // of noise levels so the score stays meaningful on them.
      const std::int64_t b = batch.images.size(0);
      const at::Tensor sigma =
          at::rand({b, 1, 1, 1}, ctx.generator, at::TensorOptions().dtype(at::kFloat)) * options_.augment_noise;
      const at::Tensor noise = at::randn(batch.images.sizes(), ctx.generator, at::TensorOptions().dtype(at::kFloat));
      const at::Tensor x = (batch.images.to(at::kFloat) + sigma * noise).clamp(0.0, 1.0).to(device_);

      adam.zero_grad();
      const sa::HeadLogits logits = net->forward(x);
      const at::Tensor loss = sa::classifier_loss(logits, labels);
      loss.backward();
      adam.step();

      const auto accuracy = sa::match_accuracy(logits, labels);
      loss_sum += loss.item<double>();
      attr_sum += accuracy.first;
      exact_sum += accuracy.second;
      ++window;
      if (step % kLogEvery == 0 || step == ctx.steps) {
        std::cerr << kName << " fit: step " << step << "/" << ctx.steps << std::fixed << std::setprecision(4)
                  << " loss " << loss_sum / window << " attribute accuracy " << attr_sum / window << " prompt accuracy "
                  << exact_sum / window << std::defaultfloat << std::endl;
        loss_sum = attr_sum = exact_sum = 0.0;
        window = 0;
      }
    }
    net->eval();
    net_ = net;
    loaded_ = true;  // the fitted weights replace whatever the checkpoint holds
    if (!ctx.output.empty()) save(ctx.output, ctx.steps);
    return true;
  }

  void to(c10::Device device) override {
    std::lock_guard<std::mutex> lock(mutex_);
    device_ = device;
    net_->to(device);
  }

 private:
  std::vector<sdpo::toy::Scene> parse_all(const std::vector<std::string>& prompts, const char* during) const {
    return sdpo::toy::parse_all(prompts, std::string("reward '") + kName + "' (" + during + ")");
  }

  // The checkpoint is read at the first score() rather than at construction, so that
  // `sdpo pretrain` can build this reward to fit() it before any checkpoint exists.
  void ensure_loaded() {
    if (loaded_) return;
    const std::string& path = options_.checkpoint;
    const sdpo::TensorMap tensors = sdpo::safetensors_load(path);  // FileError names the file
    sa::ShapeClassifier net;
    at::NoGradGuard no_grad;
    for (auto& item : net->named_parameters()) {
      const auto it = tensors.find(item.key());
      if (it == tensors.end())
        throw sdpo::FileError(
            path, std::string("reward '") + kName + "': missing tensor '" + item.key() +
                      "' (is this a shape_alignment classifier checkpoint?)");
      if (it->second.sizes() != item.value().sizes())
        throw sdpo::FileError(
            path, std::string("reward '") + kName + "': tensor '" + item.key() + "' has shape " +
                      shape_string(it->second.sizes()) + ", expected " + shape_string(item.value().sizes()));
      item.value().copy_(it->second.to(at::kFloat));
    }
    net->to(device_);
    net->eval();
    net_ = net;
    loaded_ = true;
  }

  void save(const std::string& path, std::int64_t steps) const {
    sdpo::TensorMap tensors;
    for (const auto& item : net_->named_parameters()) tensors[item.key()] = item.value().detach();
    sdpo::safetensors_save(
        path, tensors,
        {{"format", kFormat}, {"input_size", std::to_string(sa::kInputSize)}, {"steps", std::to_string(steps)}});
  }

  ShapeAlignmentOptions options_;
  std::mutex mutex_;  // score() runs on a worker thread; fit() and to() on the main one
  sa::ShapeClassifier net_;
  bool loaded_ = false;
  c10::Device device_ = c10::Device(c10::kCPU);
};

void register_shape_alignment(sdpo::Registry& r) {
  r.add<sdpo::Reward, ShapeAlignmentOptions>(
      kName, "how well a toy-world image matches its prompt (small CNN on the world's labels), in [0, 1]",
      &ShapeAlignmentOptions::read, [](const ShapeAlignmentOptions& o, const sdpo::ComponentConfig&) {
        return std::make_shared<ShapeAlignmentReward>(o);
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("shape_alignment", "0.1.0", register_shape_alignment)
