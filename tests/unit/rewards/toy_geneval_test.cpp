// The `toy_geneval` reward: the detector, the GenEval checks, the toy GenEval prompt set and its
// table directly (rewards/toy_geneval/detector.h, geneval.h, report.h, compiled into the tests),
// and the reward through the registry.

#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <boost/json/parse.hpp>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "rewards/toy_geneval/detector.h"
#include "rewards/toy_geneval/geneval.h"
#include "rewards/toy_geneval/report.h"
#include "sdpo/core/error.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/models/toy/world.h"
#include "support/test_support.h"

namespace {

namespace toy = sdpo::toy;
namespace tg = sdpo::toy_geneval;

std::shared_ptr<sdpo::Reward> make_reward(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::Reward>(sdpo::ComponentConfig{
      "reward", "toy_geneval", boost::json::parse(options_json).as_object(), "<test>", "reward.options"});
}

// ---- Hand-drawn images: binary shapes (no anti-aliasing) on the background. ----

at::Tensor blank(std::int64_t size = 32) { return at::full({3, size, size}, toy::kBackground, at::kFloat); }

void put(at::Tensor& img, std::int64_t y, std::int64_t x, toy::Color color) {
  const std::vector<float> rgb = toy::color_rgb(color);
  auto a = img.accessor<float, 3>();
  for (int c = 0; c < 3; ++c) a[c][y][x] = rgb[c];
}

void draw_rect(at::Tensor& img, toy::Color color, std::int64_t x0, std::int64_t y0, std::int64_t w, std::int64_t h) {
  for (std::int64_t y = y0; y < y0 + h; ++y)
    for (std::int64_t x = x0; x < x0 + w; ++x) put(img, y, x, color);
}

// Pixels whose centers lie within r of (cx, cy).
void draw_disc(at::Tensor& img, toy::Color color, double cx, double cy, double r) {
  for (std::int64_t y = 0; y < img.size(1); ++y)
    for (std::int64_t x = 0; x < img.size(2); ++x)
      if (std::hypot(x + 0.5 - cx, y + 0.5 - cy) <= r) put(img, y, x, color);
}

// Up-pointing equilateral triangle with its base on row coordinate `base` (pixel centers inside).
void draw_triangle(at::Tensor& img, toy::Color color, double cx, double base, double side) {
  const double apex = base - side * std::sqrt(3.0) / 2.0;
  for (std::int64_t y = 0; y < img.size(1); ++y)
    for (std::int64_t x = 0; x < img.size(2); ++x) {
      const double px = x + 0.5, py = y + 0.5;
      if (py < apex || py > base) continue;
      if (std::abs(px - cx) <= (py - apex) / (base - apex) * side / 2.0) put(img, y, x, color);
    }
}

at::Tensor render(const std::string& prompt, at::Generator& gen, const toy::RenderOptions& options = {}) {
  return toy::render(*toy::parse(prompt), gen, options);
}

std::vector<std::string> every_prompt() {
  std::vector<std::string> all = toy::training_prompts();
  all.insert(all.end(), toy::evaluation_prompts().begin(), toy::evaluation_prompts().end());
  all.insert(all.end(), toy::unseen_prompts().begin(), toy::unseen_prompts().end());
  return all;
}

// ---- The detector ----

TEST(ToyGenevalDetector, PixelRuleFollowsTheBlendLines) {
  for (int k = 0; k < toy::kNumColors; ++k) {
    const std::vector<float> c = toy::color_rgb(static_cast<toy::Color>(k));
    EXPECT_EQ(tg::label_pixel(c[0], c[1], c[2], 0.25).color, k) << toy::color_name(static_cast<toy::Color>(k));
    EXPECT_NEAR(tg::label_pixel(c[0], c[1], c[2], 0.25).distance, 0.0, 1e-6);
    // An anti-aliased edge at 60% coverage is still that color; at 40% it is not the object.
    const auto blend = [&](double a, int i) {
      return static_cast<float>(toy::kBackground + a * (c[i] - toy::kBackground));
    };
    EXPECT_EQ(tg::label_pixel(blend(0.6, 0), blend(0.6, 1), blend(0.6, 2), 0.25).color, k);
    EXPECT_EQ(tg::label_pixel(blend(0.4, 0), blend(0.4, 1), blend(0.4, 2), 0.25).color, -1);
  }
  const float bg = toy::kBackground;
  EXPECT_EQ(tg::label_pixel(bg, bg, bg, 0.25).color, -1);
  EXPECT_EQ(tg::label_pixel(0.5f, 0.5f, 0.5f, 0.25).color, -1);  // mid gray is no palette color
  // Red moved 0.3 off its line (towards green) is past a 0.25 threshold, within a 0.35 one.
  EXPECT_EQ(tg::label_pixel(0.9f, 0.4f, 0.1f, 0.25).color, -1);
  EXPECT_EQ(tg::label_pixel(0.9f, 0.4f, 0.1f, 0.35).color, static_cast<int>(toy::Color::kRed));
}

TEST(ToyGenevalDetector, DrawnShapesGetTheirLabels) {
  at::Tensor img = blank();
  draw_rect(img, toy::Color::kRed, 2, 3, 8, 8);             // square, box x 2..9, y 3..10
  draw_disc(img, toy::Color::kGreen, 23.0, 8.0, 6.0);       // circle of radius 6
  draw_triangle(img, toy::Color::kBlue, 16.0, 30.0, 14.0);  // triangle, side 14
  const tg::Detection d = tg::detect(img);
  ASSERT_EQ(d.components.size(), 3u);
  ASSERT_EQ(d.objects().size(), 3u);
  EXPECT_EQ(d.clutter_pixels, 0);
  std::map<toy::Color, tg::Component> by_color;
  for (const auto& c : d.components) by_color[c.color] = c;
  const tg::Component& sq = by_color.at(toy::Color::kRed);
  EXPECT_EQ(sq.shape, toy::Shape::kSquare);
  EXPECT_EQ(sq.area, 64);
  EXPECT_EQ(sq.left, 2);
  EXPECT_EQ(sq.right, 9);
  EXPECT_EQ(sq.top, 3);
  EXPECT_EQ(sq.bottom, 10);
  EXPECT_DOUBLE_EQ(sq.centroid_x, 6.0);
  EXPECT_DOUBLE_EQ(sq.centroid_y, 7.0);
  EXPECT_NEAR(sq.features.fill_ratio, 1.0, 1e-6);
  EXPECT_NEAR(sq.color_fit, 1.0, 1e-6);
  EXPECT_GT(sq.shape_fit[static_cast<int>(toy::Shape::kSquare)], 0.99);

  const tg::Component& circle = by_color.at(toy::Color::kGreen);
  EXPECT_EQ(circle.shape, toy::Shape::kCircle);
  EXPECT_NEAR(circle.features.fill_ratio, M_PI / 4.0, 0.03);
  EXPECT_NEAR(circle.centroid_x, 23.0, 1e-9);
  EXPECT_NEAR(circle.centroid_y, 8.0, 1e-9);
  EXPECT_NEAR(static_cast<double>(circle.area), M_PI * 36.0, 6.0);

  const tg::Component& tri = by_color.at(toy::Color::kBlue);
  EXPECT_EQ(tri.shape, toy::Shape::kTriangle);
  EXPECT_NEAR(tri.features.fill_ratio, 0.5, 0.06);
  EXPECT_NEAR(tri.features.centroid_height, 2.0 / 3.0, 0.04);  // mass low: it points up
  EXPECT_GT(tri.centroid_y, tri.center_y());
}

TEST(ToyGenevalDetector, RenderedShapesAtEverySizeGetTheirLabels) {
  // One to three copies and pairs: the smallest objects (three triangles) are ~11 pixels.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  int checked = 0;
  for (int s = 0; s < toy::kNumShapes; ++s)
    for (int count = 1; count <= 3; ++count)
      for (int k = 0; k < toy::kNumColors; ++k) {
        toy::Scene scene;
        scene.objects = {toy::Object{static_cast<toy::Shape>(s), static_cast<toy::Color>(k)}};
        scene.count = count;
        const tg::Detection d = tg::detect(toy::render(scene, gen));
        ASSERT_EQ(d.objects().size(), static_cast<std::size_t>(count)) << toy::describe(scene);
        for (const auto& c : d.objects()) {
          EXPECT_EQ(c.shape, static_cast<toy::Shape>(s)) << toy::describe(scene);
          EXPECT_EQ(c.color, static_cast<toy::Color>(k)) << toy::describe(scene);
          EXPECT_GT(c.color_fit, 0.99);
          ++checked;
        }
      }
  EXPECT_EQ(checked, 3 * 6 * 6);
}

TEST(ToyGenevalDetector, ComponentsAreEightConnectedPerColor) {
  at::Tensor img = blank();
  draw_rect(img, toy::Color::kYellow, 2, 2, 5, 5);
  draw_rect(img, toy::Color::kYellow, 20, 2, 5, 5);  // apart: two components
  draw_rect(img, toy::Color::kWhite, 2, 20, 4, 4);
  draw_rect(img, toy::Color::kWhite, 6, 24, 4, 4);  // touches the first at a corner only
  draw_rect(img, toy::Color::kPurple, 20, 20, 4, 4);
  draw_rect(img, toy::Color::kGreen, 24, 20, 4, 4);  // side by side, another color
  const tg::Detection d = tg::detect(img);
  std::map<toy::Color, int> count;
  for (const auto& c : d.components) ++count[c.color];
  EXPECT_EQ(count[toy::Color::kYellow], 2);
  EXPECT_EQ(count[toy::Color::kWhite], 1);  // 8-connectivity joins the diagonal neighbours
  EXPECT_EQ(count[toy::Color::kPurple], 1);
  EXPECT_EQ(count[toy::Color::kGreen], 1);
  for (const auto& c : d.components)
    if (c.color == toy::Color::kWhite) {
      EXPECT_EQ(c.area, 32);
      EXPECT_FALSE(c.is_object);  // two squares joined at a corner are no shape
    }
}

TEST(ToyGenevalDetector, MinimumAreaScalesWithImageSize) {
  at::Tensor img = blank();
  draw_rect(img, toy::Color::kRed, 4, 4, 3, 3);     // 9 pixels
  draw_rect(img, toy::Color::kBlue, 20, 20, 2, 2);  // 4 pixels
  tg::Detection d = tg::detect(img);
  ASSERT_EQ(d.components.size(), 2u);
  ASSERT_EQ(d.objects().size(), 1u);  // default min_area 8 at 32x32
  EXPECT_EQ(d.objects()[0].color, toy::Color::kRed);
  EXPECT_EQ(d.objects()[0].shape, toy::Shape::kSquare);
  EXPECT_TRUE(tg::detect(img, tg::DetectorOptions{0.25, 10.0}).objects().empty());
  EXPECT_EQ(tg::detect(img, tg::DetectorOptions{0.25, 4.0}).objects().size(), 2u);

  // At 64x64 the same 8 means 32 pixels: a 5x5 square is a speck, a 6x6 one an object.
  at::Tensor big = blank(64);
  draw_rect(big, toy::Color::kRed, 4, 4, 5, 5);
  draw_rect(big, toy::Color::kBlue, 40, 40, 6, 6);
  d = tg::detect(big);
  ASSERT_EQ(d.objects().size(), 1u);
  EXPECT_EQ(d.objects()[0].color, toy::Color::kBlue);
}

TEST(ToyGenevalDetector, LocationFromTheRenderersAnchors) {
  // 6x6 squares centred on each anchor of a 32x32 image (anchor * 32 rounded to a pixel corner).
  for (int l = 0; l < toy::kNumLocations; ++l) {
    const auto loc = static_cast<toy::Location>(l);
    const std::array<double, 2> a = tg::anchor(loc);
    at::Tensor img = blank();
    draw_rect(img, toy::Color::kRed, std::lround(a[0] * 32) - 3, std::lround(a[1] * 32) - 3, 6, 6);
    const auto objects = tg::detect(img).objects();
    ASSERT_EQ(objects.size(), 1u);
    EXPECT_EQ(tg::location_of(objects, 32, 32), loc) << toy::location_name(loc);
    EXPECT_GT(tg::location_fit(a[0], a[1])[l], 0.999);
  }
  // A vertical row of three on the left: the group, not each object, is on the left.
  at::Tensor img = blank();
  for (std::int64_t y : {4, 14, 24}) draw_rect(img, toy::Color::kGreen, 6, y, 5, 5);
  const auto row = tg::detect(img).objects();
  ASSERT_EQ(row.size(), 3u);
  EXPECT_EQ(tg::location_of(row, 32, 32), toy::Location::kLeft);
  // Half-way between the center and the left anchor both are equally likely.
  const auto half = tg::location_fit(0.39, 0.5);
  EXPECT_NEAR(half[static_cast<int>(toy::Location::kCenter)], 0.5, 1e-3);
  EXPECT_NEAR(half[static_cast<int>(toy::Location::kLeft)], 0.5, 1e-3);
  EXPECT_THROW(tg::location_of({}, 32, 32), sdpo::Error);
}

TEST(ToyGenevalDetector, RejectsOtherShapesAndOptions) {
  EXPECT_THROW(tg::detect(at::zeros({1, 3, 32, 32})), sdpo::Error);
  EXPECT_THROW(tg::detect(at::zeros({4, 32, 32})), sdpo::Error);
  EXPECT_THROW(tg::detect(blank(), tg::DetectorOptions{0.0, 8.0}), sdpo::Error);
  // Double input and values outside [0, 1] are accepted (copied and clamped).
  at::Tensor img = blank();
  draw_rect(img, toy::Color::kRed, 4, 4, 6, 6);
  EXPECT_EQ(tg::detect((img.to(at::kDouble) * 1.5 - 0.05)).components.size(), 1u);
}

// ---- Categories and requirements ----

TEST(ToyGenevalChecks, CategoriesOfEveryPromptSet) {
  const auto tally = [](const std::vector<std::string>& prompts) {
    std::map<std::string, int> n;
    for (const auto& p : prompts) ++n[tg::category_name(tg::category_of(*toy::parse(p)))];
    return n;
  };
  EXPECT_EQ(
      tally(toy::training_prompts()),
      (std::map<std::string, int>{{"single_object", 15}, {"counting", 10}, {"position", 20}}));
  EXPECT_EQ(
      tally(toy::evaluation_prompts()),
      (std::map<std::string, int>{{"single_object", 6}, {"counting", 2}, {"position", 4}}));
  // The unseen set's Table 1 categories map onto GenEval's.
  const std::map<std::string, std::string> table1{
      {"color", "single_object"}, {"count", "counting"}, {"composition", "two_object"}, {"location", "position"}};
  for (std::size_t i = 0; i < toy::unseen_prompts().size(); ++i)
    EXPECT_EQ(
        tg::category_name(tg::category_of(*toy::parse(toy::unseen_prompts()[i]))),
        table1.at(toy::unseen_categories()[i]))
        << toy::unseen_prompts()[i];
  // Precedence: an off-center count is position; compositions are two_object.
  EXPECT_EQ(tg::category_of(*toy::parse("three white circles at the bottom")), tg::Category::kPosition);
  EXPECT_EQ(tg::category_of(*toy::parse("two red circles")), tg::Category::kCounting);
  EXPECT_EQ(tg::category_of(*toy::parse("a red circle")), tg::Category::kSingleObject);
  EXPECT_EQ(tg::category_of(*toy::parse("a red circle and a blue square")), tg::Category::kTwoObject);
}

TEST(ToyGenevalChecks, RequirementsOfEachCategory) {
  const auto names = [](const std::string& prompt) {
    std::vector<std::string> out;
    for (const auto& r : tg::evaluate(*toy::parse(prompt), tg::detect(blank())).requirements) out.push_back(r.name);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names("a red circle"), (V{"color", "shape", "nothing_else"}));
  EXPECT_EQ(names("three blue squares"), (V{"color", "shape", "count", "nothing_else"}));
  EXPECT_EQ(names("a red square on the left"), (V{"color", "shape", "location", "nothing_else"}));
  EXPECT_EQ(names("two green triangles on the left"), (V{"color", "shape", "count", "location", "nothing_else"}));
  EXPECT_EQ(
      names("a red circle and a blue square"), (V{"color of red circle", "shape of red circle", "color of blue square",
                                                  "shape of blue square", "nothing_else"}));
  // An empty image meets nothing, "nothing else" included.
  const tg::Evaluation empty = tg::evaluate(*toy::parse("a red circle"), tg::detect(blank()));
  EXPECT_EQ(empty.strict, 0.0);
  EXPECT_EQ(empty.soft, 0.0);
  for (const auto& r : empty.requirements) EXPECT_FALSE(r.met) << r.name;
}

TEST(ToyGenevalChecks, EachRequirementFailsOnItsOwn) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const auto failed = [&](const std::string& drawn, const std::string& asked) {
    const tg::Evaluation e = tg::evaluate(*toy::parse(asked), tg::detect(render(drawn, gen)));
    std::vector<std::string> out;
    for (const auto& r : e.requirements)
      if (!r.met) out.push_back(r.name);
    EXPECT_EQ(e.strict, out.empty() ? 1.0 : 0.0);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(failed("a red circle", "a red circle"), V{});
  EXPECT_EQ(failed("a red square", "a red circle"), (V{"shape", "nothing_else"}));
  EXPECT_EQ(failed("a blue circle", "a red circle"), (V{"color", "shape", "nothing_else"}));
  EXPECT_EQ(failed("two red circles", "three red circles"), V{"count"});
  EXPECT_EQ(failed("three red circles", "two red circles"), (V{"count", "nothing_else"}));
  EXPECT_EQ(failed("two red circles", "a red circle"), V{"nothing_else"});
  EXPECT_EQ(failed("a red circle on the right", "a red circle on the left"), V{"location"});
  EXPECT_EQ(failed("a red circle", "a red circle at the top"), V{"location"});
  // Color attribution: the right shapes and colors on the wrong objects.
  EXPECT_EQ(
      failed("a red circle and a blue square", "a blue circle and a red square"),
      (V{"shape of blue circle", "shape of red square", "nothing_else"}));
  EXPECT_EQ(failed("a red circle and a blue square", "a blue square and a red circle"), V{});
}

// ---- The toy GenEval prompt set and its table ----

TEST(ToyGenevalPrompts, TwelvePerCategoryEachParsingToItsCategory) {
  const std::vector<tg::GenevalPrompt>& set = tg::geneval_prompts();
  ASSERT_EQ(set.size(), 48u);
  std::map<tg::Category, std::vector<toy::Scene>> by_category;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < set.size(); ++i) {
    const tg::GenevalPrompt& p = set[i];
    EXPECT_TRUE(seen.insert(p.prompt).second) << "duplicate: " << p.prompt;
    const std::optional<toy::Scene> scene = toy::parse(p.prompt);
    ASSERT_TRUE(scene) << p.prompt;
    EXPECT_EQ(toy::describe(*scene), p.prompt);
    EXPECT_EQ(tg::category_of(*scene), p.category) << p.prompt;
    EXPECT_EQ(static_cast<std::size_t>(p.category), i / 12) << "in Category order: " << p.prompt;
    by_category[p.category].push_back(*scene);
  }
  for (int c = 0; c < tg::kNumCategories; ++c)
    EXPECT_EQ(by_category[static_cast<tg::Category>(c)].size(), 12u) << tg::category_name(static_cast<tg::Category>(c));

