#include "sutra/tokenizer/wordpiece.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <iterator>
#include <thread>

#include "sutra/error.h"

namespace sutra::tokenizer {

namespace {

struct Decomposition {
  uint32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct CombiningClass {
  uint32_t cp;
  uint8_t ccc;
};
struct LowerMapping {
  uint32_t cp;
  uint32_t first;
  uint32_t second;  // 0: a one-character mapping
};

#include "unicode_tables.inc"

// Bits of kFlagStage2, as make_unicode_tables.py sets them.
constexpr uint8_t kOther = 1;  // Cc, Cf, Co: removed by clean_text
constexpr uint8_t kWhitespace = 2;
constexpr uint8_t kPunct = 4;
constexpr uint8_t kNonspacingMark = 8;
constexpr uint8_t kChinese = 16;
constexpr uint8_t kDecomposes = 32;
constexpr uint8_t kLowerMaps = 64;
constexpr uint8_t kCombining = 128;

inline uint8_t flags_of(char32_t cp) {
  return cp < 0x110000 ? kFlagStage2[(kFlagStage1[cp >> 8] << 8) | (cp & 0xFF)] : 0;
}

inline uint8_t combining_class(char32_t cp) {
  const auto* end = kCombiningClasses + std::size(kCombiningClasses);
  const auto* it = std::lower_bound(kCombiningClasses, end, cp,
                                    [](const CombiningClass& e, char32_t c) { return e.cp < c; });
  return it != end && it->cp == cp ? it->ccc : 0;
}

// Valid UTF-8 is the contract (Python's str encodes to it); a sequence cut by the end of the
// input stops decoding rather than reading past it.
inline char32_t decode_utf8(const unsigned char*& p, const unsigned char* end) {
  const unsigned char b = *p;
  if (b < 0x80) {
    ++p;
    return b;
  }
  const int n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  if (end - p < n) {
    p = end;
    return 0xFFFD;
  }
  char32_t cp = b & (0x7F >> n);
  for (int i = 1; i < n; ++i) cp = (cp << 6) | (p[i] & 0x3F);
  p += n;
  return cp;
}

inline void append_utf8(std::string& out, char32_t cp) {
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

inline uint64_t hash_bytes(const char* p, size_t n) {
  constexpr uint64_t k1 = 0x9E3779B97F4A7C15ull, k2 = 0xC2B2AE3D27D4EB4Full;
  uint64_t h = k1 ^ (n * k2);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ (w * k2)) * k1;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ (w * k2)) * k1;
  }
  h ^= h >> 33;
  h *= k2;
  h ^= h >> 29;
  return h;
}

// Ends a chunk of raw text: chunks are cut only after an ASCII whitespace byte, which is
// whitespace after every normalizer setting, a starter for canonical reordering and never part
// of an added token, so tokenizing chunk by chunk equals tokenizing the whole text.
inline bool is_ascii_space(unsigned char b) {
  return b == ' ' || b == '\n' || b == '\t' || b == '\r';
}

constexpr size_t kChunkBytes = 2048;

}  // namespace

// Open addressing over a string pool: the vocabulary lookup is the inner loop of WordPiece,
// where std::unordered_map's node chasing and std::hash<string_view> cost more than the match.
class WordPieceTokenizer::PieceTable {
 public:
  void add(std::string_view key, int32_t id) { entries_.emplace_back(std::string(key), id); }

  void build() {
    size_t capacity = 16;
    while (capacity < entries_.size() * 2) capacity <<= 1;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const auto& [key, id] : entries_) {
      const uint64_t h = hash_bytes(key.data(), key.size());
      size_t i = h & mask_;
      while (slots_[i].id >= 0) {
        if (slots_[i].hash == h && view(slots_[i]) == key) break;  // duplicate: first one wins
        i = (i + 1) & mask_;
      }
      if (slots_[i].id >= 0) continue;
      slots_[i] =
          Slot{h, static_cast<uint32_t>(pool_.size()), static_cast<uint32_t>(key.size()), id};
      pool_ += key;
      max_length_ = std::max(max_length_, key.size());
    }
    entries_.clear();
    entries_.shrink_to_fit();
  }

  int32_t find(const char* p, size_t n) const {
    const uint64_t h = hash_bytes(p, n);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.hash == h && s.length == n && std::memcmp(pool_.data() + s.offset, p, n) == 0) {
        return s.id;
      }
    }
  }

  size_t max_length() const { return max_length_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;
    uint32_t length = 0;
    int32_t id = -1;
  };
  std::string_view view(const Slot& s) const { return {pool_.data() + s.offset, s.length}; }

  std::vector<std::pair<std::string, int32_t>> entries_;
  std::vector<Slot> slots_;
  std::string pool_;
  size_t mask_ = 0;
  size_t max_length_ = 0;
};

