#include "sutra/pooling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "sutra/error.h"

namespace sutra {
namespace {

// sentence-transformers clamps the token count (and the weight sum) at this.
constexpr double kMinTokenCount = 1e-9;
// torch.nn.functional.normalize's default eps.
constexpr float kNormEps = 1e-12f;

void check_params(const PoolParams& p) {
  SUTRA_CHECK(p.batch >= 0, "batch", ">= 0", p.batch);
  SUTRA_CHECK(p.hidden >= 0, "hidden", ">= 0", p.hidden);
  SUTRA_CHECK(p.padded_length >= 0, "padded_length", ">= 0", p.padded_length);
  SUTRA_CHECK(p.cu_seqlens != nullptr || p.batch == 0, "cu_seqlens", "an array", "null");
  if (p.batch == 0) return;
  SUTRA_CHECK(p.cu_seqlens[0] == 0, "cu_seqlens[0]", "0", p.cu_seqlens[0]);
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t length = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    if (length < 0) {
      SUTRA_CHECK(false, "cu_seqlens", "nondecreasing",
                  "cu_seqlens[" + std::to_string(b + 1) + "] < cu_seqlens[" +
                      std::to_string(b) + "]");
    }
    if (p.padded_length > 0) {
      SUTRA_CHECK(length <= p.padded_length, ("sequence " + std::to_string(b) + "'s length").c_str(),
                  "<= the padded length " + std::to_string(p.padded_length), length);
    }
    if (p.prompt_lengths != nullptr) {
      SUTRA_CHECK(p.prompt_lengths[b] >= 0, "prompt_lengths", ">= 0", p.prompt_lengths[b]);
    }
  }
}

void pool_one(const PoolParams& p, const float* x, int64_t length, int64_t skip, float* out,
              std::vector<double>& acc) {
  const int64_t h = p.hidden;
  const int64_t first = std::min(skip, length);  // tokens [first, length) take part
  const int64_t count = length - first;
  switch (p.mode) {
    case PoolingMode::kCls:
    case PoolingMode::kLastToken: {
      if (count == 0) {
        // cls: the first unmasked position is argmax of an all-zero mask, position 0 (which a
        // padded layout always has); lasttoken gathers position 0 of the masked states: zeros.
        if (p.mode == PoolingMode::kCls && (length > 0 || p.padded_length > 0)) {
          std::copy(x, x + h, out);
        } else {
          std::fill(out, out + h, 0.0f);
        }
        return;
      }
      const float* row = x + (p.mode == PoolingMode::kCls ? first : length - 1) * h;
      std::copy(row, row + h, out);
      return;
    }
    case PoolingMode::kMax: {
      std::fill(out, out + h, -std::numeric_limits<float>::infinity());
      for (int64_t t = first; t < length; ++t) {
        const float* row = x + t * h;
        for (int64_t d = 0; d < h; ++d) out[d] = std::max(out[d], row[d]);
      }
      return;
    }
    case PoolingMode::kMean:
    case PoolingMode::kMeanSqrtLen:
    case PoolingMode::kWeightedMean: {
      std::fill(acc.begin(), acc.end(), 0.0);
      double total = 0.0;
      const bool weighted = p.mode == PoolingMode::kWeightedMean;
      for (int64_t t = first; t < length; ++t) {
        const double w = weighted ? static_cast<double>(t + 1) : 1.0;
        total += w;
        const float* row = x + t * h;
        for (int64_t d = 0; d < h; ++d) acc[d] += w * static_cast<double>(row[d]);
      }
      double denom = std::max(total, kMinTokenCount);
      if (p.mode == PoolingMode::kMeanSqrtLen) denom = std::sqrt(denom);
      for (int64_t d = 0; d < h; ++d) out[d] = static_cast<float>(acc[d] / denom);
      return;
    }
  }
  SUTRA_CHECK(false, "mode", "a PoolingMode", static_cast<int>(p.mode));
}

}  // namespace

PoolingMode pooling_mode_from_name(const std::string& name) {
  if (name == "cls") return PoolingMode::kCls;
  if (name == "mean") return PoolingMode::kMean;
  if (name == "max") return PoolingMode::kMax;
  if (name == "mean_sqrt_len") return PoolingMode::kMeanSqrtLen;
  if (name == "weightedmean") return PoolingMode::kWeightedMean;
  if (name == "lasttoken") return PoolingMode::kLastToken;
  throw std::invalid_argument("mode must be one of 'cls', 'mean', 'max', 'mean_sqrt_len', "
                              "'weightedmean', 'lasttoken', got '" + name + "'");
}

void pool_tokens(const PoolParams& p) {
  check_params(p);
  std::vector<double> acc(static_cast<size_t>(p.hidden));
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t length = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    const int64_t start = p.padded_length > 0 ? b * p.padded_length : p.cu_seqlens[b];
    const int64_t skip = p.prompt_lengths != nullptr ? p.prompt_lengths[b] : 0;
    pool_one(p, p.tokens + start * p.hidden, length, skip, p.out + b * p.hidden, acc);
  }
}

void l2_normalize_rows(float* x, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * dim;
    double sum_sq = 0.0;
    for (int64_t d = 0; d < dim; ++d) sum_sq += static_cast<double>(row[d]) * row[d];
    const float denom = std::max(static_cast<float>(std::sqrt(sum_sq)), kNormEps);
    for (int64_t d = 0; d < dim; ++d) row[d] /= denom;
  }
}

void truncate_and_normalize(const float* in, int64_t rows, int64_t dim, int64_t keep_dim,
                            bool normalize, float* out) {
  SUTRA_CHECK(keep_dim >= 1 && keep_dim <= dim, "keep_dim", "in [1, " + std::to_string(dim) + "]",
              keep_dim);
  for (int64_t r = 0; r < rows; ++r) {
    // Forward copy: with in == out, row r's destination never overtakes its source.
    std::copy(in + r * dim, in + r * dim + keep_dim, out + r * keep_dim);
  }
  if (normalize) l2_normalize_rows(out, rows, keep_dim);
}

}  // namespace sutra
