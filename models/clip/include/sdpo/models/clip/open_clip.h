#pragma once
// open_clip's CLIP (the model under the HPSv2 checkpoint, research/models.md 6.3) run as
// transformers' CLIPModel (clip_model.h): its architecture config, its state-dict names mapped to
// CLIPModel's, and its tokenization (zero padding). One C++ CLIP thus serves PickScore (a
// transformers file) and HPSv2 (an open_clip state dict).
//
// Key mapping (models.md 6.3), open_clip -> CLIPModel, per tower ("visual." -> "vision_model.",
// the text tower at the top level -> "text_model."):
//   transformer.resblocks.{i}.attn.in_proj_weight [3W, W] -> encoder.layers.{i}.self_attn.
//       {q,k,v}_proj.weight (rows 0..W-1, W..2W-1, 2W..3W-1); in_proj_bias [3W] likewise
//   transformer.resblocks.{i}.attn.out_proj.* -> encoder.layers.{i}.self_attn.out_proj.*
//   transformer.resblocks.{i}.{ln_1, ln_2, mlp.c_fc, mlp.c_proj}.* -> encoder.layers.{i}.
//       {layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}.*
//   visual.conv1.weight -> vision_model.embeddings.patch_embedding.weight
//   visual.class_embedding -> vision_model.embeddings.class_embedding
//   visual.positional_embedding -> vision_model.embeddings.position_embedding.weight
//   visual.ln_pre.* -> vision_model.pre_layrnorm.*      visual.ln_post.* -> vision_model.post_layernorm.*
//   visual.proj [Dv, P] -> visual_projection.weight [P, Dv] (transposed)
//   token_embedding.weight -> text_model.embeddings.token_embedding.weight
//   positional_embedding -> text_model.embeddings.position_embedding.weight
//   ln_final.* -> text_model.final_layer_norm.*
//   text_projection [Dt, P] -> text_projection.weight [P, Dt] (transposed)
//   logit_scale -> logit_scale
//
// Example:
//   CLIPModel clip(open_clip_vit_h_14(), at::TensorOptions());
//   load_open_clip_state_dict(*clip, safetensors_load(file), file, "reward 'hpsv2'");
//   at::Tensor ids = open_clip_tokenize(tokenizer, prompts, 77);   // (B, 77), zero padded
//
// Thread safety: pure functions (the loader writes only into the given module).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sdpo/core/tensor_map.h"
#include "sdpo/models/clip/clip_model.h"
#include "sdpo/models/nn/hf_config.h"
#include "sdpo/models/tokenizers/clip_tokenizer.h"

namespace sdpo::clip_text {

/// open_clip's ViT-H-14 (models.md 6.3) as a CLIPConfig: vision 1280 wide, 32 layers, 16 heads
/// (head width 80), MLP 5120, patch 14, image 224; text 1024 wide, 24 layers, 16 heads, MLP 4096,
/// context 77, vocabulary 49408; projection (embed_dim) 1024; exact GELU (quick_gelu off);
/// LayerNorm eps 1e-5; text pooled at argmax(ids) (eos_token_id 2, transformers' legacy rule).
CLIPConfig open_clip_vit_h_14();

/// Reads an open_clip model config (the layout of open_clip's model_configs/<name>.json) over
/// `base`, whose values absent keys keep: "embed_dim", "quick_gelu" (true: quick_gelu in both
/// towers, false: exact GELU), "vision_cfg": {"image_size", "layers", "width", "head_width",
/// "patch_size", "mlp_ratio"}, "text_cfg": {"context_length", "vocab_size", "width", "heads",
/// "layers", "mlp_ratio"}. MLP width = int(width * mlp_ratio); vision heads = width / head_width.
/// Any other key with a non-null value is refused (an architecture option this CLIP does not
/// implement would silently give wrong features), as are sizes that do not divide. Errors are
/// sdpo::ManifestError naming the file and the key ("vision_cfg.head_width").
CLIPConfig open_clip_config(const nn::HFConfig& cfg, const CLIPConfig& base);

/// open_clip state-dict names -> CLIPModel names, splitting in_proj into q/k/v and transposing
/// the two projections (see the file comment). `source` (the file) is named in errors: a key
/// outside the mapping, or an in_proj / projection tensor whose rank (or in_proj row count,
/// which must be divisible by 3) cannot be mapped, throws sdpo::FileError naming the key and
/// `source`. Shapes are otherwise not checked here (see load_open_clip_state_dict).
TensorMap open_clip_to_hf(const TensorMap& open_clip, const std::string& source);

/// The open_clip key a CLIPModel key comes from, e.g.
/// "vision_model.encoder.layers.3.self_attn.k_proj.bias" -> "visual.transformer.resblocks.3.attn.in_proj_bias",
/// "text_projection.weight" -> "text_projection"; "" for a key outside the mapping.
std::string open_clip_key(const std::string& hf_key);

/// Maps `open_clip` (open_clip_to_hf) and loads it strictly into `model`, every check before
/// any copy: a missing tensor, a tensor whose shape does not fit the model, or one the model
/// does not have throws sdpo::Error naming `source`, `component` and the open_clip key (and the
/// CLIPModel key it maps to).
void load_open_clip_state_dict(
    CLIPModelImpl& model, const TensorMap& open_clip, const std::string& source, const std::string& component);

/// open_clip's tokenize (models.md 6.3): per prompt <start>, content ids, <end>, then zeros up
/// to `context_length` (>= 2); an overlong prompt keeps its first context_length - 2 content ids
/// and the end token. (B, context_length) int64 on the CPU. The BPE is `tokenizer`'s (its
/// differences from open_clip's SimpleTokenizer are in models/tokenizers/README.md); its own pad
/// token is not used.
at::Tensor open_clip_tokenize(
    const CLIPTokenizer& tokenizer, const std::vector<std::string>& prompts, std::int64_t context_length);

}  // namespace sdpo::clip_text