namespace {

// Buffers of one thread, kept from text to text so that short texts allocate nothing.
struct Scratch {
  std::u32string norm;     // normalized code points of the current piece
  std::u32string pending;  // combining marks waiting for canonical reordering
  std::string word;        // UTF-8 of the current word
  std::vector<int32_t> pieces;
  // Offsets only: the source code point index of each normalized code point, of each pending
  // mark's own character (and whether the mark is the first of that character's
  // decomposition), of each byte of the word, and where each piece ends in the word.
  std::vector<int32_t> norm_src;
  std::vector<int32_t> pending_src;
  std::vector<uint8_t> pending_first;
  std::vector<int32_t> pending_inputs;
  std::vector<size_t> pending_order;
  std::vector<int32_t> word_src;
  std::vector<size_t> piece_ends;
};

}  // namespace

// The state of one encode() call; kOffsets: also the offsets of each token (encode_with_offsets),
// a template argument so that encode()'s loops carry none of that bookkeeping.
template <bool kOffsets>
struct WordPieceTokenizer::Impl {
  Impl(const WordPieceTokenizer& t, std::vector<int32_t>& out, size_t max_content, Scratch& s,
       std::vector<int32_t>* out_offsets = nullptr, const unsigned char* text = nullptr)
      : tok(t),
        ids(out),
        limit(max_content),
        norm(s.norm),
        pending(s.pending),
        word(s.word),
        pieces(s.pieces),
        offsets(out_offsets),
        norm_src(s.norm_src),
        pending_src(s.pending_src),
        pending_first(s.pending_first),
        pending_inputs(s.pending_inputs),
        order(s.pending_order),
        word_src(s.word_src),
        piece_ends(s.piece_ends),
        cursor(text) {
    pending.clear();
    word.clear();
    pending_src.clear();
    pending_first.clear();
    word_src.clear();
  }

  const WordPieceTokenizer& tok;
  std::vector<int32_t>& ids;
  size_t limit;        // content tokens kept
  size_t content = 0;  // content tokens emitted
  std::u32string& norm;
  std::u32string& pending;
  std::string& word;
  size_t word_chars = 0;
  std::vector<int32_t>& pieces;

  // Offsets, when asked for. tokenizers aligns every normalized character with one source
  // character: a replacing one with the character it replaces, an inserted one (the rest of a
  // decomposition or of a lowercase expansion, the spaces around a CJK character) with the
  // last source character consumed; a token spans from its first character's source to its
  // last one's, plus one. Indices count code points of the whole text (Python str indices).
  std::vector<int32_t>* offsets;
  std::vector<int32_t>& norm_src;
  std::vector<int32_t>& pending_src;
  std::vector<uint8_t>& pending_first;
  std::vector<int32_t>& pending_inputs;
  std::vector<size_t>& order;
  std::vector<int32_t>& word_src;
  std::vector<size_t>& piece_ends;
  const unsigned char* cursor;  // a position of the text and its code point index
  int32_t cursor_index = 0;
  int32_t input_src = 0;  // the source character being normalized
  int32_t last_src = 0;   // the last source character NFD consumed

  bool full() const { return content > limit; }

  void emit(int32_t id, int32_t start = 0, int32_t end = 0) {
    ids.push_back(id);
    ++content;
    if constexpr (kOffsets) {
      offsets->push_back(start);
      offsets->push_back(end);
    }
  }

  // The code point index of `p`; positions are asked for in increasing order.
  int32_t index_of(const unsigned char* p) {
    for (; cursor < p; ++cursor) cursor_index += (*cursor & 0xC0) != 0x80;
    return cursor_index;
  }

  // --- normalization: clean_text -> handle_chinese_chars -> NFD, drop Mn -> lowercase ---

