// Combines the embeddings of a document's windows into one embedding.
#pragma once

#include <cstdint>

namespace sutra {

enum class AggregationMethod {
  kMean,      // plain mean over windows
  kMax,       // elementwise max over windows
  kWeighted,  // mean weighted by window length and closeness to the document's center
};

/// Weight of window [start, end) in a content of `total_len` tokens for kWeighted:
/// (end - start) * (1 - 0.5 * |2 * c / L - 1|) with c = (start + end) / 2, L = total_len.
/// It falls from 1x per token at the center to 0.5x per token at either end.
double center_weight(int64_t start, int64_t end, int64_t total_len);

/// emb: [n_windows, dim] float32 row-major; out: [dim], not normalized (the caller normalizes).
/// starts/ends: [n_windows] content spans, used only by kWeighted (may be null otherwise).
/// kWeighted falls back to the plain mean when total_content_len is 0 or all weights are 0.
/// Throws std::invalid_argument when n_windows < 1, dim < 0, or kWeighted lacks spans.
void aggregate_embeddings(const float* emb, int64_t n_windows, int64_t dim,
                          AggregationMethod method, const int64_t* starts, const int64_t* ends,
                          int64_t total_content_len, float* out);

/// For each of `sequences` sequences, its model rows [cu_rows[s], cu_rows[s + 1]) of `rows`
/// ([R, dim] float32) become out[s] ([sequences, dim]): a single row is copied as it is; several
/// rows (the windows of a long text) are aggregated by `method` (spans: [R, 2] content spans,
/// content_lengths: [sequences], used by kWeighted) and then, when `normalize`, scaled to unit
/// length. Throws std::invalid_argument when cu_rows leaves a sequence without rows.
void aggregate_rows(const float* rows, const int32_t* cu_rows, int64_t sequences, int64_t dim,
                    AggregationMethod method, const int64_t* spans, const int64_t* content_lengths,
                    bool normalize, float* out);

}  // namespace sutra
