// Mask-aware pooling of token embeddings and row normalization, with sentence-transformers
// semantics. Shapes: token embeddings [batch, seq, hidden] float32 row-major, attention mask
// [batch, seq] int64 (nonzero = real token), output [batch, hidden] float32.
#pragma once

#include <cstdint>

namespace sutra {

struct PoolParams {
  const float* token_embeddings = nullptr;  // [batch, seq, hidden]
  const int64_t* attention_mask = nullptr;  // [batch, seq]
  float* out = nullptr;                     // [batch, hidden]
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t hidden = 0;
};

/// sum(x * mask) / max(sum(mask), 1e-9): a row with no real token pools to zeros.
void mean_pool(const PoolParams& p);

/// The first token of every row, whatever the mask says (the [CLS] position).
void cls_pool(const PoolParams& p);

/// Elementwise max with masked tokens replaced by -1e9, so a row with no real token gives -1e9.
void max_pool(const PoolParams& p);

/// x[r] /= max(||x[r]||_2, 1e-12) in place for each of `rows` rows of `dim` floats
/// (torch.nn.functional.normalize semantics: a zero row stays zero).
void l2_normalize_rows(float* x, int64_t rows, int64_t dim);

/// Matryoshka: keeps the first `keep_dim` of `dim` columns of each row of `in` ([rows, dim]),
/// writes them to `out` ([rows, keep_dim]) and L2-normalizes them. 1 <= keep_dim <= dim.
void truncate_and_normalize(const float* in, int64_t rows, int64_t dim, int64_t keep_dim,
                            float* out);

}  // namespace sutra
