// LayerNorm kernels (sutra/kernels/layernorm.h), two shapes of each:
// - a warp per token row for hidden = 128 * K (K <= 8: every BERT-family width up to 1024), the
//   row held in registers (4 elements per lane per step, 8-byte loads), reductions by shuffles
//   only: no shared memory, no block barrier;
// - a block of 256 threads per row for any other width up to 8192, the row staged in shared
//   memory.
// Both sum the inputs in fp32 once, then reduce twice (the mean, then the variance around it),
// exact where a one-pass E[x^2] - E[x]^2 would cancel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "common/check.cuh"
#include "common/reductions.cuh"
#include "cuda/resources.h"
#include "sutra/error.h"
#include "sutra/kernels/layernorm.h"

namespace sutra {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxHidden = 8192;

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float(float v) {
  return __float2bfloat16_rn(v);
}

/// Normalizes the fp32 row in `row` (shared memory) and writes it with gamma and beta.
template <typename T>
__device__ void normalize_row(const float* row, int hidden, float eps, const T* gamma,
                              const T* beta, T* out, float* scratch) {
  float sum = 0.0f;
  for (int h = threadIdx.x; h < hidden; h += kThreads) sum += row[h];
  const float mean = cuda::block_sum<kThreads>(sum, scratch) / hidden;
  float squares = 0.0f;
  for (int h = threadIdx.x; h < hidden; h += kThreads) {
    const float d = row[h] - mean;
    squares += d * d;
  }
  const float rstd = rsqrtf(cuda::block_sum<kThreads>(squares, scratch) / hidden + eps);
  for (int h = threadIdx.x; h < hidden; h += kThreads) {
    const float shift = beta != nullptr ? to_float(beta[h]) : 0.0f;
    out[h] = from_float<T>((row[h] - mean) * rstd * to_float(gamma[h]) + shift);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) embedding_layernorm_kernel(EmbeddingLayerNormParams p) {
  extern __shared__ float row[];  // [hidden]
  __shared__ float scratch[kThreads / 32];
  const int64_t t = blockIdx.x;
  int64_t id = p.ids[t];
  int64_t pos = p.positions != nullptr ? p.positions[t] : 0;
  if (id < 0 || id >= p.vocab) id = 0;
  if (pos < 0 || pos >= p.max_positions) pos = 0;
  const T* word = static_cast<const T*>(p.word_embeddings) + id * p.hidden;
  const T* position = p.position_embeddings != nullptr
                          ? static_cast<const T*>(p.position_embeddings) + pos * p.hidden
                          : nullptr;
  const T* type_row = static_cast<const T*>(p.token_type_row);
  for (int h = threadIdx.x; h < p.hidden; h += kThreads) {
    float v = to_float(word[h]);
    if (position != nullptr) v += to_float(position[h]);
    if (type_row != nullptr) v += to_float(type_row[h]);
    row[h] = v;
  }
  __syncthreads();
  normalize_row(row, p.hidden, p.eps, static_cast<const T*>(p.gamma), static_cast<const T*>(p.beta),
                static_cast<T*>(p.out) + t * p.hidden, scratch);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) add_layernorm_kernel(AddLayerNormParams p) {
  extern __shared__ float row[];
  __shared__ float scratch[kThreads / 32];
  const int64_t t = blockIdx.x;
  const T* x = static_cast<const T*>(p.x) + t * p.hidden;
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = p.residual ? static_cast<const T*>(p.residual) + t * p.hidden : nullptr;
  for (int h = threadIdx.x; h < p.hidden; h += kThreads) {
    float v = to_float(x[h]);
    if (bias != nullptr) v += to_float(bias[h]);
    if (residual != nullptr) v += to_float(residual[h]);
    row[h] = v;
  }
  __syncthreads();  // every input element is read before `out` (which may alias) is written
  if (p.sum_out != nullptr) {
    T* sum = static_cast<T*>(p.sum_out) + t * p.hidden;
    for (int h = threadIdx.x; h < p.hidden; h += kThreads) sum[h] = from_float<T>(row[h]);
  }
  normalize_row(row, p.hidden, p.eps, static_cast<const T*>(p.gamma), static_cast<const T*>(p.beta),
                static_cast<T*>(p.out) + t * p.hidden, scratch);
}

// ---- a warp per row ---------------------------------------------------------------------------

constexpr int kWarpRowsPerBlock = 4;  // 128 threads

template <typename T>
struct Pair;
template <>
struct Pair<__half> {
  using type = __half2;
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

__device__ __forceinline__ float2 to_float2(__half2 v) { return __half22float2(v); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) { return __bfloat1622float2(v); }
template <typename T2>
__device__ __forceinline__ T2 from_float2(float2 v);
template <>
__device__ __forceinline__ __half2 from_float2(float2 v) {
  return __float22half2_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat162 from_float2(float2 v) {
  return __float22bfloat162_rn(v);
}

/// Adds 4 consecutive elements at `ptr` (8-byte aligned) to v[0..3].
template <typename T>
__device__ __forceinline__ void add4(const T* ptr, float* v) {
  using T2 = typename Pair<T>::type;
  const uint2 raw = *reinterpret_cast<const uint2*>(ptr);
  const float2 a = to_float2(*reinterpret_cast<const T2*>(&raw.x));
  const float2 b = to_float2(*reinterpret_cast<const T2*>(&raw.y));
  v[0] += a.x;
  v[1] += a.y;
  v[2] += b.x;
  v[3] += b.y;
}

/// Stores v[0..3] as 4 consecutive elements at `ptr` (8-byte aligned).
template <typename T>
__device__ __forceinline__ void store4(const float* v, T* ptr) {
  using T2 = typename Pair<T>::type;
  const T2 lo = from_float2<T2>(make_float2(v[0], v[1]));
  const T2 hi = from_float2<T2>(make_float2(v[2], v[3]));
  uint2 raw;
  raw.x = *reinterpret_cast<const unsigned*>(&lo);
  raw.y = *reinterpret_cast<const unsigned*>(&hi);
  *reinterpret_cast<uint2*>(ptr) = raw;
}

/// LayerNorm of the row whose 4K elements this lane holds in v (columns (k * 32 + lane) * 4 + i).
template <typename T, int K>
__device__ __forceinline__ void normalize_warp_row(float (&v)[K * 4], int lane, float eps,
                                                   const T* gamma, const T* beta, T* out) {
  using T2 = typename Pair<T>::type;
  constexpr int kHidden = K * 128;
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < K * 4; ++i) sum += v[i];
  const float mean = cuda::warp_sum(sum) / kHidden;
  float squares = 0.0f;
#pragma unroll
  for (int i = 0; i < K * 4; ++i) squares += (v[i] - mean) * (v[i] - mean);
  const float rstd = rsqrtf(cuda::warp_sum(squares) / kHidden + eps);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int col = (k * 32 + lane) * 4;
    float g[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
    add4(gamma + col, g);
    if (beta != nullptr) add4(beta + col, b);
    float y[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) y[i] = (v[k * 4 + i] - mean) * rstd * g[i] + b[i];
    store4(y, out + col);
  }
}

template <typename T, int K>
__global__ void __launch_bounds__(32 * kWarpRowsPerBlock)
    add_layernorm_warp_kernel(AddLayerNormParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t t = int64_t{blockIdx.x} * kWarpRowsPerBlock + threadIdx.x / 32;
  if (t >= p.tokens) return;
  constexpr int kHidden = K * 128;
  const T* x = static_cast<const T*>(p.x) + t * kHidden;
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = p.residual ? static_cast<const T*>(p.residual) + t * kHidden : nullptr;
  float v[K * 4] = {};
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int col = (k * 32 + lane) * 4;
    add4(x + col, v + k * 4);
    if (bias != nullptr) add4(bias + col, v + k * 4);
    if (residual != nullptr) add4(residual + col, v + k * 4);
  }
  // Every element this lane writes it has read itself: `out` and `sum_out` may alias x or
  // residual.
  if (p.sum_out != nullptr) {
    T* sum = static_cast<T*>(p.sum_out) + t * kHidden;
#pragma unroll
    for (int k = 0; k < K; ++k) store4(v + k * 4, sum + (k * 32 + lane) * 4);
  }
  normalize_warp_row<T, K>(v, lane, p.eps, static_cast<const T*>(p.gamma),
                           static_cast<const T*>(p.beta), static_cast<T*>(p.out) + t * kHidden);
}

template <typename T, int K>
__global__ void __launch_bounds__(32 * kWarpRowsPerBlock)
    embedding_layernorm_warp_kernel(EmbeddingLayerNormParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t t = int64_t{blockIdx.x} * kWarpRowsPerBlock + threadIdx.x / 32;
  if (t >= p.tokens) return;
  constexpr int kHidden = K * 128;
  int64_t id = p.ids[t];
  int64_t pos = p.positions != nullptr ? p.positions[t] : 0;
  if (id < 0 || id >= p.vocab) id = 0;
  if (pos < 0 || pos >= p.max_positions) pos = 0;
  const T* word = static_cast<const T*>(p.word_embeddings) + id * kHidden;
  const T* position = p.position_embeddings != nullptr
                          ? static_cast<const T*>(p.position_embeddings) + pos * kHidden
                          : nullptr;
  const T* type_row = static_cast<const T*>(p.token_type_row);
  float v[K * 4] = {};
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int col = (k * 32 + lane) * 4;
    add4(word + col, v + k * 4);
    if (position != nullptr) add4(position + col, v + k * 4);
    if (type_row != nullptr) add4(type_row + col, v + k * 4);
  }
  normalize_warp_row<T, K>(v, lane, p.eps, static_cast<const T*>(p.gamma),
                           static_cast<const T*>(p.beta), static_cast<T*>(p.out) + t * kHidden);
}

/// Whether the warp kernels take this width (hidden = 128 * K, K <= 8) with these pointers
/// (8-byte aligned, for the 4-element loads; null ones are not read).
bool warp_rows_fit(int hidden, std::initializer_list<const void*> pointers) {
  if (hidden % 128 != 0 || hidden > 1024) return false;
  for (const void* ptr : pointers) {
    if (reinterpret_cast<uintptr_t>(ptr) % 8 != 0) return false;
  }
  return true;
}

// Turns hidden / 128 (1..8) into the compile-time constant K of the warp kernels.
#define SUTRA_WARP_ROWS_SWITCH(HIDDEN, K, ...) \
  switch ((HIDDEN) / 128) {                    \
    case 1: {                                  \
      constexpr int K = 1;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case 2: {                                  \
      constexpr int K = 2;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case 3: {                                  \
      constexpr int K = 3;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case 4: {                                  \
      constexpr int K = 4;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case 5: {                                  \
      constexpr int K = 5;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case 6: {                                  \
      constexpr int K = 6;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    case 7: {                                  \
      constexpr int K = 7;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
    default: {                                 \
      constexpr int K = 8;                     \
      __VA_ARGS__;                             \
      break;                                   \
    }                                          \
  }

void check_common(int64_t tokens, int hidden, float eps, const void* gamma, const void* beta,
                  const void* out) {
  SUTRA_CHECK(tokens >= 0 && tokens < (int64_t{1} << 31), "tokens", "in [0, 2^31)", tokens);
  SUTRA_CHECK(hidden >= 1 && hidden <= kMaxHidden, "hidden",
              "in [1, " + std::to_string(kMaxHidden) + "]", hidden);
  SUTRA_CHECK(eps > 0.0f, "eps", "> 0", eps);
  // An empty batch reads and writes nothing (an empty array may have no storage at all).
  SUTRA_CHECK(tokens == 0 || (gamma != nullptr && out != nullptr), "gamma and out",
              "device pointers", "a null pointer");
}

}  // namespace

void embedding_layernorm(const EmbeddingLayerNormParams& p, cudaStream_t stream) {
  check_common(p.tokens, p.hidden, p.eps, p.gamma, p.beta, p.out);
  SUTRA_CHECK(p.vocab >= 1 && p.max_positions >= 1, "vocab and max_positions", ">= 1",
              p.vocab < 1 ? p.vocab : p.max_positions);
  if (p.tokens == 0) return;
  SUTRA_CHECK(p.ids != nullptr && p.word_embeddings != nullptr, "ids and word_embeddings",
              "device pointers", "a null pointer");
  SUTRA_CHECK(p.position_embeddings == nullptr || p.positions != nullptr, "positions",
              "a device pointer (the model has a position table)", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  const dim3 warp_grid(
      static_cast<unsigned>((p.tokens + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock));
  const bool warp_rows = warp_rows_fit(p.hidden, {p.word_embeddings, p.position_embeddings,
                                                  p.token_type_row, p.gamma, p.beta, p.out});
  if (warp_rows) {
    constexpr int threads = 32 * kWarpRowsPerBlock;
    if (p.dtype == DeviceDtype::kFloat16) {
      SUTRA_WARP_ROWS_SWITCH(
          p.hidden, K,
          (embedding_layernorm_warp_kernel<__half, K><<<warp_grid, threads, 0, stream>>>(p)))
    } else {
      SUTRA_WARP_ROWS_SWITCH(
          p.hidden, K,
          (embedding_layernorm_warp_kernel<__nv_bfloat16, K><<<warp_grid, threads, 0, stream>>>(p)))
    }
  }
  if (!warp_rows) {
    const size_t smem = sizeof(float) * static_cast<size_t>(p.hidden);
    const dim3 grid(static_cast<unsigned>(p.tokens));
    if (p.dtype == DeviceDtype::kFloat16) {
      embedding_layernorm_kernel<__half><<<grid, kThreads, smem, stream>>>(p);
    } else {
      embedding_layernorm_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(p);
    }
  }
  cuda::check_launch("embedding_layernorm_kernel", stream);
}

void add_layernorm(const AddLayerNormParams& p, cudaStream_t stream) {
  check_common(p.tokens, p.hidden, p.eps, p.gamma, p.beta, p.out);
  if (p.tokens == 0) return;
  SUTRA_CHECK(p.x != nullptr, "x", "a device pointer", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  const dim3 warp_grid(
      static_cast<unsigned>((p.tokens + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock));
  const bool warp_rows =
      warp_rows_fit(p.hidden, {p.x, p.bias, p.residual, p.gamma, p.beta, p.out, p.sum_out});
  if (warp_rows) {
    constexpr int threads = 32 * kWarpRowsPerBlock;
    if (p.dtype == DeviceDtype::kFloat16) {
      SUTRA_WARP_ROWS_SWITCH(
          p.hidden, K, (add_layernorm_warp_kernel<__half, K><<<warp_grid, threads, 0, stream>>>(p)))
    } else {
      SUTRA_WARP_ROWS_SWITCH(
          p.hidden, K,
          (add_layernorm_warp_kernel<__nv_bfloat16, K><<<warp_grid, threads, 0, stream>>>(p)))
    }
  }
  if (!warp_rows) {
    const size_t smem = sizeof(float) * static_cast<size_t>(p.hidden);
    const dim3 grid(static_cast<unsigned>(p.tokens));
    if (p.dtype == DeviceDtype::kFloat16) {
      add_layernorm_kernel<__half><<<grid, kThreads, smem, stream>>>(p);
    } else {
      add_layernorm_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(p);
    }
  }
  cuda::check_launch("add_layernorm_kernel", stream);
}

}  // namespace sutra