  // single_object: one centered object, every shape and every color.
  std::set<toy::Shape> shapes;
  std::set<toy::Color> colors;
  for (const toy::Scene& s : by_category[tg::Category::kSingleObject]) {
    EXPECT_EQ(s.count, 1);
    EXPECT_EQ(s.location, toy::Location::kCenter);
    shapes.insert(s.objects[0].shape);
    colors.insert(s.objects[0].color);
  }
  EXPECT_EQ(shapes.size(), 3u);
  EXPECT_EQ(colors.size(), 6u);
  // counting: two and three copies, centered, six of each.
  std::map<int, int> counts;
  for (const toy::Scene& s : by_category[tg::Category::kCounting]) {
    EXPECT_EQ(s.location, toy::Location::kCenter);
    ++counts[s.count];
  }
  EXPECT_EQ(counts, (std::map<int, int>{{2, 6}, {3, 6}}));
  // position: one object, three at each off-center location.
  std::map<toy::Location, int> locations;
  for (const toy::Scene& s : by_category[tg::Category::kPosition]) {
    EXPECT_EQ(s.count, 1);
    ++locations[s.location];
  }
  EXPECT_EQ(
      locations, (std::map<toy::Location, int>{
                     {toy::Location::kLeft, 3},
                     {toy::Location::kRight, 3},
                     {toy::Location::kTop, 3},
                     {toy::Location::kBottom, 3}}));
  // two_object: two objects of different colors and different shapes (color attribution).
  for (const toy::Scene& s : by_category[tg::Category::kTwoObject]) {
    ASSERT_TRUE(s.is_composition());
    EXPECT_NE(s.objects[0].color, s.objects[1].color);
    EXPECT_NE(s.objects[0].shape, s.objects[1].shape);
  }

