// CLIP BPE tokenizer (research/models.md 3.5: files item 1, byte table item 2, normalization
// item 3, pre-tokenizer item 4, BPE item 5, framing item 6, padding item 7).

#include "sdpo/models/tokenizers/clip_tokenizer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <boost/json/value.hpp>
#include <filesystem>
#include <fstream>
#include <limits>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/models/tokenizers/unicode.h"

namespace sdpo::clip_text {
namespace {

constexpr const char* kStartOfText = "<|startoftext|>";
constexpr const char* kEndOfText = "<|endoftext|>";
constexpr const char* kWordEnd = "</w>";
// transformers reads merges.txt lines 1 .. 49152 - 256 - 2 (models.md 3.5 item 1).
constexpr std::int64_t kMaxMerges = 49152 - 256 - 2;

bool is_printable_byte(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

// Whether `text` has `word` (ASCII) at `pos`.
bool starts_with_at(const std::u32string& text, std::size_t pos, const char* word) {
  for (std::size_t k = 0; word[k] != '\0'; ++k) {
    if (pos + k >= text.size() || text[pos + k] != static_cast<char32_t>(word[k])) return false;
  }
  return true;
}

std::size_t ascii_length(const char* s) { return std::char_traits<char>::length(s); }

std::int64_t vocab_id(
    const std::unordered_map<std::string, std::int64_t>& vocab,
    const std::string& token,
    const std::string& source,
    const std::string& what) {
  auto it = vocab.find(token);
  if (it == vocab.end()) throw ManifestError(source, what, "token '" + token + "' is not in vocab.json");
  return it->second;
}

}  // namespace

const std::array<std::string, 256>& byte_symbols() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      utf8_append(is_printable_byte(b) ? static_cast<char32_t>(b) : next++, t[static_cast<std::size_t>(b)]);
    }
    return t;
  }();
  return table;
}

std::string normalize_text(const std::string& text) {
  const std::u32string in = utf8_decode(text);
  std::u32string out;
  out.reserve(in.size());
  bool pending_space = false;  // a whitespace run seen since the last kept character
  for (char32_t cp : in) {
    if (is_space(cp)) {
      pending_space = !out.empty();  // leading whitespace is stripped
      continue;
    }
    if (pending_space) out.push_back(U' ');
    pending_space = false;
    append_lower(cp, out);
  }
  return utf8_encode(out);  // a trailing run is never written: stripped
}

