// Reward `pickscore`: PickScore v1 (yuvalkirstain/PickScore_v1, research/models.md 6.2), a CLIP-H
// CLIPModel fine-tuned on human preferences, scoring each image against its prompt:
//   pixels = clip_preprocess(images)                         (models.md 6.0; the CLIP-L processor)
//   img    = get_image_features(pixels)                      (B, 1024)
//   txt    = get_text_features(ids)                          (B, 1024), ids padded/truncated to 77
//   score  = cosine(img, txt)                                 scale "cosine" (SDPO's scorer)
//          = exp(logit_scale) * cosine(img, txt)              scale "logit"  (the official PickScore)

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

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
#include "sdpo/models/clip/clip_model.h"
#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/weight_dtype.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"

namespace sdpo::pickscore {
namespace {

namespace ct = sdpo::clip_text;

constexpr const char* kName = "pickscore";
constexpr const char* kComponent = "reward 'pickscore'";
// The CLIP tokenizers' model_max_length: SDPO and the model card truncate to 77 (models.md 6.2).
constexpr std::int64_t kContextLength = 77;

struct PickScoreOptions {
  std::string clip;               ///< CLIPModel folder: config.json, model.safetensors, tokenizer files
  std::string scale = "cosine";   ///< "cosine" (SDPO) or "logit" (official: exp(logit_scale) * cosine)
  std::string dtype = "float32";  ///< parameter dtype
  std::int64_t batch_size = 32;   ///< image-prompt pairs per forward

  static PickScoreOptions read(OptionReader& r) {
    PickScoreOptions o;
    o.clip = r.required_string(
        "clip",
        "folder of yuvalkirstain/PickScore_v1 in transformers format: config.json, model.safetensors, "
        "vocab.json, merges.txt (special_tokens_map.json optional)");
    o.scale = r.string(
        "scale", o.scale,
        "\"cosine\": cosine similarity of the image and text features, as SDPO scores; "
        "\"logit\": exp(logit_scale) * cosine, the official PickScore",
        {"cosine", "logit"});
    o.dtype = r.string(
        "dtype", o.dtype, "CLIP dtype: float32 (the reference), bfloat16, float16 (CUDA only)",
        {"float32", "bfloat16", "float16"});
    o.batch_size = r.integer("batch_size", o.batch_size, 1, 4096, "image-prompt pairs per CLIP forward");
    return o;
  }
};

class PickScoreReward final : public Reward {
 public:
  PickScoreReward(const PickScoreOptions& o, const ComponentConfig& cfg)
      : logit_(o.scale == "logit"),
        batch_size_(o.batch_size),
        placement_(o.dtype, cfg.file, cfg.json_path),
        tokenizer_(ct::CLIPTokenizer::load(o.clip)) {
    namespace fs = std::filesystem;
    const nn::HFConfig hf = nn::HFConfig::load((fs::path(o.clip) / "config.json").string());
    const ct::CLIPConfig config = ct::CLIPConfig::from_hf(hf);
    if (config.vision.num_channels != 3) {
      hf.fail("vision_config.num_channels", "PickScore scores RGB images: expected 3");
    }
    if (config.text.max_position_embeddings < kContextLength) {
      hf.fail(
          "text_config.max_position_embeddings",
          "prompts are padded to 77 tokens; got " + std::to_string(config.text.max_position_embeddings));
    }
    for (std::int64_t id : {tokenizer_.bos_id(), tokenizer_.eos_id(), tokenizer_.pad_id()}) {
      if (id >= config.text.vocab_size) {
        hf.fail(
            "text_config.vocab_size", std::to_string(config.text.vocab_size) +
                                          " is too small for the tokenizer's special id " + std::to_string(id));
      }
    }
    // The pooled text state is taken at the end-of-text token: argmax(ids) under the legacy
    // eos_token_id 2, else the first position holding eos_token_id (models.md 3.3), which must
    // then be the tokenizer's <|endoftext|>.
    if (config.text.eos_token_id != 2 && config.text.eos_token_id != tokenizer_.eos_id()) {
      hf.fail(
          "text_config.eos_token_id", std::to_string(config.text.eos_token_id) +
                                          " is neither the legacy 2 nor the tokenizer's <|endoftext|> id " +
                                          std::to_string(tokenizer_.eos_id()));
    }
    // The file first: a missing or malformed file is reported before a ViT-H is allocated.
    const std::string file = nn::find_weights_file(o.clip, "model", "");
    TensorMap weights = safetensors_load(file);
    ct::erase_position_ids(weights);  // older files' int64 buffers (models.md 7)
    at::NoGradGuard no_grad;
    model_ = ct::CLIPModel(config, at::TensorOptions().dtype(placement_.dtype()));
    // Strict: both towers, both projections and logit_scale; any other key is refused.
    module_load_state_dict(*model_, weights, /*strict=*/true, file, kComponent);
    module_freeze(*model_);
  }

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    check_reward_inputs(kComponent, images, prompts, /*needs_prompts=*/true);
    const auto lock = placement_.lock_for_use();
    at::NoGradGuard no_grad;
    // Padded with the tokenizer's pad token: under causal attention, pooling at the end-of-text
    // token makes the padding after it irrelevant (SDPO pads with <|endoftext|>; models.md 6.2).
    const at::Tensor ids = tokenizer_.encode_batch(prompts, kContextLength);
    at::Tensor s = ct::clip_paired_scores(*model_, images, ids, batch_size_);
    if (logit_) s = s * model_->logit_scale.to(at::kFloat).exp();
    return s.to(images.device());
  }

  bool needs_prompts() const override { return true; }

  void to(c10::Device device) override {
    placement_.move_to(device, [&](c10::Device d) { model_->to(d); });
  }

 private:
  bool logit_;
  std::int64_t batch_size_;
  nn::WeightPlacement placement_;  // score() runs on a worker thread, to() on the main one
  ct::CLIPTokenizer tokenizer_;
  ct::CLIPModel model_{nullptr};
};

void register_pickscore(Registry& r) {
  r.add<Reward, PickScoreOptions>(
      kName, "PickScore v1: CLIP-H image-prompt similarity fine-tuned on human preferences (cosine as SDPO)",
      &PickScoreOptions::read, [](const PickScoreOptions& o, const ComponentConfig& cfg) -> std::shared_ptr<Reward> {
        return std::make_shared<PickScoreReward>(o, cfg);
      });
}

}  // namespace
}  // namespace sdpo::pickscore

SDPO_DECLARE_PLUGIN("pickscore", "0.1.0", sdpo::pickscore::register_pickscore)
