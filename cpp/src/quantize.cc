#include "sutra/quantize.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace sutra {
namespace {

// numpy's float -> int8/uint8 cast is a C cast, which x86-64 compiles to a truncating conversion
// to int32 (cvttss2si: NaN and out-of-range values give INT32_MIN) and keeps the low byte.
// The C++ cast of an out-of-range float is undefined, so do the same steps explicitly.
inline uint8_t numpy_low_byte(float v) {
  const double d = v;
  int32_t truncated = std::numeric_limits<int32_t>::min();
  if (d > -2147483649.0 && d < 2147483648.0) truncated = static_cast<int32_t>(d);  // NaN fails
  return static_cast<uint8_t>(static_cast<uint32_t>(truncated) & 0xFFu);
}

inline int8_t as_int8(uint8_t byte) {
  return static_cast<int8_t>(byte >= 128 ? static_cast<int>(byte) - 256 : static_cast<int>(byte));
}

void quantize_scalar(const QuantizeParams& p, const float* ranges) {
  // All float32, in sentence-transformers' order: steps = (max - min) / 255, then
  // (x - starts) / steps, then - 128 for int8.
  std::vector<float> steps(static_cast<size_t>(p.dim));
  for (int64_t d = 0; d < p.dim; ++d) steps[d] = (ranges[p.dim + d] - ranges[d]) / 255.0f;
  const float* starts = ranges;
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.embeddings + r * p.dim;
    if (p.precision == Precision::kUint8) {
      uint8_t* out = static_cast<uint8_t*>(p.out) + r * p.dim;
      for (int64_t d = 0; d < p.dim; ++d) out[d] = numpy_low_byte((x[d] - starts[d]) / steps[d]);
    } else {
      int8_t* out = static_cast<int8_t*>(p.out) + r * p.dim;
      for (int64_t d = 0; d < p.dim; ++d) {
        out[d] = as_int8(numpy_low_byte((x[d] - starts[d]) / steps[d] - 128.0f));
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
  std::vector<float> ranges(static_cast<size_t>(2 * p.dim));
  embedding_ranges(p.embeddings, p.rows, p.dim, ranges.data());
  quantize_scalar(p, ranges.data());
}

}  // namespace sutra
