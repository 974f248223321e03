// The fixed prompt sets of the `shapes` prompt source. They are written out rather than
// generated so that a run manifest, a figure and a reader of this file all see the same list;
// tests/unit/plugins/shapes_test.cpp checks the properties claimed below.
//
// Three color-shape combinations (a yellow triangle, a purple circle, a white square) never
// appear in any training prompt: they are the unseen "color" category, the toy analog of the
// paper's unusual color-object prompts. The other 15 appear as "a <color> <shape>".

#include "shapes/world.h"

namespace sdpo::toy {

const std::vector<std::string>& training_prompts() {
  static const std::vector<std::string> prompts{
      // 15 single objects at the center (all combinations but the three held out).
      "a red circle", "a red square", "a red triangle",
      "a green circle", "a green square", "a green triangle",
      "a blue circle", "a blue square", "a blue triangle",
      "a yellow circle", "a yellow square",
      "a purple square", "a purple triangle",
      "a white circle", "a white triangle",
      // 10 counts at the center: "two" and "three" with every color and shape.
      "two red circles", "two green squares", "two blue triangles", "two yellow squares",
      "two purple triangles", "two white circles",
      "three red triangles", "three green circles", "three blue squares", "three purple squares",
      // 12 single objects off-center: three per location, every color and shape.
      "a red square on the left", "a blue circle on the left", "a white triangle on the left",
      "a green circle on the right", "a yellow circle on the right", "a purple square on the right",
      "a red triangle at the top", "a green square at the top", "a white circle at the top",
      "a blue triangle at the bottom", "a yellow square at the bottom", "a purple triangle at the bottom",
      // 8 counts off-center: every location with "two" and "three".
      "two green triangles on the left", "three purple triangles on the left",
      "two blue circles on the right", "three red squares on the right",
      "two yellow circles at the top", "three green squares at the top",
      "two white triangles at the bottom", "three white circles at the bottom",
  };
  return prompts;
}

const std::vector<std::string>& evaluation_prompts() {
  // Every shape and color, the two counts and the four off-center locations, all trained on.
  static const std::vector<std::string> prompts{
      "a red circle", "a green square", "a blue triangle", "a yellow circle",
      "a purple square", "a white triangle", "two red circles", "three blue squares",
      "a red square on the left", "a green circle on the right", "a white circle at the top",
      "a purple triangle at the bottom",
  };
  return prompts;
}

const std::vector<std::string>& unseen_prompts() {
  static const std::vector<std::string> prompts{
      // color: combinations absent from every training prompt
      "a yellow triangle", "a purple circle", "a white square",
      // count: trained counts and objects, never together
      "three red circles", "three yellow squares", "two blue squares",
      // composition: two different objects (no training prompt has two)
      "a red circle and a blue square", "a green triangle and a yellow circle",
      "a white circle and a purple square",
      // location: trained locations and objects, never together
      "a blue square at the bottom", "a green triangle on the right", "a red circle at the top",
  };
  return prompts;
}

const std::vector<std::string>& unseen_categories() {
  static const std::vector<std::string> categories{
      "color", "color", "color", "count", "count", "count",
      "composition", "composition", "composition", "location", "location", "location",
  };
  return categories;
}

}  // namespace sdpo::toy