  // The training split does not matter: trained and held-out prompts alike, and the three
  // color-shape pairs no training prompt has are asked for as single objects.
  const std::set<std::string> trained(toy::training_prompts().begin(), toy::training_prompts().end());
  int held_out = 0;
  for (const auto& p : set) held_out += trained.count(p.prompt) == 0 ? 1 : 0;
  EXPECT_GT(held_out, 0);
  EXPECT_LT(held_out, 48);
  for (const char* p : {"a yellow triangle", "a purple circle", "a white square"}) EXPECT_TRUE(seen.count(p)) << p;
  EXPECT_EQ(set.front().prompt, "a red circle");
  EXPECT_EQ(set.back().prompt, "a white square and a green triangle");
}

TEST(ToyGenevalPrompts, GroundTruthOfThePromptSetIsCorrect) {
  // The detector reads every rendered prompt of the set as correct: a model's failures on the
  // set are the model's, not the checks'.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(16);
  for (int seed = 0; seed < 3; ++seed)
    for (const tg::GenevalPrompt& p : tg::geneval_prompts()) {
      const tg::Evaluation e = tg::evaluate(*toy::parse(p.prompt), tg::detect(render(p.prompt, gen)));
      EXPECT_EQ(e.strict, 1.0) << p.prompt;
      EXPECT_GT(e.soft, 0.95) << p.prompt;
    }
}

