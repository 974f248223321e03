// The `animals` prompt source: the paper's 45 training animals and its 4 unseen prompts.

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <set>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"

namespace {

std::shared_ptr<sdpo::PromptSource> make_animals(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::PromptSource>(sdpo::ComponentConfig{
      "prompts", "animals", boost::json::parse(options_json).as_object(), "<test>", "prompts.options"});
}

TEST(AnimalsPrompts, FortyFiveDistinctTrainingAnimalsAndTheFourUnseenPrompts) {
  auto p = make_animals();
  const auto& train = p->train_prompts();
  EXPECT_EQ(train.size(), 45u);
  EXPECT_EQ(std::set<std::string>(train.begin(), train.end()).size(), 45u);
  EXPECT_EQ(train.front(), "cat");
  EXPECT_EQ(train.back(), "kangaroo");
  EXPECT_EQ(p->eval_prompts(), train);
  ASSERT_EQ(p->unseen_prompts().size(), 4u);
  EXPECT_EQ(p->unseen_prompts()[1], "Four wolves in the park");
  EXPECT_FALSE(p->has_labelled_data());
  EXPECT_THROW(make_animals(R"({"count": 3})"), sdpo::ManifestError);
}

}  // namespace
