// Plugin `torchscript`: any TorchScript module whose forward(x_t, t, cond) returns the prediction
// is the policy, for architectures not written in C++ here (README.md). This is the only unit of
// the project that includes libtorch's JIT headers.

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <exception>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/options.h"

namespace sdpo::torchscript {
namespace {

constexpr const char* kName = "torchscript";
constexpr const char* kComponent = "model 'torchscript'";

struct TorchScriptOptions {
  std::string file;
  std::string prediction_type = "epsilon";
  std::vector<std::int64_t> latent_shape;
  bool trainable = true;
};

TorchScriptOptions read_options(OptionReader& r) {
  TorchScriptOptions o;
  o.file = r.required_string(
      "file",
      "TorchScript archive (torch.jit.save) whose forward(x_t, t, cond) returns the "
      "prediction, shaped like x_t");
  o.prediction_type =
      r.string("prediction_type", o.prediction_type, "what forward() predicts", {"epsilon", "v_prediction", "sample"});
  o.latent_shape = r.integers(
      "latent_shape", o.latent_shape, 1, std::int64_t{1} << 20, "latent shape (C, H, W) of one sample (required)");
  o.trainable = r.boolean("trainable", o.trainable, "train every parameter of the module (false: all frozen)");
  // `file` is empty only while `sdpo plugins` lists the options (a required option then reads as
  // empty); a real configuration must give the shape.
  if (!o.file.empty() && o.latent_shape.size() != 3) {
    r.fail("latent_shape", "required: a list of 3 positive integers (C, H, W)");
  }
  return o;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

class TorchScriptModel final : public Model {
 public:
  explicit TorchScriptModel(const TorchScriptOptions& o) : options_(o) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(o.file, ec)) throw FileError(o.file, "TorchScript file not found");
    try {
      module_ = torch::jit::load(o.file, c10::Device(c10::kCPU));
    } catch (const c10::Error& e) {
      throw FileError(o.file, "not a TorchScript archive (torch.jit.save): " + first_line(e.what_without_backtrace()));
    }
    auto method = module_.find_method("forward");
    if (!method) throw FileError(o.file, "the TorchScript module has no forward method");
    // Arguments after self: x_t, t, cond, then only ones with defaults.
    const c10::FunctionSchema& schema = method->function().getSchema();
    const auto& args = schema.arguments();
    bool ok = args.size() >= 4;
    for (std::size_t i = 4; ok && i < args.size(); ++i) ok = args[i].default_value().has_value();
    if (!ok) {
      std::ostringstream s;
      s << schema;
      throw FileError(o.file, "forward must take (x_t, t, cond); its signature is " + s.str());
    }
    for (auto p : module_.parameters()) p.requires_grad_(o.trainable);
  }

  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override {
    c10::IValue out;
    try {
      out = module_.forward({x_t, t, cond});
    } catch (const std::exception& e) {
      throw Error(options_.file + ": " + kComponent + ": forward failed: " + first_line(e.what()));
    }
    if (!out.isTensor()) {
      throw Error(options_.file + ": " + kComponent + ": forward returned " + out.tagKind() + ", expected a Tensor");
    }
    at::Tensor y = out.toTensor();
    if (y.sizes() != x_t.sizes()) {
      throw Error(
          options_.file + ": " + kComponent + ": forward returned shape " + shape_text(y.sizes()) +
          ", expected the shape of x_t " + shape_text(x_t.sizes()));
    }
    return y;
  }

  std::string prediction_type() const override { return options_.prediction_type; }
  std::vector<std::int64_t> latent_shape() const override { return options_.latent_shape; }

  std::vector<at::Tensor> trainable_parameters() override {
    std::vector<at::Tensor> out;
    if (options_.trainable) {
      for (const auto& p : module_.parameters()) out.push_back(p);
    }
    return out;
  }

  TensorMap state_dict() const override {
    TensorMap out = parameters();
    for (const auto& b : module_.named_buffers()) out.emplace(b.name, b.value.detach());
    return out;
  }

  TensorMap trainable_state_dict() const override { return options_.trainable ? parameters() : TensorMap(); }

  // The strict rules of sdpo::module_load_state_dict, over the module's parameters and buffers.
  void load_state_dict(const TensorMap& weights, bool strict, const std::string& source) override {
    TensorMap targets = state_dict();
    auto refuse = [&](const std::string& what) { throw Error(source + ": " + kComponent + ": " + what); };
    for (const auto& [key, target] : targets) {
      auto it = weights.find(key);
      if (it == weights.end()) {
        if (strict) refuse("missing key '" + key + "' (shape " + shape_text(target.sizes()) + ")");
        continue;
      }
      if (!it->second.defined()) refuse("key '" + key + "' holds no tensor");
      if (it->second.sizes() != target.sizes()) {
        refuse(
            "key '" + key + "' has shape " + shape_text(it->second.sizes()) + " but the module expects " +
            shape_text(target.sizes()));
      }
      if (at::isFloatingType(target.scalar_type()) && !at::isFloatingType(it->second.scalar_type())) {
        refuse("key '" + key + "' is not a floating-point tensor");
      }
    }
    if (strict) {
      for (const auto& kv : weights) {
        if (!targets.count(kv.first)) refuse("unexpected key '" + kv.first + "'");
      }
    }
    at::NoGradGuard no_grad;
    for (auto& [key, target] : targets) {
      auto it = weights.find(key);
      if (it != weights.end()) target.copy_(it->second);
    }
  }

  void set_training(bool training) override { module_.train(training); }
  void to(c10::Device device) override { module_.to(device); }

 private:
  TensorMap parameters() const {
    TensorMap out;
    for (const auto& p : module_.named_parameters()) out.emplace(p.name, p.value.detach());
    return out;
  }

  TorchScriptOptions options_;
  torch::jit::Module module_;
};

void register_torchscript(Registry& r) {
  r.add<Model, TorchScriptOptions>(
      kName, "any TorchScript module with forward(x_t, t, cond) -> prediction", &read_options,
      [](const TorchScriptOptions& o, const ComponentConfig&) { return std::make_shared<TorchScriptModel>(o); });
}

}  // namespace
}  // namespace sdpo::torchscript

SDPO_DECLARE_PLUGIN("torchscript", "0.1.0", sdpo::torchscript::register_torchscript)
