// The global normalizer (research/algorithms.md 4.2 with tracking disabled, 9.3 "Global").
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/json.hpp>
#include <cmath>

#include "sdpo/core/normalizer.h"
#include "sdpo/core/registry.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::Normalizer> make_global() {
  sdpo::ComponentConfig cfg{"normalizer", "global", boost::json::object{}, "<test>", "normalizer.options"};
  return sdpo::Registry::global().create<sdpo::Normalizer>(cfg);
}

TEST(GlobalNormalizer, UsesOneMeanAndPopulationStdOverTheWholeBatch) {
  // {1, 3, 5, 7}: mean 4, population std sqrt(5); prompts play no role.
  auto n = make_global();
  auto adv = n->normalize(at::tensor({1.0, 3.0, 5.0, 7.0}, at::kDouble).view({2, 2}), {"p", "p"});
  const double s = std::sqrt(5.0) + 1e-8;
  sdpo::test::expect_close(adv, at::tensor({-3 / s, -1 / s, 1 / s, 3 / s}, at::kDouble).view({2, 2}), 1e-12, 1e-12);
}

TEST(GlobalNormalizer, HasNoHistory) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto used = make_global();
  used->normalize(at::randn({3, 4}, gen) * 10 + 3, {"a", "b", "a"});
  auto r = at::randn({3, 4}, gen);
  sdpo::test::expect_close(used->normalize(r, {"a", "b", "a"}), make_global()->normalize(r, {"a", "b", "a"}), 0, 0);
}

TEST(GlobalNormalizer, ConstantReturnsGiveZeroAdvantages) {
  auto adv = make_global()->normalize(at::full({2, 3}, 4.0), {"a", "b"});
  EXPECT_TRUE(adv.eq(0).all().item<bool>());
  EXPECT_EQ(adv.scalar_type(), at::kFloat);
}

TEST(GlobalNormalizer, StateIsAnEmptyObject) {
  auto n = make_global();
  auto s = n->state();
  ASSERT_TRUE(s.is_object());
  EXPECT_TRUE(s.as_object().empty());
  EXPECT_NO_THROW(n->load_state(boost::json::parse(boost::json::serialize(s))));
  EXPECT_ANY_THROW(n->load_state(boost::json::object{{"buffers", 1}}));
}

}  // namespace
