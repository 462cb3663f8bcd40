// Device pooling (sutra/kernels/pooling.h): a block per sequence, each thread a set of columns;
// a column walks the sequence's tokens (consecutive threads read consecutive columns of a token
// row: coalesced). The optional normalization reduces the row's squares over the block. A batch
// of few long sequences is split: blocks over token ranges write partials, then a block per
// sequence combines them.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "common/check.cuh"
#include "common/reductions.cuh"
#include "cuda/resources.h"
#include "normalize_kernel.cuh"
#include "sutra/error.h"
#include "sutra/kernels/pooling.h"

namespace sutra {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxHidden = 16384;
constexpr int kMaxColumnsPerThread = kMaxHidden / kThreads;
constexpr float kMinTokenCount = 1e-9f;  // sentence-transformers' clamp
constexpr float kNormEps = 1e-12f;       // torch.nn.functional.normalize's
constexpr int64_t kMaxSplits = 64;        // token ranges per sequence, at most

template <typename T>
__device__ __forceinline__ float load(const T* p);
template <>
__device__ __forceinline__ float load(const __half* p) {
  return __half2float(*p);
}
template <>
__device__ __forceinline__ float load(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

/// Tokens [first, length) of sequence b take part in its pooling (a prompt left out).
struct SequenceRange {
  int64_t start;   // of the sequence in the packed tokens
  int64_t first;   // first token taking part, relative to start
  int64_t length;  // of the sequence
};

__device__ __forceinline__ SequenceRange sequence_range(const DevicePoolParams& p, int b) {
  if (p.segment_bounds != nullptr) {
    const int64_t start = p.segment_bounds[2 * b];
    return {start, 0, p.segment_bounds[2 * b + 1] - start};
  }
  const int64_t start = p.cu_seqlens[b];
  const int64_t length = p.cu_seqlens[b + 1] - start;
  const int64_t skip = p.prompt_lengths != nullptr ? p.prompt_lengths[b] : 0;
  return {start, skip < length ? skip : length, length};
}

__device__ __forceinline__ bool is_max(PoolingMode mode) { return mode == PoolingMode::kMax; }

/// Column h of tokens [t0, t1) (positions in the sequence): the sum of w(t) x[t, h] (the mean
/// modes; w = t + 1 for the weighted mean, else 1) or the max.
template <typename T>
__device__ float column_partial(const T* x, int hidden, int h, int64_t t0, int64_t t1,
                                PoolingMode mode) {
  if (is_max(mode)) {
    float v = -INFINITY;
    for (int64_t t = t0; t < t1; ++t) v = fmaxf(v, load(x + t * hidden + h));
    return v;
  }
  const bool weighted = mode == PoolingMode::kWeightedMean;
  float sum = 0.0f;
  for (int64_t t = t0; t < t1; ++t) {
    sum += (weighted ? static_cast<float>(t + 1) : 1.0f) * load(x + t * hidden + h);
  }
  return sum;
}

/// The pooled value of a sum mode from the partial over all taking-part tokens [first, length).
__device__ __forceinline__ float finish_column(float partial, PoolingMode mode, int64_t first,
                                               int64_t length) {
  if (is_max(mode)) return partial;
  const double n = static_cast<double>(length - first);
  const double total = mode == PoolingMode::kWeightedMean
                           ? (static_cast<double>(length) * (length + 1) -
                              static_cast<double>(first) * (first + 1)) / 2  // sum of t + 1
                           : n;
  float denom = fmaxf(static_cast<float>(total), kMinTokenCount);
  if (mode == PoolingMode::kMeanSqrtLen) denom = sqrtf(denom);
  return partial / denom;
}

/// Writes this thread's pooled columns (h = threadIdx.x + i * kThreads), L2-normalized over the
/// block when asked.
__device__ __forceinline__ void store_pooled(const float* pooled, int n, bool normalize,
                                             int hidden, float* out, float* scratch) {
  float scale = 1.0f;
  if (normalize) {
    float squares = 0.0f;
    for (int i = 0; i < n; ++i) squares += pooled[i] * pooled[i];
    scale = 1.0f / fmaxf(sqrtf(cuda::block_sum<kThreads>(squares, scratch)), kNormEps);
  }
  n = 0;
  for (int h = threadIdx.x; h < hidden; h += kThreads, ++n) out[h] = pooled[n] * scale;
}

// A block per sequence.
template <typename T>
__global__ void __launch_bounds__(kThreads) pool_kernel(DevicePoolParams p) {
  __shared__ float scratch[kThreads / 32];
  const int b = blockIdx.x;
  const SequenceRange r = sequence_range(p, b);
  const int64_t count = r.length - r.first;
  const T* x = static_cast<const T*>(p.tokens) + r.start * p.hidden;
  float pooled[kMaxColumnsPerThread];
  int n = 0;
  for (int h = threadIdx.x; h < p.hidden; h += kThreads, ++n) {
    float v = 0.0f;
    if (p.mode == PoolingMode::kCls) {
      // The first token taking part; with none, position 0 (the argmax of an all-zero mask).
      v = r.length > 0 ? load(x + (count > 0 ? r.first : 0) * p.hidden + h) : 0.0f;
    } else if (p.mode == PoolingMode::kLastToken) {
      v = count > 0 ? load(x + (r.length - 1) * p.hidden + h) : 0.0f;
    } else {
      v = finish_column(column_partial(x, p.hidden, h, r.first, r.length, p.mode), p.mode,
                        r.first, r.length);
    }
    pooled[n] = v;
  }
  store_pooled(pooled, n, p.normalize, p.hidden, p.out + static_cast<int64_t>(b) * p.hidden,
               scratch);
}

// Split pooling, step 1: block (s, b) takes the s-th of `splits` equal token ranges of sequence b
// and writes its column partials to scratch row b * splits + s.
template <typename T>
__global__ void __launch_bounds__(kThreads) pool_partial_kernel(DevicePoolParams p, int splits) {
  const int s = blockIdx.x, b = blockIdx.y;
  const SequenceRange r = sequence_range(p, b);
  const int64_t chunk = (r.length - r.first + splits - 1) / splits;
  const int64_t t0 = r.first + s * chunk;
  const int64_t t1 = t0 + chunk < r.length ? t0 + chunk : r.length;
  const T* x = static_cast<const T*>(p.tokens) + r.start * p.hidden;
  float* row = p.scratch + (static_cast<int64_t>(b) * splits + s) * p.hidden;
  for (int h = threadIdx.x; h < p.hidden; h += kThreads) {
    row[h] = column_partial(x, p.hidden, h, t0, t1, p.mode);  // empty range: 0 or -inf
  }
}

// Split pooling, step 2: a block per sequence combines its partials in split order.
__global__ void __launch_bounds__(kThreads) pool_combine_kernel(DevicePoolParams p, int splits) {
  __shared__ float scratch[kThreads / 32];
  const int b = blockIdx.x;
  const SequenceRange r = sequence_range(p, b);
  const float* rows = p.scratch + static_cast<int64_t>(b) * splits * p.hidden;
  float pooled[kMaxColumnsPerThread];
  int n = 0;
  for (int h = threadIdx.x; h < p.hidden; h += kThreads, ++n) {
    float v = is_max(p.mode) ? -INFINITY : 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float part = rows[static_cast<int64_t>(s) * p.hidden + h];
      v = is_max(p.mode) ? fmaxf(v, part) : v + part;
    }
    pooled[n] = finish_column(v, p.mode, r.first, r.length);
  }
  store_pooled(pooled, n, p.normalize, p.hidden, p.out + static_cast<int64_t>(b) * p.hidden,
               scratch);
}

/// Token ranges per sequence for the split pooling: enough blocks for two per SM, within the
/// scratch's rows; 1 (a block per sequence) when the batch fills the GPU anyway or its
/// sequences are short.
int pool_splits(const DevicePoolParams& p) {
  if (p.scratch == nullptr || p.mode == PoolingMode::kCls || p.mode == PoolingMode::kLastToken ||
      (p.total_tokens > 0 && p.total_tokens < kPoolSplitMinTokens * p.batch)) {
    return 1;
  }
  int sms = 0;
  cuda::check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, p.device),
              "cudaDeviceGetAttribute");
  const int64_t wanted = (2 * static_cast<int64_t>(sms) + p.batch - 1) / p.batch;
  const int64_t fit = kPoolSplitRows / p.batch;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({wanted, fit, kMaxSplits})));
}

}  // namespace

