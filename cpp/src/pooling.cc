#include "sutra/pooling.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace sutra {
namespace {

// sentence-transformers clamps the token count so that an all-padding row divides by 1e-9.
constexpr float kMinTokenCount = 1e-9f;
// sentence-transformers overwrites padding with this before the max.
constexpr float kMaskedValue = -1e9f;
// torch.nn.functional.normalize's default eps.
constexpr float kNormEps = 1e-12f;

void check_shape(const PoolParams& p) {
  if (p.batch < 0 || p.seq < 0 || p.hidden < 0) {
    throw std::invalid_argument("pooling shape must be non-negative, got batch=" +
                                std::to_string(p.batch) + " seq=" + std::to_string(p.seq) +
                                " hidden=" + std::to_string(p.hidden));
  }
}

}  // namespace

void mean_pool(const PoolParams& p) {
  check_shape(p);
  for (int64_t b = 0; b < p.batch; ++b) {
    float* out = p.out + b * p.hidden;
    std::fill(out, out + p.hidden, 0.0f);
    float count = 0.0f;
    for (int64_t s = 0; s < p.seq; ++s) {
      const float m = static_cast<float>(p.attention_mask[b * p.seq + s]);
      if (m == 0.0f) continue;  // skipping also keeps NaN/inf in padding out of the sum
      count += m;
      const float* x = p.token_embeddings + (b * p.seq + s) * p.hidden;
      for (int64_t h = 0; h < p.hidden; ++h) out[h] += x[h] * m;
    }
    const float denom = std::max(count, kMinTokenCount);
    for (int64_t h = 0; h < p.hidden; ++h) out[h] /= denom;
  }
}

void cls_pool(const PoolParams& p) {
  check_shape(p);
  if (p.seq < 1) throw std::invalid_argument("cls pooling needs seq >= 1, got 0");
  for (int64_t b = 0; b < p.batch; ++b) {
    const float* first = p.token_embeddings + b * p.seq * p.hidden;
    std::copy(first, first + p.hidden, p.out + b * p.hidden);
  }
}

void max_pool(const PoolParams& p) {
  check_shape(p);
  if (p.seq < 1) throw std::invalid_argument("max pooling needs seq >= 1, got 0");
  for (int64_t b = 0; b < p.batch; ++b) {
    float* out = p.out + b * p.hidden;
    std::fill(out, out + p.hidden, -INFINITY);
    for (int64_t s = 0; s < p.seq; ++s) {
      const float* x = p.token_embeddings + (b * p.seq + s) * p.hidden;
      if (p.attention_mask[b * p.seq + s] == 0) {
        for (int64_t h = 0; h < p.hidden; ++h) out[h] = std::max(out[h], kMaskedValue);
      } else {
        for (int64_t h = 0; h < p.hidden; ++h) out[h] = std::max(out[h], x[h]);
      }
    }
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
                            float* out) {
  if (keep_dim < 1 || keep_dim > dim) {
    throw std::invalid_argument("keep_dim must be in [1, " + std::to_string(dim) + "], got " +
                                std::to_string(keep_dim));
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(in + r * dim, in + r * dim + keep_dim, out + r * keep_dim);
  }
  l2_normalize_rows(out, rows, keep_dim);
}

}  // namespace sutra
