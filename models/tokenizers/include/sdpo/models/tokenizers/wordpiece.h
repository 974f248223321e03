#pragma once
// BERT's uncased WordPiece tokenizer (research/models.md 6.4 "Tokenizer"): what ImageReward's
// `BertTokenizer.from_pretrained('bert-base-uncased')` does to a prompt, reading the same
// vocab.txt. ImageReward calls it with padding='max_length', truncation=True, max_length=35.
//
//   basic tokenizer: drop NUL, U+FFFD and control characters (Unicode category C*, except tab,
//     newline, carriage return); whitespace (those three, space, category Zs) -> " "; a space
//     around every CJK ideograph; split on whitespace; per word lower-case (Python's str.lower)
//     and strip accents (NFD, drop category Mn); split every punctuation character (ASCII
//     symbols 33-47, 58-64, 91-96, 123-126, or category P*) into its own word
//   wordpiece: per word, greedy longest match first against the vocabulary, continuation pieces
//     prefixed "##"; a word with no full cover, or longer than 100 code points, is one [UNK]
//   framing: [CLS], at most max_length - 2 content ids, [SEP], then [PAD] up to max_length;
//     attention mask 1 on [CLS] .. [SEP], 0 on padding
//
// The first id stays [CLS]: ImageReward's score() passes the tokenizer's input_ids unchanged
// (BLIP's [ENC] token is only swapped in by BLIP's own ITM / retrieval heads, which ImageReward
// does not run), and [DEC]/[ENC] (ids 30522/30523 in the model's 30,524-row embedding) are never
// produced. Differences from transformers (none for plain prompts): no NFC normalization before
// lower-casing (transformers >= 4.28 adds one), NFD done per code point without canonical
// reordering of non-Mn combining marks, and special-token strings written in a prompt ("[SEP]")
// are tokenized as text instead of being kept whole. The Unicode tables are generated from
// Python's unicodedata (tools/make_wordpiece_tables.py; unicode_version()).
//
// Example:
//   auto tok = sdpo::imagereward::WordPieceTokenizer::load(folder + "/vocab.txt");
//   auto enc = tok.encode_batch({"a photo of a cat"}, 35);
//   // enc.ids (1, 35): [CLS], a, photo, of, a, cat, [SEP], [PAD] x 28 (101 ... 102, 0, ... in
//   // bert-base-uncased); enc.attention_mask: seven 1s, then 0s
//
// Thread safety: const member functions are thread-safe.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace sdpo::imagereward {

/// The basic tokenizer's words of `text` (UTF-8), before WordPiece: "Héllo, WORLD!" ->
/// {"hello", ",", "world", "!"}. Throws c10::Error on malformed UTF-8.
std::vector<std::string> bert_basic_tokenize(const std::string& text);

/// The Unicode version of the character tables, e.g. "14.0.0".
const char* wordpiece_unicode_version();

struct BertEncoding {
  at::Tensor ids;             ///< (B, max_length) int64
  at::Tensor attention_mask;  ///< (B, max_length) int64, 1 on real tokens
};

class WordPieceTokenizer {
 public:
  /// `vocab`: token -> id. `source` names the vocabulary in errors. Throws sdpo::ManifestError
  /// naming `source` and the token when [CLS], [SEP], [PAD] or [UNK] is missing.
  WordPieceTokenizer(std::unordered_map<std::string, std::int64_t> vocab, std::string source);

  /// Reads a vocab.txt as transformers does: one token per line (the "\n" removed, nothing else),
  /// id = line number from 0; a repeated token keeps its last line. FileError when unreadable.
  static WordPieceTokenizer load(const std::string& vocab_file);

  /// The pieces of one basic-tokenizer word: "playing" -> {"play", "##ing"}; {"[UNK]"} when
  /// the vocabulary cannot cover it.
  std::vector<std::string> wordpiece(const std::string& word) const;
  /// Content ids of a prompt (basic tokenizer, WordPiece, look-up). No framing.
  std::vector<std::int64_t> tokenize(const std::string& prompt) const;
  /// Exactly `max_length` (>= 2) ids: [CLS], content ids truncated to max_length - 2, [SEP],
  /// [PAD]s. `length` (optional) receives the count before the padding.
  std::vector<std::int64_t> encode(
      const std::string& prompt, std::int64_t max_length, std::int64_t* length = nullptr) const;
  /// One row per prompt as encode() gives it, with the attention mask; CPU tensors.
  BertEncoding encode_batch(const std::vector<std::string>& prompts, std::int64_t max_length) const;

  std::int64_t cls_id() const { return cls_; }
  std::int64_t sep_id() const { return sep_; }
  std::int64_t pad_id() const { return pad_; }
  std::int64_t unk_id() const { return unk_; }
  std::int64_t max_id() const { return max_id_; }  ///< largest id in the vocabulary
  const std::string& source() const { return source_; }

 private:
  std::unordered_map<std::string, std::int64_t> vocab_;
  std::string source_;
  std::int64_t cls_ = 0, sep_ = 0, pad_ = 0, unk_ = 0, max_id_ = 0;
};

}  // namespace sdpo::imagereward
