// BERT's uncased WordPiece tokenizer (research/models.md 6.4 "Tokenizer"; the steps are listed
// in wordpiece.h).

#include "sdpo/models/tokenizers/wordpiece.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <fstream>
#include <utility>

#include "sdpo/core/error.h"
#include "sdpo/models/tokenizers/unicode.h"

namespace sdpo::imagereward {
namespace {

namespace ct = sdpo::clip_text;

struct CodeRange {
  char32_t first, last;
};
struct AccentEntry {
  char32_t cp;
  char32_t base[3];  // NFD(cp) without its Mn code points, 0-terminated when shorter
};

#include "wordpiece_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t cp) {
  const auto it = std::upper_bound(
      std::begin(table), std::end(table), cp, [](char32_t c, const CodeRange& r) { return c < r.first; });
  return it != std::begin(table) && cp <= std::prev(it)->last;
}

// transformers' max_input_chars_per_word: a longer word becomes one [UNK].
constexpr std::size_t kMaxCharsPerWord = 100;

bool is_bert_control(char32_t cp) {
  if (cp == U'\t' || cp == U'\n' || cp == U'\r') return false;  // whitespace, not control
  return in_ranges(kControlRanges, cp);
}

bool is_bert_whitespace(char32_t cp) {
  return cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r' || in_ranges(kSpaceRanges, cp);
}

bool is_bert_punctuation(char32_t cp) {
  // BERT counts every ASCII non-letter, non-digit symbol ("$", "^", "`") as punctuation, though
  // Unicode puts some of them in S*.
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  return in_ranges(kPunctuationRanges, cp);
}

// The CJK Unified Ideographs blocks BERT pads with spaces (not Japanese kana or Hangul).
bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// _run_strip_accents: NFD, then drop Mn. Per code point (see wordpiece.h for what that omits).
void append_stripped(char32_t cp, std::u32string& out) {
  if (in_ranges(kMarkRanges, cp)) return;
  if (cp >= 0xAC00 && cp <= 0xD7A3) {  // Hangul syllable: Unicode's arithmetic decomposition
    const char32_t s = cp - 0xAC00;
    out.push_back(0x1100 + s / 588);
    out.push_back(0x1161 + (s % 588) / 28);
    if (s % 28 != 0) out.push_back(0x11A7 + s % 28);
    return;
  }
  const auto it = std::lower_bound(
      std::begin(kStripAccents), std::end(kStripAccents), cp,
      [](const AccentEntry& e, char32_t c) { return e.cp < c; });
  if (it == std::end(kStripAccents) || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  for (char32_t b : it->base) {
    if (b != 0) out.push_back(b);
  }
}

}  // namespace

const char* wordpiece_unicode_version() { return kTablesUnicodeVersion; }

std::vector<std::string> bert_basic_tokenize(const std::string& text) {
  // _clean_text and _tokenize_chinese_chars.
  std::u32string cleaned;
  for (char32_t cp : ct::utf8_decode(text)) {
    if (cp == 0 || cp == 0xFFFD || is_bert_control(cp)) continue;
    if (is_bert_whitespace(cp)) {
      cleaned.push_back(U' ');
    } else if (is_cjk(cp)) {
      cleaned.append({U' ', cp, U' '});
    } else {
      cleaned.push_back(cp);
    }
  }
  // whitespace_tokenize (Python's str.split(): any isspace character separates), then per word
  // lower-case, strip accents and split off punctuation.
  std::vector<std::string> words;
  std::u32string word, lowered, stripped;
  auto flush = [&] {
    if (word.empty()) return;
    lowered.clear();
    for (char32_t cp : word) ct::append_lower(cp, lowered);
    stripped.clear();
    for (char32_t cp : lowered) append_stripped(cp, stripped);
    std::u32string piece;
    for (char32_t cp : stripped) {
      if (is_bert_punctuation(cp)) {
        if (!piece.empty()) words.push_back(ct::utf8_encode(piece));
        piece.clear();
        words.push_back(ct::utf8_encode(std::u32string(1, cp)));
      } else {
        piece.push_back(cp);
      }
    }
    if (!piece.empty()) words.push_back(ct::utf8_encode(piece));
    word.clear();
  };
  for (char32_t cp : cleaned) {
    if (ct::is_space(cp)) {
      flush();
    } else {
      word.push_back(cp);
    }
  }
  flush();
  return words;
}

WordPieceTokenizer::WordPieceTokenizer(std::unordered_map<std::string, std::int64_t> vocab, std::string source)
    : vocab_(std::move(vocab)), source_(std::move(source)) {
  auto special = [&](const char* token) {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) throw ManifestError(source_, token, "missing (a BERT vocabulary has it)");
    return it->second;
  };
  cls_ = special("[CLS]");
  sep_ = special("[SEP]");
  pad_ = special("[PAD]");
  unk_ = special("[UNK]");
  for (const auto& kv : vocab_) max_id_ = std::max(max_id_, kv.second);
}

