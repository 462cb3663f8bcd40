// Sliding windows over a tokenized document that is longer than the model's context.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace sutra {

struct WindowParams {
  int64_t window_size = 512;      // tokens per window, special tokens included
  int64_t overlap = 0;            // content tokens shared by consecutive windows
  int64_t num_prefix_special = 1; // e.g. [CLS]
  int64_t num_suffix_special = 1; // e.g. [SEP]
};

struct Window {
  std::vector<int64_t> token_ids;  // prefix specials + content[content_start, content_end) + suffix specials
  int64_t content_start = 0;       // offsets in content coordinates: content token 0 is the token
  int64_t content_end = 0;         // right after the prefix specials of the input
};

/// Validates params; throws std::invalid_argument naming the argument, expected and actual value.
void validate_window_params(const WindowParams& params);

/// Content spans [start, end) of the windows for `content_len` content tokens. Windows start every
/// stride = (window_size - specials) - overlap tokens; all windows but the last hold
/// window_size - specials content tokens, and the last one ends at content_len (so it may be
/// shorter). A content that fits gives exactly one span [0, content_len), also when it is empty.
std::vector<std::pair<int64_t, int64_t>> plan_windows(int64_t content_len,
                                                      const WindowParams& params);

/// What becomes of a sequence longer than the model's maximum length.
enum class LongTextMode : int {
  kTruncate = 0,  // keep the first max_length - suffix tokens and the suffix specials
  kWindow = 1,    // overlapping windows (WindowParams with window_size = max_length)
};

/// Model inputs ("rows") made from tokenized sequences, in the flat layout: the rows of sequence
/// s are rows [cu_rows[s], cu_rows[s + 1]), one row for a sequence that fits.
struct FittedSequences {
  std::vector<int32_t> ids;              // the rows' tokens, concatenated
  std::vector<int32_t> cu_seqlens;       // [rows + 1]
  std::vector<int32_t> cu_rows;          // [sequences + 1]
  std::vector<int64_t> spans;            // [rows, 2]: content span [start, end) of each row
  std::vector<int64_t> content_lengths;  // [sequences]: content tokens (without the specials)
  int64_t truncated = 0;                 // sequences cut by kTruncate
  int64_t longest_truncated = 0;         // the longest of them, in tokens before the cut
};

/// Fits `n` sequences (flat: ids[cu_seqlens[s] .. cu_seqlens[s + 1]), each with the model's
/// prefix and suffix special tokens) to params.window_size tokens: a sequence that fits is one
/// row as it is; a longer one is cut (kTruncate, keeping its suffix specials) or split into
/// windows (kWindow, see create_windows). Throws std::invalid_argument for bad params or a
/// sequence shorter than its special tokens (kWindow only).
FittedSequences fit_sequences(const int32_t* ids, const int32_t* cu_seqlens, int64_t n,
                              const WindowParams& params, LongTextMode mode);

/// Splits `ids` ([n] int64: prefix specials, content, suffix specials) into windows that each
/// carry the input's own prefix and suffix special tokens. An input of at most window_size tokens
/// gives exactly one window equal to the input.
std::vector<Window> create_windows(const int64_t* ids, int64_t n, const WindowParams& params);

}  // namespace sutra
