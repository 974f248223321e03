// The toy GenEval table and CSV (report.h).

#include "report.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>

namespace sdpo::toy_geneval {
namespace {

// Toy-world prompts are lower-case words, so fields need no quoting in practice; a field with a
// comma, a quote or a line break is quoted anyway so that the file stays a valid CSV for any input.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

}  // namespace

std::vector<StepsSummary> summarize(const std::vector<ImageResult>& results) {
  struct Sums {
    std::array<double, kNumCategories> strict{}, soft{};
    std::array<std::int64_t, kNumCategories> count{};
  };
  std::vector<std::int64_t> order;
  std::map<std::int64_t, Sums> sums;
  for (const ImageResult& r : results) {
    auto [it, inserted] = sums.try_emplace(r.steps);
    if (inserted) order.push_back(r.steps);
    const auto c = static_cast<std::size_t>(r.category);
    it->second.strict[c] += r.strict;
    it->second.soft[c] += r.soft;
    ++it->second.count[c];
  }
  std::vector<StepsSummary> out;
  for (std::int64_t steps : order) {
    const Sums& s = sums.at(steps);
    StepsSummary row;
    row.steps = steps;
    row.images = s.count;
    // Categories are averaged, not images: GenEval's overall score weighs every task the same.
    double strict_sum = 0.0, soft_sum = 0.0;
    int present = 0;
    for (std::size_t c = 0; c < static_cast<std::size_t>(kNumCategories); ++c) {
      if (s.count[c] == 0) {
        row.accuracy[c] = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      const auto n = static_cast<double>(s.count[c]);
      row.accuracy[c] = s.strict[c] / n;
      strict_sum += row.accuracy[c];
      soft_sum += s.soft[c] / n;
      ++present;
    }
    row.overall = strict_sum / present;  // present >= 1: the step count has at least one image
    row.soft = soft_sum / present;
    out.push_back(row);
  }
  return out;
}

std::string format_table(const std::vector<StepsSummary>& summaries) {
  std::ostringstream os;
  os << "| steps |";
  for (int c = 0; c < kNumCategories; ++c) os << " " << category_name(static_cast<Category>(c)) << " |";
  os << " overall | soft |\n|---|";
  for (int c = 0; c < kNumCategories; ++c) os << "---|";
  os << "---|---|\n";
  os << std::fixed << std::setprecision(3);
  for (const StepsSummary& s : summaries) {
    os << "| " << s.steps << " |";
    for (double a : s.accuracy) {
      if (std::isnan(a))
        os << " - |";
      else
        os << " " << a << " |";
    }
    os << " " << s.overall << " | " << s.soft << " |\n";
  }
  return os.str();
}

void write_csv_header(std::ostream& out) { out << "steps,prompt,category,seed,strict,soft,failed\n"; }

void write_csv_rows(std::ostream& out, const std::vector<ImageResult>& results) {
  for (const ImageResult& r : results) {
    std::string failed;
    for (const std::string& f : r.failed) failed += (failed.empty() ? "" : ";") + f;
    out << r.steps << ',' << csv_field(r.prompt) << ',' << category_name(r.category) << ',' << r.seed << ',' << r.strict
        << ',' << r.soft << ',' << csv_field(failed) << '\n';
  }
}

}  // namespace sdpo::toy_geneval