TEST(ToyGenevalReport, OverallAveragesCategoriesNotImages) {
  using C = tg::Category;
  // Step count 4: 3 single_object images (2 correct), 1 counting (correct), 2 position (none);
  // no two_object. Step count 1 (listed second, kept second): one correct two_object image.
  std::vector<tg::ImageResult> r{
      {4, "a red circle", C::kSingleObject, 1, 1.0, 0.9, {}},
      {4, "a red circle", C::kSingleObject, 2, 1.0, 0.8, {}},
      {4, "a red circle", C::kSingleObject, 3, 0.0, 0.4, {"shape", "nothing_else"}},
      {4, "two red circles", C::kCounting, 1, 1.0, 1.0, {}},
      {4, "a red circle on the left", C::kPosition, 1, 0.0, 0.5, {"location"}},
      {4, "a red circle on the left", C::kPosition, 2, 0.0, 0.3, {"location"}},
      {1, "a red circle and a blue square", C::kTwoObject, 1, 1.0, 0.7, {}},
  };
  const std::vector<tg::StepsSummary> s = tg::summarize(r);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].steps, 4);
  EXPECT_NEAR(s[0].accuracy[0], 2.0 / 3.0, 1e-12);
  EXPECT_EQ(s[0].accuracy[1], 1.0);
  EXPECT_EQ(s[0].accuracy[2], 0.0);
  EXPECT_TRUE(std::isnan(s[0].accuracy[3]));
  EXPECT_EQ(s[0].images, (std::array<std::int64_t, 4>{3, 1, 2, 0}));
  EXPECT_NEAR(s[0].overall, (2.0 / 3.0 + 1.0 + 0.0) / 3.0, 1e-12);  // not 3 correct / 6 images
  EXPECT_NEAR(s[0].soft, (0.7 + 1.0 + 0.4) / 3.0, 1e-12);
  EXPECT_EQ(s[1].steps, 1);
  EXPECT_EQ(s[1].overall, 1.0);

  const std::string table = tg::format_table(s);
  EXPECT_EQ(
      table,
      "| steps | single_object | counting | position | two_object | overall | soft |\n"
      "|---|---|---|---|---|---|---|\n"
      "| 4 | 0.667 | 1.000 | 0.000 | - | 0.556 | 0.700 |\n"
      "| 1 | - | - | - | 1.000 | 1.000 | 0.700 |\n");

  std::ostringstream csv;
  tg::write_csv_header(csv);
  tg::write_csv_rows(csv, {r[2], r[6]});
  EXPECT_EQ(
      csv.str(),
      "steps,prompt,category,seed,strict,soft,failed\n"
      "4,a red circle,single_object,3,0,0.4,shape;nothing_else\n"
      "1,a red circle and a blue square,two_object,1,1,0.7,\n");
}