  void lower(char32_t cp, int32_t src) {
    if (!tok.params_.lowercase || !(flags_of(cp) & kLowerMaps)) {
      norm.push_back(cp);
      if (kOffsets) norm_src.push_back(src);
      return;
    }
    const auto* end = kLowerMappings + std::size(kLowerMappings);
    const auto* it = std::lower_bound(kLowerMappings, end, static_cast<uint32_t>(cp),
                                      [](const LowerMapping& e, uint32_t c) { return e.cp < c; });
    norm.push_back(it->first);
    if (it->second != 0) norm.push_back(it->second);
    if (kOffsets) norm_src.insert(norm_src.end(), it->second != 0 ? 2 : 1, src);
  }

  void flush_pending() {
    if (pending.empty()) return;
    // Canonical ordering: a stable sort of the run of non-starters by combining class.
    if constexpr (!kOffsets) {
      std::stable_sort(pending.begin(), pending.end(), [](char32_t a, char32_t b) {
        return combining_class(a) < combining_class(b);
      });
      for (char32_t cp : pending) {
        if (!(flags_of(cp) & kNonspacingMark)) lower(cp, 0);
      }
      pending.clear();
      return;
    }
    // tokenizers aligns NFD's output by position, not by the character: the k-th first
    // character of a decomposition takes the k-th source character, whatever the sort moved
    // (x U+1D16D U+1D165, reordered to x U+1D165 U+1D16D, is one token at [0, 3), not [0, 2)).
    pending_inputs.clear();
    for (size_t i = 0; i < pending.size(); ++i) {
      if (pending_first[i]) pending_inputs.push_back(pending_src[i]);
    }
    order.resize(pending.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return combining_class(pending[a]) < combining_class(pending[b]);
    });
    size_t consumed = 0;
    for (size_t i : order) {
      if (pending_first[i]) last_src = pending_inputs[consumed++];
      if (!(flags_of(pending[i]) & kNonspacingMark)) lower(pending[i], last_src);
    }
    pending.clear();
    pending_src.clear();
    pending_first.clear();
  }

  // One character of NFD's output; `first`: the first of its source character's decomposition.
  void decomposed(char32_t cp, bool first) {
    const uint8_t f = flags_of(cp);
    if (f & kCombining) {
      pending.push_back(cp);
      if constexpr (kOffsets) {
        pending_src.push_back(input_src);
        pending_first.push_back(first ? 1 : 0);
      }
      return;
    }
    flush_pending();
    if (kOffsets && first) last_src = input_src;
    if (!(f & kNonspacingMark)) lower(cp, last_src);
  }

  void strip(char32_t cp) {
    if (!tok.strip_accents_) {
      lower(cp, input_src);
      return;
    }
    const uint8_t f = flags_of(cp);
    if (!(f & kDecomposes)) {
      decomposed(cp, true);
    } else if (cp >= 0xAC00 && cp <= 0xD7A3) {  // Hangul syllables: L V [T], all starters
      const char32_t s = cp - 0xAC00;
      decomposed(0x1100 + s / 588, true);
      decomposed(0x1161 + (s % 588) / 28, false);
      if (s % 28 != 0) decomposed(0x11A7 + s % 28, false);
    } else {
      const auto* end = kDecompositions + std::size(kDecompositions);
      const auto* it =
          std::lower_bound(kDecompositions, end, static_cast<uint32_t>(cp),
                           [](const Decomposition& e, uint32_t c) { return e.cp < c; });
      for (int i = 0; i < it->length; ++i) {
        decomposed(kDecompositionPool[it->offset + i], i == 0);
      }
    }
  }

  void normalize(const unsigned char* p, const unsigned char* end) {
    const WordPieceParams& prm = tok.params_;
    norm.clear();
    if constexpr (kOffsets) norm_src.clear();
    // input_src is the code point index of p once the loop body has read its character.
    input_src = kOffsets ? index_of(p) - 1 : 0;
    while (p < end) {
      const unsigned char b = *p;
      if (kOffsets) ++input_src;
      // The common case: an ASCII letter or digit is a starter that only lowercasing changes.
      if ((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')) {
        flush_pending();
        norm.push_back(b);
        if (kOffsets) norm_src.push_back(last_src = input_src);
        ++p;
        continue;
      }
      if (b >= 'A' && b <= 'Z') {
        flush_pending();
        norm.push_back(prm.lowercase ? b + 32 : b);
        if (kOffsets) norm_src.push_back(last_src = input_src);
        ++p;
        continue;
      }
      char32_t cp = decode_utf8(p, end);
      const uint8_t f = flags_of(cp);
      if (prm.clean_text) {
        const bool keep_control = cp == '\t' || cp == '\n' || cp == '\r';
        if (cp == 0 || cp == 0xFFFD || ((f & kOther) && !keep_control)) continue;
        if (f & kWhitespace) cp = ' ';
      }
      if (prm.handle_chinese_chars && (f & kChinese)) {
        strip(' ');
        strip(cp);
        strip(' ');
      } else {
        strip(cp);
      }
    }
    flush_pending();
  }

  // --- pre-tokenization (whitespace, then each punctuation character alone) and WordPiece ---

  void finish_word() {
    if (word_chars == 0) return;
    wordpiece();
    word.clear();
    if constexpr (kOffsets) word_src.clear();
    word_chars = 0;
  }

  void wordpiece() {
    const WordPieceParams& prm = tok.params_;
    constexpr bool track = kOffsets;
    if (word_chars > static_cast<size_t>(prm.max_input_chars_per_word)) {
      emit(tok.unk_id_, track ? word_src.front() : 0, track ? word_src.back() + 1 : 0);
      return;
    }
    pieces.clear();
    if constexpr (kOffsets) piece_ends.clear();
    const char* w = word.data();
    const size_t n = word.size();
    size_t start = 0;
    while (start < n) {
      const PieceTable& table = start == 0 ? *tok.initial_ : *tok.continuation_;
      size_t end = std::min(n, start + table.max_length());
      int32_t id = -1;
      for (; end > start; --end) {
        if (end < n && (static_cast<unsigned char>(w[end]) & 0xC0) == 0x80) continue;
        id = table.find(w + start, end - start);
        if (id >= 0) break;
      }
      if (id < 0) {  // an unmatchable part makes the whole word unknown
        emit(tok.unk_id_, track ? word_src.front() : 0, track ? word_src.back() + 1 : 0);
        return;
      }
      pieces.push_back(id);
      if (track) piece_ends.push_back(end);
      start = end;
    }
    if constexpr (!kOffsets) {
      for (int32_t id : pieces) {
        if (full()) return;
        emit(id);
      }
      return;
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (full()) return;
      const size_t from = i == 0 ? 0 : piece_ends[i - 1];
      emit(pieces[i], word_src[from], word_src[piece_ends[i] - 1] + 1);
    }
  }

  void append_to_word(const char32_t* p) {
    const size_t before = word.size();
    append_utf8(word, *p);
    if constexpr (kOffsets) {
      word_src.insert(word_src.end(), word.size() - before, norm_src[p - norm.data()]);
    }
  }

  void pre_tokenize(const char32_t* p, const char32_t* end) {
    constexpr bool track = kOffsets;
    for (; p < end && !full(); ++p) {
      const char32_t cp = *p;
      if (cp < 0x80 && ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9'))) {
        word.push_back(static_cast<char>(cp));
        if (track) word_src.push_back(norm_src[p - norm.data()]);
        ++word_chars;
        continue;
      }
      const uint8_t f = flags_of(cp);
      if (f & kWhitespace) {
        finish_word();
      } else if (f & kPunct) {
        finish_word();
        if (full()) return;
        append_to_word(p);
        word_chars = 1;
        finish_word();
      } else {
        append_to_word(p);
        ++word_chars;
      }
    }
    if (!full()) finish_word();
  }

  // A piece of raw text between raw added tokens.
  void piece(const unsigned char* p, const unsigned char* end) {
    if (p == end) return;
    normalize(p, end);
    const char32_t* n = norm.data();
    const char32_t* n_end = n + norm.size();
    if (tok.normalized_added_.empty()) {
      pre_tokenize(n, n_end);
      return;
    }
    // Normalized added tokens are split out of the normalized piece, leftmost-longest.
    const char32_t* from = n;
    for (const char32_t* q = n; q < n_end && !full();) {
      size_t best = 0;
      int32_t best_id = -1;
      for (size_t t = 0; t < tok.normalized_added_.size(); ++t) {
        const std::u32string& c = tok.normalized_added_[t];
        if (c.size() > best && static_cast<size_t>(n_end - q) >= c.size() &&
            std::equal(c.begin(), c.end(), q)) {
          best = c.size();
          best_id = tok.normalized_added_ids_[t];
        }
      }
      if (best == 0) {
        ++q;
        continue;
      }
      pre_tokenize(from, q);
      if (full()) return;
      if constexpr (kOffsets) {
        emit(best_id, norm_src[q - n], norm_src[q - n + best - 1] + 1);
      } else {
        emit(best_id);
      }
      q += best;
      from = q;
    }
    if (!full()) pre_tokenize(from, n_end);
  }

  // A chunk of raw text: split on raw added tokens (leftmost-longest), the rest tokenized.
  void chunk(const unsigned char* p, const unsigned char* end) {
    const unsigned char* from = p;
    for (const unsigned char* q = p; q < end && !full();) {
      if (!tok.raw_first_byte_[*q]) {
        ++q;
        continue;
      }
      size_t best = 0;
      int32_t best_id = -1;
      for (const AddedToken* t : tok.raw_added_) {
        const size_t len = t->content.size();
        if (len > best && static_cast<size_t>(end - q) >= len &&
            std::memcmp(q, t->content.data(), len) == 0) {
          best = len;
          best_id = t->id;
        }
      }
      if (best == 0) {
        ++q;
        continue;
      }
      piece(from, q);
      if (full()) return;
      if constexpr (kOffsets) {
        const int32_t start = index_of(q);
        emit(best_id, start, index_of(q + best));
      } else {
        emit(best_id);
      }
      q += best;
      from = q;
    }
    if (!full()) piece(from, end);
  }
};

