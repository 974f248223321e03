// Plugin `sd_unet`: the SD 1.x / 2.x UNet (SD-Turbo) of a diffusers pipeline folder as an
// sdpo::Model, with frozen base weights and a trainable LoRA adapter (README.md).

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/math/lcm.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/nn/layers.h"
#include "sdpo/models/nn/weight_dtype.h"
#include "sdpo/models/sd_unet/unet.h"

namespace sdpo::sd_unet {
namespace {

namespace fs = std::filesystem;

constexpr const char* kName = "sd_unet";
constexpr const char* kComponent = "model 'sd_unet'";
// models.md 5.3: diffusers' load_lora_weights keeps only keys under this prefix.
const std::string kLoRAPrefix = "unet.";

struct SDUNetOptions {
  std::string path;
  std::string variant;
  std::string dtype = "float32";
  std::int64_t lora_rank = 4;
  double lora_alpha = 0.0;  // 0: equal to the rank
  std::vector<std::string> lora_targets{"to_q", "to_k", "to_v", "to_out.0"};
  std::string lora_weights;
  std::int64_t seed = 0;
  std::string prediction_type = "auto";
  double guidance_embedding_w = -1.0;  // < 0: no timestep_cond
};

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string s;
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? sep : "") + items[i];
  return s;
}

SDUNetOptions read_options(OptionReader& r) {
  SDUNetOptions o;
  o.path = r.required_string(
      "path", "diffusers pipeline folder containing unet/ (e.g. a copy of stabilityai/sd-turbo), or a unet folder");
  o.variant = r.string(
      "variant", o.variant,
      "weights variant: \"\" reads unet/diffusion_pytorch_model.safetensors, \"fp16\" "
      "unet/diffusion_pytorch_model.fp16.safetensors");
  o.dtype = r.string(
      "dtype", o.dtype,
      "dtype of the frozen base weights (inputs are cast to it, outputs come back float32; the LoRA "
      "adapter stays float32); float16 needs a GPU",
      nn::weight_dtype_names());
  o.lora_rank = r.integer(
      "lora_rank", o.lora_rank, 0, 4096,
      "LoRA rank on the lora_targets layers (4: the DDPO/SDPO default); 0: fine-tune every weight");
  o.lora_alpha = r.number(
      "lora_alpha", o.lora_alpha, 0.0, 1e6,
      "LoRA scale numerator, delta = (alpha / rank) B A x; 0: alpha = rank (scale 1, as DDPO/SDPO)");
  o.lora_targets = r.strings(
      "lora_targets", o.lora_targets,
      "Linear layer names that get an adapter (PEFT target_modules rule: a layer matches when its path ends with the "
      "name); default: q, k, v and output projections of every attn1/attn2");
  o.lora_weights = r.string(
      "lora_weights", o.lora_weights,
      "safetensors file of LoRA weights to start from (keys unet.<layer>.lora_A.weight / "
      ".lora_B.weight, as this model's checkpoints and diffusers' LoRA files hold them)");
  o.seed = r.integer("seed", o.seed, 0, std::int64_t{1} << 62, "seed of the LoRA initialization");
  o.prediction_type = r.string(
      "prediction_type", o.prediction_type,
      "what the UNet predicts; auto: prediction_type of <path>/scheduler/scheduler_config.json "
      "if present, else epsilon",
      {"auto", "epsilon", "v_prediction"});
  o.guidance_embedding_w = r.number(
      "guidance_embedding_w", o.guidance_embedding_w, -1.0, 1e4,
      "LCM guidance w = guidance_scale - 1 (e.g. 7 for guidance 8, as RLCM): every forward passes the UNet the "
      "w embedding of research/models.md 8.3 as timestep_cond; needs time_cond_proj_dim in the UNet config. "
      "Negative: no timestep_cond");
  if (o.lora_rank > 0 && o.lora_targets.empty()) r.fail("lora_targets", "names no layer (needed when lora_rank > 0)");
  if (o.lora_rank == 0 && !o.lora_weights.empty()) {
    r.fail("lora_weights", "needs lora_rank > 0 (with lora_rank 0 every weight trains and there is no adapter)");
  }
  return o;
}

