#include "sutra/aggregate.h"

#include "sutra/pooling.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace sutra {

double center_weight(int64_t start, int64_t end, int64_t total_len) {
  const double center = 0.5 * static_cast<double>(start + end);
  const double position = 2.0 * center / static_cast<double>(total_len) - 1.0;  // -1 .. 1
  return static_cast<double>(end - start) * (1.0 - 0.5 * std::abs(position));
}

void aggregate_embeddings(const float* emb, int64_t n_windows, int64_t dim,
                          AggregationMethod method, const int64_t* starts, const int64_t* ends,
                          int64_t total_content_len, float* out) {
  if (n_windows < 1) {
    throw std::invalid_argument("embeddings must have at least 1 row, got " +
                                std::to_string(n_windows));
  }
  if (dim < 0) throw std::invalid_argument("dim must be >= 0, got " + std::to_string(dim));

  if (method == AggregationMethod::kMax) {
    std::copy(emb, emb + dim, out);
    for (int64_t w = 1; w < n_windows; ++w) {
      const float* row = emb + w * dim;
      for (int64_t d = 0; d < dim; ++d) out[d] = std::max(out[d], row[d]);
    }
    return;
  }

  // Weights sum in double: a document can have thousands of windows.
  std::vector<double> weights(static_cast<size_t>(n_windows), 1.0);
  if (method == AggregationMethod::kWeighted) {
    if (starts == nullptr || ends == nullptr) {
      throw std::invalid_argument("weighted aggregation needs the windows' content offsets");
    }
    if (total_content_len < 0) {
      throw std::invalid_argument("total_length must be >= 0, got " +
                                  std::to_string(total_content_len));
    }
    if (total_content_len > 0) {
      double total_weight = 0.0;
      for (int64_t w = 0; w < n_windows; ++w) {
        if (starts[w] < 0 || ends[w] < starts[w] || ends[w] > total_content_len) {
          throw std::invalid_argument(
              "offsets[" + std::to_string(w) + "] must satisfy 0 <= start <= end <= total_length=" +
              std::to_string(total_content_len) + ", got [" + std::to_string(starts[w]) + ", " +
              std::to_string(ends[w]) + ")");
        }
        weights[w] = center_weight(starts[w], ends[w], total_content_len);
        total_weight += weights[w];
      }
      // Only empty spans: nothing to prefer, use the plain mean.
      if (total_weight <= 0.0) std::fill(weights.begin(), weights.end(), 1.0);
    }
  }

  double total_weight = 0.0;
  for (double w : weights) total_weight += w;
  std::vector<double> acc(static_cast<size_t>(dim), 0.0);
  for (int64_t w = 0; w < n_windows; ++w) {
    const float* row = emb + w * dim;
    for (int64_t d = 0; d < dim; ++d) acc[d] += weights[w] * static_cast<double>(row[d]);
  }
  for (int64_t d = 0; d < dim; ++d) out[d] = static_cast<float>(acc[d] / total_weight);
}

void aggregate_rows(const float* rows, const int32_t* cu_rows, int64_t sequences, int64_t dim,
                    AggregationMethod method, const int64_t* spans, const int64_t* content_lengths,
                    bool normalize, float* out) {
  std::vector<int64_t> starts;
  std::vector<int64_t> ends;
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t first = cu_rows[s];
    const int64_t count = cu_rows[s + 1] - first;
    if (count < 1) {
      throw std::invalid_argument("cu_rows must give every sequence at least one row; sequence " +
                                  std::to_string(s) + " has " + std::to_string(count));
    }
    float* target = out + s * dim;
    if (count == 1) {
      std::copy(rows + first * dim, rows + (first + 1) * dim, target);
      continue;
    }
    const int64_t* span = spans == nullptr ? nullptr : spans + 2 * first;
    if (span != nullptr) {
      starts.resize(static_cast<size_t>(count));
      ends.resize(static_cast<size_t>(count));
      for (int64_t w = 0; w < count; ++w) {
        starts[w] = span[2 * w];
        ends[w] = span[2 * w + 1];
      }
    }
    aggregate_embeddings(rows + first * dim, count, dim, method,
                         span == nullptr ? nullptr : starts.data(),
                         span == nullptr ? nullptr : ends.data(),
                         content_lengths == nullptr ? 0 : content_lengths[s], target);
    if (normalize) l2_normalize_rows(target, 1, dim);
  }
}

}  // namespace sutra
