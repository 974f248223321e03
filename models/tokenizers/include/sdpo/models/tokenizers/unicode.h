#pragma once
// The Unicode facts the CLIP tokenizer needs, without ICU or a regex engine: UTF-8 decoding,
// letter / number / whitespace classification and lower-casing (research/models.md 3.5 items 3-4).
//
// Classification: "letter" = general category L* (Lu, Ll, Lt, Lm, Lo), the regex class \p{L};
// "number" = N* (Nd, Nl, No), \p{N}; "space" = Python's str.isspace() set (what `\s` matches in
// the `re` patterns of the Python tokenizer). Lower-casing = Python's str.lower() (full mapping:
// U+0130 becomes "i" + U+0307), except that a final capital sigma lowers to U+03C3 like any other
// (Python writes U+03C2 at the end of a word). The tables (unicode_tables.inc) are generated from
// Python's unicodedata by tools/make_unicode_tables.py; unicode_version() says which version.

#include <string>

namespace sdpo::clip_text {

/// Decodes UTF-8. Throws c10::Error (TORCH_CHECK) naming the byte offset on malformed input
/// (truncated or overlong sequences, surrogates, values above U+10FFFF).
std::u32string utf8_decode(const std::string& text);
/// Appends the UTF-8 encoding of `cp` to `out`.
void utf8_append(char32_t cp, std::string& out);
std::string utf8_encode(const std::u32string& text);

bool is_letter(char32_t cp);
bool is_number(char32_t cp);
bool is_space(char32_t cp);
/// Python's str.lower() of one code point, appended to `out` (one code point, or two for U+0130).
void append_lower(char32_t cp, std::u32string& out);

/// The Unicode version the tables were generated from, e.g. "14.0.0".
const char* unicode_version();

}  // namespace sdpo::clip_text
