// Device pooling (sutra/kernels/pooling.h): a block per sequence, each thread a set of columns;
// a column walks the sequence's tokens (consecutive threads read consecutive columns of a token
// row: coalesced). The optional normalization reduces the row's squares over the block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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

template <typename T>
__global__ void __launch_bounds__(kThreads) pool_kernel(DevicePoolParams p) {
  __shared__ float scratch[kThreads / 32];
  const int b = blockIdx.x;
  const int64_t start = p.cu_seqlens[b];
  const int64_t length = p.cu_seqlens[b + 1] - start;
  const int64_t skip = p.prompt_lengths != nullptr ? p.prompt_lengths[b] : 0;
  const int64_t first = skip < length ? skip : length;  // tokens [first, length) take part
  const int64_t count = length - first;
  const T* x = static_cast<const T*>(p.tokens) + start * p.hidden;
  float* out = p.out + static_cast<int64_t>(b) * p.hidden;
  float pooled[kMaxColumnsPerThread];
  int n = 0;
  for (int h = threadIdx.x; h < p.hidden; h += kThreads, ++n) {
    float v = 0.0f;
    switch (p.mode) {
      case PoolingMode::kCls:
        // The first token taking part; with none, position 0 (the argmax of an all-zero mask).
        v = length > 0 ? load(x + (count > 0 ? first : 0) * p.hidden + h) : 0.0f;
        break;
      case PoolingMode::kLastToken:
        v = count > 0 ? load(x + (length - 1) * p.hidden + h) : 0.0f;
        break;
      case PoolingMode::kMax: {
        v = -INFINITY;
        for (int64_t t = first; t < length; ++t) v = fmaxf(v, load(x + t * p.hidden + h));
        break;
      }
      case PoolingMode::kMean:
      case PoolingMode::kMeanSqrtLen:
      case PoolingMode::kWeightedMean: {
        const bool weighted = p.mode == PoolingMode::kWeightedMean;
        float sum = 0.0f;
        float total = 0.0f;
        for (int64_t t = first; t < length; ++t) {
          const float w = weighted ? static_cast<float>(t + 1) : 1.0f;
          sum += w * load(x + t * p.hidden + h);
          total += w;
        }
        float denom = fmaxf(total, kMinTokenCount);
        if (p.mode == PoolingMode::kMeanSqrtLen) denom = sqrtf(denom);
        v = sum / denom;
        break;
      }
    }
    pooled[n] = v;
  }
  float scale = 1.0f;
  if (p.normalize) {
    float squares = 0.0f;
    for (int i = 0; i < n; ++i) squares += pooled[i] * pooled[i];
    scale = 1.0f / fmaxf(sqrtf(cuda::block_sum<kThreads>(squares, scratch)), kNormEps);
  }
  n = 0;
  for (int h = threadIdx.x; h < p.hidden; h += kThreads, ++n) out[h] = pooled[n] * scale;
}

}  // namespace

void pool_tokens_device(const DevicePoolParams& p, cudaStream_t stream) {
  SUTRA_CHECK(p.batch >= 0, "batch", ">= 0", p.batch);
  SUTRA_CHECK(p.hidden >= 1 && p.hidden <= kMaxHidden, "hidden",
              "in [1, " + std::to_string(kMaxHidden) + "]", p.hidden);
  if (p.batch == 0) return;
  SUTRA_CHECK(p.tokens != nullptr && p.cu_seqlens != nullptr && p.out != nullptr,
              "tokens, cu_seqlens and out", "device pointers", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  const dim3 grid(static_cast<unsigned>(p.batch));
  if (p.dtype == DeviceDtype::kFloat16) {
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
