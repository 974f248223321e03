// Plugin `toy_unet`: the toy world's conditional UNet as an sdpo::Model (README.md).

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <memory>
#include <sstream>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/module_state.h"
#include "sdpo/core/options.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/models/toy/toy_unet.h"

namespace sdpo::toy_unet {
namespace {

constexpr const char* kName = "toy_unet";

ToyUNetOptions read_options(OptionReader& r) {
  ToyUNetOptions o;
  o.image_size = r.integer("image_size", o.image_size, 4, 1024, "height = width of the latents, in pixels");
  o.in_channels = r.integer("in_channels", o.in_channels, 1, 64, "latent channels (3: RGB in [-1, 1])");
  o.channels = r.integers(
      "channels", o.channels, 8, 1024, "feature channels per resolution level (level l works at image_size / 2^l)");
  o.cond_dim = r.integer("cond_dim", o.cond_dim, 1, 4096, "width D of the text conditioning (B, L, D)");
  o.heads = r.integer("heads", o.heads, 1, 64, "cross-attention heads");
  o.norm_groups = r.integer("norm_groups", o.norm_groups, 1, 256, "GroupNorm groups");
  o.checkpoint = r.string("checkpoint", o.checkpoint, "safetensors weights; empty: random init from seed");
  o.seed = r.integer("seed", o.seed, 0, std::int64_t{1} << 62, "random init seed (without checkpoint)");
  o.prediction_type = r.string(
      "prediction_type", o.prediction_type, "what forward() predicts (the pretraining target)",
      {"epsilon", "v_prediction", "sample"});

  const auto levels = static_cast<std::int64_t>(o.channels.size());
  if (levels < 1 || levels > 5) r.fail("channels", "expected 1 to 5 levels, got " + std::to_string(levels));
  if (o.image_size % (std::int64_t{1} << (levels - 1)) != 0) {
    r.fail(
        "image_size", std::to_string(o.image_size) + " is not divisible by 2^(levels-1) = " +
                          std::to_string(std::int64_t{1} << (levels - 1)) + " (one halving per level)");
  }
  for (std::int64_t l = 0; l < levels; ++l) {
    const std::int64_t c = o.channels[l];
    if (c % o.norm_groups != 0) {
      r.fail(
          "norm_groups", std::to_string(o.norm_groups) + " does not divide channels[" + std::to_string(l) +
                             "] = " + std::to_string(c));
    }
    if (l >= 1 && c % o.heads != 0) {
      r.fail(
          "heads", std::to_string(o.heads) + " does not divide channels[" + std::to_string(l) +
                       "] = " + std::to_string(c) + " (cross-attention runs at levels >= 1)");
    }
  }
  return o;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

class ToyUNetModel final : public Model {
 public:
  explicit ToyUNetModel(const ToyUNetOptions& o) : options_(o) {
    ScopedSeed seed(static_cast<std::uint64_t>(o.seed));
    net_ = ToyUNet(o);
  }

  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override {
    const ToyUNetOptions& o = options_;
    if (x_t.dim() != 4 || x_t.size(1) != o.in_channels || x_t.size(2) != o.image_size || x_t.size(3) != o.image_size) {
      throw Error(
          std::string(kName) + ": x_t must be (B, " + std::to_string(o.in_channels) + ", " +
          std::to_string(o.image_size) + ", " + std::to_string(o.image_size) + "), got " + shape_text(x_t.sizes()));
    }
    const std::int64_t b = x_t.size(0);
    if (cond.dim() != 3 || cond.size(0) != b || cond.size(2) != o.cond_dim) {
      throw Error(
          std::string(kName) + ": cond must be (" + std::to_string(b) + ", L, " + std::to_string(o.cond_dim) +
          ") (cond_dim must match the text encoder's width), got " + shape_text(cond.sizes()));
    }
    if (t.numel() != b && t.numel() != 1) {
      throw Error(
          std::string(kName) + ": t must hold one timestep per sample (" + std::to_string(b) +
          ") or a single one, got " + shape_text(t.sizes()));
    }
    at::Tensor tb = t.numel() == 1 ? t.reshape({1}).expand({b}) : t.reshape({b});
    return net_->forward(x_t, tb, cond);
  }

  std::string prediction_type() const override { return options_.prediction_type; }

  std::vector<std::int64_t> latent_shape() const override {
    return {options_.in_channels, options_.image_size, options_.image_size};
  }

  std::vector<at::Tensor> trainable_parameters() override { return net_->parameters(); }

  TensorMap state_dict() const override { return module_state_dict(*net_); }
  TensorMap trainable_state_dict() const override { return module_state_dict(*net_); }

  void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) override {
    module_load_state_dict(*net_, weights, strict, source, std::string("model '") + kName + "'");
  }

  void set_training(bool training) override { net_->train(training); }
  void to(c10::Device device) override { net_->to(device); }

 private:
  ToyUNetOptions options_;
  ToyUNet net_{nullptr};
};

std::shared_ptr<Model> make_model(const ToyUNetOptions& o, const ComponentConfig& cfg) {
  auto model = std::make_shared<ToyUNetModel>(o);
  if (!o.checkpoint.empty()) model->load_state_dict(safetensors_load(o.checkpoint), true, o.checkpoint);
  return model;
}

void register_toy_unet(Registry& r) {
  r.add<Model, ToyUNetOptions>(
      kName, "small conditional UNet (about 0.5M parameters) for 32x32 pixel-space latents", &read_options,
      &make_model);
}

}  // namespace
}  // namespace sdpo::toy_unet

SDPO_DECLARE_PLUGIN("toy_unet", "0.1.0", sdpo::toy_unet::register_toy_unet)
