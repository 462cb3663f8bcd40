#include "sutra/quantize.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace sutra {
namespace {

// sentence-transformers (>= 6.2): steps = (max - min) / 255, with 1 where that is 0, then
// q = clip(floor((x - min) / steps), 0, 255), all in float32; int8 stores q - 128. NaN, which
// numpy would carry into an undefined cast, becomes bucket 0.
inline float bucket(float x, float start, float step) {
  const float q = std::floor((x - start) / step);
  if (!(q >= 0.0f)) return 0.0f;
  return q > 255.0f ? 255.0f : q;
}

void quantize_scalar(const QuantizeParams& p, const float* ranges) {
  std::vector<float> steps(static_cast<size_t>(p.dim));
  for (int64_t d = 0; d < p.dim; ++d) {
    const float step = (ranges[p.dim + d] - ranges[d]) / 255.0f;
    steps[d] = step == 0.0f ? 1.0f : step;
  }
  const float* starts = ranges;
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.embeddings + r * p.dim;
    if (p.precision == Precision::kUint8) {
      uint8_t* out = static_cast<uint8_t*>(p.out) + r * p.dim;
      for (int64_t d = 0; d < p.dim; ++d) {
        out[d] = static_cast<uint8_t>(bucket(x[d], starts[d], steps[d]));
      }
    } else {
      int8_t* out = static_cast<int8_t*>(p.out) + r * p.dim;
      for (int64_t d = 0; d < p.dim; ++d) {
        out[d] = static_cast<int8_t>(static_cast<int>(bucket(x[d], starts[d], steps[d])) - 128);
      }
    }
  }
}

void quantize_bits(const QuantizeParams& p) {
  const int64_t row_bytes = quantized_row_bytes(p.precision, p.dim);
  const bool signed_out = p.precision == Precision::kBinary;
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.embeddings + r * p.dim;
    for (int64_t byte = 0; byte < row_bytes; ++byte) {
      unsigned packed = 0;
      for (int64_t bit = 0; bit < 8; ++bit) {  // np.packbits is big-endian: element 0 -> bit 7
        const int64_t d = byte * 8 + bit;
        if (d < p.dim && x[d] > 0.0f) packed |= 0x80u >> bit;
      }
      if (signed_out) {
        // (packed - 128) always fits in int8, so numpy's wraparound never triggers.
        static_cast<int8_t*>(p.out)[r * row_bytes + byte] =
            static_cast<int8_t>(static_cast<int>(packed) - 128);
      } else {
        static_cast<uint8_t*>(p.out)[r * row_bytes + byte] = static_cast<uint8_t>(packed);
      }
    }
  }
}

}  // namespace

int64_t quantized_row_bytes(Precision precision, int64_t dim) {
  switch (precision) {
    case Precision::kInt8:
    case Precision::kUint8:
      return dim;
    case Precision::kBinary:
    case Precision::kUbinary:
      return (dim + 7) / 8;
  }
  return dim;
}

void embedding_ranges(const float* embeddings, int64_t rows, int64_t dim, float* ranges) {
  if (rows < 1) {
    throw std::invalid_argument("computing ranges needs embeddings with at least 1 row, got " +
                                std::to_string(rows));
  }
  float* mins = ranges;
  float* maxs = ranges + dim;
  for (int64_t d = 0; d < dim; ++d) mins[d] = maxs[d] = embeddings[d];
  for (int64_t r = 1; r < rows; ++r) {
    const float* x = embeddings + r * dim;
    for (int64_t d = 0; d < dim; ++d) {
      // Written so that a NaN, once seen, sticks, as in np.min / np.max.
      if (!(x[d] >= mins[d]) && !std::isnan(mins[d])) mins[d] = x[d];
      if (!(x[d] <= maxs[d]) && !std::isnan(maxs[d])) maxs[d] = x[d];
    }
  }
}

void quantize(const QuantizeParams& p) {
  if (p.rows < 0 || p.dim < 0) {
    throw std::invalid_argument("embeddings shape must be non-negative, got (" +
                                std::to_string(p.rows) + ", " + std::to_string(p.dim) + ")");
  }
  if (p.precision == Precision::kBinary || p.precision == Precision::kUbinary) {
    quantize_bits(p);
    return;
  }
  if (p.ranges != nullptr) {
    quantize_scalar(p, p.ranges);
    return;
  }
  if (p.rows == 0) return;  // nothing to quantize and nothing to compute ranges from
  if (p.rows == 1) {
    throw std::invalid_argument(
        "int8/uint8 ranges cannot be computed from a single embedding; pass ranges ([2, dim] "
        "per-dimension min and max from a representative set of embeddings)");
  }
  std::vector<float> ranges(static_cast<size_t>(2 * p.dim));
  embedding_ranges(p.embeddings, p.rows, p.dim, ranges.data());
  quantize_scalar(p, ranges.data());
}

}  // namespace sutra
