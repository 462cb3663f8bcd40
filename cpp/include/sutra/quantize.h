// Embedding quantization with the semantics of sentence_transformers.quantize_embeddings,
// bit-for-bit equal to its numpy code.
#pragma once

#include <cstdint>

namespace sutra {

enum class Precision { kInt8, kUint8, kBinary, kUbinary };

/// Bytes per output row: dim for int8/uint8, ceil(dim / 8) for the packed binary precisions.
int64_t quantized_row_bytes(Precision precision, int64_t dim);

struct QuantizeParams {
  const float* embeddings = nullptr;  // [rows, dim]
  const float* ranges = nullptr;      // [2, dim]: per-dimension min then max; null = computed
                                      // from `embeddings` (int8/uint8 only)
  void* out = nullptr;                // [rows, quantized_row_bytes] int8 or uint8
  int64_t rows = 0;
  int64_t dim = 0;
  Precision precision = Precision::kInt8;
};

/// int8:    clip(floor((x - min) / step), 0, 255) - 128, step = (max - min) / 255 or 1 if 0
/// uint8:   clip(floor((x - min) / step), 0, 255)
/// ubinary: bits (x > 0) of each row packed big-endian (np.packbits(x > 0, axis=-1));
///          a dim that is not a multiple of 8 is padded with zero bits
/// binary:  the ubinary byte minus 128 as int8
/// These are sentence-transformers' (>= 6.2) formulas, in float32 like its numpy code. Computing
/// the ranges needs at least two rows (std::invalid_argument otherwise, as sentence-transformers).
void quantize(const QuantizeParams& p);

/// The default ranges: per-dimension min (row 0) and max (row 1) of `embeddings` ([rows, dim],
/// rows >= 1) into ranges ([2, dim]). NaN propagates like np.min/np.max.
void embedding_ranges(const float* embeddings, int64_t rows, int64_t dim, float* ranges);

}  // namespace sutra