WordPieceTokenizer WordPieceTokenizer::load(const std::string& vocab_file) {
  std::ifstream in(vocab_file, std::ios::binary);
  if (!in) throw FileError(vocab_file, "cannot open (ImageReward needs bert-base-uncased's vocab.txt)");
  std::unordered_map<std::string, std::int64_t> vocab;
  std::string line;
  for (std::int64_t id = 0; std::getline(in, line); ++id) vocab[line] = id;  // last line of a repeat wins
  if (vocab.empty()) throw FileError(vocab_file, "empty vocabulary");
  return WordPieceTokenizer(std::move(vocab), vocab_file);
}

std::vector<std::string> WordPieceTokenizer::wordpiece(const std::string& word) const {
  const std::u32string chars = ct::utf8_decode(word);
  if (chars.size() > kMaxCharsPerWord) return {"[UNK]"};
  std::vector<std::string> pieces;
  std::size_t start = 0;
  while (start < chars.size()) {
    // The longest vocabulary entry starting at `start` ("##"-prefixed after the first piece).
    std::size_t end = chars.size();
    std::string found;
    for (; end > start; --end) {
      std::string candidate = ct::utf8_encode(chars.substr(start, end - start));
      if (start > 0) candidate = "##" + candidate;
      if (vocab_.count(candidate)) {
        found = std::move(candidate);
        break;
      }
    }
    if (end == start) return {"[UNK]"};  // no piece fits: the whole word is unknown
    pieces.push_back(std::move(found));
    start = end;
  }
  return pieces;
}

std::vector<std::int64_t> WordPieceTokenizer::tokenize(const std::string& prompt) const {
  std::vector<std::int64_t> ids;
  for (const auto& word : bert_basic_tokenize(prompt)) {
    for (const auto& piece : wordpiece(word)) {
      const auto it = vocab_.find(piece);
      ids.push_back(it == vocab_.end() ? unk_ : it->second);
    }
  }
  return ids;
}

std::vector<std::int64_t> WordPieceTokenizer::encode(
    const std::string& prompt, std::int64_t max_length, std::int64_t* length) const {
  TORCH_CHECK(max_length >= 2, "WordPieceTokenizer::encode: max_length must be >= 2, got ", max_length);
  const std::vector<std::int64_t> content = tokenize(prompt);
  const auto keep = std::min<std::int64_t>(static_cast<std::int64_t>(content.size()), max_length - 2);
  std::vector<std::int64_t> ids;
  ids.reserve(static_cast<std::size_t>(max_length));
  ids.push_back(cls_);
  ids.insert(ids.end(), content.begin(), content.begin() + keep);
  ids.push_back(sep_);
  if (length) *length = static_cast<std::int64_t>(ids.size());
  ids.resize(static_cast<std::size_t>(max_length), pad_);
  return ids;
}

BertEncoding WordPieceTokenizer::encode_batch(const std::vector<std::string>& prompts, std::int64_t max_length) const {
  const auto b = static_cast<std::int64_t>(prompts.size());
  BertEncoding out;
  out.ids = at::empty({b, max_length}, at::kLong);
  out.attention_mask = at::zeros({b, max_length}, at::kLong);
  auto ids = out.ids.accessor<std::int64_t, 2>();
  auto mask = out.attention_mask.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < b; ++i) {
    std::int64_t length = 0;
    const auto row = encode(prompts[static_cast<std::size_t>(i)], max_length, &length);
    for (std::int64_t j = 0; j < max_length; ++j) ids[i][j] = row[static_cast<std::size_t>(j)];
    for (std::int64_t j = 0; j < length; ++j) mask[i][j] = 1;
  }
  return out;
}

}  // namespace sdpo::imagereward
