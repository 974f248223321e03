// The toy GenEval requirements and their strict and soft scores (geneval.h, README.md).
//
// The soft scores are built from two per-object quantities in [0, 1] and the objects' areas:
//   gamma_j(c) = [color_j = c] * color_fit_j       the object is of color c, and how exactly
//   q_j(o)     = gamma_j(c) * shape_fit_j[s]       it is object o = (c, s)
//   area_j                                         its pixels
// so that a slightly wrong hue, an ambiguous outline, a miscount by one or a drift towards another
// anchor each cost part of a requirement instead of all of it: RL needs a reward that moves when
// the image gets a little better, while the strict score stays GenEval's yes/no.

#include "geneval.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "sdpo/core/error.h"

namespace sdpo::toy_geneval {
namespace {

namespace toy = sdpo::toy;

double color_score(const Component& c, toy::Color color) { return c.color == color ? c.color_fit : 0.0; }

double object_score(const Component& c, const toy::Object& o) {
  return color_score(c, o.color) * c.shape_fit[static_cast<int>(o.shape)];
}

bool is(const Component& c, const toy::Object& o) { return c.color == o.color && c.shape == o.shape; }

std::string object_name(const toy::Object& o) {
  return std::string(toy::color_name(o.color)) + " " + toy::shape_name(o.shape);
}

// Share of the image's colored area that the requested objects explain: their (q-weighted, for
// the soft score) pixels over every labelled pixel (specks, irregular blobs and other objects
// included) plus the clutter pixels. An empty image explains nothing and scores 0, so that
// "nothing else" is never met by default.
double explained_share(double explained, const Detection& d) {
  const double total = static_cast<double>(d.labelled_pixels + d.clutter_pixels);
  return total > 0.0 ? std::clamp(explained / total, 0.0, 1.0) : 0.0;
}

// The strict "nothing else" also asks the requested objects to hold at least this share of the
// colored area: a detector only sees objects, but an image that is mostly colored noise around one
// clean shape is not "a red circle" (without it, 0.3% of palette-noise images passed).
constexpr double kMinExplainedShare = 0.5;

void evaluate_group(
    const toy::Scene& scene, const Detection& d, const std::vector<Component>& objects, std::vector<Requirement>& out) {
  const toy::Object& o = scene.objects[0];
  const int n = scene.count;

  Requirement color{"color"}, shape{"shape"};
  std::vector<Component> matching;
  double soft_count = 0.0, wx = 0.0, wy = 0.0;  // sum of q_j, and q-weighted box centers
  std::vector<double> explained;                // q_j * area_j of every object
  for (const Component& c : objects) {
    const double q = object_score(c, o);
    color.met = color.met || c.color == o.color;
    color.soft = std::max(color.soft, color_score(c, o.color));
    shape.soft = std::max(shape.soft, q);
    if (is(c, o)) matching.push_back(c);
    soft_count += q;
    wx += q * c.center_x() / static_cast<double>(d.width);
    wy += q * c.center_y() / static_cast<double>(d.height);
    explained.push_back(q * static_cast<double>(c.area));
  }
  shape.met = !matching.empty();
  out.push_back(color);
  out.push_back(shape);

  if (n > 1) {
    // Soft count: the sum of the objects' match scores, so a half-right copy counts half.
    Requirement count{"count"};
    count.met = static_cast<int>(matching.size()) == n;
    count.soft = std::max(0.0, 1.0 - std::abs(soft_count - n) / n);
    out.push_back(count);
  }

  if (scene.location != toy::Location::kCenter) {
    // Soft location: probability of the target anchor at the q-weighted mean box center.
    Requirement location{"location"};
    const int l = static_cast<int>(scene.location);
    location.met = !matching.empty() && location_of(matching, d.height, d.width) == scene.location;
    location.soft = soft_count > 1e-9 ? location_fit(wx / soft_count, wy / soft_count)[l] : 0.0;
    out.push_back(location);
  }

  Requirement nothing_else{"nothing_else"};
  double matching_area = 0.0;
  for (const Component& c : matching) matching_area += static_cast<double>(c.area);
  nothing_else.met = !objects.empty() && matching.size() == objects.size() && static_cast<int>(objects.size()) <= n &&
                     explained_share(matching_area, d) >= kMinExplainedShare;
  // Only the n best objects are the requested ones; any further copy is "something else".
  std::sort(explained.begin(), explained.end(), std::greater<double>());
  double sum = 0.0;
  for (std::size_t i = 0; i < explained.size() && static_cast<int>(i) < n; ++i) sum += explained[i];
  nothing_else.soft = explained_share(sum, d);
  out.push_back(nothing_else);
}

void evaluate_pair(
    const toy::Scene& scene, const Detection& d, const std::vector<Component>& objects, std::vector<Requirement>& out) {
  const toy::Object& x = scene.objects[0];
  const toy::Object& y = scene.objects[1];
  // Soft scores read one object for X and another for Y (either may be missing, index -1),
  // chosen to maximize the four soft color and shape scores together.
  const int m = static_cast<int>(objects.size());
  const auto value = [&](int j, const toy::Object& o) {
    return j < 0 ? 0.0 : color_score(objects[j], o.color) + object_score(objects[j], o);
  };
  int best_x = -1, best_y = -1;
  double best = -1.0;
  for (int j = -1; j < m; ++j)
    for (int k = -1; k < m; ++k) {
      if (j >= 0 && j == k) continue;
      const double v = value(j, x) + value(k, y);
      if (v > best) {
        best = v;
        best_x = j;
        best_y = k;
      }
    }

  double explained = 0.0;
  for (const auto& [o, j] : {std::make_pair(x, best_x), std::make_pair(y, best_y)}) {
    Requirement color{"color of " + object_name(o)}, shape{"shape of " + object_name(o)};
    for (const Component& c : objects) {
      color.met = color.met || c.color == o.color;
      shape.met = shape.met || is(c, o);
    }
    if (j >= 0) {
      color.soft = color_score(objects[j], o.color);
      shape.soft = object_score(objects[j], o);
      explained += shape.soft * static_cast<double>(objects[j].area);
    }
    out.push_back(color);
    out.push_back(shape);
  }

  Requirement nothing_else{"nothing_else"};
  nothing_else.met = m == 2 && ((is(objects[0], x) && is(objects[1], y)) || (is(objects[0], y) && is(objects[1], x))) &&
                     explained_share(static_cast<double>(objects[0].area + objects[1].area), d) >= kMinExplainedShare;
  nothing_else.soft = explained_share(explained, d);
  out.push_back(nothing_else);
}

}  // namespace

const char* category_name(Category category) {
  switch (category) {
    case Category::kSingleObject:
      return "single_object";
    case Category::kCounting:
      return "counting";
    case Category::kPosition:
      return "position";
    case Category::kTwoObject:
      return "two_object";
  }
  return "?";
}

Category category_of(const toy::Scene& scene) {
  if (scene.is_composition()) return Category::kTwoObject;
  if (scene.location != toy::Location::kCenter) return Category::kPosition;
  if (scene.count > 1) return Category::kCounting;
  return Category::kSingleObject;
}

// The prompt set's rule is in models/toy/src/prompt_sets.cpp (toy::geneval_scenes), shared with
// the `shapes` prompt source's `geneval` prompt sets.
const std::vector<GenevalPrompt>& geneval_prompts() {
  static const std::vector<GenevalPrompt> prompts = [] {
    std::vector<GenevalPrompt> out;
    for (const toy::Scene& scene : toy::geneval_scenes()) out.push_back({toy::describe(scene), category_of(scene)});
    return out;
  }();
  return prompts;
}

Evaluation evaluate(const toy::Scene& scene, const Detection& detection) {
  toy::validate(scene);
  Evaluation e;
  e.category = category_of(scene);
  const std::vector<Component> objects = detection.objects();
  if (scene.is_composition())
    evaluate_pair(scene, detection, objects, e.requirements);
  else
    evaluate_group(scene, detection, objects, e.requirements);
  bool all = true;
  double sum = 0.0;
  for (const Requirement& r : e.requirements) {
    all = all && r.met;
    sum += r.soft;
  }
  e.strict = all ? 1.0 : 0.0;
  e.soft = sum / static_cast<double>(e.requirements.size());
  return e;
}

}  // namespace sdpo::toy_geneval
