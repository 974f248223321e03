// The fixed prompt sets of the `shapes` prompt source. They are written out rather than
// generated so that a run manifest, a figure and a reader of this file all see the same list;
// tests/unit/plugins/shapes_test.cpp checks the properties claimed below.
//
// Three color-shape combinations (a yellow triangle, a purple circle, a white square) never
// appear in any training prompt: they are the unseen "color" category, the toy analog of the
// paper's unusual color-object prompts. The other 15 appear as "a <color> <shape>".

#include "sdpo/models/toy/world.h"

namespace sdpo::toy {

const std::vector<std::string>& training_prompts() {
  static const std::vector<std::string> prompts{
      // 15 single objects at the center (all combinations but the three held out).
      "a red circle",
      "a red square",
      "a red triangle",
      "a green circle",
      "a green square",
      "a green triangle",
      "a blue circle",
      "a blue square",
      "a blue triangle",
      "a yellow circle",
      "a yellow square",
      "a purple square",
      "a purple triangle",
      "a white circle",
      "a white triangle",
      // 10 counts at the center: "two" and "three" with every color and shape.
      "two red circles",
      "two green squares",
      "two blue triangles",
      "two yellow squares",
      "two purple triangles",
      "two white circles",
      "three red triangles",
      "three green circles",
      "three blue squares",
      "three purple squares",
      // 12 single objects off-center: three per location, every color and shape.
      "a red square on the left",
      "a blue circle on the left",
      "a white triangle on the left",
      "a green circle on the right",
      "a yellow circle on the right",
      "a purple square on the right",
      "a red triangle at the top",
      "a green square at the top",
      "a white circle at the top",
      "a blue triangle at the bottom",
      "a yellow square at the bottom",
      "a purple triangle at the bottom",
      // 8 counts off-center: every location with "two" and "three".
      "two green triangles on the left",
      "three purple triangles on the left",
      "two blue circles on the right",
      "three red squares on the right",
      "two yellow circles at the top",
      "three green squares at the top",
      "two white triangles at the bottom",
      "three white circles at the bottom",
  };
  return prompts;
}

const std::vector<std::string>& evaluation_prompts() {
  // Every shape and color, the two counts and the four off-center locations, all trained on.
  static const std::vector<std::string> prompts{
      "a red circle",
      "a green square",
      "a blue triangle",
      "a yellow circle",
      "a purple square",
      "a white triangle",
      "two red circles",
      "three blue squares",
      "a red square on the left",
      "a green circle on the right",
      "a white circle at the top",
      "a purple triangle at the bottom",
  };
  return prompts;
}

const std::vector<std::string>& unseen_prompts() {
  static const std::vector<std::string> prompts{
      // color: combinations absent from every training prompt
      "a yellow triangle",
      "a purple circle",
      "a white square",
      // count: trained counts and objects, never together
      "three red circles",
      "three yellow squares",
      "two blue squares",
      // composition: two different objects (no training prompt has two)
      "a red circle and a blue square",
      "a green triangle and a yellow circle",
      "a white circle and a purple square",
      // location: trained locations and objects, never together
      "a blue square at the bottom",
      "a green triangle on the right",
      "a red circle at the top",
  };
  return prompts;
}

const std::vector<std::string>& unseen_categories() {
  static const std::vector<std::string> categories{
      "color",       "color",       "color",       "count",    "count",    "count",
      "composition", "composition", "composition", "location", "location", "location",
  };
  return categories;
}

// The toy GenEval scenes are generated rather than written out so that their rule, not a
// hand-picked list, is what rewards/toy_geneval/README.md documents and the tests check. Twelve
// objects O_i, i = 6j + k (j = 0, 1; k = 0..5 the color, in Color order) with shape (k + 2j) mod 3:
// every color with two different shapes and every shape four times. They are the 18 color-shape
// pairs minus the six with shape (k + 1) mod 3, a choice that keeps the three pairs the training
// prompts hold out (yellow triangle, purple circle, white square: GenEval has no training split to
// respect). Then
//   single object  "a O_i"
//   counting       O_i, centered, with count 2 + (k + j) mod 2 (each color and each shape with
//                  both counts)
//   position       "a O_i" at location 1 + i / 3 (left for i = 0..2, then right, top, bottom:
//                  every location with all three shapes)
//   two-object     "a O_i and a P_i", P_i of color (k + 1 + j) mod 6 and shape (shape(O_i) + 1)
//                  mod 3: a different color and a different shape, so that color attribution is
//                  tested, and the six pairs outside O_i appear too (as P_i for j = 1).
const std::vector<Scene>& geneval_scenes() {
  static const std::vector<Scene> scenes = [] {
    constexpr int kPerCategory = 12;
    const auto object = [](int color, int shape) {
      return Object{static_cast<Shape>(shape % kNumShapes), static_cast<Color>(color % kNumColors)};
    };
    const auto o = [&](int i) { return object(i % 6, i % 6 + 2 * (i / 6)); };
    std::vector<Scene> out;
    for (int i = 0; i < kPerCategory; ++i) out.push_back(Scene{{o(i)}, 1, Location::kCenter});
    for (int i = 0; i < kPerCategory; ++i) out.push_back(Scene{{o(i)}, 2 + (i % 6 + i / 6) % 2, Location::kCenter});
    for (int i = 0; i < kPerCategory; ++i) out.push_back(Scene{{o(i)}, 1, static_cast<Location>(1 + i / 3)});
    for (int i = 0; i < kPerCategory; ++i) {
      const Object x = o(i);
      out.push_back(Scene{{x, object(i % 6 + 1 + i / 6, static_cast<int>(x.shape) + 1)}, 1, Location::kCenter});
    }
    return out;
  }();
  return scenes;
}

// The split keeps every category in all three lists in equal measure (9 / 3 / 3), so a Table 1 on
// the unseen prompts and the learning curves on the evaluation prompts both weigh the two-object
// prompts, where the few-step base model has its headroom, as one quarter.
const PromptSets& geneval_prompt_sets() {
  static const PromptSets sets = [] {
    PromptSets out;
    const std::vector<Scene>& scenes = geneval_scenes();
    for (std::size_t n = 0; n < scenes.size(); ++n) {
      const std::string prompt = describe(scenes[n]);
      const std::size_t i = n % 12;  // index within the category
      if (i % 4 == 1) {
        out.unseen.push_back(prompt);
        continue;
      }
      out.train.push_back(prompt);
      if (i % 4 == 3) out.eval.push_back(prompt);
    }
    return out;
  }();
  return sets;
}

}  // namespace sdpo::toy
