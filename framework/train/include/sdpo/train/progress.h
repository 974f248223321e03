#pragma once
// A one-line progress bar on stderr (redrawn with \r on a terminal; one line per phase otherwise),
// and the plain status lines of `sdpo experiment` ("run 2/6 <name> epoch 3/20, ~1m05s left").

#include <chrono>
#include <cstdint>
#include <string>

namespace sdpo {

class Progress {
 public:
  Progress(bool enabled, std::string label, std::int64_t total);
  void tick(const std::string& phase);
  void finish(const std::string& summary);

 private:
  void draw(const std::string& phase) const;
  bool enabled_, tty_;
  std::string label_;
  std::int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_;
};

/// A duration for people: "45s", "3m07s", "2h05m"; "?" when negative or not finite.
std::string format_duration(double seconds);

/// Prints `text` on a line of its own on stderr when `enabled`.
void print_status(bool enabled, const std::string& text);

}  // namespace sdpo