void pool_tokens_device(const DevicePoolParams& p, cudaStream_t stream) {
  SUTRA_CHECK(p.batch >= 0, "batch", ">= 0", p.batch);
  SUTRA_CHECK(p.hidden >= 1 && p.hidden <= kMaxHidden, "hidden",
              "in [1, " + std::to_string(kMaxHidden) + "]", p.hidden);
  if (p.batch == 0) return;
  SUTRA_CHECK(p.tokens != nullptr && p.out != nullptr, "tokens and out", "device pointers",
              "a null pointer");
  SUTRA_CHECK(p.cu_seqlens != nullptr || p.segment_bounds != nullptr, "cu_seqlens",
              "a device pointer (or segment_bounds)", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  const int splits = pool_splits(p);
  const bool half = p.dtype == DeviceDtype::kFloat16;
  if (splits > 1) {
    const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(p.batch));
    if (half) {
      pool_partial_kernel<__half><<<grid, kThreads, 0, stream>>>(p, splits);
    } else {
      pool_partial_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p, splits);
    }
    cuda::check_launch("pool_partial_kernel", stream);
    pool_combine_kernel<<<static_cast<unsigned>(p.batch), kThreads, 0, stream>>>(p, splits);
    cuda::check_launch("pool_combine_kernel", stream);
    return;
  }
  const dim3 grid(static_cast<unsigned>(p.batch));
  if (half) {
    pool_kernel<__half><<<grid, kThreads, 0, stream>>>(p);
  } else {
    pool_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
  }
  cuda::check_launch("pool_kernel", stream);
}

void l2_normalize_device(float* rows, int64_t n, int64_t dim, int device, cudaStream_t stream) {
  SUTRA_CHECK(n >= 0 && dim >= 0, "n and dim", ">= 0",
              std::to_string(n) + " and " + std::to_string(dim));
  if (n == 0 || dim == 0) return;
  SUTRA_CHECK(rows != nullptr, "rows", "a device pointer", "a null pointer");
  cuda::DeviceGuard guard(device);
  cuda::L2NormalizeParams params;
  params.in = rows;
  params.out = rows;
  params.rows = n;
  params.dim = dim;
  params.in_row_stride = dim;
  params.out_row_stride = dim;
  params.eps = kNormEps;
  cuda::launch_l2_normalize_rows(params, stream);
}

}  // namespace sutra
