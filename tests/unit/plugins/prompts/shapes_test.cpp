// The toy world (models/toy/include/sdpo/models/toy/world.h) and its `shapes` prompt source.

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/models/toy/world.h"
#include "support/test_support.h"

namespace {

namespace toy = sdpo::toy;

std::shared_ptr<sdpo::PromptSource> make_source(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::PromptSource>(sdpo::ComponentConfig{
      "prompts", "shapes", boost::json::parse(options_json).as_object(), "<test>", "prompts.options"});
}

at::Generator seeded(std::uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

std::vector<std::string> words_of(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// Every valid scene of the world: 18 objects x 3 counts x 5 locations, plus 18 x 17 pairs.
std::vector<toy::Scene> all_scenes() {
  std::vector<toy::Object> objects;
  for (int s = 0; s < toy::kNumShapes; ++s)
    for (int c = 0; c < toy::kNumColors; ++c)
      objects.push_back({static_cast<toy::Shape>(s), static_cast<toy::Color>(c)});
  std::vector<toy::Scene> scenes;
  for (const auto& o : objects)
    for (int n = 1; n <= toy::kMaxCount; ++n)
      for (int l = 0; l < toy::kNumLocations; ++l) scenes.push_back({{o}, n, static_cast<toy::Location>(l)});
  for (const auto& a : objects)
    for (const auto& b : objects)
      if (a != b) scenes.push_back({{a, b}, 1, toy::Location::kCenter});
  return scenes;
}

toy::Scene parsed(const std::string& prompt) {
  const auto s = toy::parse(prompt);
  if (!s) throw sdpo::Error("test: cannot parse '" + prompt + "'");
  return *s;
}

// Fraction of the image's pixels that differ from the background, and their centroid (x, y)
// in [0, 1] image coordinates, and their mean color.
struct Footprint {
  double area, x, y;
  at::Tensor color;
};

Footprint footprint(const at::Tensor& image) {
  const at::Tensor mask = (image - toy::kBackground).abs().amax(0).gt(0.05).to(at::kDouble);  // (H, W)
  const double total = mask.sum().item<double>();
  const auto h = image.size(1), w = image.size(2);
  const at::Tensor ys = (at::arange(h, at::kDouble) + 0.5) / h, xs = (at::arange(w, at::kDouble) + 0.5) / w;
  Footprint f;
  f.area = total / static_cast<double>(h * w);
  f.x = (mask * xs.view({1, w})).sum().item<double>() / total;
  f.y = (mask * ys.view({h, 1})).sum().item<double>() / total;
  // Colour of fully covered pixels, those farthest from the background (anti-aliased edges
  // blend with it).
  const at::Tensor diff = (image - toy::kBackground).abs().amax(0);
  const at::Tensor full = diff.ge(diff.max() - 1e-6);
  f.color = image.to(at::kDouble).flatten(1).index({at::indexing::Slice(), full.flatten()}).mean(1);
  return f;
}

// Number of 4-connected blobs of drawn pixels: separate objects never touch.
int blob_count(const at::Tensor& image) {
  const at::Tensor mask = (image - toy::kBackground).abs().amax(0).gt(0.05).contiguous();
  const auto h = mask.size(0), w = mask.size(1);
  const auto m = mask.accessor<bool, 2>();
  std::vector<int> seen(h * w, 0);
  int blobs = 0;
  for (std::int64_t i = 0; i < h; ++i)
    for (std::int64_t j = 0; j < w; ++j) {
      if (!m[i][j] || seen[i * w + j]) continue;
      ++blobs;
      std::vector<std::pair<std::int64_t, std::int64_t>> stack{{i, j}};
      seen[i * w + j] = 1;
      while (!stack.empty()) {
        const auto [y, x] = stack.back();
        stack.pop_back();
        const std::pair<std::int64_t, std::int64_t> next[4] = {{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}};
        for (const auto& [ny, nx] : next) {
          if (ny < 0 || nx < 0 || ny >= h || nx >= w || !m[ny][nx] || seen[ny * w + nx]) continue;
          seen[ny * w + nx] = 1;
          stack.push_back({ny, nx});
        }
      }
    }
  return blobs;
}

TEST(ShapesPrompts, FortyFiveDistinctTrainingPrompts) {
  auto source = make_source();
  const auto& train = source->train_prompts();
  EXPECT_EQ(train.size(), 45u);
  EXPECT_EQ(std::set<std::string>(train.begin(), train.end()).size(), 45u);
  EXPECT_EQ(train, toy::training_prompts());
}

TEST(ShapesPrompts, EveryAttributeValueIsTrained) {
  std::set<int> shapes, colors, counts, locations;
  for (const auto& p : toy::training_prompts()) {
    const toy::Scene s = parsed(p);
    EXPECT_FALSE(s.is_composition()) << p;
    shapes.insert(static_cast<int>(s.objects[0].shape));
    colors.insert(static_cast<int>(s.objects[0].color));
    counts.insert(s.count);
    locations.insert(static_cast<int>(s.location));
  }
  EXPECT_EQ(shapes.size(), static_cast<std::size_t>(toy::kNumShapes));
  EXPECT_EQ(colors.size(), static_cast<std::size_t>(toy::kNumColors));
  EXPECT_EQ(counts.size(), static_cast<std::size_t>(toy::kMaxCount));
  EXPECT_EQ(locations.size(), static_cast<std::size_t>(toy::kNumLocations));
}

TEST(ShapesPrompts, EvalIsTrainedSubsetCoveringShapesAndColors) {
  auto source = make_source();
  const auto& train = source->train_prompts();
  const auto& eval = source->eval_prompts();
  EXPECT_EQ(eval.size(), 12u);
  std::set<int> shapes, colors;
  for (const auto& p : eval) {
    EXPECT_NE(std::find(train.begin(), train.end(), p), train.end()) << p;
    shapes.insert(static_cast<int>(parsed(p).objects[0].shape));
    colors.insert(static_cast<int>(parsed(p).objects[0].color));
  }
  EXPECT_EQ(shapes.size(), static_cast<std::size_t>(toy::kNumShapes));
  EXPECT_EQ(colors.size(), static_cast<std::size_t>(toy::kNumColors));
}

TEST(ShapesPrompts, UnseenDisjointFromTrainAndCoversCategories) {
  auto source = make_source();
  const auto& train = source->train_prompts();
  const auto& unseen = source->unseen_prompts();
  const auto& categories = toy::unseen_categories();
  ASSERT_EQ(unseen.size(), categories.size());
  EXPECT_EQ(std::set<std::string>(unseen.begin(), unseen.end()).size(), unseen.size());
  for (const auto& p : unseen) EXPECT_EQ(std::find(train.begin(), train.end(), p), train.end()) << p;
  EXPECT_EQ(
      std::set<std::string>(categories.begin(), categories.end()),
      (std::set<std::string>{"color", "count", "composition", "location"}));

  // What each category claims: colors never trained with that shape; compositions have two
  // objects; count and location prompts use a trained object with a count / place it never had.
  std::set<std::pair<int, int>> trained_objects;
  for (const auto& p : train) {
    const toy::Object o = parsed(p).objects[0];
    trained_objects.insert({static_cast<int>(o.shape), static_cast<int>(o.color)});
  }
  for (std::size_t i = 0; i < unseen.size(); ++i) {
    const toy::Scene s = parsed(unseen[i]);
    const std::pair<int, int> key{static_cast<int>(s.objects[0].shape), static_cast<int>(s.objects[0].color)};
    if (categories[i] == "color") {
      EXPECT_EQ(trained_objects.count(key), 0u) << unseen[i];
    } else if (categories[i] == "composition") {
      EXPECT_TRUE(s.is_composition()) << unseen[i];
    } else if (categories[i] == "count") {
      EXPECT_GT(s.count, 1) << unseen[i];
    } else {
      EXPECT_NE(s.location, toy::Location::kCenter) << unseen[i];
    }
  }
}

// GenEval's task family of a scene, written out here rather than taken from toy_geneval.
int category(const toy::Scene& s) {
  if (s.is_composition()) return 3;
  if (s.location != toy::Location::kCenter) return 2;
  return s.count > 1 ? 1 : 0;
}

TEST(ShapesPrompts, GenevalScenesAreTwelvePerCategoryInOrder) {
  const auto& scenes = toy::geneval_scenes();
  ASSERT_EQ(scenes.size(), 48u);
  std::set<std::string> prompts;
  for (std::size_t n = 0; n < scenes.size(); ++n) {
    EXPECT_EQ(category(scenes[n]), static_cast<int>(n / 12)) << toy::describe(scenes[n]);
    prompts.insert(toy::describe(scenes[n]));
  }
  EXPECT_EQ(prompts.size(), 48u);
  // Hand-checked from the rule: O_0 = red circle, O_7 = green circle (k 1, shape (1 + 2) mod 3),
  // counting O_1 = green square with count 2 + 1 mod 2 = 3, position O_5 = white triangle
  // (shape 5 mod 3) on the right (location 1 + 5 / 3), two-object P_0 = green square (color 1,
  // shape circle + 1).
  EXPECT_EQ(toy::describe(scenes[0]), "a red circle");
  EXPECT_EQ(toy::describe(scenes[7]), "a green circle");
  EXPECT_EQ(toy::describe(scenes[13]), "three green squares");
  EXPECT_EQ(toy::describe(scenes[29]), "a white triangle on the right");
  EXPECT_EQ(toy::describe(scenes[36]), "a red circle and a green square");
}

TEST(ShapesPrompts, GenevalSetsSplitEveryCategoryNineThreeThree) {
  auto source = make_source(R"({"prompt_sets": "geneval"})");
  const auto& train = source->train_prompts();
  const auto& eval = source->eval_prompts();
  const auto& unseen = source->unseen_prompts();
  EXPECT_EQ(train.size(), 36u);
  EXPECT_EQ(eval.size(), 12u);
  EXPECT_EQ(unseen.size(), 12u);
  const std::set<std::string> trained(train.begin(), train.end());
  EXPECT_EQ(trained.size(), 36u);
  int train_count[4] = {}, eval_count[4] = {}, unseen_count[4] = {};
  for (const auto& p : train) ++train_count[category(parsed(p))];
  for (const auto& p : eval) {
    EXPECT_TRUE(trained.count(p)) << p;
    ++eval_count[category(parsed(p))];
  }
  for (const auto& p : unseen) {
    EXPECT_FALSE(trained.count(p)) << p;
    ++unseen_count[category(parsed(p))];
  }
  for (int c = 0; c < 4; ++c) {
    EXPECT_EQ(train_count[c], 9) << c;
    EXPECT_EQ(eval_count[c], 3) << c;
    EXPECT_EQ(unseen_count[c], 3) << c;
  }
  // Index 1 of each category is unseen, index 3 evaluated (i mod 4 == 1 and == 3).
  EXPECT_EQ(unseen[0], toy::describe(toy::geneval_scenes()[1]));
  EXPECT_EQ(eval[0], toy::describe(toy::geneval_scenes()[3]));
  // The standard sets are the default and are unchanged by the option's existence.
  EXPECT_EQ(make_source()->train_prompts(), toy::training_prompts());
  EXPECT_EQ(make_source(R"({"prompt_sets": "standard"})")->eval_prompts(), toy::evaluation_prompts());
}

TEST(ShapesPrompts, UnknownPromptSetsRefusedByName) {
  try {
    make_source(R"({"prompt_sets": "coco"})");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("prompt_sets"), std::string::npos) << what;
    EXPECT_NE(what.find("geneval"), std::string::npos) << what;
  }
}

TEST(ShapesWorld, EveryPromptParsesBackToItself) {
  std::vector<std::string> prompts = toy::training_prompts();
  prompts.insert(prompts.end(), toy::evaluation_prompts().begin(), toy::evaluation_prompts().end());
  prompts.insert(prompts.end(), toy::unseen_prompts().begin(), toy::unseen_prompts().end());
  for (const auto& p : prompts) {
    const auto s = toy::parse(p);
    ASSERT_TRUE(s.has_value()) << p;
    EXPECT_EQ(toy::describe(*s), p);
  }
}

TEST(ShapesWorld, EverySceneRoundTripsWithinVocabulary) {
  const auto& vocab = toy::vocabulary();
  const std::set<std::string> words(vocab.begin(), vocab.end());
  EXPECT_EQ(words.size(), vocab.size()) << "vocabulary has duplicates";
  std::size_t longest = 0;
  const auto scenes = all_scenes();
  EXPECT_EQ(scenes.size(), 18u * 3 * 5 + 18 * 17);
  for (const auto& s : scenes) {
    const std::string p = toy::describe(s);
    const auto back = toy::parse(p);
    ASSERT_TRUE(back.has_value()) << p;
    EXPECT_TRUE(*back == s) << p;
    const auto w = words_of(p);
    longest = std::max(longest, w.size());
    for (const auto& x : w) EXPECT_EQ(words.count(x), 1u) << "'" << x << "' of '" << p << "' not in vocabulary()";
  }
  EXPECT_EQ(longest, static_cast<std::size_t>(toy::kMaxPromptWords));
}

TEST(ShapesWorld, ParseRejectsOtherText) {
  for (const char* bad :
       {"", "a", "a red", "a red circles", "two red circle", "one red circle", "four red circles", "a pink circle",
        "a red hexagon", "a red circle in the middle", "a red circle on the top", "a red circle and a red circle",
        "two red circles and a blue square", "a red circle and a blue square on the left", "a red circle a blue square",
        "red circle"}) {
    EXPECT_FALSE(toy::parse(bad).has_value()) << "'" << bad << "'";
  }
  EXPECT_TRUE(toy::parse("  A Red  Circle ").has_value()) << "case and spacing are forgiven";
}

TEST(ShapesWorld, InvalidScenesRefused) {
  const toy::Object red_circle{toy::Shape::kCircle, toy::Color::kRed};
  const toy::Object blue_square{toy::Shape::kSquare, toy::Color::kBlue};
  EXPECT_THROW(toy::describe({{red_circle, red_circle}, 1, toy::Location::kCenter}), sdpo::Error);
  EXPECT_THROW(toy::describe({{red_circle, blue_square}, 2, toy::Location::kCenter}), sdpo::Error);
  EXPECT_THROW(toy::describe({{red_circle, blue_square}, 1, toy::Location::kLeft}), sdpo::Error);
  EXPECT_THROW(toy::describe({{red_circle}, 4, toy::Location::kCenter}), sdpo::Error);
  EXPECT_THROW(toy::describe({{}, 1, toy::Location::kCenter}), sdpo::Error);
}

TEST(ShapesWorld, RenderDeterministicUnderSeedAndInRange) {
  const toy::Scene s = parsed("three purple triangles at the bottom");
  auto g1 = seeded(7), g2 = seeded(7), g3 = seeded(8);
  const at::Tensor a = toy::render(s, g1), b = toy::render(s, g2), c = toy::render(s, g3);
  EXPECT_EQ(a.sizes(), (std::vector<std::int64_t>{3, 32, 32}));
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c)) << "jitter must depend on the generator";
  for (const auto& scene : all_scenes()) {
    const at::Tensor img = toy::render(scene, g1, toy::RenderOptions{24, true, 0.1, 0.04});
    ASSERT_EQ(img.sizes(), (std::vector<std::int64_t>{3, 24, 24}));
    EXPECT_GE(img.min().item<float>(), 0.0f);
    EXPECT_LE(img.max().item<float>(), 1.0f);
  }
  toy::RenderOptions hard;
  hard.anti_alias = false;
  const at::Tensor binary = toy::render(s, g1, hard);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(std::get<0>(at::_unique(binary[c].flatten())).numel(), 2)
        << "without anti-aliasing only the background and the object color appear";
  }
}

