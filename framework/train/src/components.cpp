#include "sdpo/train/components.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/decoder.h"
#include "sdpo/core/dense_reward.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/train/guidance.h"

namespace sdpo {

void load_plugins(const Manifest& m) {
  static PluginLoader* loader = new PluginLoader(Registry::global());
  loader->load_default(m.plugin_paths);
}

namespace {
template <class Kind>
std::shared_ptr<Kind> make(const ComponentConfig& c, const Manifest& m) {
  if (c.name.empty()) {
    throw ManifestError(
        m.file, c.kind,
        std::string("missing section: name a ") + c.kind +
            " as {\"name\": ..., \"options\": {...}}; registered: " + [&] {
              std::string s;
              for (const auto& n : Registry::global().names(c.kind)) s += (s.empty() ? "" : ", ") + n;
              return s.empty() ? std::string("(none)") : s;
            }());
  }
  return Registry::global().create<Kind>(c);
}
}  // namespace

namespace {
// A diffusers pipeline folder holds the model, text encoder and decoder together: a text_encoder
// or decoder section without a `path` of its own takes the model's, when its component has a
// `path` option (DESIGN.md section 5).
Manifest with_shared_path(const Manifest& in) {
  const auto* model_path = in.model.options.if_contains("path");
  if (!model_path) return in;
  Manifest m = in;
  for (ComponentConfig* c : {&m.text_encoder, &m.decoder}) {
    if (c->name.empty() || c->options.contains("path") || !Registry::global().contains(c->kind, c->name)) continue;
    for (const auto& doc : Registry::global().options(c->kind, c->name)) {
      if (doc.key == "path") {
        c->options["path"] = *model_path;
        break;
      }
    }
  }
  return m;
}
}  // namespace

namespace {
void validate_resolved(const Manifest& m, ComponentSet set) {
  std::vector<const ComponentConfig*> wanted{&m.model, &m.text_encoder, &m.decoder, &m.sampler, &m.prompts};
  if (set == ComponentSet::kTraining || !m.reward.name.empty()) wanted.push_back(&m.reward);
  if (set == ComponentSet::kTraining) {
    for (const auto* cfg : {&m.dense_reward, &m.normalizer, &m.algorithm}) wanted.push_back(cfg);
  }
  for (const auto* cfg : wanted) {
    if (!cfg->name.empty()) Registry::global().validate(*cfg);
  }
}
}  // namespace

void validate_components(const Manifest& manifest, ComponentSet set) {
  load_plugins(manifest);
  validate_resolved(with_shared_path(manifest), set);
}

Components build_components(const Manifest& manifest, ComponentSet set) {
  load_plugins(manifest);
  const Manifest m = with_shared_path(manifest);
  // Every name and option first, so a typo anywhere is reported before any weights load.
  validate_resolved(m, set);
  Components c;
  c.model = make<Model>(m.model, m);
  c.text_encoder = make<TextEncoder>(m.text_encoder, m);
  c.decoder = make<Decoder>(m.decoder, m);
  c.sampler = make<Sampler>(m.sampler, m);
  c.prompts = make<PromptSource>(m.prompts, m);
  if (set == ComponentSet::kTraining || !m.reward.name.empty()) c.reward = make<Reward>(m.reward, m);
  if (set == ComponentSet::kTraining) {
    c.dense_reward = make<DenseRewardPredictor>(m.dense_reward, m);
    c.normalizer = make<Normalizer>(m.normalizer, m);
    c.algorithm = make<Algorithm>(m.algorithm, m);
  }
  c10::Device device(m.device);
  c.model->to(device);
  c.text_encoder->to(device);
  c.decoder->to(device);
  if (c.reward) c.reward->to(device);
  c.model->set_training(false);
  c.text_encoder->set_training(false);
  if (m.sample.guidance != 1.0) {
    at::Tensor uncond;
    {
      at::NoGradGuard no_grad;
      uncond = c.text_encoder->encode({""}).detach();
    }
    c.model = std::make_shared<GuidedModel>(c.model, uncond, m.sample.guidance);
  }
  return c;
}

}  // namespace sdpo
