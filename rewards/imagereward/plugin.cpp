// Reward `imagereward`: ImageReward (THUDM/ImageReward, research/models.md 6.4), BLIP's ViT-L/16
// image encoder and BERT text encoder with cross-attention, scoring each image against its prompt:
//   pixels = imagereward_preprocess(images)            (models.md 6.0: SDPO's CLIP-L processor)
//   ids    = WordPiece(prompt), [CLS] .. [SEP], padded  (B, 35) with the attention mask
//   raw    = mlp(text_encoder(ids, image tokens)[:, 0]) (B,)
//   score  = raw                                        scale "raw" (default): SDPO's scorer
//          = (raw - 0.16717...) / 1.03333...            scale "standardized": ImageReward.score()

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

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
#include "sdpo/models/blip/blip_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/weight_dtype.h"
#include "sdpo/models/tokenizers/wordpiece.h"

namespace sdpo::imagereward {
namespace {

constexpr const char* kName = "imagereward";
constexpr const char* kComponent = "reward 'imagereward'";
constexpr const char* kWeightsFile = "ImageReward.safetensors";

struct ImageRewardOptions {
  std::string path;               ///< folder: ImageReward.safetensors, med_config.json, vocab.txt
  std::string scale = "raw";      ///< "raw" (SDPO) or "standardized" (ImageReward.score)
  std::string vision_config;      ///< "" = ViT-L/16 at 224; else a JSON of BLIP ViT sizes
  std::string dtype = "float32";  ///< tower parameter dtype (the head stays float32)
  std::int64_t batch_size = 32;   ///< image-prompt pairs per forward

  static ImageRewardOptions read(OptionReader& r) {
    ImageRewardOptions o;
    o.path = r.required_string(
        "path",
        "folder with ImageReward.safetensors (ImageReward.pt converted by rewards/imagereward/convert_checkpoint.py), "
        "med_config.json and bert-base-uncased's vocab.txt");
    o.scale = r.string(
        "scale", o.scale,
        "\"raw\": the head's output, as SDPO scores; \"standardized\": (raw - 0.16717362830052426) / "
        "1.0333394966054072, ImageReward's published score",
        {"raw", "standardized"});
    o.vision_config = r.string(
        "vision_config", o.vision_config,
        "\"\": BLIP ViT-L/16 at 224 (ImageReward's); else a JSON file overriding img_size, patch_size, embed_dim, "
        "depth, num_heads, mlp_ratio");
    o.dtype = r.string(
        "dtype", o.dtype,
        "tower dtype: float32 (the reference), bfloat16, float16 (CUDA only); the head runs in float32",
        {"float32", "bfloat16", "float16"});
    o.batch_size = r.integer("batch_size", o.batch_size, 1, 4096, "image-prompt pairs per forward");
    return o;
  }
};

class ImageReward final : public Reward {
 public:
  ImageReward(const ImageRewardOptions& o, const ComponentConfig& cfg)
      : standardized_(o.scale == "standardized"),
        batch_size_(o.batch_size),
        placement_(o.dtype, cfg.file, cfg.json_path),
        tokenizer_(WordPieceTokenizer::load((std::filesystem::path(o.path) / "vocab.txt").string())) {
    namespace fs = std::filesystem;
    const std::string weights_file = (fs::path(o.path) / kWeightsFile).string();
    std::error_code ec;
    if (!fs::exists(weights_file, ec) && fs::exists(fs::path(o.path) / "ImageReward.pt", ec)) {
      throw ManifestError(
          cfg.file, cfg.json_path + ".path",
          o.path + " holds ImageReward.pt but no " + kWeightsFile +
              ": convert it with rewards/imagereward/convert_checkpoint.py (torch.load + safetensors' save_file)");
    }
    const std::string med_file = (fs::path(o.path) / "med_config.json").string();
    const nn::HFConfig med_hf = nn::HFConfig::load(med_file);
    const MedConfig med = MedConfig::from_hf(med_hf);
    const BLIPVisionConfig vision =
        o.vision_config.empty() ? BLIPVisionConfig{} : BLIPVisionConfig::from_hf(nn::HFConfig::load(o.vision_config));
    if (med.max_position_embeddings < kMaxTextLength) {
      med_hf.fail(
          "max_position_embeddings", "ImageReward tokenizes to " + std::to_string(kMaxTextLength) +
                                         " tokens: expected at least that many positions");
    }
    if (tokenizer_.max_id() >= med.vocab_size) {
      med_hf.fail(
          "vocab_size", std::to_string(med.vocab_size) + " rows cannot embed id " +
                            std::to_string(tokenizer_.max_id()) + " of " + tokenizer_.source());
    }
    image_size_ = vision.img_size;
    // The file before the model: a missing or malformed checkpoint is reported before a ViT-L is
    // allocated.
    TensorMap weights = safetensors_load(weights_file);
    for (auto it = weights.begin(); it != weights.end();) {
      it = unused_checkpoint_key(it->first) ? weights.erase(it) : std::next(it);
    }
    at::NoGradGuard no_grad;
    model_ = ImageRewardModel(vision, med, at::TensorOptions().dtype(placement_.dtype()));
    module_load_state_dict(*model_, weights, /*strict=*/true, weights_file, kComponent);
    weights.clear();
    module_freeze(*model_);
  }

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    check_reward_inputs(kComponent, images, prompts, /*needs_prompts=*/true);
    const auto lock = placement_.lock_for_use();
    const c10::Device device = placement_.device();
    at::NoGradGuard no_grad;
    const std::int64_t b = images.size(0);
    // ImageReward's tokenizer call: padding='max_length', truncation=True, max_length=35.
    const BertEncoding text = tokenizer_.encode_batch(prompts, kMaxTextLength);
    std::vector<at::Tensor> scores;
    for (std::int64_t start = 0; start < b; start += batch_size_) {
      const std::int64_t end = std::min(b, start + batch_size_);
      const at::Tensor pixels = imagereward_preprocess(images.slice(0, start, end).to(device), image_size_);
      const at::Tensor raw = model_->forward(
          pixels, text.ids.slice(0, start, end).to(device), text.attention_mask.slice(0, start, end).to(device));
      scores.push_back(standardized_ ? (raw - kRewardMean) / kRewardStd : raw);
    }
    if (scores.empty()) return at::empty({0}, images.options().dtype(at::kFloat));
    return at::cat(scores).to(images.device());
  }

  bool needs_prompts() const override { return true; }

  void to(c10::Device device) override {
    placement_.move_to(device, [&](c10::Device d) { model_->to(d); });
  }

 private:
  bool standardized_;
  std::int64_t batch_size_;
  nn::WeightPlacement placement_;  // score() runs on a worker thread, to() on the main one
  WordPieceTokenizer tokenizer_;
  std::int64_t image_size_ = 224;
  ImageRewardModel model_{nullptr};
};

void register_imagereward(Registry& r) {
  r.add<Reward, ImageRewardOptions>(
      kName, "ImageReward: BLIP ViT-L/16 + BERT cross-attention human-preference score of an image for its prompt",
      &ImageRewardOptions::read,
      [](const ImageRewardOptions& o, const ComponentConfig& cfg) -> std::shared_ptr<Reward> {
        return std::make_shared<ImageReward>(o, cfg);
      });
}

}  // namespace
}  // namespace sdpo::imagereward

SDPO_DECLARE_PLUGIN("imagereward", "0.1.0", sdpo::imagereward::register_imagereward)
