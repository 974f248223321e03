#pragma once
// The toy GenEval detector: finds the colored shapes of a toy-world image (models/toy/include/sdpo/models/toy/world.h)
// by color segmentation and connected components, with no learned part (an independent check of
// the `shape_alignment` classifier). Pure functions on CPU, testable without the registry.
//
// Example:
//   sdpo::toy_geneval::Detection d = sdpo::toy_geneval::detect(image);   // image (3, H, W) in [0, 1]
//   for (const auto& c : d.objects()) ... c.color, c.shape, c.area, c.center_x ...
//
// Pixel rule. The renderer blends a palette color c over the background b with a coverage a in
// [0, 1] (anti-aliased edges), so every pixel of an object lies on the segment b + a (c - b).
// For each palette color a pixel p gets
//   a_c(p) = clamp(<p - b, c - b> / |c - b|^2, 0, 1)     (coverage along that color's blend line)
//   r_c(p) = |p - (b + a_c(p) (c - b))|                   (RGB distance to the blend line)
// and is labelled with the color of smallest r_c among those with a_c >= 0.5 and
// r_c < color_threshold; pixels with no such color (the background, rims under half coverage,
// colors of no palette entry) are unlabelled.
//
// Components: 8-connected pixels of one label. A component is an object when it has at least
// `min_area` pixels (given at 32x32, scaled by H*W/1024), at most a quarter of the image (the
// renderer's largest object covers 15%; a frame filled with one color is no object), and is
// regular (below); other components are specks or clutter.
//
// Shape rule (shape_fit): four geometry features measured from pixel coverages, the component's
// pixels and its anti-aliased rim, so sub-pixel (detector.cpp, measure_shape):
//   fill ratio       f = coverage area / (coverage width * coverage height)
//   centroid height  v = (coverage centroid y - top) / height      (0 top, 1 bottom)
//   centroid width   u = (coverage centroid x - left) / width
//   aspect           a = log(width / height)
// Each shape has a prototype (f, v, u, a) measured on rendered objects: circle (0.79, 0.50, 0.50,
// 0; f = pi/4 in the continuum), square (1.00, 0.50, 0.50, 0), triangle (0.58, 0.68, 0.52, 0.13;
// it points up, so its mass sits low: 1/2, 2/3, 1/2, 0.144 in the continuum). With the scales
// s = (0.06, 0.04, 0.04, 0.08) and D_s^2 = sum_k ((x_k - prototype_s,k) / s_k)^2:
//   shape_fit[s] = exp(-D_s^2 / 2) / (sum_s' exp(-D_s'^2 / 2) + exp(-16 / 2))
// the last term being an "irregular" class at four scales. The label is the most probable shape;
// regularity = sum of the three fits (1 - P(irregular)) must be >= 0.5 for an object.
//
// Location (see location_of): the mean bounding-box center of a group of objects, in fractions of
// the image side, goes to the nearest of the renderer's five anchors (center 0.5/0.5, left 0.28/0.5,
// right 0.72/0.5, top 0.5/0.28, bottom 0.5/0.72). Bounding-box centers, not mass centroids: the
// renderer centres each object's bounding box on its slot, and a triangle's centroid sits a sixth
// of its height lower.
//
// Thread safety: every function is pure and thread-safe.

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

#include "sdpo/models/toy/world.h"