TEST(ShapesWorld, RenderedImagesShowTheirPrompt) {
  auto gen = seeded(3);
  // Location: the drawn pixels' centroid sits in the named part of the image.
  const Footprint center = footprint(toy::render(parsed("a red circle"), gen));
  EXPECT_NEAR(center.x, 0.5, 0.08);
  EXPECT_NEAR(center.y, 0.5, 0.08);
  EXPECT_LT(footprint(toy::render(parsed("a red circle on the left"), gen)).x, 0.4);
  EXPECT_GT(footprint(toy::render(parsed("two red circles on the right"), gen)).x, 0.6);
  EXPECT_LT(footprint(toy::render(parsed("three red circles at the top"), gen)).y, 0.4);
  EXPECT_GT(footprint(toy::render(parsed("a red circle at the bottom"), gen)).y, 0.6);
  // Color: fully covered pixels carry exactly the named color.
  for (int c = 0; c < toy::kNumColors; ++c) {
    const toy::Scene s{{{toy::Shape::kSquare, static_cast<toy::Color>(c)}}, 1, toy::Location::kCenter};
    const auto rgb = toy::color_rgb(static_cast<toy::Color>(c));
    sdpo::test::expect_close(
        footprint(toy::render(s, gen)).color, at::tensor({rgb[0], rgb[1], rgb[2]}).to(at::kDouble), 0, 1e-5,
        toy::color_name(static_cast<toy::Color>(c)));
  }
  // Shapes of one nominal size differ in area: triangle < square ~ circle.
  toy::RenderOptions fixed;
  fixed.size_jitter = 0.0;
  const double circle = footprint(toy::render(parsed("a white circle"), gen, fixed)).area;
  const double square = footprint(toy::render(parsed("a white square"), gen, fixed)).area;
  const double triangle = footprint(toy::render(parsed("a white triangle"), gen, fixed)).area;
  EXPECT_LT(triangle, 0.8 * circle);
  EXPECT_NEAR(square / circle, 1.0, 0.15);
}