bool is_lora_key(const std::string& key) {
  auto ends = [&](const std::string& s) {
    return key.size() >= s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".lora_A.weight") || ends(".lora_B.weight");
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

class SDUNetModel final : public Model {
 public:
  SDUNetModel(const SDUNetOptions& o, const ComponentConfig& cfg) : options_(o), cfg_(cfg) {
    // models.md 1.3: a pipeline folder holds unet/ (and scheduler/); a unet folder holds config.json.
    fs::path root(o.path);
    if (!root.has_filename()) root = root.parent_path();  // ".../unet/": its parent is the pipeline
    fs::path unet_dir = root / "unet", pipeline = root;
    std::error_code ec;
    if (!fs::is_regular_file(unet_dir / "config.json", ec)) {
      if (!fs::is_regular_file(root / "config.json", ec)) {
        throw FileError(
            (unet_dir / "config.json").string(),
            "not found: option 'path' must name a diffusers pipeline folder (with unet/config.json) "
            "or a unet folder (with config.json)");
      }
      unet_dir = root;
      pipeline = root.parent_path();
    }
    config_ = SDUNetConfig::from_hf(nn::HFConfig::load((unet_dir / "config.json").string()));
    if (o.guidance_embedding_w >= 0 && config_.time_cond_proj_dim == 0) {
      fail_option(
          "guidance_embedding_w", "needs a UNet with time_cond_proj_dim in " + (unet_dir / "config.json").string() +
                                      " (an LCM UNet); this one has none");
    }
    const std::string weights_file = nn::find_weights_file(unet_dir.string(), "diffusion_pytorch_model", o.variant);
    prediction_type_ = o.prediction_type;
    if (prediction_type_ == "auto") {
      const fs::path scheduler = pipeline / "scheduler" / "scheduler_config.json";
      prediction_type_ =
          fs::is_regular_file(scheduler, ec)
              ? nn::HFConfig::load(scheduler.string()).string("prediction_type", "epsilon", {"epsilon", "v_prediction"})
              : "epsilon";
    }
    dtype_ = nn::weight_dtype(o.dtype);
    // The model is built on the CPU and moved by the trainer; without a GPU it never leaves.
    if (dtype_ == at::kHalf && !at::hasCUDA()) refuse_half_on_cpu();

    {
      ScopedSeed seed(static_cast<std::uint64_t>(o.seed));
      net_ = SDUNet(config_, at::TensorOptions().dtype(dtype_));
    }
    module_load_state_dict(*net_, safetensors_load(weights_file), /*strict=*/true, weights_file, kComponent);

    if (o.lora_rank > 0) {
      const double alpha = o.lora_alpha > 0 ? o.lora_alpha : static_cast<double>(o.lora_rank);
      // The adapter's init depends on the seed only (its own scope), and it stays fp32 beside a
      // half-precision base, as diffusers creates it (models.md 8A).
      ScopedSeed seed(static_cast<std::uint64_t>(o.seed));
      try {
        apply_lora(*net_, o.lora_targets, o.lora_rank, alpha, at::TensorOptions().dtype(at::kFloat));
      } catch (const std::invalid_argument& e) {
        fail_option("lora_targets", e.what());
      }
      if (!o.lora_weights.empty()) load_lora_file(o.lora_weights);
    }
  }

  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override {
    const SDUNetConfig& c = config_;
    if (x_t.dim() != 4 || x_t.size(1) != c.in_channels) {
      throw Error(
          std::string(kName) + ": x_t must be (B, " + std::to_string(c.in_channels) + ", h, w), got " +
          shape_text(x_t.sizes()));
    }
    const std::int64_t b = x_t.size(0);
    if (cond.dim() != 3 || cond.size(0) != b || cond.size(2) != c.cross_attention_dim) {
      throw Error(
          std::string(kName) + ": cond must be (" + std::to_string(b) + ", L, " +
          std::to_string(c.cross_attention_dim) + ") (the UNet's cross_attention_dim), got " +
          shape_text(cond.sizes()));
    }
    if (t.numel() != b && t.numel() != 1) {
      throw Error(
          std::string(kName) + ": t must hold one timestep per sample (" + std::to_string(b) +
          ") or a single one, got " + shape_text(t.sizes()));
    }
    if (dtype_ == at::kHalf && device_.is_cpu()) refuse_half_on_cpu();
    at::Tensor tb = t.numel() == 1 ? t.reshape({1}).expand({b}) : t.reshape({b});
    // models.md 8.3: an LCM UNet gets its fixed guidance w as a sinusoidal timestep_cond.
    at::Tensor w_emb;
    if (options_.guidance_embedding_w >= 0) {
      w_emb = lcm_guidance_embedding(at::full({b}, options_.guidance_embedding_w, at::kFloat), c.time_cond_proj_dim)
                  .to(x_t.device());
    }
    return net_->forward(x_t.to(dtype_), tb, cond.to(dtype_), w_emb).to(at::kFloat);
  }

  std::string prediction_type() const override { return prediction_type_; }

  std::vector<std::int64_t> latent_shape() const override {
    return {config_.in_channels, config_.sample_size, config_.sample_size};
  }

  std::vector<at::Tensor> trainable_parameters() override {
    std::vector<at::Tensor> out;
    for (const auto& p : net_->named_parameters()) {
      if (options_.lora_rank == 0 || is_lora_key(p.key())) out.push_back(p.value());
    }
    return out;
  }

  TensorMap state_dict() const override {
    TensorMap out;
    for (auto& [key, value] : module_state_dict(*net_)) out.emplace(is_lora_key(key) ? kLoRAPrefix + key : key, value);
    return out;
  }

  TensorMap trainable_state_dict() const override {
    if (options_.lora_rank == 0) return state_dict();
    TensorMap out;
    for (auto& [key, value] : module_state_dict(*net_)) {
      if (is_lora_key(key)) out.emplace(kLoRAPrefix + key, value);
    }
    return out;
  }

  void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) override {
    module_load_state_dict(*net_, without_prefix(weights, source), strict, source, kComponent);
  }

  void set_training(bool training) override { net_->train(training); }

  void to(c10::Device device) override {
    if (dtype_ == at::kHalf && device.is_cpu()) refuse_half_on_cpu();
    net_->to(device);
    device_ = device;
  }

  at::ScalarType trained_dtype() const override { return dtype_; }
  bool has_adapter() const override { return options_.lora_rank > 0; }

  void set_adapter_enabled(bool enabled) override {
    for (auto* layer : nn::lora_layers(*net_)) layer->set_lora_enabled(enabled);
  }

 private:
  [[noreturn]] void fail_option(const std::string& key, const std::string& message) const {
    throw ManifestError(
        cfg_.file, cfg_.json_path.empty() ? key : cfg_.json_path + "." + key, std::string(kComponent) + ": " + message);
  }

  [[noreturn]] void refuse_half_on_cpu() const {
    fail_option(
        "dtype",
        "float16 weights cannot run on the CPU (libtorch 1.13 has no CPU half-precision "
        "convolution); use \"bfloat16\" or \"float32\" there, float16 on a GPU");
  }

  // LoRA keys may carry diffusers' "unet." prefix (models.md 5.3); the module's own names do not.
  static TensorMap without_prefix(const TensorMap& weights, const std::string& source) {
    TensorMap out;
    for (const auto& [key, value] : weights) {
      const bool prefixed = key.compare(0, kLoRAPrefix.size(), kLoRAPrefix) == 0;
      const std::string name = prefixed ? key.substr(kLoRAPrefix.size()) : key;
      if (!out.emplace(name, value).second) {
        throw Error(
            source + ": " + kComponent + ": key '" + name + "' is given both with and without the '" + kLoRAPrefix +
            "' prefix");
      }
    }
    return out;
  }

  // A LoRA file must hold exactly this model's adapter weights (no base weights, no text encoder
  // LoRA), so a file written for other targets or another rank is refused rather than half-used.
  void load_lora_file(const std::string& path) {
    const TensorMap weights = without_prefix(safetensors_load(path), path);
    TensorMap adapter;
    for (auto& [key, value] : module_state_dict(*net_)) {
      if (is_lora_key(key)) adapter.emplace(key, value);
    }
    for (const auto& kv : weights) {
      if (!adapter.count(kv.first)) {
        throw Error(
            path + ": " + kComponent + ": unexpected key '" + kv.first +
            "' (a LoRA file for this model holds exactly the unet.<layer>.lora_A/lora_B.weight keys of "
            "lora_targets '" +
            join(options_.lora_targets, ",") + "')");
      }
    }
    for (const auto& kv : adapter) {
      if (!weights.count(kv.first)) {
        throw Error(
            path + ": " + kComponent + ": missing key '" + kLoRAPrefix + kv.first + "' (shape " +
            shape_text(kv.second.sizes()) + ")");
      }
    }
    module_load_state_dict(*net_, weights, /*strict=*/false, path, kComponent);
  }

  SDUNetOptions options_;
  ComponentConfig cfg_;
  SDUNetConfig config_;
  std::string prediction_type_;
  at::ScalarType dtype_ = at::kFloat;
  c10::Device device_{c10::kCPU};
  SDUNet net_{nullptr};
};

std::shared_ptr<Model> make_model(const SDUNetOptions& o, const ComponentConfig& cfg) {
  return std::make_shared<SDUNetModel>(o, cfg);
}

void register_sd_unet(Registry& r) {
  r.add<Model, SDUNetOptions>(
      kName,
      "Stable Diffusion 1.x/2.x UNet (SD-Turbo) from a diffusers folder, LoRA or full "
      "fine-tuning",
      &read_options, &make_model);
}

}  // namespace
}  // namespace sdpo::sd_unet

SDPO_DECLARE_PLUGIN("sd_unet", "0.1.0", sdpo::sd_unet::register_sd_unet)
