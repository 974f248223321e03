#pragma once
// The toy GenEval checks: what a toy-world prompt requires of an image (GenEval's per-image
// rules: D. Ghosh et al., "GenEval: An Object-Focused Framework for Evaluating Text-to-Image
// Alignment", 2023), and how a detector.h Detection meets them. Pure functions, testable
// without the registry.
//
// Example:
//   const sdpo::toy::Scene scene = *sdpo::toy::parse("two blue squares on the left");
//   const sdpo::toy_geneval::Evaluation e = sdpo::toy_geneval::evaluate(scene, detect(image));
//   e.category;  // Category::kPosition
//   e.strict;    // 1 if every requirement is met, else 0
//   e.soft;      // mean of the requirements' soft scores, in [0, 1]
//
// Requirements, for a group of `n` copies of (color c, shape s) at location L:
//   color         an object of color c is present
//   shape         an object of color c and shape s is present
//   count         (n > 1) exactly n objects of color c and shape s
//   location      (L off-center) those objects' mean bounding-box center is nearest L's anchor
//   nothing_else  no other object: every object is (c, s), at most n of them, and they hold at
//                 least half of the image's colored pixels (labelled + clutter, detector.h)
// and for a composition "a X and a Y" (colors and shapes attributed to the right objects):
//   color of X, shape of X, color of Y, shape of Y, nothing_else (exactly the two objects).
// "Object" means a detected object (detector.h: big enough, regular); specks do not count.
// The soft score of each requirement is in README.md (formulas) and geneval.cpp.
//
// Thread safety: pure functions.

#include <string>
#include <vector>

#include "detector.h"
#include "sdpo/models/toy/world.h"

namespace sdpo::toy_geneval {

/// GenEval's task families, as the toy world has them.
enum class Category {
  kSingleObject,  ///< one centered object ("a red circle")
  kCounting,      ///< two or three copies, centered ("three blue squares")
  kPosition,      ///< off-center, one or more copies ("two green triangles on the left")
  kTwoObject,     ///< a composition, testing color attribution ("a red circle and a blue square")
};

inline constexpr int kNumCategories = 4;

/// "single_object", "counting", "position", "two_object".
const char* category_name(Category category);

/// Compositions are two_object; otherwise an off-center scene is position (whatever its count),
/// a centered one with two or three copies counting, and the rest single_object.
Category category_of(const sdpo::toy::Scene& scene);

/// One prompt of the toy GenEval prompt set and the category it tests.
struct GenevalPrompt {
  std::string prompt;
  Category category = Category::kSingleObject;
};

/// The fixed toy GenEval prompt set: 12 prompts per category, 48 in all, in Category order: the
/// prompts of sdpo::toy::geneval_scenes() (sdpo/models/toy/world.h; the rule in README.md "The prompt set").
/// Like GenEval it ignores the RL training split: it holds trained and held-out combinations alike,
/// including the three color-shape pairs no standard training prompt has.
const std::vector<GenevalPrompt>& geneval_prompts();

/// One requirement of a prompt and how an image meets it.
struct Requirement {
  std::string name;   ///< "color", "shape", "count", "location", "nothing_else", or "color of <x>" ...
  bool met = false;   ///< the strict (GenEval) check
  double soft = 0.0;  ///< the smooth score, in [0, 1]
};

struct Evaluation {
  Category category = Category::kSingleObject;
  std::vector<Requirement> requirements;
  double strict = 0.0;  ///< 1 if every requirement is met, else 0
  double soft = 0.0;    ///< mean of the requirements' soft scores
};

/// Checks one image's detection against the scene of its prompt (validated by sdpo::toy::validate;
/// throws sdpo::Error on an invalid scene).
Evaluation evaluate(const sdpo::toy::Scene& scene, const Detection& detection);

}  // namespace sdpo::toy_geneval
