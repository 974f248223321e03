#pragma once
// The toy world (DESIGN.md section 7): colored shapes on a plain dark background, described by
// short prompts. One Scene is either `count` copies of one object ("two blue squares on the
// left") or a composition of two different objects ("a red circle and a yellow square").
//
// Example:
//   sdpo::toy::Scene s = *sdpo::toy::parse("two blue squares on the left");
//   at::Tensor img = sdpo::toy::render(s, gen);        // (3, 32, 32) float in [0, 1]
//   std::string p = sdpo::toy::describe(s);            // "two blue squares on the left"
//
// Grammar of every prompt describe() writes and parse() reads (lower case, single spaces):
//   prompt      := group [location] | object "and" object
//   group       := ("a" color shape) | (("two" | "three") color shapes)
//   object      := "a" color shape
//   location    := "on the left" | "on the right" | "at the top" | "at the bottom"
// A prompt without a location phrase means the center. Compositions are always centered.
//
// Thread safety: every function is thread-safe (render/random_scene draw from the generator
// they are given, which at::rand locks).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sdpo::toy {

enum class Shape { kCircle, kSquare, kTriangle };
enum class Color { kRed, kGreen, kBlue, kYellow, kPurple, kWhite };
enum class Location { kCenter, kLeft, kRight, kTop, kBottom };

inline constexpr int kNumShapes = 3;
inline constexpr int kNumColors = 6;
inline constexpr int kNumLocations = 5;
inline constexpr int kMaxCount = 3;
/// Longest prompt describe() can write, in words ("a red circle and a blue square").
inline constexpr int kMaxPromptWords = 7;
/// Background gray level of every image (all three channels).
inline constexpr float kBackground = 0.1f;

struct Object {
  Shape shape = Shape::kCircle;
  Color color = Color::kRed;
  bool operator==(const Object& o) const { return shape == o.shape && color == o.color; }
  bool operator!=(const Object& o) const { return !(*this == o); }
};

/// What an image shows. Valid scenes (validate()):
///   - one object, count in 1..3, any location; or
///   - two different objects (a composition), count 1, location kCenter.
struct Scene {
  std::vector<Object> objects{Object{}};
  int count = 1;
  Location location = Location::kCenter;

  bool is_composition() const { return objects.size() == 2; }
  bool operator==(const Scene& o) const { return objects == o.objects && count == o.count && location == o.location; }
};

/// Words of the attribute values ("circle", "red", "left"; kCenter is "center").
const char* shape_name(Shape s);
/// Plural form used after "two"/"three" ("circles").
const char* shape_plural(Shape s);
const char* color_name(Color c);
const char* location_name(Location l);
/// Linear RGB in [0, 1] of a color (the six are far apart, and none is the background gray).
std::vector<float> color_rgb(Color c);

/// Throws sdpo::Error if `scene` is not one of the valid forms above.
void validate(const Scene& scene);

/// The prompt of a scene, e.g. "a green triangle on the left". Throws on an invalid scene.
std::string describe(const Scene& scene);

/// Reads a prompt of the grammar above back into a Scene (describe(*parse(p)) == p for every p
/// describe() writes). Returns nullopt for anything else, including invalid scenes such as
/// "a red circle and a red circle".
std::optional<Scene> parse(const std::string& prompt);

/// parse() of every prompt, in order. Throws sdpo::Error naming `component` (e.g. "reward
/// 'shape_alignment' (score)") and the first prompt that is not a toy-world prompt.
std::vector<Scene> parse_all(const std::vector<std::string>& prompts, const std::string& component);

/// Every word any prompt can contain, in a fixed order (the `toy_text` encoder's word list).
const std::vector<std::string>& vocabulary();

/// How images are drawn.
struct RenderOptions {
  std::int64_t image_size = 32;   ///< height = width, in pixels
  bool anti_alias = true;         ///< soft 1-pixel edges (coverage from the signed distance)
  double size_jitter = 0.1;       ///< object size scaled by a factor in [1 - j, 1 + j]
  double position_jitter = 0.04;  ///< group shifted by up to this fraction of the image size
};

/// Draws `scene` into a (3, H, W) float image in [0, 1] (CPU). Object sizes and positions are
/// jittered from `gen`, so the same generator state gives the same image.
at::Tensor render(const Scene& scene, at::Generator& gen, const RenderOptions& options = {});

/// Renders several scenes into (B, 3, H, W).
at::Tensor render_batch(const std::vector<Scene>& scenes, at::Generator& gen, const RenderOptions& options = {});

/// How random scenes are drawn (the labelled data that pretrains the base model and the
/// shape_alignment reward). Shapes and colors are always uniform, over all 18 combinations.
struct SceneDistribution {
  double composition_fraction = 0.2;  ///< scenes with two different objects
  double count_fraction = 0.3;        ///< of the other scenes: two or three copies (uniform)
  double location_fraction = 0.4;     ///< of the other scenes: off-center (uniform over 4)
};

/// Draws one valid scene from the whole world (including combinations the training prompts
/// hold out: the base model must be able to render the unseen prompts).
Scene random_scene(at::Generator& gen, const SceneDistribution& dist = {});

/// The prompt sets of the `shapes` prompt source (fixed lists, see prompt_sets.cpp).
/// 45 training prompts; 12 evaluation prompts, a subset of the training prompts covering every
/// shape and color; 12 unseen prompts (3 each of color, count, composition, location), none of
/// them a training prompt.
const std::vector<std::string>& training_prompts();
const std::vector<std::string>& evaluation_prompts();
const std::vector<std::string>& unseen_prompts();
/// The Table 1 category ("color", "count", "composition", "location") of each unseen prompt,
/// aligned with unseen_prompts().
const std::vector<std::string>& unseen_categories();

/// The toy GenEval scenes: 12 per category in the order single object, counting, position,
/// two-object (48 in all), built from the grammar by one rule (prompt_sets.cpp). Like GenEval it
/// ignores the standard training split: it holds the three held-out color-shape pairs too.
const std::vector<Scene>& geneval_scenes();

/// One prompt source's three prompt lists.
struct PromptSets {
  std::vector<std::string> train;
  std::vector<std::string> eval;    ///< a subset of train
  std::vector<std::string> unseen;  ///< disjoint from train
};

/// The `geneval` prompt sets of the `shapes` prompt source: prompts with headroom for RL (the
/// compositions). Of each category's 12 scenes (index i in geneval_scenes() order) those with
/// i mod 4 == 1 are unseen (3 per category, 12), the other 9 are trained on (36), and of these
/// the ones with i mod 4 == 3 are evaluated (3 per category, 12).
const PromptSets& geneval_prompt_sets();

}  // namespace sdpo::toy