WordPieceTokenizer::WordPieceTokenizer(WordPieceParams params)
    : params_(std::move(params)),
      initial_(std::make_unique<PieceTable>()),
      continuation_(std::make_unique<PieceTable>()) {
  SUTRA_CHECK(params_.max_input_chars_per_word > 0, "max_input_chars_per_word", "positive",
              params_.max_input_chars_per_word);
  strip_accents_ = params_.strip_accents.value_or(params_.lowercase);
  const std::string& prefix = params_.continuing_subword_prefix;
  bool have_unk = false;
  for (const auto& [token, id] : params_.vocab) {
    SUTRA_CHECK(id >= 0, "vocab", "ids >= 0", id);
    initial_->add(token, id);
    if (token.size() > prefix.size() && token.compare(0, prefix.size(), prefix) == 0) {
      continuation_->add(std::string_view(token).substr(prefix.size()), id);
    }
    if (token == params_.unk_token && !have_unk) {
      unk_id_ = id;
      have_unk = true;
    }
  }
  SUTRA_CHECK(have_unk, "unk_token", "a token of the vocabulary", params_.unk_token);
  initial_->build();
  continuation_->build();
  params_.vocab.clear();
  params_.vocab.shrink_to_fit();

  for (const AddedToken& t : params_.added_tokens) {
    SUTRA_CHECK(!t.content.empty(), "added_tokens", "non-empty contents", "an empty one");
    for (unsigned char b : t.content) {
      SUTRA_CHECK(!is_ascii_space(b), "added_tokens", "contents without whitespace",
                  "'" + t.content + "'");
    }
    if (t.normalized) {
      // tokenizers looks for the normalized form of such a token in the normalized text.
      Scratch scratch;
      std::vector<int32_t> unused;
      Impl<false> impl(*this, unused, 0, scratch);
      const auto* p = reinterpret_cast<const unsigned char*>(t.content.data());
      impl.normalize(p, p + t.content.size());
      SUTRA_CHECK(!scratch.norm.empty(), "added_tokens", "contents that normalize to text",
                  "'" + t.content + "'");
      normalized_added_.push_back(scratch.norm);
      normalized_added_ids_.push_back(t.id);
    } else {
      raw_added_.push_back(&t);
      raw_first_byte_[static_cast<unsigned char>(t.content[0])] = true;
    }
  }
}

