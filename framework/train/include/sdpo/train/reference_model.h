#pragma once
// The frozen pretrained policy some algorithms compare against (D3PO's reference model,
// research/algorithms.md section 6), built once by the trainer when the algorithm's
// RolloutSpec::needs_reference_model is set.
//
// For a model whose trainable parameters are an adapter (Model::has_adapter(), e.g. LoRA on
// sd_unet) the reference is the policy itself with the adapter switched off for the duration of
// each forward call: no second copy of the base weights. Otherwise it is a second instance built
// from the same manifest section (so from the same pretrained checkpoint), with gradients off.
//
// Thread safety: the adapter view toggles the policy's adapter; do not run policy and reference
// forwards concurrently.

#include <c10/core/Device.h>

#include <memory>

#include "sdpo/core/api.h"
#include "sdpo/core/model.h"
#include "sdpo/core/options.h"

namespace sdpo {

/// `policy` must outlive the returned model. `section` is the manifest's model section.
SDPO_API std::shared_ptr<Model> make_reference_model(
    const std::shared_ptr<Model>& policy, const ComponentConfig& section, c10::Device device);

}  // namespace sdpo
