// Plugin `clip_text`: the CLIP text encoder of a diffusers pipeline folder (SD-Turbo: the OpenCLIP
// ViT-H text tower, research/models.md 3) as an sdpo::TextEncoder. Conditioning = the full
// last_hidden_state (B, 77, D), padding positions included, as SD 2.x uses it (models.md 3.2).

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>

#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/models/clip/clip_text_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/weight_dtype.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"

namespace sdpo::clip_text {
namespace {

constexpr const char* kName = "clip_text";
constexpr const char* kComponent = "text_encoder 'clip_text'";

struct CLIPTextOptions {
  std::string path;               ///< diffusers pipeline folder (text_encoder/, tokenizer/)
  std::string variant;            ///< "" or "fp16": which weights file
  std::string dtype = "float32";  ///< parameter dtype
  std::int64_t max_length = 77;   ///< L of the (B, L, D) output
};

CLIPTextOptions read_options(OptionReader& r) {
  CLIPTextOptions o;
  o.path = r.required_string("path", "diffusers pipeline folder holding text_encoder/ and tokenizer/");
  o.variant = r.string(
      "variant", o.variant, "weights file: \"\" = text_encoder/model.safetensors, \"fp16\" = model.fp16.safetensors");
  if (!o.variant.empty() && o.variant != "fp16")
    r.fail("variant", "expected \"\" or \"fp16\", got '" + o.variant + "'");
  o.dtype = r.string("dtype", o.dtype, "parameter dtype (float16 only on a CUDA device)", nn::weight_dtype_names());
  o.max_length = r.integer(
      "max_length", o.max_length, 2, 4096,
      "tokens per prompt incl. start and end (truncated / padded to it; at most the "
      "config's max_position_embeddings)");
  return o;
}

class CLIPTextEncoder final : public TextEncoder {
 public:
  CLIPTextEncoder(const CLIPTextOptions& o, const ComponentConfig& cfg)
      : max_length_(o.max_length),
        placement_(o.dtype, cfg.file, cfg.json_path),
        tokenizer_(CLIPTokenizer::load((std::filesystem::path(o.path) / "tokenizer").string())) {
    namespace fs = std::filesystem;
    const std::string dir = (fs::path(o.path) / "text_encoder").string();
    const nn::HFConfig hf = nn::HFConfig::load((fs::path(dir) / "config.json").string());
    const CLIPTextConfig config = CLIPTextConfig::from_hf(hf);
    if (max_length_ > config.max_position_embeddings) {
      throw ManifestError(
          cfg.file, cfg.json_path + ".max_length",
          std::to_string(max_length_) + " exceeds max_position_embeddings = " +
              std::to_string(config.max_position_embeddings) + " of " + hf.file());
    }
    for (std::int64_t id : {tokenizer_.bos_id(), tokenizer_.eos_id(), tokenizer_.pad_id()}) {
      if (id >= config.vocab_size) {
        hf.fail(
            "vocab_size",
            std::to_string(config.vocab_size) + " is too small for the tokenizer's special id " + std::to_string(id));
      }
    }
    model_ = CLIPTextModel(config, at::TensorOptions().dtype(placement_.dtype()));
    const std::string file = nn::find_weights_file(dir, "model", o.variant);
    load_state_dict(safetensors_load(file), /*strict=*/true, file);
    // Frozen by default (the conditioning of RL fine-tuning); a trainer that wants to train it
    // turns requires_grad back on for trainable_parameters().
    module_freeze(*model_);
  }

  at::Tensor encode(const std::vector<std::string>& prompts) override {
    const auto lock = placement_.lock_for_use();
    const c10::Device device = placement_.device();
    const at::Tensor ids = tokenizer_.encode_batch(prompts, max_length_).to(device);
    return model_->forward(ids).last_hidden_state.to(at::kFloat);
  }

  std::vector<at::Tensor> trainable_parameters() override { return model_->parameters(); }
  TensorMap state_dict() const override { return module_state_dict(*model_); }

  void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) override {
    TensorMap w = weights;
    erase_position_ids(w);  // older files' int64 position_ids buffer (models.md 3.4)
    module_load_state_dict(*model_, w, strict, source, kComponent);
  }

  void set_training(bool training) override { model_->train(training); }

  void to(c10::Device device) override {
    placement_.move_to(device, [&](c10::Device d) { model_->to(d); });
  }

 private:
  std::int64_t max_length_;
  nn::WeightPlacement placement_;
  CLIPTokenizer tokenizer_;
  CLIPTextModel model_{nullptr};
};

void register_clip_text(Registry& r) {
  r.add<TextEncoder, CLIPTextOptions>(
      kName, "CLIP text encoder + BPE tokenizer of a diffusers pipeline (SD-Turbo's OpenCLIP-H text tower)",
      &read_options, [](const CLIPTextOptions& o, const ComponentConfig& cfg) -> std::shared_ptr<TextEncoder> {
        return std::make_shared<CLIPTextEncoder>(o, cfg);
      });
}

}  // namespace
}  // namespace sdpo::clip_text

SDPO_DECLARE_PLUGIN("clip_text", "0.1.0", sdpo::clip_text::register_clip_text)
