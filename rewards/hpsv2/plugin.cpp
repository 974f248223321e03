// Reward `hpsv2`: Human Preference Score v2 (xswu/HPSv2 HPS_v2_compressed.pt, research/models.md
// 6.3), an open_clip ViT-H-14 fine-tuned on human preferences, scoring each image against its
// prompt:
//   pixels = clip_preprocess(images)                 (models.md 6.0: SDPO uses the CLIP-L processor)
//   img    = encode_image(pixels)                    (B, 1024)  visual.proj of ln_post(CLS)
//   txt    = encode_text(open_clip_tokenize(prompt)) (B, 1024)  text_projection at argmax(ids)
//   score  = cosine(img, txt)                        no logit scale (HPSv2 and SDPO alike)
// The open_clip state dict is loaded into the shared CLIPModel through the key mapping of
// sdpo/models/clip/open_clip.h.

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
#include "sdpo/models/clip/open_clip.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/weight_dtype.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"

namespace sdpo::hpsv2 {
namespace {

namespace ct = sdpo::clip_text;

constexpr const char* kName = "hpsv2";
constexpr const char* kComponent = "reward 'hpsv2'";

struct HPSv2Options {
  std::string checkpoint;         ///< safetensors of HPS_v2_compressed.pt's 'state_dict' (open_clip names)
  std::string tokenizer;          ///< folder with vocab.json + merges.txt
  std::string config;             ///< "" = ViT-H-14; else an open_clip model config JSON
  std::string dtype = "float32";  ///< parameter dtype
  std::int64_t batch_size = 32;   ///< image-prompt pairs per forward

  static HPSv2Options read(OptionReader& r) {
    HPSv2Options o;
    o.checkpoint = r.required_string(
        "checkpoint",
        "safetensors file of HPS_v2_compressed.pt's 'state_dict' in open_clip key names (convert with "
        "rewards/hpsv2/convert_checkpoint.py)");
    o.tokenizer = r.required_string(
        "tokenizer", "folder with CLIP's vocab.json and merges.txt (e.g. an SD-Turbo tokenizer/ folder)");
    o.config = r.string(
        "config", o.config,
        "\"\": open_clip ViT-H-14 (HPSv2's architecture); else an open_clip model config JSON whose keys "
        "override ViT-H-14's");
    o.dtype = r.string(
        "dtype", o.dtype, "CLIP dtype: float32 (the reference), bfloat16, float16 (CUDA only)",
        {"float32", "bfloat16", "float16"});
    o.batch_size = r.integer("batch_size", o.batch_size, 1, 4096, "image-prompt pairs per CLIP forward");
    return o;
  }
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class HPSv2Reward final : public Reward {
 public:
  HPSv2Reward(const HPSv2Options& o, const ComponentConfig& cfg)
      : batch_size_(o.batch_size),
        placement_(o.dtype, cfg.file, cfg.json_path),
        tokenizer_(ct::CLIPTokenizer::load(o.tokenizer)) {
    for (const char* pickle : {".pt", ".pth", ".bin"}) {
      if (ends_with(o.checkpoint, pickle)) {
        throw ManifestError(
            cfg.file, cfg.json_path + ".checkpoint",
            o.checkpoint +
                " is a PyTorch pickle; convert its 'state_dict' to safetensors with "
                "rewards/hpsv2/convert_checkpoint.py (torch.load + safetensors' save_file)");
      }
    }
    ct::CLIPConfig config = ct::open_clip_vit_h_14();
    if (!o.config.empty()) config = ct::open_clip_config(nn::HFConfig::load(o.config), config);
    const std::string config_name = o.config.empty() ? std::string("ViT-H-14") : o.config;
    for (std::int64_t id : {tokenizer_.bos_id(), tokenizer_.eos_id()}) {
      if (id >= config.text.vocab_size) {
        throw ManifestError(
            config_name, "text_cfg.vocab_size",
            std::to_string(config.text.vocab_size) + " is too small for the special id " + std::to_string(id) +
                " of the tokenizer in " + o.tokenizer);
      }
    }
    context_length_ = config.text.max_position_embeddings;
    // The file first: a missing or malformed checkpoint is reported before a ViT-H is allocated.
    const TensorMap weights = safetensors_load(o.checkpoint);
    at::NoGradGuard no_grad;
    model_ = ct::CLIPModel(config, at::TensorOptions().dtype(placement_.dtype()));
    ct::load_open_clip_state_dict(*model_, weights, o.checkpoint, kComponent);
    module_freeze(*model_);
  }

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    check_reward_inputs(kComponent, images, prompts, /*needs_prompts=*/true);
    const auto lock = placement_.lock_for_use();
    // open_clip's tokenization: zero padding after the end token (models.md 6.3).
    const at::Tensor ids = ct::open_clip_tokenize(tokenizer_, prompts, context_length_);
    return ct::clip_paired_scores(*model_, images, ids, batch_size_).to(images.device());
  }

  bool needs_prompts() const override { return true; }

  void to(c10::Device device) override {
    placement_.move_to(device, [&](c10::Device d) { model_->to(d); });
  }

 private:
  std::int64_t batch_size_;
  nn::WeightPlacement placement_;  // score() runs on a worker thread, to() on the main one
  ct::CLIPTokenizer tokenizer_;
  std::int64_t context_length_ = 77;
  ct::CLIPModel model_{nullptr};
};

void register_hpsv2(Registry& r) {
  r.add<Reward, HPSv2Options>(
      kName, "HPSv2: open_clip ViT-H-14 image-prompt cosine similarity fine-tuned on human preferences",
      &HPSv2Options::read, [](const HPSv2Options& o, const ComponentConfig& cfg) -> std::shared_ptr<Reward> {
        return std::make_shared<HPSv2Reward>(o, cfg);
      });
}

}  // namespace
}  // namespace sdpo::hpsv2

SDPO_DECLARE_PLUGIN("hpsv2", "0.1.0", sdpo::hpsv2::register_hpsv2)