// ---- The reward ----

TEST(ToyGeneval, GroundTruthScenesScoreNearOne) {
  // Every training, evaluation and unseen prompt rendered with 5 seeds (345 images), scored
  // against its own prompt. Measured (seed 11): strict 1.000, soft mean 0.999, soft min 0.996.
  auto strict = make_reward(R"({"mode": "strict"})");
  auto soft = make_reward();
  EXPECT_TRUE(soft->needs_prompts());
  std::vector<std::string> prompts;
  for (int seed = 0; seed < 5; ++seed)
    for (const auto& p : every_prompt()) prompts.push_back(p);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  std::vector<toy::Scene> scenes;
  for (const auto& p : prompts) scenes.push_back(*toy::parse(p));
  const at::Tensor images = toy::render_batch(scenes, gen);
  const at::Tensor s = strict->score(images, prompts);
  const at::Tensor f = soft->score(images, prompts);
  ASSERT_EQ(s.sizes(), (std::vector<std::int64_t>{static_cast<std::int64_t>(prompts.size())}));
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_TRUE(s.eq(0).logical_or(s.eq(1)).all().item<bool>());
  std::map<std::string, std::pair<double, int>> per_category;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    auto& c = per_category[tg::category_name(tg::category_of(scenes[i]))];
    c.first += s[static_cast<std::int64_t>(i)].item<double>();
    ++c.second;
  }
  std::cout << std::fixed << std::setprecision(4) << "[ MEASURED ] ground truth: strict " << s.mean().item<double>()
            << " soft mean " << f.mean().item<double>() << " soft min " << f.min().item<double>();
  for (const auto& [name, c] : per_category) std::cout << " " << name << " " << c.first / c.second;
  std::cout << std::defaultfloat << "\n";
  EXPECT_GE(s.mean().item<double>(), 0.98);
  for (const auto& [name, c] : per_category) EXPECT_GE(c.first / c.second, 0.95) << name;
  EXPECT_GE(f.mean().item<double>(), 0.98);
  EXPECT_GE(f.min().item<double>(), 0.9);
  EXPECT_LE(f.max().item<double>(), 1.0);
}

