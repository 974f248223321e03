#pragma once
// The `reward_server` wire protocol, version 1 (README.md, "Protocol version 1"): the lines the
// plugin writes and the checks on the lines the server writes. Pure functions, no I/O.
//
// Example:
//   Handshake h = parse_handshake(first_line);            // throws sdpo::Error on a mismatch
//   std::string head = request_header(7, 2, 32, 32, {});  // then 2*32*32*3 bytes of pixels
//   Answer a = parse_answer(line, 7, 2);                  // a.kind == Answer::Kind::kScores

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sdpo::reward_server {

inline constexpr const char* kProtocolName = "sdpo-reward";
inline constexpr std::int64_t kProtocolVersion = 1;
/// Longest line (handshake or answer) the plugin reads; a longer one is a protocol violation.
inline constexpr std::size_t kMaxLineBytes = std::size_t{1} << 20;

/// What the server announced in its first line.
struct Handshake {
  bool needs_prompts = false;
  std::string name;  ///< informational; empty when the server sent none
};

/// Parses and checks the handshake line. Throws sdpo::Error saying what is wrong (not JSON, not
/// an object, wrong protocol or version, fields of the wrong type); the message names both
/// protocols and versions on a mismatch. The caller adds who it is.
Handshake parse_handshake(const std::string& line);

/// The header line of a request, newline included. `prompts` is empty or has `count` entries.
std::string request_header(
    std::int64_t id,
    std::int64_t count,
    std::int64_t height,
    std::int64_t width,
    const std::vector<std::string>& prompts);

/// One answer line, judged.
struct Answer {
  enum class Kind {
    kScores,       ///< `scores`: `count` finite numbers
    kServerError,  ///< the server answered {"id": n, "error": ...}; `message` is its text
    kNonFinite,    ///< a score is NaN or +-Infinity; `message` says which
    kViolation,    ///< anything else (not JSON, wrong id, wrong count, non-number); `message` says what
  };
  Kind kind = Kind::kViolation;
  std::vector<double> scores;
  std::string message;
};

/// Judges the answer line to request `id` of `count` images.
Answer parse_answer(const std::string& line, std::int64_t id, std::int64_t count);

/// The first `max_chars` characters of `text`, quoted, with "..." when cut (for messages).
std::string excerpt(const std::string& text, std::size_t max_chars = 200);

}  // namespace sdpo::reward_server
