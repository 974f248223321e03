#pragma once
// The toy GenEval table: per-image results of the evaluation tool (`sdpo_toy_geneval`,
// tool.cpp) summarized per sampling step count the way GenEval reports its benchmark: a
// category's accuracy is the mean strict score of its images, and the overall score is the mean
// of the category accuracies (each task weighs the same, however many images it has).
//
// Example:
//   std::vector<sdpo::toy_geneval::ImageResult> results = ...;   // one per image
//   std::cout << format_table(summarize(results));
//   write_csv_header(out); write_csv_rows(out, results);
//
// Thread safety: pure functions.

#include <array>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "geneval.h"

namespace sdpo::toy_geneval {

/// How one generated image scored against its prompt.
struct ImageResult {
  std::int64_t steps = 0;  ///< sampling steps it was generated with
  std::string prompt;
  Category category = Category::kSingleObject;
  std::int64_t seed = 0;            ///< seed of its initial noise (sdpo::generate_images)
  double strict = 0.0;              ///< GenEval's per-image correctness, 0 or 1
  double soft = 0.0;                ///< mean of the requirements' soft scores
  std::vector<std::string> failed;  ///< names of the requirements it does not meet (strict)
};

/// One row of the table: one step count.
struct StepsSummary {
  std::int64_t steps = 0;
  /// Mean strict score of each category's images (Category order); NaN for a category with no
  /// image (a prompt set without compositions, for instance).
  std::array<double, kNumCategories> accuracy{};
  std::array<std::int64_t, kNumCategories> images{};
  /// Mean of the accuracies of the categories that have images (GenEval's overall score).
  double overall = 0.0;
  /// The same mean over categories of their mean soft score.
  double soft = 0.0;
};

/// One summary per step count, in the order the step counts first appear in `results`.
std::vector<StepsSummary> summarize(const std::vector<ImageResult>& results);

/// The Markdown table: a header row
///   | steps | single_object | counting | position | two_object | overall | soft |
/// then one row per summary, three decimals, "-" for a category without images.
std::string format_table(const std::vector<StepsSummary>& summaries);

/// CSV of the per-image results: header "steps,prompt,category,seed,strict,soft,failed"; `failed`
/// holds the unmet requirements joined by ';' (empty when the image is correct).
void write_csv_header(std::ostream& out);
void write_csv_rows(std::ostream& out, const std::vector<ImageResult>& results);

}  // namespace sdpo::toy_geneval