TEST(ShapesWorld, ObjectsNeverTouch) {
  // Every scene, drawn with the default (maximal) jitter a few times, shows as many separate
  // blobs as it has objects: counts are countable and pairs are two objects.
  auto gen = seeded(5);
  for (const auto& s : all_scenes()) {
    for (int k = 0; k < 3; ++k) {
      const at::Tensor img = toy::render(s, gen);
      ASSERT_EQ(blob_count(img), s.is_composition() ? 2 : s.count) << toy::describe(s);
    }
  }
}

TEST(ShapesPrompts, LabelledBatchDeterministicAndDescribed) {
  auto source = make_source(R"({"image_size": 16})");
  ASSERT_TRUE(source->has_labelled_data());
  auto g1 = seeded(11), g2 = seeded(11);
  const sdpo::LabelledBatch a = source->labelled_batch(5, g1), b = source->labelled_batch(5, g2);
  EXPECT_EQ(a.images.sizes(), (std::vector<std::int64_t>{5, 3, 16, 16}));
  EXPECT_TRUE(at::equal(a.images, b.images));
  EXPECT_EQ(a.prompts, b.prompts);
  EXPECT_GE(a.images.min().item<float>(), 0.0f);
  EXPECT_LE(a.images.max().item<float>(), 1.0f);

  // The whole world is drawn: pairs, counts, places and the held-out colors all occur.
  const sdpo::LabelledBatch many = source->labelled_batch(400, g1);
  const auto& train = toy::training_prompts();
  int pairs = 0, counts = 0, placed = 0, untrained = 0;
  for (const auto& p : many.prompts) {
    const toy::Scene s = parsed(p);
    pairs += s.is_composition();
    counts += s.count > 1;
    placed += s.location != toy::Location::kCenter;
    untrained += std::find(train.begin(), train.end(), p) == train.end();
  }
  EXPECT_GT(pairs, 40);
  EXPECT_GT(counts, 40);
  EXPECT_GT(placed, 40);
  EXPECT_GT(untrained, 100);
}

TEST(ShapesPrompts, OptionsValidated) {
  EXPECT_THROW(make_source(R"({"image_size": 4})"), sdpo::ManifestError);
  EXPECT_THROW(make_source(R"({"composition_fraction": 1.5})"), sdpo::ManifestError);
  EXPECT_THROW(make_source(R"({"imagesize": 32})"), sdpo::ManifestError);
  auto source = make_source(R"({"composition_fraction": 0, "count_fraction": 0, "location_fraction": 0})");
  auto gen = seeded(1);
  for (const auto& p : source->labelled_batch(20, gen).prompts) {
    const toy::Scene s = parsed(p);
    EXPECT_TRUE(!s.is_composition() && s.count == 1 && s.location == toy::Location::kCenter) << p;
  }
}

}  // namespace