namespace sdpo::toy_geneval {

struct DetectorOptions {
  /// Largest RGB distance (0..sqrt 3) from a pixel to a palette color's blend line.
  double color_threshold = 0.25;
  /// Smallest object, in pixels of a 32x32 image (scaled by H*W/1024 for other sizes).
  double min_area = 8.0;
};

/// The geometry features of the shape rule (above), from pixel coverages.
struct ShapeFeatures {
  double fill_ratio = 0.0;       ///< ~0.79 circle, 1 square, ~0.58 triangle
  double centroid_height = 0.5;  ///< 0.5 circle and square, ~0.68 triangle
  double centroid_width = 0.5;   ///< 0.5 for all three (they are left-right symmetric)
  double aspect = 0.0;           ///< log(width / height): 0, 0, ~0.13
};

/// One 8-connected component of a single color label.
struct Component {
  sdpo::toy::Color color = sdpo::toy::Color::kRed;
  std::int64_t area = 0;                      ///< pixels
  double centroid_x = 0.0, centroid_y = 0.0;  ///< mean pixel center, pixels (x = column + 0.5)
  std::int64_t left = 0, top = 0;             ///< bounding box, first column / row (inclusive)
  std::int64_t right = 0, bottom = 0;         ///< bounding box, last column / row (inclusive)
  /// Sum of the pixel coverages of the component and its rim, pixels (the sub-pixel area).
  double coverage_area = 0.0;
  ShapeFeatures features;
  /// exp(-0.5 (r / (color_threshold / 2))^2) with r the distance of the component's mean color to
  /// its color's blend line: 1 for a rendered object (edges included), e^-2 = 0.14 at the threshold.
  double color_fit = 1.0;
  sdpo::toy::Shape shape = sdpo::toy::Shape::kCircle;     ///< most probable shape (shape rule above)
  std::array<double, sdpo::toy::kNumShapes> shape_fit{};  ///< shape_fit(features), in Shape order
  double regularity = 0.0;                                ///< sum of shape_fit, in (0, 1)
  bool is_object = false;                                 ///< scaled min_area <= area <= H*W/4, and regularity >= 0.5

  double box_width() const { return static_cast<double>(right - left + 1); }
  double box_height() const { return static_cast<double>(bottom - top + 1); }
  /// Bounding-box center, pixels.
  double center_x() const { return 0.5 * static_cast<double>(left + right + 1); }
  double center_y() const { return 0.5 * static_cast<double>(top + bottom + 1); }
};

/// Everything detect() finds in one image.
struct Detection {
  std::int64_t height = 0, width = 0;
  /// Every component, objects and specks, in scan order of their first pixel.
  std::vector<Component> components;
  /// Pixels that carry a color label (in any component).
  std::int64_t labelled_pixels = 0;
  /// Unlabelled pixels that are neither background (RGB distance to it at most color_threshold)
  /// nor 8-adjacent to a labelled pixel (an object's anti-aliased rim): clutter such as noise.
  std::int64_t clutter_pixels = 0;

  /// The components that are objects, in scan order.
  std::vector<Component> objects() const;
};

/// Segments one image. image: (3, H, W), values in [0, 1] (others are clamped), any device and
/// floating dtype (copied to CPU float). Throws sdpo::Error on another shape or bad options.
Detection detect(const at::Tensor& image, const DetectorOptions& options = {});

/// Pixel label of one RGB value: the palette color index (0..5, sdpo::toy::Color order) or -1,
/// and its distance r to that color's blend line (the pixel rule above).
struct PixelLabel {
  int color = -1;
  double distance = 0.0;
};
PixelLabel label_pixel(float r, float g, float b, double color_threshold);

/// Shape probabilities of the shape rule (above), in sdpo::toy::Shape order; they sum to
/// 1 - P(irregular) < 1.
std::array<double, sdpo::toy::kNumShapes> shape_fit(const ShapeFeatures& features);

/// The renderer's anchor of a location, fractions of the image side (x right, y down).
std::array<double, 2> anchor(sdpo::toy::Location location);

/// Location probabilities of a point (x, y in fractions of the image side): softmax over the five
/// anchors of -0.5 * (distance / 0.05)^2, in sdpo::toy::Location order. Near an anchor the
/// probability is ~1 (rendered groups, with their jitter, measure >= 0.99 at their own anchor);
/// half-way between two it is 0.5.
std::array<double, sdpo::toy::kNumLocations> location_fit(double x, double y);

/// Nearest anchor of the mean bounding-box center of `group` (non-empty) in an image of
/// height x width pixels.
sdpo::toy::Location location_of(const std::vector<Component>& group, std::int64_t height, std::int64_t width);

}  // namespace sdpo::toy_geneval
