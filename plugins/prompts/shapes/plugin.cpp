// Prompt source `shapes`: the toy world's fixed prompt sets and its labelled images
// (DESIGN.md section 7). The world itself (scenes, prompts, rendering) is in world.h.

#include "sdpo/core/plugin.h"

#include <ATen/ops/stack.h>

#include <memory>
#include <string>
#include <utility>

#include "sdpo/core/error.h"
#include "sdpo/core/prompts.h"
#include "sdpo/models/toy/world.h"

namespace {

struct ShapesOptions {
  std::string prompt_sets = "standard";
  sdpo::toy::RenderOptions render;
  sdpo::toy::SceneDistribution scenes;

  static ShapesOptions read(sdpo::OptionReader& r) {
    ShapesOptions o;
    o.prompt_sets = r.string(
        "prompt_sets", o.prompt_sets,
        "standard: 45 training, 12 evaluation, 12 unseen prompts without compositions (the Table 1 "
        "categories); geneval: the toy GenEval prompts, 36 training, 12 evaluation, 12 unseen, 3 of "
        "each category (compositions included) in the evaluation and unseen sets",
        {"standard", "geneval"});
    o.render.image_size = r.integer("image_size", 32, 8, 512, "side of the square RGB images, in pixels");
    o.render.anti_alias = r.boolean("anti_alias", true, "draw soft 1-pixel edges");
    o.render.size_jitter = r.number(
        "size_jitter", 0.1, 0.0, 0.3,
        "object size scaled by a random factor in [1 - j, 1 + j] (above 0.1 neighbours may touch)");
    o.render.position_jitter = r.number(
        "position_jitter", 0.04, 0.0, 0.08,
        "random shift of the objects, as a fraction of the image side (above 0.04 neighbours may touch)");
    o.scenes.composition_fraction =
        r.number("composition_fraction", 0.2, 0.0, 1.0, "labelled images showing two different objects");
    o.scenes.count_fraction =
        r.number("count_fraction", 0.3, 0.0, 1.0, "other labelled images showing two or three copies of one object");
    o.scenes.location_fraction =
        r.number("location_fraction", 0.4, 0.0, 1.0, "other labelled images placed left, right, top or bottom");
    return o;
  }
};

class ShapesPromptSource : public sdpo::PromptSource {
 public:
  explicit ShapesPromptSource(ShapesOptions options)
      : options_(std::move(options)),
        sets_(options_.prompt_sets == "geneval" ? &sdpo::toy::geneval_prompt_sets() : nullptr) {}

  const std::vector<std::string>& train_prompts() const override {
    return sets_ ? sets_->train : sdpo::toy::training_prompts();
  }
  const std::vector<std::string>& eval_prompts() const override {
    return sets_ ? sets_->eval : sdpo::toy::evaluation_prompts();
  }
  const std::vector<std::string>& unseen_prompts() const override {
    return sets_ ? sets_->unseen : sdpo::toy::unseen_prompts();
  }

  bool has_labelled_data() const override { return true; }

  // Scenes come from the whole world, not only the training prompts: the base model pretrained
  // on them must be able to draw the unseen prompts too (the RL fine-tuning never sees them).
  sdpo::LabelledBatch labelled_batch(std::int64_t batch_size, at::Generator& gen) override {
    if (batch_size <= 0)
      throw sdpo::Error("prompts 'shapes': batch size must be positive, got " + std::to_string(batch_size));
    sdpo::LabelledBatch batch;
    std::vector<at::Tensor> images;
    images.reserve(batch_size);
    batch.prompts.reserve(batch_size);
    for (std::int64_t i = 0; i < batch_size; ++i) {
      const sdpo::toy::Scene scene = sdpo::toy::random_scene(gen, options_.scenes);
      images.push_back(sdpo::toy::render(scene, gen, options_.render));
      batch.prompts.push_back(sdpo::toy::describe(scene));
    }
    batch.images = at::stack(images);
    return batch;
  }

 private:
  ShapesOptions options_;
  const sdpo::toy::PromptSets* sets_;  // the geneval sets, or null for the standard ones
};

void register_shapes(sdpo::Registry& r) {
  r.add<sdpo::PromptSource, ShapesOptions>(
      "shapes",
      "toy world of colored shapes and its labelled images; prompt sets 'standard' (45 training, 12 "
      "evaluation, 12 unseen: color, count, composition, location) or 'geneval' (36 / 12 / 12, "
      "compositions trained on)",
      &ShapesOptions::read,
      [](const ShapesOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<ShapesPromptSource>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("shapes", "0.1.0", register_shapes)
