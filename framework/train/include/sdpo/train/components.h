#pragma once
// The components a manifest names, built from the registry in one place.

#include <memory>
#include <string>

#include "sdpo/train/manifest.h"

namespace sdpo {

class Model;
class TextEncoder;
class Decoder;
class Sampler;
class PromptSource;
class Reward;
class DenseRewardPredictor;
class Normalizer;
class Algorithm;

struct Components {
  std::shared_ptr<Model> model;
  std::shared_ptr<TextEncoder> text_encoder;
  std::shared_ptr<Decoder> decoder;
  std::shared_ptr<Sampler> sampler;
  std::shared_ptr<PromptSource> prompts;
  std::shared_ptr<Reward> reward;
  std::shared_ptr<DenseRewardPredictor> dense_reward;
  std::shared_ptr<Normalizer> normalizer;
  std::shared_ptr<Algorithm> algorithm;
};

/// What to build.
enum class ComponentSet {
  kSampling,  ///< model, text_encoder, decoder, sampler, prompts (+ reward if named)
  kTraining,  ///< every kind
};

/// Loads the manifest's plugins (default path + SDPO_PLUGIN_PATH + plugin_paths), then builds
/// the components. A missing section throws a ManifestError naming it.
Components build_components(const Manifest& m, ComponentSet set);

/// What build_components checks before building anything: every component named is registered
/// and accepts its options (after text_encoder/decoder take the model's `path`). Loads no weights.
void validate_components(const Manifest& m, ComponentSet set);

/// Loads the plugins a manifest needs into Registry::global() (idempotent).
void load_plugins(const Manifest& m);

}  // namespace sdpo
