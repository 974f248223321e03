// UTF-8 and the Unicode classes of the CLIP pre-tokenizer (research/models.md 3.5 item 4).

#include "sdpo/models/tokenizers/unicode.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace sdpo::clip_text {
namespace {

struct CodeRange {
  char32_t first, last;
};
/// Every stride-th code point c in [first, last] lowers to c + delta.
struct LowerRun {
  char32_t first, last;
  std::int32_t stride, delta;
};

#include "unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t cp) {
  // The first range whose end is >= cp; cp is inside it if it does not start after cp.
  const auto* it = std::lower_bound(
      std::begin(table), std::end(table), cp, [](const CodeRange& r, char32_t c) { return r.last < c; });
  return it != std::end(table) && it->first <= cp;
}

}  // namespace

std::u32string utf8_decode(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  const auto n = text.size();
  for (std::size_t i = 0; i < n;) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    std::size_t len = 0;
    char32_t cp = 0, min = 0;
    if (b0 < 0x80) {
      len = 1, cp = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4, cp = b0 & 0x07, min = 0x10000;
    }
    TORCH_CHECK(len != 0 && i + len <= n, "CLIP tokenizer: prompt is not valid UTF-8 (byte ", i, ")");
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      TORCH_CHECK((b & 0xC0) == 0x80, "CLIP tokenizer: prompt is not valid UTF-8 (byte ", i + k, ")");
      cp = (cp << 6) | (b & 0x3F);
    }
    TORCH_CHECK(
        cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF),
        "CLIP tokenizer: prompt is not valid UTF-8 (byte ", i, ")");
    out.push_back(cp);
    i += len;
  }
  return out;
}

void utf8_append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_encode(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) utf8_append(cp, out);
  return out;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
  return in_ranges(kLetterRanges, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}

bool is_space(char32_t cp) {
  // Python's str.isspace(): the ASCII controls \t \n \v \f \r and \x1c-\x1f, space, NEL, NBSP,
  // OGHAM SPACE MARK, U+2000-U+200A, LINE/PARAGRAPH SEPARATOR, NNBSP, MMSP, IDEOGRAPHIC SPACE.
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

void append_lower(char32_t cp, std::u32string& out) {
  if (cp < 0x80) {
    out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  if (cp == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: "i" + COMBINING DOT ABOVE
    out.push_back(U'i');
    out.push_back(0x307);
    return;
  }
  const auto* it = std::upper_bound(
      std::begin(kLowerRuns), std::end(kLowerRuns), cp, [](char32_t c, const LowerRun& r) { return c < r.first; });
  if (it != std::begin(kLowerRuns)) {
    const LowerRun& r = *std::prev(it);
    if (cp <= r.last && (cp - r.first) % static_cast<char32_t>(r.stride) == 0) {
      out.push_back(static_cast<char32_t>(static_cast<std::int64_t>(cp) + r.delta));
      return;
    }
  }
  out.push_back(cp);
}

const char* unicode_version() { return kUnicodeVersion; }

}  // namespace sdpo::clip_text
