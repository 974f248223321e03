// utc_timestamp (sdpo/train/clocks.h): the run files' and experiment indexes' timestamps.
#include "sdpo/train/clocks.h"

#include <gtest/gtest.h>

#include <ctime>
#include <regex>
#include <string>

namespace {

// Seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ", read as UTC.
std::time_t parse_utc(const std::string& s) {
  std::tm tm{};
  tm.tm_year = std::stoi(s.substr(0, 4)) - 1900;
  tm.tm_mon = std::stoi(s.substr(5, 2)) - 1;
  tm.tm_mday = std::stoi(s.substr(8, 2));
  tm.tm_hour = std::stoi(s.substr(11, 2));
  tm.tm_min = std::stoi(s.substr(14, 2));
  tm.tm_sec = std::stoi(s.substr(17, 2));
  return timegm(&tm);
}

TEST(Clocks, UtcTimestampIsIso8601ToTheSecondInUtc) {
  const std::time_t before = std::time(nullptr);
  const std::string s = sdpo::utc_timestamp();
  const std::time_t after = std::time(nullptr);
  ASSERT_TRUE(std::regex_match(s, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)"))) << s;
  const std::time_t t = parse_utc(s);
  EXPECT_GE(t, before) << s;
  EXPECT_LE(t, after) << s;
}

}  // namespace