TEST(ToyGeneval, NoiseScoresNearZero) {
  // 200 images of each kind, each scored against 7 prompts of all three sets. Measured (seed 12):
  //   uniform         U(0, 1) per pixel and channel          strict 0     soft 0.005
  //   palette pixels  each pixel a palette color or gray     strict 0     soft 0.005
  //   smooth          8x8 uniform noise, bilinear to 32x32   strict 0     soft 0.11
  //   mosaic          4x4 blocks of palette colors or gray   strict 0     soft 0.42
  // The mosaic holds real squares (of every color, many times over), so its soft score keeps
  // the credit of "a red square is there" and loses "nothing else".
  auto strict = make_reward(R"({"mode": "strict"})");
  auto soft = make_reward();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  at::Tensor palette = at::empty({7, 3});
  for (int k = 0; k < toy::kNumColors; ++k) {
    const std::vector<float> c = toy::color_rgb(static_cast<toy::Color>(k));
    for (int i = 0; i < 3; ++i) palette[k][i] = c[i];
  }
  palette[6].fill_(toy::kBackground);
  const auto palette_noise = [&](std::int64_t n, std::int64_t grid) {
    const at::Tensor idx = at::randint(0, 7, {n * grid * grid}, gen, at::kLong);
    const at::Tensor img = palette.index_select(0, idx).view({n, grid, grid, 3}).permute({0, 3, 1, 2});
    return at::upsample_nearest2d(img.contiguous(), {32, 32});
  };
  const std::int64_t n = 200;
  const std::vector<std::pair<std::string, at::Tensor>> kinds{
      {"uniform", at::rand({n, 3, 32, 32}, gen)},
      {"palette pixels", palette_noise(n, 32)},
      {"smooth", at::upsample_bilinear2d(at::rand({n, 3, 8, 8}, gen), {32, 32}, false)},
      {"mosaic", palette_noise(n, 8)},
  };
  const std::vector<std::string> all = every_prompt();
  const std::map<std::string, double> soft_bound{
      {"uniform", 0.02}, {"palette pixels", 0.05}, {"smooth", 0.2}, {"mosaic", 0.5}};
  for (const auto& [name, images] : kinds) {
    double strict_sum = 0.0, soft_sum = 0.0;
    int scored = 0;
    for (int j = 0; j < 7; ++j) {
      std::vector<std::string> prompts;
      for (std::int64_t i = 0; i < n; ++i) prompts.push_back(all[(i * 7 + j) % all.size()]);
      strict_sum += strict->score(images, prompts).sum().item<double>();
      soft_sum += soft->score(images, prompts).sum().item<double>();
      scored += static_cast<int>(n);
    }
    std::cout << std::fixed << std::setprecision(4) << "[ MEASURED ] " << name << " noise: strict "
              << strict_sum / scored << " soft " << soft_sum / scored << std::defaultfloat << "\n";
    EXPECT_LT(strict_sum / scored, 0.01) << name;
    EXPECT_LT(soft_sum / scored, soft_bound.at(name)) << name;
  }
  // Flat images hold no object at all; in particular an image filled with one palette color is
  // not "a square" of that color (a component over a quarter of the image is no object), so a
  // policy cannot collect the reward by painting the frame.
  at::Tensor red = blank();
  draw_rect(red, toy::Color::kRed, 0, 0, 32, 32);
  const at::Tensor flat =
      at::stack({at::zeros({3, 32, 32}), at::full({3, 32, 32}, 0.5), blank(), at::ones({3, 32, 32}), red});
  const std::vector<std::string> prompts{
      "a white square", "a white square", "a white square", "a white square", "a red square"};
  sdpo::test::expect_close(soft->score(flat, prompts), at::zeros({5}), 0, 0, "flat images");
}

