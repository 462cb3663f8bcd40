// The one pooling of sutra: sentence-transformers' Pooling module over packed or padded token
// states, and the row normalizations that follow it (Normalize, Matryoshka truncation).
//
// Token states are float32 rows of `hidden` values. Sequence b is `lengths` rows starting at
// row `starts`: packed (padding-free) layouts take both from cu_seqlens int32 [batch + 1]
// (sequence b = rows [cu[b], cu[b + 1])); right-padded [batch, seq, hidden] layouts start
// sequence b at row b * seq and take its length from cu_seqlens too.
#pragma once

#include <cstdint>
#include <string>

namespace sutra {

/// sentence-transformers' pooling modes (sentence_transformers Pooling, v6 names).
enum class PoolingMode : int {
  kCls = 0,          // the first token that takes part (position 0, or the first after the prompt)
  kMean = 1,         // sum / max(count, 1e-9)
  kMax = 2,          // elementwise max; -inf for a sequence with no token taking part
  kMeanSqrtLen = 3,  // sum / sqrt(max(count, 1e-9))
  kWeightedMean = 4, // tokens weighted by their 1-based position in the sequence
  kLastToken = 5,    // the last token that takes part; zeros when none does
};

/// The mode a name denotes ("cls", "mean", "max", "mean_sqrt_len", "weightedmean",
/// "lasttoken"); std::invalid_argument listing them for any other name.
PoolingMode pooling_mode_from_name(const std::string& name);

struct PoolParams {
  const float* tokens = nullptr;       // token states, rows of `hidden` floats
  const int32_t* cu_seqlens = nullptr;  // [batch + 1], nondecreasing from 0
  // 0: packed (sequence b starts at row cu[b]); > 0: right-padded rows of this many tokens
  // (sequence b starts at row b * padded_length, length cu[b + 1] - cu[b] <= padded_length).
  int64_t padded_length = 0;
  // Optional [batch]: the first prompt_lengths[b] tokens of sequence b do not take part
  // (include_prompt=False; sentence-transformers counts the prompt's tokens with the leading
  // special token, without the trailing one). Null: every token takes part.
  const int32_t* prompt_lengths = nullptr;
  float* out = nullptr;  // [batch, hidden]
  int64_t batch = 0;
  int64_t hidden = 0;
  PoolingMode mode = PoolingMode::kMean;
};

/// Pools every sequence into one row of `out`, with sentence-transformers' semantics: the
/// tokens that take part are a sequence's own tokens minus its prompt; mean-like modes
/// accumulate in double. Throws std::invalid_argument for inconsistent sizes.
void pool_tokens(const PoolParams& p);

/// x[r] /= max(||x[r]||_2, 1e-12) in place for each of `rows` rows of `dim` floats
/// (torch.nn.functional.normalize semantics: a zero row stays zero).
void l2_normalize_rows(float* x, int64_t rows, int64_t dim);

/// Matryoshka: keeps the first `keep_dim` of `dim` columns of each row of `in` ([rows, dim]),
/// writes them to `out` ([rows, keep_dim]) and, when `normalize`, L2-normalizes them (the cut
/// of a unit vector is re-normalized; the cut of an unnormalized one is left as it is).
/// 1 <= keep_dim <= dim; `in` and `out` may be the same buffer.
void truncate_and_normalize(const float* in, int64_t rows, int64_t dim, int64_t keep_dim,
                            bool normalize, float* out);

}  // namespace sutra
