// LayerNorm kernels (sutra/kernels/layernorm.h): one block of 256 threads per token row. The row
// is summed into shared memory in fp32 once, then reduced twice (mean, then the variance around
// it: two passes over shared memory, exact where a one-pass E[x^2] - E[x]^2 would cancel).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "sutra/error.h"
#include "sutra/kernels/layernorm.h"

namespace sutra {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxHidden = 8192;

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float(float v) {
  return __float2bfloat16_rn(v);
}

/// Sum of `value` over the block; every thread gets it.
__device__ float block_sum(float value, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < kThreads / 32 ? scratch[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

/// Normalizes the fp32 row in `row` (shared memory) and writes it with gamma and beta.
template <typename T>
__device__ void normalize_row(const float* row, int hidden, float eps, const T* gamma,
                              const T* beta, T* out, float* scratch) {
  float sum = 0.0f;
  for (int h = threadIdx.x; h < hidden; h += kThreads) sum += row[h];
  const float mean = block_sum(sum, scratch) / hidden;
  float squares = 0.0f;
  for (int h = threadIdx.x; h < hidden; h += kThreads) {
    const float d = row[h] - mean;
    squares += d * d;
  }
  const float rstd = rsqrtf(block_sum(squares, scratch) / hidden + eps);
  for (int h = threadIdx.x; h < hidden; h += kThreads) {
    out[h] = from_float<T>((row[h] - mean) * rstd * to_float(gamma[h]) + to_float(beta[h]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) embedding_layernorm_kernel(EmbeddingLayerNormParams p) {
  extern __shared__ float row[];  // [hidden]
  __shared__ float scratch[kThreads / 32];
  const int64_t t = blockIdx.x;
  int64_t id = p.ids[t];
  int64_t pos = p.positions[t];
  if (id < 0 || id >= p.vocab) id = 0;
  if (pos < 0 || pos >= p.max_positions) pos = 0;
  const T* word = static_cast<const T*>(p.word_embeddings) + id * p.hidden;
  const T* position = static_cast<const T*>(p.position_embeddings) + pos * p.hidden;
  const T* type_row = static_cast<const T*>(p.token_type_row);
  for (int h = threadIdx.x; h < p.hidden; h += kThreads) {
    float v = to_float(word[h]) + to_float(position[h]);
    if (type_row != nullptr) v += to_float(type_row[h]);
    row[h] = v;
  }
  __syncthreads();
  normalize_row(row, p.hidden, p.eps, static_cast<const T*>(p.gamma),
                static_cast<const T*>(p.beta), static_cast<T*>(p.out) + t * p.hidden, scratch);
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
  normalize_row(row, p.hidden, p.eps, static_cast<const T*>(p.gamma),
                static_cast<const T*>(p.beta), static_cast<T*>(p.out) + t * p.hidden, scratch);
}

void check_common(int64_t tokens, int hidden, float eps, const void* gamma, const void* beta,
                  const void* out) {
  SUTRA_CHECK(tokens >= 0 && tokens < (int64_t{1} << 31), "tokens", "in [0, 2^31)", tokens);
  SUTRA_CHECK(hidden >= 1 && hidden <= kMaxHidden, "hidden",
              "in [1, " + std::to_string(kMaxHidden) + "]", hidden);
  SUTRA_CHECK(eps > 0.0f, "eps", "> 0", eps);
  // An empty batch reads and writes nothing (an empty array may have no storage at all).
  SUTRA_CHECK(tokens == 0 || (gamma != nullptr && beta != nullptr && out != nullptr),
              "gamma, beta and out", "device pointers", "a null pointer");
}

}  // namespace

void embedding_layernorm(const EmbeddingLayerNormParams& p, cudaStream_t stream) {
  check_common(p.tokens, p.hidden, p.eps, p.gamma, p.beta, p.out);
  SUTRA_CHECK(p.vocab >= 1 && p.max_positions >= 1, "vocab and max_positions", ">= 1",
              p.vocab < 1 ? p.vocab : p.max_positions);
  if (p.tokens == 0) return;
  SUTRA_CHECK(p.ids != nullptr && p.positions != nullptr && p.word_embeddings != nullptr &&
                  p.position_embeddings != nullptr,
              "ids, positions and the tables", "device pointers", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  const size_t smem = sizeof(float) * static_cast<size_t>(p.hidden);
  const dim3 grid(static_cast<unsigned>(p.tokens));
  if (p.dtype == DeviceDtype::kFloat16) {
    embedding_layernorm_kernel<__half><<<grid, kThreads, smem, stream>>>(p);
  } else {
    embedding_layernorm_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(p);
  }
  cuda::check_launch("embedding_layernorm_kernel", stream);
}

void add_layernorm(const AddLayerNormParams& p, cudaStream_t stream) {
  check_common(p.tokens, p.hidden, p.eps, p.gamma, p.beta, p.out);
  if (p.tokens == 0) return;
  SUTRA_CHECK(p.x != nullptr, "x", "a device pointer", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  const size_t smem = sizeof(float) * static_cast<size_t>(p.hidden);
  const dim3 grid(static_cast<unsigned>(p.tokens));
  if (p.dtype == DeviceDtype::kFloat16) {
    add_layernorm_kernel<__half><<<grid, kThreads, smem, stream>>>(p);
  } else {
    add_layernorm_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(p);
  }
  cuda::check_launch("add_layernorm_kernel", stream);
}

}  // namespace sutra