TEST(ToyGeneval, WrongPromptsScoreStrictZero) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(13);
  auto strict = make_reward(R"({"mode": "strict"})");
  auto soft = make_reward();
  const at::Tensor red = render("a red circle", gen).unsqueeze(0).expand({6, 3, 32, 32}).contiguous();
  const std::vector<std::string> prompts{
      "a red circle",
      "a blue circle",
      "a red square",
      "two red circles",
      "a red circle on the left",
      "a red circle and a blue square"};
  const at::Tensor s = strict->score(red, prompts);
  const at::Tensor f = soft->score(red, prompts);
  EXPECT_EQ(s[0].item<float>(), 1.0f);
  for (std::int64_t i = 1; i < 6; ++i) {
    EXPECT_EQ(s[i].item<float>(), 0.0f) << prompts[i];
    EXPECT_LT(f[i].item<float>(), f[0].item<float>() - 0.1f) << prompts[i];
  }
  // The soft score is graded: one of several requirements wrong keeps more than all wrong.
  EXPECT_LT(f[1].item<float>(), 0.05f);                 // blue: color, shape, nothing else all fail
  EXPECT_NEAR(f[2].item<float>(), 1.0f / 3.0f, 0.05f);  // square: the color is right
  EXPECT_GT(f[3].item<float>(), 0.6f);                  // one of two copies: count at 1/2
  EXPECT_GT(f[4].item<float>(), 0.6f);                  // only the location is off
}

