// Prompt source `animals`: the paper-scale prompts (research/algorithms.md 10.2). Training draws
// the bare animal names of `simple_animals.txt`, the 45-name list shared by the SDPO, DDPO, D3PO
// and RLCM code; the unseen set is the paper's Table 1 (DPOK's four prompts: color, count,
// composition, location).
#include <memory>
#include <string>
#include <vector>

#include "sdpo/core/options.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/prompts.h"

namespace {

const std::vector<std::string>& animal_names() {
  static const std::vector<std::string> names{
      "cat",    "dog",    "horse", "monkey",    "rabbit", "zebra",   "spider",  "bird",     "sheep",
      "deer",   "cow",    "goat",  "lion",      "tiger",  "bear",    "raccoon", "fox",      "wolf",
      "lizard", "beetle", "ant",   "butterfly", "fish",   "shark",   "whale",   "dolphin",  "squirrel",
      "mouse",  "rat",    "snake", "turtle",    "frog",   "chicken", "duck",    "goose",    "bee",
      "pig",    "turkey", "fly",   "llama",     "camel",  "bat",     "gorilla", "hedgehog", "kangaroo"};
  return names;
}

const std::vector<std::string>& unseen() {
  static const std::vector<std::string> prompts{
      "A green colored rabbit", "Four wolves in the park", "A cat and a dog", "A dog on the moon"};
  return prompts;
}

struct AnimalsOptions {
  static AnimalsOptions read(sdpo::OptionReader&) { return {}; }
};

class AnimalsPromptSource : public sdpo::PromptSource {
 public:
  const std::vector<std::string>& train_prompts() const override { return animal_names(); }
  // The paper evaluates step generalization on the training animals (10.2).
  const std::vector<std::string>& eval_prompts() const override { return animal_names(); }
  const std::vector<std::string>& unseen_prompts() const override { return unseen(); }
};

void register_animals(sdpo::Registry& r) {
  r.add<sdpo::PromptSource, AnimalsOptions>(
      "animals",
      "the paper's prompts: 45 animal names for training and evaluation (simple_animals), and the 4 unseen "
      "prompts of Table 1 (color, count, composition, location)",
      &AnimalsOptions::read,
      [](const AnimalsOptions&, const sdpo::ComponentConfig&) { return std::make_shared<AnimalsPromptSource>(); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("animals", "0.1.0", register_animals)