WordPieceTokenizer::~WordPieceTokenizer() = default;

const char* WordPieceTokenizer::unicode_version() { return kUnicodeVersion; }

bool WordPieceTokenizer::encode(std::string_view text, int64_t max_tokens,
                                std::vector<int32_t>& ids) const {
  const int64_t specials = num_special_tokens();
  SUTRA_CHECK(max_tokens < 0 || max_tokens >= specials, "max_tokens",
              "negative (no limit) or at least the " + std::to_string(specials) + " special tokens",
              max_tokens);
  const size_t base = ids.size();
  ids.insert(ids.end(), params_.prefix_ids.begin(), params_.prefix_ids.end());
  thread_local Scratch scratch;
  Impl<false> impl(*this, ids,
                   max_tokens < 0 ? SIZE_MAX - 1 : static_cast<size_t>(max_tokens - specials),
                   scratch);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end && !impl.full()) {
    const unsigned char* cut =
        end - p > static_cast<ptrdiff_t>(kChunkBytes) ? p + kChunkBytes : end;
    while (cut < end && !is_ascii_space(cut[-1])) ++cut;
    impl.chunk(p, cut);
    p = cut;
  }
  const bool was_cut = impl.full();
  if (was_cut) ids.resize(base + params_.prefix_ids.size() + impl.limit);
  ids.insert(ids.end(), params_.suffix_ids.begin(), params_.suffix_ids.end());
  return was_cut;
}