std::vector<std::string> pre_tokenize(const std::string& normalized) {
  static const char* const kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  const std::u32string text = utf8_decode(normalized);
  const std::size_t n = text.size();
  std::vector<std::string> out;
  std::size_t pos = 0;
  auto emit = [&](std::size_t end) {
    out.push_back(utf8_encode(text.substr(pos, end - pos)));
    pos = end;
  };
  while (pos < n) {
    // Alternatives in the pattern's order; the first that matches at `pos` wins.
    bool matched = false;
    for (const char* special : {kStartOfText, kEndOfText}) {
      if (starts_with_at(text, pos, special)) {
        emit(pos + ascii_length(special));
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (text[pos] == U'\'') {
      for (const char* c : kContractions) {
        if (starts_with_at(text, pos, c)) {
          emit(pos + ascii_length(c));
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const char32_t cp = text[pos];
    std::size_t end = pos + 1;
    if (is_letter(cp)) {
      while (end < n && is_letter(text[end])) ++end;
    } else if (is_number(cp)) {
      // one digit per pre-token
    } else if (is_space(cp)) {
      ++pos;  // no alternative matches whitespace
      continue;
    } else {
      while (end < n && !is_space(text[end]) && !is_letter(text[end]) && !is_number(text[end])) ++end;
    }
    emit(end);
  }
  return out;
}

CLIPTokenizer::CLIPTokenizer(
    std::unordered_map<std::string, std::int64_t> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges,
    const std::string& pad_token,
    std::string source)
    : vocab_(std::move(vocab)), source_(std::move(source)) {
  for (std::size_t i = 0; i < merges.size(); ++i) {
    // Rank = line order; a repeated pair takes its last rank, as transformers' dict(zip(...)).
    ranks_[merges[i].first + " " + merges[i].second] = static_cast<std::int64_t>(i);
  }
  bos_ = vocab_id(vocab_, kStartOfText, source_, "vocab.json");
  eos_ = vocab_id(vocab_, kEndOfText, source_, "vocab.json");
  pad_ = pad_token.empty() ? eos_ : vocab_id(vocab_, pad_token, source_, "pad_token");
}

CLIPTokenizer CLIPTokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = (fs::path(dir) / "vocab.json").string();
  const boost::json::value v = json_parse_file(vocab_path);
  if (!v.is_object()) throw ManifestError(vocab_path, "", "expected a JSON object {token: id}");
  std::unordered_map<std::string, std::int64_t> vocab;
  vocab.reserve(v.get_object().size());
  for (const auto& kv : v.get_object()) {
    const auto& id = kv.value();
    if (!(id.is_int64() && id.get_int64() >= 0) && !id.is_uint64()) {
      throw ManifestError(vocab_path, std::string(kv.key()), "expected a non-negative integer id");
    }
    vocab.emplace(std::string(kv.key()), id.is_int64() ? id.get_int64() : static_cast<std::int64_t>(id.get_uint64()));
  }

  const std::string merges_path = (fs::path(dir) / "merges.txt").string();
  std::ifstream in(merges_path);
  if (!in) throw FileError(merges_path, "cannot open (a CLIP tokenizer folder needs vocab.json and merges.txt)");
  std::vector<std::pair<std::string, std::string>> merges;
  std::string line;
  for (std::int64_t number = 1; std::getline(in, line) && static_cast<std::int64_t>(merges.size()) < kMaxMerges;
       ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      throw FileError(
          merges_path, "line " + std::to_string(number) +
                           ": expected two symbols separated by one "
                           "space, got '" +
                           line + "'");
    }
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }

  // The pad token (models.md 3.5 item 7): SD 2.x / SD-Turbo pad with "!" (id 0), SD 1.x with
  // <|endoftext|>. Without special_tokens_map.json: <|endoftext|>, transformers' default.
  std::string pad_token;
  const std::string special_path = (fs::path(dir) / "special_tokens_map.json").string();
  std::error_code ec;
  if (fs::is_regular_file(special_path, ec)) {
    const boost::json::value s = json_parse_file(special_path);
    if (!s.is_object()) throw ManifestError(special_path, "", "expected a JSON object");
    if (const auto* pad = s.get_object().if_contains("pad_token"); pad && !pad->is_null()) {
      const boost::json::value* content = pad;
      if (pad->is_object()) content = pad->get_object().if_contains("content");
      if (!content || !content->is_string() || content->get_string().empty()) {
        throw ManifestError(special_path, "pad_token", "expected a token string or an object with \"content\"");
      }
      pad_token = std::string(content->get_string());
    }
  }
  // Name the file that lacks a token (the constructor only knows the folder).
  for (const char* special : {kStartOfText, kEndOfText}) {
    if (!vocab.count(special)) throw ManifestError(vocab_path, special, "missing (a CLIP vocabulary has it)");
  }
  if (!pad_token.empty() && !vocab.count(pad_token)) {
    throw ManifestError(special_path, "pad_token", "token '" + pad_token + "' is not in " + vocab_path);
  }
  return CLIPTokenizer(std::move(vocab), merges, pad_token, dir);
}

std::vector<std::string> CLIPTokenizer::bpe(const std::string& pre_token) const {
  std::vector<std::string> symbols;
  if (pre_token == kStartOfText || pre_token == kEndOfText) return {pre_token};
  for (unsigned char b : pre_token) symbols.push_back(byte_symbols()[b]);
  if (symbols.empty()) return symbols;
  symbols.back() += kWordEnd;
  std::string key;
  while (symbols.size() > 1) {
    // The adjacent pair of lowest rank ...
    std::int64_t best = std::numeric_limits<std::int64_t>::max();
    std::size_t best_at = 0;
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(" ").append(symbols[i + 1]);
      auto it = ranks_.find(key);
      if (it != ranks_.end() && it->second < best) best = it->second, best_at = i;
    }
    if (best == std::numeric_limits<std::int64_t>::max()) break;
    // ... is merged at every occurrence, left to right.
    const std::string first = symbols[best_at], second = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (std::size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == first && symbols[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(symbols[i]);
        ++i;
      }
    }
    symbols.swap(merged);
  }
  return symbols;
}

std::vector<std::int64_t> CLIPTokenizer::tokenize(const std::string& prompt) const {
  std::vector<std::int64_t> ids;
  for (const std::string& piece : pre_tokenize(normalize_text(prompt))) {
    for (const std::string& symbol : bpe(piece)) {
      auto it = vocab_.find(symbol);
      ids.push_back(it == vocab_.end() ? eos_ : it->second);
    }
  }
  return ids;
}

std::vector<std::int64_t> CLIPTokenizer::encode(const std::string& prompt, std::int64_t max_length) const {
  TORCH_CHECK(
      max_length >= 2, "CLIP tokenizer: max_length must be >= 2 (room for the start and end tokens), got ", max_length);
  std::vector<std::int64_t> content = tokenize(prompt);
  const auto keep = std::min<std::size_t>(content.size(), static_cast<std::size_t>(max_length - 2));
  std::vector<std::int64_t> ids;
  ids.reserve(static_cast<std::size_t>(max_length));
  ids.push_back(bos_);
  ids.insert(ids.end(), content.begin(), content.begin() + static_cast<std::ptrdiff_t>(keep));
  ids.push_back(eos_);
  ids.resize(static_cast<std::size_t>(max_length), pad_);
  return ids;
}

at::Tensor CLIPTokenizer::encode_batch(const std::vector<std::string>& prompts, std::int64_t max_length) const {
  const auto b = static_cast<std::int64_t>(prompts.size());
  at::Tensor ids = at::empty({b, max_length}, at::kLong);
  auto* out = ids.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < b; ++i) {
    const auto row = encode(prompts[static_cast<std::size_t>(i)], max_length);
    std::copy(row.begin(), row.end(), out + i * max_length);
  }
  return ids;
}

}  // namespace sdpo::clip_text
