// Reward `aesthetic`: the LAION aesthetic predictor v2 (research/models.md 6.1) on OpenAI CLIP
// ViT-L/14 image features (models.md 7), as SDPO, DDPO and RLCM score images:
//   pixels  = clip_preprocess(images)                      (models.md 6.0; sdpo/models/clip/clip_image.h)
//   feature = visual_projection(post_layernorm(CLS))       (CLIPModel.get_image_features, (B, 768))
//   score   = head(feature / ||feature||_2).squeeze(1)     (B,)
// The head is five Linear layers with no nonlinearity in between (the original's ReLUs are
// commented out; its dropouts are inactive at evaluation), i.e. one affine map 768 -> 1.

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/clip/clip_image.h"
#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/clip/clip_vision_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/nn/weight_dtype.h"

namespace sdpo::aesthetic {
namespace {

namespace ct = sdpo::clip_text;

constexpr const char* kName = "aesthetic";
constexpr const char* kComponent = "reward 'aesthetic'";

struct AestheticOptions {
  std::string clip;               ///< transformers CLIPModel folder: config.json + model.safetensors
  std::string head;               ///< safetensors of the MLP head
  std::string dtype = "float32";  ///< CLIP tower parameter dtype (the head is always float32)
  std::int64_t batch_size = 32;   ///< images per forward

  static AestheticOptions read(OptionReader& r) {
    AestheticOptions o;
    o.clip = r.required_string(
        "clip",
        "folder of openai/clip-vit-large-patch14 in transformers format (config.json + model.safetensors); "
        "only vision_model.* and visual_projection.weight are read");
    o.head = r.required_string(
        "head",
        "safetensors of the aesthetic MLP head (layers.{0,2,4,6,7}.{weight,bias}; convert the .pth with "
        "rewards/aesthetic/convert_head.py)");
    o.dtype = r.string(
        "dtype", o.dtype,
        "CLIP tower dtype: float32 (the reference), bfloat16, float16 (CUDA only); the head runs in float32",
        {"float32", "bfloat16", "float16"});
    o.batch_size = r.integer("batch_size", o.batch_size, 1, 4096, "images per CLIP forward");
    return o;
  }
};

/// The head of models.md 6.1 without its dropouts: Linear(in, 1024), Linear(1024, 128),
/// Linear(128, 64), Linear(64, 16), Linear(16, 1) at the original nn.Sequential's indices, so the
/// keys are "layers.{0,2,4,6,7}.{weight,bias}". (B, in) -> (B, 1).
class AestheticHeadImpl : public torch::nn::Module {
 public:
  AestheticHeadImpl(std::int64_t in, const at::TensorOptions& options) {
    auto layers = register_module("layers", std::make_shared<torch::nn::Module>());
    const std::int64_t index[] = {0, 2, 4, 6, 7};
    const std::int64_t width[] = {in, 1024, 128, 64, 16, 1};
    for (int i = 0; i < 5; ++i) {
      linears_.push_back(
          layers->register_module(std::to_string(index[i]), nn::Linear(width[i], width[i + 1], true, options)));
    }
  }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = x;
    for (auto& l : linears_) h = l(h);
    return h;
  }

 private:
  std::vector<nn::Linear> linears_;
};
TORCH_MODULE(AestheticHead);

class AestheticReward final : public Reward {
 public:
  AestheticReward(const AestheticOptions& o, const ComponentConfig& cfg)
      : batch_size_(o.batch_size), placement_(o.dtype, cfg.file, cfg.json_path) {
    namespace fs = std::filesystem;
    const ct::CLIPVisionConfig config = ct::CLIPVisionConfig::load((fs::path(o.clip) / "config.json").string());
    if (config.num_channels != 3) {
      throw ManifestError(
          (fs::path(o.clip) / "config.json").string(), "vision_config.num_channels",
          "the aesthetic reward scores RGB images: expected 3, got " + std::to_string(config.num_channels));
    }
    at::NoGradGuard no_grad;
    clip_ = ct::CLIPVisionModelWithProjection(config, at::TensorOptions().dtype(placement_.dtype()));
    const std::string clip_file = nn::find_weights_file(o.clip, "model", "");
    TensorMap weights = safetensors_load(clip_file);
    // A CLIPModel file also holds the text tower, text_projection and logit_scale (models.md 7),
    // which get_image_features never reads; older files add int64 position_ids buffers. Anything
    // else that is not a vision key, and every missing vision key, is refused below.
    ct::erase_position_ids(weights);
    for (auto it = weights.begin(); it != weights.end();) {
      it = ct::is_clip_text_side_key(it->first) ? weights.erase(it) : std::next(it);
    }
    module_load_state_dict(*clip_, weights, /*strict=*/true, clip_file, kComponent);
    weights.clear();

    head_ = AestheticHead(config.projection_dim, at::TensorOptions().dtype(at::kFloat));
    module_load_state_dict(*head_, safetensors_load(o.head), /*strict=*/true, o.head, kComponent);

    image_size_ = config.image_size;
    module_freeze(*clip_);
    module_freeze(*head_);
  }

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    check_reward_inputs(kComponent, images, prompts, /*needs_prompts=*/false);
    const auto lock = placement_.lock_for_use();
    const c10::Device device = placement_.device();
    at::NoGradGuard no_grad;
    const std::int64_t b = images.size(0);
    std::vector<at::Tensor> scores;
    for (std::int64_t start = 0; start < b; start += batch_size_) {
      const at::Tensor chunk = images.slice(0, start, std::min(b, start + batch_size_)).to(device);
      // The CLIPProcessor of openai/clip-vit-large-patch14 resizes and crops to 224, the tower's
      // image_size; a tower of another size gets its own (the tiny test models).
      const at::Tensor pixels = ct::clip_preprocess(chunk, image_size_, image_size_).to(placement_.dtype());
      const at::Tensor feature = clip_->get_image_features(pixels).to(at::kFloat);
      const at::Tensor unit = feature / at::linalg_vector_norm(feature, 2, {-1}, /*keepdim=*/true);
      scores.push_back(head_->forward(unit).squeeze(1));
    }
    if (scores.empty()) return at::empty({0}, images.options().dtype(at::kFloat));
    return at::cat(scores).to(images.device());
  }

  bool needs_prompts() const override { return false; }

  void to(c10::Device device) override {
    placement_.move_to(device, [&](c10::Device d) {
      clip_->to(d);
      head_->to(d);
    });
  }

 private:
  std::int64_t batch_size_;
  nn::WeightPlacement placement_;  // score() runs on a worker thread, to() on the main one
  std::int64_t image_size_ = 224;
  ct::CLIPVisionModelWithProjection clip_{nullptr};
  AestheticHead head_{nullptr};
};

void register_aesthetic(Registry& r) {
  r.add<Reward, AestheticOptions>(
      kName, "LAION aesthetic predictor v2: a linear head on L2-normalized CLIP ViT-L/14 image features",
      &AestheticOptions::read, [](const AestheticOptions& o, const ComponentConfig& cfg) -> std::shared_ptr<Reward> {
        return std::make_shared<AestheticReward>(o, cfg);
      });
}

}  // namespace
}  // namespace sdpo::aesthetic

SDPO_DECLARE_PLUGIN("aesthetic", "0.1.0", sdpo::aesthetic::register_aesthetic)
