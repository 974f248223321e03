#pragma once
// Small statistics shared by the running normalizers (research/algorithms.md 4.2, 7.3, 9.3).

#include <cmath>
#include <utility>

namespace sdpo {

/// Population mean and standard deviation (ddof 0, numpy's np.std in the reference trackers) of
/// a non-empty range of doubles.
template <class Range>
std::pair<double, double> population_mean_std(const Range& values) {
  double mean = 0;
  for (double x : values) mean += x;
  mean /= static_cast<double>(values.size());
  double sq = 0;
  for (double x : values) sq += (x - mean) * (x - mean);
  return {mean, std::sqrt(sq / static_cast<double>(values.size()))};
}

}  // namespace sdpo