void WordPieceTokenizer::encode_with_offsets(std::string_view text, std::vector<int32_t>& ids,
                                             std::vector<int32_t>& offsets) const {
  SUTRA_CHECK(text.size() <= static_cast<size_t>(INT32_MAX), "text",
              "at most 2^31 - 1 bytes (int32 offsets)", text.size());
  thread_local Scratch scratch;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  Impl<true> impl(*this, ids, SIZE_MAX - 1, scratch, &offsets, p);
  while (p < end) {
    const unsigned char* cut =
        end - p > static_cast<ptrdiff_t>(kChunkBytes) ? p + kChunkBytes : end;
    while (cut < end && !is_ascii_space(cut[-1])) ++cut;
    impl.chunk(p, cut);
    p = cut;
  }
}

EncodeResult WordPieceTokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                              int64_t max_tokens, int num_threads) const {
  const int64_t specials = num_special_tokens();
  SUTRA_CHECK(max_tokens < 0 || max_tokens >= specials, "max_tokens",
              "negative (no limit) or at least the " + std::to_string(specials) + " special tokens",
              max_tokens);
  SUTRA_CHECK(num_threads >= 0, "num_threads", ">= 0 (0: one per core)", num_threads);
  const size_t count = texts.size();
  EncodeResult result;
  result.cu_seqlens.assign(count + 1, 0);
  result.cut.assign(count, 0);

  // Texts go to threads in blocks small enough to balance a mix of short and long texts. Each
  // thread appends to a vector of its own (vectors side by side would share the cache lines
  // their end pointers live in) and notes where each block went; the blocks are then placed
  // in order.
  constexpr size_t kBlockTexts = 64;
  const size_t blocks = (count + kBlockTexts - 1) / kBlockTexts;
  size_t bytes = 0;
  for (std::string_view t : texts) bytes += t.size();
  // Starting a thread costs about as much as tokenizing a few kilobytes.
  size_t threads = num_threads > 0 ? static_cast<size_t>(num_threads)
                                   : std::max<size_t>(1, std::thread::hardware_concurrency());
  threads = std::max<size_t>(1, std::min({threads, blocks, bytes / 16384}));

  struct BlockSpan {
    size_t thread = 0;
    size_t offset = 0;
  };
  std::vector<BlockSpan> spans(blocks);
  std::vector<std::vector<int32_t>> thread_ids(threads);
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto work = [&](size_t thread) {
    std::vector<int32_t> out;
    try {
      for (size_t b; !failed.load(std::memory_order_relaxed) && (b = next.fetch_add(1)) < blocks;) {
        spans[b] = BlockSpan{thread, out.size()};
        for (size_t i = b * kBlockTexts; i < std::min(count, (b + 1) * kBlockTexts); ++i) {
          const size_t before = out.size();
          result.cut[i] = encode(texts[i], max_tokens, out) ? 1 : 0;
          result.cu_seqlens[i + 1] = static_cast<int32_t>(out.size() - before);
        }
      }
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
    thread_ids[thread] = std::move(out);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);

  int64_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    total += result.cu_seqlens[i + 1];
    SUTRA_CHECK(total <= INT32_MAX, "texts", "at most 2^31 - 1 tokens in all", total);
    result.cu_seqlens[i + 1] = static_cast<int32_t>(total);
  }
  result.ids.resize(static_cast<size_t>(total));
  for (size_t b = 0; b < blocks; ++b) {
    const int32_t first = result.cu_seqlens[b * kBlockTexts];
    const int32_t last = result.cu_seqlens[std::min(count, (b + 1) * kBlockTexts)];
    if (last == first) continue;
    std::memcpy(result.ids.data() + first, thread_ids[spans[b].thread].data() + spans[b].offset,
                static_cast<size_t>(last - first) * sizeof(int32_t));
  }
  return result;
}

}  // namespace sutra::tokenizer
