// Rotary position embeddings in place on packed QKV rows (sutra/kernels/rotary.h). One thread per
// (token, head, pair of rotated columns i, i + 1) does q and k: memory bound, each element is read
// and written once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "sutra/error.h"
#include "sutra/kernels/rotary.h"

namespace sutra {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct Pair;
template <>
struct Pair<__half> {
  using type = __half2;
  static __device__ __forceinline__ float2 load(type v) { return __half22float2(v); }
  static __device__ __forceinline__ type store(float2 v) { return __float22half2_rn(v); }
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ float2 load(type v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ type store(float2 v) { return __float22bfloat162_rn(v); }
};

/// Rotates columns (i, i + 1) against (i + half, i + half + 1) of one head's row at `x`.
template <typename T>
__device__ __forceinline__ void rotate(T* x, int i, int half, float4 cos_sin) {
  using P = Pair<T>;
  using T2 = typename P::type;
  T2* lo_ptr = reinterpret_cast<T2*>(x + i);
  T2* hi_ptr = reinterpret_cast<T2*>(x + i + half);
  const float2 lo = P::load(*lo_ptr), hi = P::load(*hi_ptr);
  // cos_sin: (cos_i, sin_i, cos_i+1, sin_i+1)
  *lo_ptr = P::store(make_float2(lo.x * cos_sin.x - hi.x * cos_sin.y,
                                 lo.y * cos_sin.z - hi.y * cos_sin.w));
  *hi_ptr = P::store(make_float2(hi.x * cos_sin.x + lo.x * cos_sin.y,
                                 hi.y * cos_sin.z + lo.y * cos_sin.w));
}

template <typename T>
__global__ void __launch_bounds__(kThreads) rotary_kernel(RotaryParams p) {
  const int half = p.head_dim / 2;
  const int pairs = half / 2;  // threads per head
  const int64_t index = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (index >= p.tokens * p.heads * pairs) return;
  const int i = static_cast<int>(index % pairs) * 2;
  const int64_t head_token = index / pairs;
  const int head = static_cast<int>(head_token % p.heads);
  const int64_t t = head_token / p.heads;
  int64_t position = p.positions[t];
  if (position < 0 || position >= p.max_positions) position = 0;
  const float4 cos_sin =
      *reinterpret_cast<const float4*>(p.cos_sin + (position * half + i) * 2);
  T* row = static_cast<T*>(p.qkv) + t * p.row_stride + head * p.head_dim;
  rotate(row, i, half, cos_sin);
  rotate(row + p.k_offset, i, half, cos_sin);
}

}  // namespace

void rotary_embedding(const RotaryParams& p, cudaStream_t stream) {
  SUTRA_CHECK(p.tokens >= 0, "tokens", ">= 0", p.tokens);
  SUTRA_CHECK(p.heads >= 1, "heads", ">= 1", p.heads);
  // Pairs of 2-element vectors on each side: head_dim a multiple of 4.
  SUTRA_CHECK(p.head_dim >= 4 && p.head_dim <= 256 && p.head_dim % 4 == 0, "head_dim",
              "a multiple of 4 in [4, 256]", p.head_dim);
  SUTRA_CHECK(p.max_positions >= 1, "max_positions", ">= 1", p.max_positions);
  SUTRA_CHECK(p.row_stride % 2 == 0 && p.k_offset % 2 == 0, "row_stride and k_offset",
              "even (2-element vectors)", p.row_stride % 2 != 0 ? p.row_stride : p.k_offset);
  SUTRA_CHECK(p.k_offset >= static_cast<int64_t>(p.heads) * p.head_dim &&
                  p.k_offset + static_cast<int64_t>(p.heads) * p.head_dim <= p.row_stride,
              "k_offset", "past q's columns, with k's inside the row", p.k_offset);
  if (p.tokens == 0) return;
  SUTRA_CHECK(p.qkv != nullptr && p.positions != nullptr && p.cos_sin != nullptr,
              "qkv, positions and cos_sin", "device pointers", "a null pointer");
  SUTRA_CHECK(reinterpret_cast<uintptr_t>(p.qkv) % 4 == 0 &&
                  reinterpret_cast<uintptr_t>(p.cos_sin) % 16 == 0,
              "qkv and cos_sin", "4- and 16-byte aligned", "a misaligned pointer");
  cuda::DeviceGuard guard(p.device);
  const int64_t threads = p.tokens * p.heads * (p.head_dim / 4);
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads));
  if (p.dtype == DeviceDtype::kBFloat16) {
    rotary_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    rotary_kernel<__half><<<grid, kThreads, 0, stream>>>(p);
  }
  cuda::check_launch("rotary_kernel", stream);
}

}  // namespace sutra
