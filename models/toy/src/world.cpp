#include "sdpo/models/toy/world.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/stack.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <sstream>

#include "sdpo/core/error.h"

namespace sdpo::toy {
namespace {

constexpr std::array<const char*, kNumShapes> kShapeNames{"circle", "square", "triangle"};
constexpr std::array<const char*, kNumShapes> kShapePlurals{"circles", "squares", "triangles"};
constexpr std::array<const char*, kNumColors> kColorNames{"red", "green", "blue", "yellow", "purple", "white"};
constexpr std::array<const char*, kNumLocations> kLocationNames{"center", "left", "right", "top", "bottom"};
// Phrases appended to a prompt; the center has none.
constexpr std::array<const char*, kNumLocations> kLocationPhrases{
    "", "on the left", "on the right", "at the top", "at the bottom"};
constexpr std::array<const char*, kMaxCount + 1> kCountWords{"", "a", "two", "three"};

// Far apart in RGB and in hue, and all much brighter than the background, so that a small
// classifier (and a person looking at a 32x32 sample) tells them apart at a glance.
constexpr std::array<std::array<float, 3>, kNumColors> kColorRgb{{
    {0.90f, 0.10f, 0.10f},  // red
    {0.10f, 0.80f, 0.20f},  // green
    {0.15f, 0.30f, 0.95f},  // blue
    {0.95f, 0.90f, 0.10f},  // yellow
    {0.60f, 0.15f, 0.80f},  // purple
    {0.95f, 0.95f, 0.95f},  // white
}};

// Layout, in fractions of the image side. Objects of a scene sit in a row (horizontal for
// center/top/bottom, vertical for left/right) around the location's anchor; more objects are
// drawn smaller so that three still fit in half the image without touching.
struct Anchor {
  double x, y;
  bool vertical;
};
constexpr std::array<Anchor, kNumLocations> kAnchors{{
    {0.50, 0.50, false},  // center
    {0.28, 0.50, true},   // left
    {0.72, 0.50, true},   // right
    {0.50, 0.28, false},  // top
    {0.50, 0.72, false},  // bottom
}};
// Nominal object radius and center spacing for 1, 2, 3 copies, and for a pair. With the
// default jitters, neighbours stay at least ~1.5 pixels apart at 32x32 (the anti-aliased edges
// included), so copies can be counted and a pair is two objects.
constexpr std::array<double, kMaxCount + 1> kRadius{0.0, 0.20, 0.13, 0.10};
constexpr std::array<double, kMaxCount + 1> kSpacing{0.0, 0.0, 0.36, 0.29};
constexpr double kPairRadius = 0.14;
constexpr double kPairSpacing = 0.38;
// Per-object jitter relative to the whole group's shift: small, so objects never overlap.
constexpr double kObjectJitterShare = 0.25;

// Random numbers drawn per rendered scene and per random scene. Fixed, whatever the scene, so
// the generator advances by the same amount each time (reproducible batches).
constexpr std::int64_t kRenderDraws = 12;
constexpr std::int64_t kSceneDraws = 6;

std::vector<double> uniforms(at::Generator& gen, std::int64_t n) {
  at::Tensor u = at::rand({n}, gen, at::TensorOptions().dtype(at::kDouble));
  const double* p = u.data_ptr<double>();
  return std::vector<double>(p, p + n);
}

int pick(double u, int n) { return std::min(n - 1, static_cast<int>(u * n)); }

std::string lower(const std::string& s) {
  std::string out = s;
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(lower(s));
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

template <std::size_t N>
int find_word(const std::array<const char*, N>& names, const std::string& w) {
  for (std::size_t i = 0; i < N; ++i)
    if (w == names[i]) return static_cast<int>(i);
  return -1;
}

// Signed distance (pixels; negative inside) from pixel center (px, py) to an object of nominal
// radius r centred at (cx, cy). Squares and triangles are scaled to roughly the circle's area.
double signed_distance(Shape shape, double px, double py, double cx, double cy, double r) {
  const double dx = px - cx, dy = py - cy;
  switch (shape) {
    case Shape::kCircle:
      return std::hypot(dx, dy) - r;
    case Shape::kSquare: {
      const double h = 0.85 * r;
      const double qx = std::abs(dx) - h, qy = std::abs(dy) - h;
      return std::hypot(std::max(qx, 0.0), std::max(qy, 0.0)) + std::min(std::max(qx, qy), 0.0);
    }
    case Shape::kTriangle: {
      // Equilateral, pointing up, circumradius R, its bounding box centred on (cx, cy): apex at
      // cy - 0.75R, base at cy + 0.75R. Distance = max over the three edges' half-planes.
      const double big_r = 1.15 * r;
      const double ay = cy - 0.75 * big_r;
      const double d_base = py - (cy + 0.75 * big_r);
      const double s = std::sqrt(3.0) / 2.0;
      const double d_left = -s * dx - 0.5 * (py - ay);
      const double d_right = s * dx - 0.5 * (py - ay);
      return std::max(d_base, std::max(d_left, d_right));
    }
  }
  return 0.0;
}

// Paints one object into a (3, S, S) float buffer: coverage-weighted blend of its color.
void paint(float* img, std::int64_t size, const Object& obj, double cx, double cy, double r, bool aa) {
  const auto& rgb = kColorRgb[static_cast<int>(obj.color)];
  const double reach = 1.2 * r + 2.0;  // every shape lies within 1.15r of its center
  const auto lo = [&](double c) { return std::max<std::int64_t>(0, static_cast<std::int64_t>(c - reach)); };
  const auto hi = [&](double c) { return std::min<std::int64_t>(size, static_cast<std::int64_t>(c + reach) + 1); };
  const std::int64_t plane = size * size;
  for (std::int64_t i = lo(cy); i < hi(cy); ++i) {
    for (std::int64_t j = lo(cx); j < hi(cx); ++j) {
      const double d = signed_distance(obj.shape, j + 0.5, i + 0.5, cx, cy, r);
      // 1-pixel box filter approximation: coverage falls linearly across the edge.
      const double cov = aa ? std::clamp(0.5 - d, 0.0, 1.0) : (d <= 0.0 ? 1.0 : 0.0);
      if (cov <= 0.0) continue;
      for (int c = 0; c < 3; ++c) {
        float& v = img[c * plane + i * size + j];
        v = static_cast<float>(v * (1.0 - cov) + rgb[c] * cov);
      }
    }
  }
}

}  // namespace

const char* shape_name(Shape s) { return kShapeNames[static_cast<int>(s)]; }
const char* shape_plural(Shape s) { return kShapePlurals[static_cast<int>(s)]; }
const char* color_name(Color c) { return kColorNames[static_cast<int>(c)]; }
const char* location_name(Location l) { return kLocationNames[static_cast<int>(l)]; }

std::vector<float> color_rgb(Color c) {
  const auto& rgb = kColorRgb[static_cast<int>(c)];
  return {rgb[0], rgb[1], rgb[2]};
}

void validate(const Scene& scene) {
  if (scene.objects.size() == 1) {
    if (scene.count < 1 || scene.count > kMaxCount)
      throw Error("toy world: count must be 1..3, got " + std::to_string(scene.count));
    return;
  }
  if (scene.objects.size() != 2)
    throw Error("toy world: a scene has one or two objects, got " + std::to_string(scene.objects.size()));
  if (scene.objects[0] == scene.objects[1]) throw Error("toy world: the two objects of a composition must differ");
  if (scene.count != 1 || scene.location != Location::kCenter)
    throw Error("toy world: a composition has count 1 and is centered");
}

std::string describe(const Scene& scene) {
  validate(scene);
  const auto object_phrase = [](const Object& o, int count) {
    return std::string(kCountWords[count]) + " " + color_name(o.color) + " " +
           (count == 1 ? shape_name(o.shape) : shape_plural(o.shape));
  };
  if (scene.is_composition()) return object_phrase(scene.objects[0], 1) + " and " + object_phrase(scene.objects[1], 1);
  std::string out = object_phrase(scene.objects[0], scene.count);
  if (scene.location != Location::kCenter) out += std::string(" ") + kLocationPhrases[static_cast<int>(scene.location)];
  return out;
}

std::vector<Scene> parse_all(const std::vector<std::string>& prompts, const std::string& component) {
  std::vector<Scene> scenes;
  scenes.reserve(prompts.size());
  for (const std::string& p : prompts) {
    std::optional<Scene> s = parse(p);
    if (!s) {
      throw Error(
          component + ": cannot read prompt '" + p +
          "': it scores only toy-world prompts such as 'a red circle', 'two blue squares on the left' "
          "or 'a red circle and a yellow square' (models/toy/include/sdpo/models/toy/world.h)");
    }
    scenes.push_back(*s);
  }
  return scenes;
}

std::optional<Scene> parse(const std::string& prompt) {
  const std::vector<std::string> w = split_words(prompt);
  // Reads "<count> <color> <shape(s)>" at w[at..at+2]; the shape's number must agree.
  const auto read_group = [&](std::size_t at, int& count, Object& obj) {
    if (at + 3 > w.size()) return false;
    count = find_word(kCountWords, w[at]);
    const int color = find_word(kColorNames, w[at + 1]);
    const int shape = count == 1 ? find_word(kShapeNames, w[at + 2]) : find_word(kShapePlurals, w[at + 2]);
    if (count < 1 || color < 0 || shape < 0) return false;
    obj = Object{static_cast<Shape>(shape), static_cast<Color>(color)};
    return true;
  };
  Scene scene;
  Object first;
  int count = 0;
  if (!read_group(0, count, first)) return std::nullopt;
  scene.objects = {first};
  scene.count = count;
  if (w.size() == 3) return scene;
  if (w.size() == 7 && count == 1 && w[3] == "and") {
    Object second;
    int second_count = 0;
    if (!read_group(4, second_count, second) || second_count != 1 || second == first) return std::nullopt;
    scene.objects.push_back(second);
    return scene;
  }
  if (w.size() == 6) {
    const std::string phrase = w[3] + " " + w[4] + " " + w[5];
    const int loc = find_word(kLocationPhrases, phrase);
    if (loc <= 0) return std::nullopt;
    scene.location = static_cast<Location>(loc);
    return scene;
  }
  return std::nullopt;
}

const std::vector<std::string>& vocabulary() {
  static const std::vector<std::string> words = [] {
    std::vector<std::string> v{"a", "two", "three"};
    for (const char* c : kColorNames) v.emplace_back(c);
    for (const char* s : kShapeNames) v.emplace_back(s);
    for (const char* s : kShapePlurals) v.emplace_back(s);
    for (const char* x : {"and", "on", "at", "the", "left", "right", "top", "bottom"}) v.emplace_back(x);
    return v;
  }();
  return words;
}

at::Tensor render(const Scene& scene, at::Generator& gen, const RenderOptions& options) {
  validate(scene);
  if (options.image_size < 8)
    throw Error("toy world: image_size must be at least 8, got " + std::to_string(options.image_size));
  const std::int64_t size = options.image_size;
  const std::vector<double> u = uniforms(gen, kRenderDraws);
  at::Tensor image = at::empty({3, size, size}, at::TensorOptions().dtype(at::kFloat));
  image.fill_(kBackground);
  float* data = image.data_ptr<float>();

  const bool pair = scene.is_composition();
  const int n = pair ? 2 : scene.count;
  const double radius = pair ? kPairRadius : kRadius[n];
  const double spacing = pair ? kPairSpacing : kSpacing[n];
  const Anchor anchor = kAnchors[static_cast<int>(scene.location)];
  const double pj = options.position_jitter;
  // u[0], u[1]: group shift; u[2]: which composition object goes first in the row;
  // u[3 + 3k .. 5 + 3k]: size factor and own shift of object k.
  const double gx = (2.0 * u[0] - 1.0) * pj, gy = (2.0 * u[1] - 1.0) * pj;
  const bool swap = pair && u[2] < 0.5;
  for (int k = 0; k < n; ++k) {
    const Object& obj = scene.objects[pair ? (k ^ static_cast<int>(swap)) : 0];
    const double offset = (k - (n - 1) / 2.0) * spacing;
    const double jx = (2.0 * u[4 + 3 * k] - 1.0) * pj * kObjectJitterShare;
    const double jy = (2.0 * u[5 + 3 * k] - 1.0) * pj * kObjectJitterShare;
    const double cx = anchor.x + (anchor.vertical ? 0.0 : offset) + gx + jx;
    const double cy = anchor.y + (anchor.vertical ? offset : 0.0) + gy + jy;
    const double r = radius * (1.0 + (2.0 * u[3 + 3 * k] - 1.0) * options.size_jitter);
    paint(data, size, obj, cx * size, cy * size, r * size, options.anti_alias);
  }
  return image;
}

at::Tensor render_batch(const std::vector<Scene>& scenes, at::Generator& gen, const RenderOptions& options) {
  if (scenes.empty()) throw Error("toy world: render_batch needs at least one scene");
  std::vector<at::Tensor> images;
  images.reserve(scenes.size());
  for (const Scene& s : scenes) images.push_back(render(s, gen, options));
  return at::stack(images);
}

Scene random_scene(at::Generator& gen, const SceneDistribution& dist) {
  const std::vector<double> u = uniforms(gen, kSceneDraws);
  const int combos = kNumShapes * kNumColors;
  const auto object_of = [](int combo) {
    return Object{static_cast<Shape>(combo % kNumShapes), static_cast<Color>(combo / kNumShapes)};
  };
  Scene scene;
  const int first = pick(u[1], combos);
  scene.objects = {object_of(first)};
  if (u[0] < dist.composition_fraction) {
    // Second object uniform over the 17 others.
    int second = pick(u[2], combos - 1);
    if (second >= first) ++second;
    scene.objects.push_back(object_of(second));
    return scene;
  }
  if (u[3] < dist.count_fraction) scene.count = 2 + pick(u[4], kMaxCount - 1);
  if (u[5] < dist.location_fraction) {
    // Reuse u[5] rescaled within [0, location_fraction): uniform over the four off-center spots.
    scene.location = static_cast<Location>(1 + pick(u[5] / dist.location_fraction, kNumLocations - 1));
  }
  return scene;
}

}  // namespace sdpo::toy
