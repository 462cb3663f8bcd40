#include "sutra/windows.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace sutra {
namespace {

[[noreturn]] void throw_bad(const std::string& what) { throw std::invalid_argument(what); }

}  // namespace

void validate_window_params(const WindowParams& p) {
  if (p.num_prefix_special < 0) {
    throw_bad("num_prefix_special must be >= 0, got " + std::to_string(p.num_prefix_special));
  }
  if (p.num_suffix_special < 0) {
    throw_bad("num_suffix_special must be >= 0, got " + std::to_string(p.num_suffix_special));
  }
  if (p.overlap < 0) {
    throw_bad("overlap must be >= 0, got " + std::to_string(p.overlap));
  }
  const int64_t specials = p.num_prefix_special + p.num_suffix_special;
  if (p.window_size <= specials + p.overlap) {
    throw_bad("window_size must be > num_prefix_special + num_suffix_special + overlap = " +
              std::to_string(specials + p.overlap) + " so that windows advance, got " +
              std::to_string(p.window_size));
  }
}

std::vector<std::pair<int64_t, int64_t>> plan_windows(int64_t content_len,
                                                      const WindowParams& p) {
  validate_window_params(p);
  if (content_len < 0) throw_bad("content_len must be >= 0, got " + std::to_string(content_len));

  const int64_t per_window = p.window_size - p.num_prefix_special - p.num_suffix_special;
  const int64_t stride = per_window - p.overlap;  // >= 1 by validation
  std::vector<std::pair<int64_t, int64_t>> spans;
  if (content_len <= per_window) {
    spans.emplace_back(0, content_len);
    return spans;
  }
  spans.reserve(static_cast<size_t>((content_len - per_window + stride - 1) / stride + 1));
  for (int64_t start = 0;; start += stride) {
    const int64_t end = start + per_window;
    if (end >= content_len) {
      spans.emplace_back(start, content_len);
      break;
    }
    spans.emplace_back(start, end);
  }
  return spans;
}

std::vector<Window> create_windows(const int64_t* ids, int64_t n, const WindowParams& p) {
  validate_window_params(p);
  const int64_t specials = p.num_prefix_special + p.num_suffix_special;
  if (n < specials) {
    throw_bad("token_ids must hold at least num_prefix_special + num_suffix_special = " +
              std::to_string(specials) + " tokens, got " + std::to_string(n));
  }
  const int64_t content_len = n - specials;
  const int64_t* content = ids + p.num_prefix_special;
  const int64_t* suffix = content + content_len;

  std::vector<Window> windows;
  for (const auto& [start, end] : plan_windows(content_len, p)) {
    Window w;
    w.content_start = start;
    w.content_end = end;
    w.token_ids.reserve(static_cast<size_t>(specials + end - start));
    w.token_ids.insert(w.token_ids.end(), ids, ids + p.num_prefix_special);
    w.token_ids.insert(w.token_ids.end(), content + start, content + end);
    w.token_ids.insert(w.token_ids.end(), suffix, suffix + p.num_suffix_special);
    windows.push_back(std::move(w));
  }
  return windows;
}

FittedSequences fit_sequences(const int32_t* ids, const int32_t* cu_seqlens, int64_t n,
                              const WindowParams& p, LongTextMode mode) {
  validate_window_params(p);
  if (n < 0) throw_bad("the number of sequences must be >= 0, got " + std::to_string(n));
  if (n > 0 && cu_seqlens[0] != 0) {
    throw_bad("cu_seqlens[0] must be 0, got " + std::to_string(cu_seqlens[0]));
  }
  const int64_t specials = p.num_prefix_special + p.num_suffix_special;
  FittedSequences out;
  out.cu_seqlens.assign(1, 0);
  out.cu_rows.assign(1, 0);
  out.content_lengths.reserve(static_cast<size_t>(n));
  out.ids.reserve(static_cast<size_t>(n > 0 ? cu_seqlens[n] : 0));
  auto add_row = [&out](const int32_t* first, const int32_t* last) {
    out.ids.insert(out.ids.end(), first, last);
    out.cu_seqlens.push_back(static_cast<int32_t>(out.ids.size()));
  };
  for (int64_t s = 0; s < n; ++s) {
    const int32_t* seq = ids + cu_seqlens[s];
    const int64_t length = cu_seqlens[s + 1] - cu_seqlens[s];
    if (length < 0) {
      throw_bad("cu_seqlens must be nondecreasing, got cu_seqlens[" + std::to_string(s + 1) +
                "] < cu_seqlens[" + std::to_string(s) + "]");
    }
    const int64_t content = std::max<int64_t>(length - specials, 0);
    out.content_lengths.push_back(content);
    if (length <= p.window_size) {
      add_row(seq, seq + length);
      out.spans.insert(out.spans.end(), {0, content});
    } else if (mode == LongTextMode::kTruncate) {
      const int64_t suffix = std::min(p.num_suffix_special, length);
      out.ids.insert(out.ids.end(), seq, seq + (p.window_size - suffix));
      add_row(seq + length - suffix, seq + length);
      out.spans.insert(out.spans.end(), {0, p.window_size - specials});
      ++out.truncated;
      out.longest_truncated = std::max(out.longest_truncated, length);
    } else {
      const int32_t* body = seq + p.num_prefix_special;
      const int32_t* suffix = body + content;
      for (const auto& [start, end] : plan_windows(content, p)) {
        out.ids.insert(out.ids.end(), seq, seq + p.num_prefix_special);
        out.ids.insert(out.ids.end(), body + start, body + end);
        add_row(suffix, suffix + p.num_suffix_special);
        out.spans.insert(out.spans.end(), {start, end});
      }
    }
    out.cu_rows.push_back(static_cast<int32_t>(out.cu_seqlens.size() - 1));
  }
  return out;
}

}  // namespace sutra
