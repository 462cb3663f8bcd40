#include "sutra/windows.h"

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

}  // namespace sutra
