// The `reward_server` wire protocol, version 1: building the request header and judging the
// server's lines.

#include "protocol.h"

#include <boost/json.hpp>
#include <cmath>
#include <optional>

#include "sdpo/core/error.h"

namespace sdpo::reward_server {
namespace json = boost::json;
namespace {

// Python's json.dumps writes float('nan') and float('inf') as the bare words NaN, Infinity and
// -Infinity, which are not JSON. A server that computes a NaN score would otherwise get "malformed
// JSON", which hides the real problem; so when a line does not parse, those words (outside
// strings) are quoted and the line is parsed again, and a score that is one of those strings is
// reported as non-finite. Returns nullopt when the line has none of them.
std::optional<std::string> quote_python_nonfinite(const std::string& line) {
  static const char* const kWords[] = {"-Infinity", "Infinity", "NaN"};
  std::string out;
  bool in_string = false, escaped = false, changed = false;
  for (std::size_t i = 0; i < line.size();) {
    const char c = line[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      out += c;
      ++i;
      continue;
    }
    bool matched = false;
    for (const char* word : kWords) {
      const std::size_t n = std::char_traits<char>::length(word);
      if (line.compare(i, n, word) == 0) {
        out += '"';
        out += word;
        out += '"';
        i += n;
        matched = changed = true;
        break;
      }
    }
    if (matched) continue;
    in_string = c == '"';
    out += c;
    ++i;
  }
  if (!changed) return std::nullopt;
  return out;
}

bool is_nonfinite_word(const json::value& v) {
  if (!v.is_string()) return false;
  const json::string& s = v.as_string();
  return s == "NaN" || s == "Infinity" || s == "-Infinity";
}

Answer violation(std::string message) {
  Answer a;
  a.kind = Answer::Kind::kViolation;
  a.message = std::move(message);
  return a;
}

}  // namespace

std::string excerpt(const std::string& text, std::size_t max_chars) {
  // What a misbehaving server wrote goes into an error message, so onto the user's terminal:
  // control bytes (escape sequences) and non-ASCII bytes are shown as \xNN, never sent raw.
  auto escaped = [](const std::string& s) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned char ch : s) {
      if (ch == '\\') {
        out += "\\\\";
      } else if (ch >= 0x20 && ch < 0x7f) {
        out += static_cast<char>(ch);
      } else {
        out += "\\x";
        out += hex[ch >> 4];
        out += hex[ch & 0xf];
      }
    }
    return out;
  };
  if (text.size() <= max_chars) return "'" + escaped(text) + "'";
  return "'" + escaped(text.substr(0, max_chars)) + "...' (" + std::to_string(text.size()) + " bytes)";
}

Handshake parse_handshake(const std::string& line) {
  boost::system::error_code ec;
  const json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) {
    throw sdpo::Error(
        "its first line is not a JSON handshake object: " + excerpt(line) +
        " (the server must write {\"protocol\": \"sdpo-reward\", \"version\": 1, ...} on start, "
        "and log to stderr, never to stdout)");
  }
  const json::object& o = v.as_object();
  const json::value* protocol = o.if_contains("protocol");
  const json::value* version = o.if_contains("version");
  const std::string theirs = (protocol && protocol->is_string() ? "'" + std::string(protocol->as_string()) + "'"
                                                                : std::string("no protocol name")) +
                             " version " + (version ? json::serialize(*version) : std::string("(none)"));
  if (!protocol || !protocol->is_string() || protocol->as_string() != kProtocolName || !version ||
      !version->is_int64() || version->as_int64() != kProtocolVersion) {
    throw sdpo::Error(
        "protocol mismatch: the server speaks " + theirs + ", this plugin speaks '" + std::string(kProtocolName) +
        "' version " + std::to_string(kProtocolVersion));
  }
  Handshake h;
  if (const json::value* np = o.if_contains("needs_prompts")) {
    if (!np->is_bool())
      throw sdpo::Error("handshake field \"needs_prompts\" must be true or false, got " + json::serialize(*np));
    h.needs_prompts = np->as_bool();
  }
  if (const json::value* name = o.if_contains("name")) {
    if (!name->is_string())
      throw sdpo::Error("handshake field \"name\" must be a string, got " + json::serialize(*name));
    h.name = std::string(name->as_string());
  }
  return h;
}

std::string request_header(
    std::int64_t id,
    std::int64_t count,
    std::int64_t height,
    std::int64_t width,
    const std::vector<std::string>& prompts) {
  json::array p;
  for (const auto& s : prompts) p.emplace_back(json::string(s));
  const json::object header{{"id", id},      {"count", count},   {"height", height}, {"width", width},
                            {"channels", 3}, {"layout", "NHWC"}, {"dtype", "uint8"}, {"prompts", std::move(p)}};
  // serialize() escapes control characters, so a prompt with a newline stays on one line.
  return json::serialize(header) + "\n";
}

Answer parse_answer(const std::string& line, std::int64_t id, std::int64_t count) {
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  bool quoted_nonfinite = false;
  if (ec) {
    if (auto fixed = quote_python_nonfinite(line)) {
      boost::system::error_code ec2;
      json::value w = json::parse(*fixed, ec2);
      if (!ec2) {
        v = std::move(w);
        quoted_nonfinite = true;
      }
    }
    if (!quoted_nonfinite) return violation("malformed answer (not JSON: " + ec.message() + "): " + excerpt(line));
  }
  if (!v.is_object()) return violation("malformed answer (not a JSON object): " + excerpt(line));
  const json::object& o = v.as_object();
  const json::value* got_id = o.if_contains("id");
  if (!got_id || !got_id->is_int64()) return violation("answer without an integer \"id\": " + excerpt(line));
  if (got_id->as_int64() != id) {
    return violation(
        "wrong id: the answer has id " + std::to_string(got_id->as_int64()) + ", the request had id " +
        std::to_string(id));
  }
  if (const json::value* error = o.if_contains("error")) {
    Answer a;
    a.kind = Answer::Kind::kServerError;
    a.message = error->is_string() ? std::string(error->as_string()) : json::serialize(*error);
    return a;
  }
  const json::value* scores = o.if_contains("scores");
  if (!scores || !scores->is_array()) {
    return violation("the answer has neither a \"scores\" array nor an \"error\": " + excerpt(line));
  }
  const json::array& s = scores->as_array();
  if (static_cast<std::int64_t>(s.size()) != count) {
    return violation(
        "wrong count: the answer has " + std::to_string(s.size()) + " scores for " + std::to_string(count) + " images");
  }
  Answer a;
  a.kind = Answer::Kind::kScores;
  a.scores.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (quoted_nonfinite && is_nonfinite_word(s[i])) {
      a.kind = Answer::Kind::kNonFinite;
      a.message = "score " + std::to_string(i) + " is " + std::string(s[i].as_string()) +
                  " (Python's json.dumps writes it for a non-finite float; scores must be finite)";
      return a;
    }
    if (!s[i].is_number())
      return violation("score " + std::to_string(i) + " is not a number: " + json::serialize(s[i]));
    const double x = s[i].to_number<double>();
    if (!std::isfinite(x)) {
      a.kind = Answer::Kind::kNonFinite;
      a.message = "score " + std::to_string(i) + " is " + json::serialize(s[i]) + " (scores must be finite)";
      return a;
    }
    a.scores.push_back(x);
  }
  return a;
}

}  // namespace sdpo::reward_server
