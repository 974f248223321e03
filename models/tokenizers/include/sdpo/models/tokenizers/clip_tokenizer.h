#pragma once
// CLIP's byte-level BPE tokenizer (research/models.md 3.5), as transformers' CLIPTokenizer runs it
// for a diffusers pipeline's tokenizer/ folder. Differences from the Python tokenizer are listed
// in models/tokenizers/README.md (no ftfy / HTML unescaping; a literal "!" is BPE-encoded even
// when the pad token is "!").
//
// Example:
//   auto tok = sdpo::clip_text::CLIPTokenizer::load(pipeline + "/tokenizer");
//   at::Tensor ids = tok.encode_batch({"a photo of a cat"}, 77);  // (1, 77) int64:
//   // 49406, 320, 1125, 539, 320, 2368, 49407, pad, pad, ...
//
// Thread safety: const member functions are thread-safe (there is no cache).

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sdpo::clip_text {

/// CLIP's byte -> symbol table as UTF-8 strings (models.md 3.5 item 2): bytes 33-126, 161-172
/// and 174-255 map to the same code point, the other 68 bytes, in increasing order, to U+0100,
/// U+0101, ... (so the space byte is U+0120).
const std::array<std::string, 256>& byte_symbols();

/// Collapses every whitespace run to one space, strips both ends and lower-cases (unicode.h).
std::string normalize_text(const std::string& text);

/// Splits normalized text into pre-tokens, as the pattern
///   <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
/// matches it left to right (whitespace between matches is dropped): e.g. "don't stop 42!!"
/// -> "don", "'t", "stop", "4", "2", "!!".
std::vector<std::string> pre_tokenize(const std::string& normalized);

class CLIPTokenizer {
 public:
  /// `vocab`: token -> id; `merges`: symbol pairs in rank order; `pad_token`: the padding token
  /// string (empty: pad with <|endoftext|>). `source` names the folder in error messages.
  /// Throws sdpo::ManifestError when "<|startoftext|>", "<|endoftext|>" or the pad token is not
  /// in the vocabulary.
  CLIPTokenizer(
      std::unordered_map<std::string, std::int64_t> vocab,
      const std::vector<std::pair<std::string, std::string>>& merges,
      const std::string& pad_token,
      std::string source);

  /// Reads `<dir>/vocab.json`, `<dir>/merges.txt` (the "#version" header line skipped; at most
  /// the 48,894 merges transformers reads) and, if present, `<dir>/special_tokens_map.json`
  /// ("pad_token": a string or {"content": ...}). Without that file (or without "pad_token" in
  /// it) padding uses <|endoftext|>. FileError / ManifestError name the file (and key or line).
  static CLIPTokenizer load(const std::string& dir);

  /// The BPE symbols of one pre-token (the last carries "</w>"), e.g. "photo" -> {"photo</w>"}.
  std::vector<std::string> bpe(const std::string& pre_token) const;
  /// Content ids of a prompt: normalize, pre-tokenize, BPE, vocabulary look-up (a symbol that
  /// is not in the vocabulary maps to <|endoftext|>, transformers' unknown token). No framing.
  std::vector<std::int64_t> tokenize(const std::string& prompt) const;
  /// Exactly `max_length` (>= 2) ids: <|startoftext|>, at most max_length - 2 content ids,
  /// <|endoftext|>, then the pad id.
  std::vector<std::int64_t> encode(const std::string& prompt, std::int64_t max_length) const;
  /// (B, max_length) int64 on the CPU, one row per prompt as encode() gives it.
  at::Tensor encode_batch(const std::vector<std::string>& prompts, std::int64_t max_length) const;

  std::int64_t bos_id() const { return bos_; }
  std::int64_t eos_id() const { return eos_; }
  std::int64_t pad_id() const { return pad_; }
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(vocab_.size()); }
  std::int64_t merge_count() const { return static_cast<std::int64_t>(ranks_.size()); }

 private:
  std::unordered_map<std::string, std::int64_t> vocab_;
  std::unordered_map<std::string, std::int64_t> ranks_;  // "first second" -> rank
  std::int64_t bos_ = 0, eos_ = 0, pad_ = 0;
  std::string source_;
};

}  // namespace sdpo::clip_text
