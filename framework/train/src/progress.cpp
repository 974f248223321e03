#include "sdpo/train/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace sdpo {

Progress::Progress(bool enabled, std::string label, std::int64_t total)
    : enabled_(enabled),
      tty_(isatty(fileno(stderr)) != 0),
      label_(std::move(label)),
      total_(total),
      start_(std::chrono::steady_clock::now()) {
  if (enabled_ && tty_) draw("");
}

void Progress::draw(const std::string& phase) const {
  const int width = 24;
  int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : width;
  std::string bar(static_cast<size_t>(filled), '#');
  bar += std::string(static_cast<size_t>(width - filled), '.');
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(
      stderr, "\r%s [%s] %lld/%lld %-22s %6.1fs", label_.c_str(), bar.c_str(), static_cast<long long>(done_),
      static_cast<long long>(total_), phase.c_str(), secs);
  std::fflush(stderr);
}

void Progress::tick(const std::string& phase) {
  ++done_;
  if (enabled_ && tty_) draw(phase);
}

void Progress::finish(const std::string& summary) {
  if (!enabled_) return;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    draw("done");
    std::fprintf(stderr, "  %s\n", summary.c_str());
  } else {
    std::fprintf(stderr, "%s %.1fs  %s\n", label_.c_str(), secs, summary.c_str());
  }
  std::fflush(stderr);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

void print_status(bool enabled, const std::string& text) {
  if (!enabled) return;
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

}  // namespace sdpo