TEST(ToyGeneval, SoftScoreDegradesGracefullyWithPixelNoise) {
  // Ground truth of every prompt plus Gaussian pixel noise. Measured (seed 14): std 0.02: strict
  // 1.00 soft 0.997; 0.05: strict 1.00 soft 0.975; 0.10: strict 0.65 soft 0.75 (the shape
  // features of the smallest objects blur first).
  auto strict = make_reward(R"({"mode": "strict"})");
  auto soft = make_reward();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(14);
  const std::vector<std::string> prompts = every_prompt();
  std::vector<toy::Scene> scenes;
  for (const auto& p : prompts) scenes.push_back(*toy::parse(p));
  const at::Tensor clean = toy::render_batch(scenes, gen);
  double last = 1.0;
  for (double sigma : {0.02, 0.05, 0.1}) {
    const at::Tensor noisy = (clean + sigma * at::randn(clean.sizes(), gen)).clamp(0, 1);
    const double s = strict->score(noisy, prompts).mean().item<double>();
    const double f = soft->score(noisy, prompts).mean().item<double>();
    std::cout << std::fixed << std::setprecision(4) << "[ MEASURED ] ground truth + noise " << sigma << ": strict " << s
              << " soft " << f << std::defaultfloat << "\n";
    if (sigma <= 0.05) {
      EXPECT_GE(s, 0.95) << sigma;
      EXPECT_GE(f, 0.9) << sigma;
    }
    EXPECT_LT(f, last + 1e-9) << "soft score falls as noise grows";
    last = f;
  }
}

TEST(ToyGeneval, ScoresOnTheImagesDeviceAndOtherSizes) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(15);
  const std::vector<std::string> prompts{"three green squares at the top", "a white circle and a purple square"};
  std::vector<toy::Scene> scenes{*toy::parse(prompts[0]), *toy::parse(prompts[1])};
  const at::Tensor big = toy::render_batch(scenes, gen, toy::RenderOptions{64, true, 0.1, 0.04});
  const at::Tensor s = make_reward(R"({"mode": "strict"})")->score(big.to(at::kDouble), prompts);
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_EQ(s.device(), big.device());
  sdpo::test::expect_close(s, at::ones({2}), 0, 0, "64x64 ground truth");
}

TEST(ToyGeneval, ErrorsNameWhatWasExpected) {
  auto reward = make_reward();
  sdpo::test::expect_error_names(
      [&] {
        reward->score(at::zeros({1, 3, 32, 32}), {"a pink elephant"});
      },
      {"toy_geneval", "a pink elephant"});
  sdpo::test::expect_error_names([&] { reward->score(at::zeros({1, 3, 32, 32}), {}); }, {"toy_geneval"});
  EXPECT_THROW(reward->score(at::zeros({3, 32, 32}), {"a red circle"}), sdpo::Error);
  EXPECT_THROW(make_reward(R"({"mode": "hard"})"), sdpo::ManifestError);
  EXPECT_THROW(make_reward(R"({"color_threshold": 0})"), sdpo::ManifestError);
  EXPECT_THROW(make_reward(R"({"min_area": 0.5})"), sdpo::ManifestError);
  EXPECT_THROW(make_reward(R"({"threshold": 0.2})"), sdpo::ManifestError);
}

}  // namespace
