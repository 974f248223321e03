#pragma once
// Layers of the paper-scale models (SD UNet, CLIP towers, VAE), shared by the `sd_unet`,
// `clip_text` and `sd_vae` plugins and by the reward models' image towers. Not a plugin: a static
// library each of those plugins links (models/nn/README.md).
//
// Why not torch::nn's own layers: these create their parameters with caller-given TensorOptions,
// so a model can be built on the meta device (shapes only, no memory: how the tests check the
// real SD-Turbo parameter counts in a second) or directly in fp16 on a GPU; and parameter names
// are exactly the diffusers/transformers state-dict names ("weight", "bias", "lora_A.weight").
//
// Initialization: on a real device, weights and biases are drawn as torch.nn's defaults do
// (uniform +-1/sqrt(fan_in)), norms start at (1, 0); real runs overwrite them from checkpoints.
// Draws use the default CPU generator (wrap construction in sdpo::ScopedSeed for reproducibility).
//
// Thread safety: modules are not thread-safe.

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

namespace sdpo::nn {

/// Linear layer y = x W^T + b. weight: (out, in); bias: (out,) if `bias`.
/// Optionally carries a LoRA adapter (research: models.md section 5): y += scale * B(A(x)),
/// A: (r, in), B: (out, r), stored as submodules "lora_A"/"lora_B" so that state-dict keys are
/// PEFT's "<path>.lora_A.weight" / "<path>.lora_B.weight" (what diffusers' load_lora_weights
/// reads after a "unet." prefix).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(std::int64_t in, std::int64_t out, bool bias, const at::TensorOptions& options);
  /// x: (..., in) -> (..., out).
  at::Tensor forward(const at::Tensor& x);

  /// Adds a LoRA adapter of rank `rank` with delta scale `alpha / rank`, its parameters created
  /// with `options` (fp32 even when the base is fp16, as diffusers does): A ~ N(0, 1/rank),
  /// B = 0, so the layer's output is unchanged until B is trained. Throws if one exists.
  void add_lora(std::int64_t rank, double alpha, const at::TensorOptions& options);
  bool has_lora() const { return lora_a_.defined(); }
  /// With the adapter disabled forward() is the base layer's (D3PO's reference policy).
  void set_lora_enabled(bool enabled) { lora_enabled_ = enabled; }
  std::int64_t in_features() const { return weight.size(1); }
  std::int64_t out_features() const { return weight.size(0); }

  at::Tensor weight, bias;

 private:
  at::Tensor lora_a_, lora_b_;  // registered as lora_A.weight / lora_B.weight
  double lora_scale_ = 1.0;
  bool lora_enabled_ = true;
};
TORCH_MODULE(Linear);

/// 2-D convolution, square kernel, symmetric zero padding. weight: (out, in, k, k); bias (out,).
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(
      std::int64_t in,
      std::int64_t out,
      std::int64_t kernel,
      std::int64_t stride,
      std::int64_t padding,
      const at::TensorOptions& options,
      bool bias = true);
  /// x: (B, in, H, W) -> (B, out, H', W').
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;

 private:
  std::int64_t stride_, padding_;
};
TORCH_MODULE(Conv2d);

/// GroupNorm with affine weight/bias of shape (channels,). Statistics in fp32 when the input is
/// half precision (the result is cast back), as autocast does for group_norm.
class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(std::int64_t groups, std::int64_t channels, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;

 private:
  std::int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm);

/// LayerNorm over the last dimension, affine weight/bias (dim,); fp32 statistics for half inputs.
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(std::int64_t dim, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

/// Lookup table: ids (any shape, int64) -> (..., dim). weight: (count, dim), drawn N(0, 1) on a
/// real device as torch.nn.Embedding does (CLIP's token and position embeddings).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(std::int64_t count, std::int64_t dim, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& ids);
  at::Tensor weight;
};
TORCH_MODULE(Embedding);

/// Multi-head scaled dot-product attention on already projected tensors.
/// q: (B, Nq, H*d), k and v: (B, Nk, H*d); returns (B, Nq, H*d). Scale 1/sqrt(d).
/// `causal`: position i attends to j <= i only (CLIP's text tower). Uses the fused kernel where
/// libtorch has one (2.x), else matmul-softmax-matmul with the softmax in fp32 for half inputs.
at::Tensor multi_head_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t heads, bool causal = false);

/// Every LinearImpl inside `module` that carries a LoRA adapter.
std::vector<LinearImpl*> lora_layers(torch::nn::Module& module);

/// Number of scalar elements over `module`'s parameters (meta tensors count too).
std::int64_t parameter_count(const torch::nn::Module& module);

}  // namespace sdpo::nn
