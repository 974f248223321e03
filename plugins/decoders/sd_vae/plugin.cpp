// Plugin `sd_vae`: the AutoencoderKL decoder of a diffusers pipeline folder (SD-Turbo's VAE,
// research/models.md 4) as an sdpo::Decoder: images = clamp(vae(latents / scaling_factor) / 2 +
// 0.5, 0, 1).

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <memory>
#include <sstream>

#include "sdpo/core/decoder.h"
#include "sdpo/core/error.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/weight_dtype.h"
#include "sdpo/models/sd_vae/vae_decoder.h"

namespace sdpo::sd_vae {
namespace {

constexpr const char* kName = "sd_vae";

struct SDVAEOptions {
  std::string path;               ///< diffusers pipeline folder (vae/)
  std::string variant;            ///< "" or "fp16": which weights file
  std::string dtype = "float32";  ///< parameter and activation dtype
};

SDVAEOptions read_options(OptionReader& r) {
  SDVAEOptions o;
  o.path = r.required_string("path", "diffusers pipeline folder holding vae/");
  o.variant = r.string(
      "variant", o.variant,
      "weights file: \"\" = vae/diffusion_pytorch_model.safetensors, \"fp16\" = "
      "diffusion_pytorch_model.fp16.safetensors");
  if (!o.variant.empty() && o.variant != "fp16")
    r.fail("variant", "expected \"\" or \"fp16\", got '" + o.variant + "'");
  o.dtype = r.string(
      "dtype", o.dtype, "parameter dtype; float32 as the config's force_upcast asks (float16 only on a CUDA device)",
      nn::weight_dtype_names());
  return o;
}

class SDVAEDecoderComponent final : public Decoder {
 public:
  SDVAEDecoderComponent(const SDVAEOptions& o, const ComponentConfig& cfg)
      : placement_(o.dtype, cfg.file, cfg.json_path) {
    namespace fs = std::filesystem;
    const std::string dir = (fs::path(o.path) / "vae").string();
    const nn::HFConfig hf = nn::HFConfig::load((fs::path(dir) / "config.json").string());
    const SDVAEConfig config = SDVAEConfig::from_hf(hf);
    if (config.out_channels != 3) hf.fail("out_channels", "expected 3 (the decoder returns RGB images)");
    model_ = SDVAEDecoder(config, at::TensorOptions().dtype(placement_.dtype()));
    const std::string file = nn::find_weights_file(dir, "diffusion_pytorch_model", o.variant);
    module_load_state_dict(
        *model_, decoder_weights(safetensors_load(file), file), /*strict=*/true, file,
        std::string("decoder '") + kName + "'");
    module_freeze(*model_);
  }

  at::Tensor decode(const at::Tensor& latents) override {
    const SDVAEConfig& cfg = model_->config();
    if (latents.dim() != 4 || latents.size(1) != cfg.latent_channels) {
      std::ostringstream s;
      s << "decoder '" << kName << "': latents must be (B, " << cfg.latent_channels << ", h, w), got "
        << latents.sizes();
      throw Error(s.str());
    }
    const auto lock = placement_.lock_for_use();
    const c10::Device device = placement_.device();
    at::NoGradGuard no_grad;
    // models.md 4.2: z = latents / scaling_factor -> post_quant_conv -> decoder; [-1, 1] -> [0, 1].
    const at::Tensor z = latents.to(device, at::kFloat).div(cfg.scaling_factor).to(placement_.dtype());
    at::Tensor x = model_->forward(z).to(at::kFloat);
    return x.mul_(0.5).add_(0.5).clamp_(0.0, 1.0).to(latents.device());
  }

  void to(c10::Device device) override {
    placement_.move_to(device, [&](c10::Device d) { model_->to(d); });
  }

 private:
  nn::WeightPlacement placement_;
  SDVAEDecoder model_{nullptr};
};

void register_sd_vae(Registry& r) {
  r.add<Decoder, SDVAEOptions>(
      kName, "AutoencoderKL decoder of a diffusers pipeline (SD-Turbo's VAE): latents -> images in [0, 1]",
      &read_options, [](const SDVAEOptions& o, const ComponentConfig& cfg) -> std::shared_ptr<Decoder> {
        return std::make_shared<SDVAEDecoderComponent>(o, cfg);
      });
}

}  // namespace
}  // namespace sdpo::sd_vae

SDPO_DECLARE_PLUGIN("sd_vae", "0.1.0", sdpo::sd_vae::register_sd_vae)
