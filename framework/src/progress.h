#pragma once
// A one-line progress bar on stderr (redrawn with \r on a terminal; one line per phase otherwise).

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

}  // namespace sdpo
