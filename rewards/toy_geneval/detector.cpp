// The toy GenEval detector (detector.h): color segmentation, 8-connected components, and shape
// and location from geometry. Everything is a plain loop over the pixels of a 32x32 image; one
// image takes a few tens of microseconds.

#include "detector.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "sdpo/core/error.h"

namespace sdpo::toy_geneval {
namespace {

namespace toy = sdpo::toy;

// The blend line of a palette color: from the background gray b to the color c. The renderer
// paints every object pixel as b + a (c - b) with its coverage a, so distances are measured to
// this segment rather than to c itself: an anti-aliased edge pixel is then as "red" as the
// interior, and every color's objects keep the same outline (half coverage), whatever the
// color's distance to the background.
struct BlendLine {
  std::array<double, 3> direction;  // c - b
  double length_sq;                 // |c - b|^2
};

const std::array<BlendLine, toy::kNumColors>& blend_lines() {
  static const std::array<BlendLine, toy::kNumColors> lines = [] {
    std::array<BlendLine, toy::kNumColors> out{};
    for (int k = 0; k < toy::kNumColors; ++k) {
      const std::vector<float> rgb = toy::color_rgb(static_cast<toy::Color>(k));
      double len = 0.0;
      for (int c = 0; c < 3; ++c) {
        out[k].direction[c] = static_cast<double>(rgb[c]) - toy::kBackground;
        len += out[k].direction[c] * out[k].direction[c];
      }
      out[k].length_sq = len;
    }
    return out;
  }();
  return lines;
}

// Coverage a (clamped to [0, 1]) and RGB distance r of one pixel to a color's blend line.
struct LinePoint {
  double coverage;
  double distance;
};

LinePoint on_line(const float* planes, std::int64_t plane, std::int64_t p, int color) {
  const BlendLine& line = blend_lines()[color];
  double v[3], along = 0.0;
  for (int c = 0; c < 3; ++c) {
    v[c] = planes[c * plane + p] - toy::kBackground;
    along += v[c] * line.direction[c];
  }
  const double a = std::clamp(along / line.length_sq, 0.0, 1.0);
  double sq = 0.0;
  for (int c = 0; c < 3; ++c) sq += (v[c] - a * line.direction[c]) * (v[c] - a * line.direction[c]);
  return {a, std::sqrt(sq)};
}

// Shape prototypes (fill ratio, centroid height, centroid width, log aspect), in toy::Shape
// order, and the scale of each feature. Measured with the coverage geometry of measure_shape()
// on rendered objects at 32x32 (every size the renderer draws):
//   circles   fill 0.78..0.82 (pi/4 = 0.785), heights and widths 0.50, aspect 0 +- 0.015
//   squares   fill 1.00..1.04, 0.50, 0.50, aspect 0
//   triangles fill 0.52..0.73, height 0.61..0.76, width 0.48..0.60, aspect -0.02..0.25
// (an up-pointing equilateral triangle has 1/2, 2/3, 1/2 and log(2/sqrt 3) = 0.144 in the
// continuum; the smallest ones blur towards a fuller, less regular box). With these scales every
// object of 3,000 random rendered scenes gets its own shape with probability >= 0.98 (mean 0.998).
constexpr std::array<std::array<double, 4>, toy::kNumShapes> kShapePrototypes{{
    {0.79, 0.50, 0.50, 0.00},  // circle
    {1.00, 0.50, 0.50, 0.00},  // square
    {0.58, 0.68, 0.52, 0.13},  // triangle
}};
constexpr std::array<double, 4> kShapeScales{0.06, 0.04, 0.04, 0.08};
// The "irregular" class: a constant squared distance of 4^2 (scaled units), so that a component
// more than about four scales from every prototype (a noise cluster, a bar, an L) fits no shape.
constexpr double kIrregularDistanceSq = 16.0;
constexpr double kLocationScale = 0.05;
constexpr double kMaxAreaFraction = 0.25;

// Anchors of models/toy/src/world.cpp (its kAnchors), in toy::Location order.
constexpr std::array<std::array<double, 2>, toy::kNumLocations> kAnchors{{
    {0.50, 0.50},  // center
    {0.28, 0.50},  // left
    {0.72, 0.50},  // right
    {0.50, 0.28},  // top
    {0.50, 0.72},  // bottom
}};

template <std::size_t N>
std::array<double, N> softmax(const std::array<double, N>& logits) {
  const double top = *std::max_element(logits.begin(), logits.end());
  std::array<double, N> out{};
  double sum = 0.0;
  for (std::size_t i = 0; i < N; ++i) sum += out[i] = std::exp(logits[i] - top);
  for (double& v : out) v /= sum;
  return out;
}

template <std::size_t N>
int argmax(const std::array<double, N>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The shape features of a component from pixel coverages rather than from its binary mask: at
// 32x32 a small circle's mask can be a full 5x5 square (with the binary mask 14% of the circles of
// three-circle scenes came out square), but its corner pixels are only about half covered while
// a square's are fully covered. The coverage map holds the component's pixels and its rim
// (unlabelled 8-neighbours on the same blend line: the anti-aliased edge below half coverage,
// capped at 0.5). Then
//   area   = sum of coverages
//   width  = sum over columns of the column's largest coverage (sub-pixel extent), height alike
//   top    = first row + 1 - that row's largest coverage, left alike
//   fill = area / (width * height), centroid height = (coverage centroid y - top) / height,
//   centroid width = (coverage centroid x - left) / width, aspect = log(width / height).
void measure_shape(
    Component& c,
    const std::vector<std::int64_t>& members,
    const std::vector<int>& label,
    const float* px,
    std::int64_t h,
    std::int64_t w,
    double threshold) {
  const int color = static_cast<int>(c.color);
  const std::int64_t n = h * w;
  const std::int64_t x0 = std::max<std::int64_t>(0, c.left - 1), x1 = std::min<std::int64_t>(w - 1, c.right + 1);
  const std::int64_t y0 = std::max<std::int64_t>(0, c.top - 1), y1 = std::min<std::int64_t>(h - 1, c.bottom + 1);
  const std::int64_t bw = x1 - x0 + 1, bh = y1 - y0 + 1;
  std::vector<double> cov(static_cast<std::size_t>(bw * bh), 0.0);
  std::vector<char> in(static_cast<std::size_t>(bw * bh), 0);
  for (std::int64_t p : members) in[(p / w - y0) * bw + (p % w - x0)] = 1;
  for (std::int64_t i = y0; i <= y1; ++i) {
    for (std::int64_t j = x0; j <= x1; ++j) {
      const std::int64_t li = (i - y0) * bw + (j - x0);
      const LinePoint lp = on_line(px, n, i * w + j, color);
      if (in[li]) {
        cov[li] = lp.coverage;
        continue;
      }
      // Rim: unlabelled, on this color's line, touching the component.
      if (label[i * w + j] >= 0 || lp.distance >= threshold) continue;
      bool touches = false;
      for (std::int64_t di = -1; di <= 1 && !touches; ++di)
        for (std::int64_t dj = -1; dj <= 1 && !touches; ++dj) {
          const std::int64_t a = i - y0 + di, b = j - x0 + dj;
          touches = a >= 0 && a < bh && b >= 0 && b < bw && in[a * bw + b];
        }
      if (touches) cov[li] = std::min(lp.coverage, 0.5);
    }
  }
  double total = 0.0, sum_y = 0.0, width = 0.0, height = 0.0, top = -1.0;
  for (std::int64_t i = 0; i < bh; ++i) {
    double row = 0.0;
    for (std::int64_t j = 0; j < bw; ++j) {
      const double a = cov[i * bw + j];
      total += a;
      sum_y += a * (static_cast<double>(i) + 0.5);
      row = std::max(row, a);
    }
    height += row;
    if (top < 0.0 && row > 0.0) top = static_cast<double>(i) + 1.0 - row;
  }
  double left = -1.0, sum_x = 0.0;
  for (std::int64_t j = 0; j < bw; ++j) {
    double col = 0.0;
    for (std::int64_t i = 0; i < bh; ++i) {
      col = std::max(col, cov[i * bw + j]);
      sum_x += cov[i * bw + j] * (static_cast<double>(j) + 0.5);
    }
    width += col;
    if (left < 0.0 && col > 0.0) left = static_cast<double>(j) + 1.0 - col;
  }
  // Every member has coverage >= 0.5, so total, width and height are positive.
  c.coverage_area = total;
  c.features.fill_ratio = total / (width * height);
  c.features.centroid_height = (sum_y / total - top) / height;
  c.features.centroid_width = (sum_x / total - left) / width;
  c.features.aspect = std::log(width / height);
  c.shape_fit = shape_fit(c.features);
  c.shape = static_cast<toy::Shape>(argmax(c.shape_fit));
  c.regularity = c.shape_fit[0] + c.shape_fit[1] + c.shape_fit[2];
}

}  // namespace

std::vector<Component> Detection::objects() const {
  std::vector<Component> out;
  for (const Component& c : components)
    if (c.is_object) out.push_back(c);
  return out;
}

PixelLabel label_pixel(float r, float g, float b, double color_threshold) {
  const float rgb[3] = {r, g, b};
  PixelLabel best;
  double best_distance = color_threshold;
  for (int k = 0; k < toy::kNumColors; ++k) {
    const LinePoint lp = on_line(rgb, 1, 0, k);
    // Under half coverage a pixel is an edge (or the background), not the object.
    if (lp.coverage < 0.5) continue;
    if (lp.distance < best_distance) {
      best_distance = lp.distance;
      best.color = k;
    }
  }
  if (best.color >= 0) best.distance = best_distance;
  return best;
}

std::array<double, toy::kNumShapes> shape_fit(const ShapeFeatures& f) {
  const std::array<double, 4> x{f.fill_ratio, f.centroid_height, f.centroid_width, f.aspect};
  std::array<double, toy::kNumShapes + 1> logits{};
  for (int s = 0; s < toy::kNumShapes; ++s) {
    double sq = 0.0;
    for (int k = 0; k < 4; ++k)
      sq += (x[k] - kShapePrototypes[s][k]) * (x[k] - kShapePrototypes[s][k]) / (kShapeScales[k] * kShapeScales[k]);
    logits[s] = -0.5 * sq;
  }
  logits[toy::kNumShapes] = -0.5 * kIrregularDistanceSq;
  const std::array<double, toy::kNumShapes + 1> p = softmax(logits);
  return {p[0], p[1], p[2]};
}

std::array<double, 2> anchor(toy::Location location) { return kAnchors[static_cast<int>(location)]; }

std::array<double, toy::kNumLocations> location_fit(double x, double y) {
  std::array<double, toy::kNumLocations> logits{};
  for (int l = 0; l < toy::kNumLocations; ++l) {
    const double dx = (x - kAnchors[l][0]) / kLocationScale, dy = (y - kAnchors[l][1]) / kLocationScale;
    logits[l] = -0.5 * (dx * dx + dy * dy);
  }
  return softmax(logits);
}

toy::Location location_of(const std::vector<Component>& group, std::int64_t height, std::int64_t width) {
  if (group.empty()) throw Error("toy_geneval detector: location_of needs at least one component");
  double x = 0.0, y = 0.0;
  for (const Component& c : group) {
    x += c.center_x();
    y += c.center_y();
  }
  x /= static_cast<double>(group.size()) * static_cast<double>(width);
  y /= static_cast<double>(group.size()) * static_cast<double>(height);
  return static_cast<toy::Location>(argmax(location_fit(x, y)));
}

Detection detect(const at::Tensor& image, const DetectorOptions& options) {
  if (image.dim() != 3 || image.size(0) != 3 || image.size(1) < 1 || image.size(2) < 1) {
    std::ostringstream s;
    s << "toy_geneval detector: expected an image (3, H, W), got shape " << image.sizes();
    throw Error(s.str());
  }
  if (!(options.color_threshold > 0.0) || !(options.min_area >= 1.0))
    throw Error(
        "toy_geneval detector: expected color_threshold > 0 and min_area >= 1, got " +
        std::to_string(options.color_threshold) + " and " + std::to_string(options.min_area));
  const at::Tensor x = image.detach().to(at::kCPU, at::kFloat).clamp(0.0, 1.0).contiguous();
  const std::int64_t h = x.size(1), w = x.size(2), n = h * w;
  const float* px = x.data_ptr<float>();

  Detection out;
  out.height = h;
  out.width = w;
  std::vector<int> label(static_cast<std::size_t>(n), -1);
  for (std::int64_t p = 0; p < n; ++p) {
    const PixelLabel l = label_pixel(px[p], px[n + p], px[2 * n + p], options.color_threshold);
    label[p] = l.color;
    if (l.color >= 0) ++out.labelled_pixels;
  }

  // Clutter: off-background pixels that no color explains, except an object's rim (8-adjacent
  // to a labelled pixel). Noise is mostly clutter; a clean render has none.
  const double bg_sq = options.color_threshold * options.color_threshold;
  for (std::int64_t i = 0; i < h; ++i) {
    for (std::int64_t j = 0; j < w; ++j) {
      const std::int64_t p = i * w + j;
      if (label[p] >= 0) continue;
      double sq = 0.0;
      for (int c = 0; c < 3; ++c) sq += (px[c * n + p] - toy::kBackground) * (px[c * n + p] - toy::kBackground);
      if (sq <= bg_sq) continue;
      bool rim = false;
      for (std::int64_t di = -1; di <= 1 && !rim; ++di)
        for (std::int64_t dj = -1; dj <= 1 && !rim; ++dj) {
          const std::int64_t a = i + di, b = j + dj;
          rim = a >= 0 && a < h && b >= 0 && b < w && label[a * w + b] >= 0;
        }
      if (!rim) ++out.clutter_pixels;
    }
  }

  // 8-connected components by an explicit-stack flood fill (no recursion depth to worry about).
  // The renderer keeps neighbouring objects apart by more than a pixel, so copies separate.
  const double min_area = options.min_area * static_cast<double>(n) / 1024.0;
  std::vector<char> seen(static_cast<std::size_t>(n), 0);
  std::vector<std::int64_t> stack, members;
  for (std::int64_t start = 0; start < n; ++start) {
    if (label[start] < 0 || seen[start]) continue;
    const int color = label[start];
    Component c;
    c.color = static_cast<toy::Color>(color);
    c.left = c.right = start % w;
    c.top = c.bottom = start / w;
    double sum_x = 0.0, sum_y = 0.0;
    float sum_rgb[3] = {0.0f, 0.0f, 0.0f};
    members.clear();
    stack.assign(1, start);
    seen[start] = 1;
    while (!stack.empty()) {
      const std::int64_t p = stack.back();
      stack.pop_back();
      const std::int64_t i = p / w, j = p % w;
      members.push_back(p);
      sum_x += static_cast<double>(j) + 0.5;
      sum_y += static_cast<double>(i) + 0.5;
      for (int k = 0; k < 3; ++k) sum_rgb[k] += px[k * n + p];
      c.left = std::min(c.left, j);
      c.right = std::max(c.right, j);
      c.top = std::min(c.top, i);
      c.bottom = std::max(c.bottom, i);
      for (std::int64_t di = -1; di <= 1; ++di)
        for (std::int64_t dj = -1; dj <= 1; ++dj) {
          const std::int64_t a = i + di, b = j + dj;
          if (a < 0 || a >= h || b < 0 || b >= w) continue;
          const std::int64_t q = a * w + b;
          if (seen[q] || label[q] != color) continue;
          seen[q] = 1;
          stack.push_back(q);
        }
    }
    c.area = static_cast<std::int64_t>(members.size());
    const double area = static_cast<double>(c.area);
    c.centroid_x = sum_x / area;
    c.centroid_y = sum_y / area;
    // Color fit from the component's mean color: the mean of points on a blend line stays on it
    // (anti-aliased edges cost nothing), and pixel noise averages out instead of lowering the fit
    // of a correctly colored object. exp(-0.5 (r / sigma)^2), sigma half the threshold.
    for (float& v : sum_rgb) v /= static_cast<float>(area);
    const double r = on_line(sum_rgb, 1, 0, color).distance / (0.5 * options.color_threshold);
    c.color_fit = std::exp(-0.5 * r * r);
    measure_shape(c, members, label, px, h, w, options.color_threshold);
    // A component is an object when it is big enough, not too big, and looks like some shape at
    // all: noise clusters and merged mosaics are neither circles, squares nor triangles; and the
    // renderer's largest object covers 15% of the image, so a component over a quarter of it is a
    // painted frame (an image filled with red is not "a red square", however square it is).
    c.is_object = area >= min_area && area <= kMaxAreaFraction * static_cast<double>(n) && c.regularity >= 0.5;
    out.components.push_back(c);
  }
  return out;
}

}  // namespace sdpo::toy_geneval
