// A native WordPiece tokenizer (BERT normalizer, BERT pre-tokenizer, WordPiece, special tokens),
// token-for-token equal to Hugging Face `tokenizers` on the same tokenizer.json, for the flat
// arrays every engine takes: ids int32 [T] and cu_seqlens int32 [B+1].
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sutra::tokenizer {

/// A token of the file's `added_tokens`: found in the text before the model sees it and
/// emitted as one id. `normalized` ones are looked for in the normalized text, the others in
/// the raw text (as tokenizers' AddedVocabulary does). Contents hold no ASCII whitespace.
struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool normalized = false;
};

/// The pieces of a tokenizer.json with a WordPiece model, as the Python loader parses them.
struct WordPieceParams {
  std::vector<std::pair<std::string, int32_t>> vocab;  // token -> id (ids need not be dense)
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  int max_input_chars_per_word = 100;
  // BertNormalizer switches; strip_accents unset means "as lowercase", as in tokenizers.
  bool clean_text = true;
  bool handle_chinese_chars = true;
  std::optional<bool> strip_accents;
  bool lowercase = true;
  std::vector<AddedToken> added_tokens;
  // Post-processor of a single sequence: prefix_ids + pieces + suffix_ids ([CLS] A [SEP]).
  std::vector<int32_t> prefix_ids;
  std::vector<int32_t> suffix_ids;
};

/// Output of encode_batch: text i has ids[cu_seqlens[i] : cu_seqlens[i + 1]], special tokens
/// included; cut[i] is 1 when text i had more tokens than max_tokens.
struct EncodeResult {
  std::vector<int32_t> ids;         // [T]
  std::vector<int32_t> cu_seqlens;  // [B + 1], cu_seqlens[0] == 0
  std::vector<uint8_t> cut;         // [B]
};

class WordPieceTokenizer {
 public:
  /// Throws std::invalid_argument when the unknown token or a special id is missing from the
  /// vocabulary, or an added token is empty or holds whitespace.
  explicit WordPieceTokenizer(WordPieceParams params);
  ~WordPieceTokenizer();
  WordPieceTokenizer(const WordPieceTokenizer&) = delete;
  WordPieceTokenizer& operator=(const WordPieceTokenizer&) = delete;

  /// Tokenizes `texts` (valid UTF-8) over `num_threads` threads, the calling one included
  /// (0: one per logical core). max_tokens < 0 keeps every token; otherwise a longer text is
  /// cut as tokenizers' truncation cuts it (prefix + its first max_tokens - prefix - suffix
  /// pieces + suffix) and is read no further than needed. An empty text gives prefix + suffix.
  EncodeResult encode_batch(const std::vector<std::string_view>& texts, int64_t max_tokens,
                            int num_threads) const;

  /// One text, appended to `ids`; returns whether it was cut. Thread-safe.
  bool encode(std::string_view text, int64_t max_tokens, std::vector<int32_t>& ids) const;

  /// One text without special tokens or truncation, as tokenizers' encode(text,
  /// add_special_tokens=False): its ids appended to `ids` [n] and each token's [start, end)
  /// code point offsets in `text` appended to `offsets` [n * 2] (start, end, start, end...).
  /// Equal to tokenizers' Encoding.offsets. Thread-safe.
  void encode_with_offsets(std::string_view text, std::vector<int32_t>& ids,
                           std::vector<int32_t>& offsets) const;

  int64_t num_special_tokens() const {
    return static_cast<int64_t>(params_.prefix_ids.size() + params_.suffix_ids.size());
  }
  int32_t unk_id() const { return unk_id_; }
  /// The Unicode version of the character tables (unicodedata's at generation time).
  static const char* unicode_version();

 private:
  class PieceTable;
  template <bool kOffsets>
  struct Impl;
  WordPieceParams params_;
  bool strip_accents_ = false;
  int32_t unk_id_ = 0;
  std::unique_ptr<PieceTable> initial_;       // every vocabulary token, for a word's first piece
  std::unique_ptr<PieceTable> continuation_;  // tokens with the prefix, prefix removed
  std::vector<const AddedToken*> raw_added_;
  std::vector<std::u32string> normalized_added_;
  std::vector<int32_t> normalized_added_ids_;
  bool raw_first_byte_[256] = {};
  template <bool kOffsets>
  friend struct Impl;
};

}  // namespace sutra::tokenizer
