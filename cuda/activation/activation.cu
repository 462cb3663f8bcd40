// Bias + activation in place and the gated activation (sutra/kernels/activation.h): grid-stride
// loops over 16-byte vectors when a row is a whole number of them (the feed-forward's
// [tokens, intermediate]), element by element otherwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "sutra/error.h"
#include "sutra/kernels/activation.h"

namespace sutra {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct Convert;
template <>
struct Convert<__half> {
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Convert<__nv_bfloat16> {
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Convert<float> {
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};

/// The exact GELU x * Phi(x), with Phi(-|x|) = erfc(|x| / sqrt 2) / 2 from Abramowitz & Stegun
/// 7.1.26 (|error| <= 1.5e-7 on erfc, so <= 7.5e-8 on Phi: below float32's own rounding of the
/// result near 1, far below the float16/bfloat16 rounding of the stored value). erff was the
/// instruction-bound part of this kernel on the feed-forward's [tokens, intermediate] (about 68
/// instructions per element; this is about 17 with two MUFU ops), and Phi(x) = 1 - Phi(-x) keeps
/// full relative accuracy for negative x, where 1 + erf(x / sqrt 2) cancels.
__device__ __forceinline__ float gelu_erf(float x) {
  const float z = fabsf(x) * 0.70710678118654752f;
  const float t = __fdividef(1.0f, fmaf(0.3275911f, z, 1.0f));
  float poly = fmaf(1.061405429f, t, -1.453152027f);
  poly = fmaf(poly, t, 1.421413741f);
  poly = fmaf(poly, t, -0.284496736f);
  poly = fmaf(poly, t, 0.254829592f);
  const float phi_of_minus_abs = 0.5f * poly * t * __expf(-z * z);
  return x * (x >= 0.0f ? 1.0f - phi_of_minus_abs : phi_of_minus_abs);
}

template <Activation kAct>
__device__ __forceinline__ float activate(float x) {
  if constexpr (kAct == Activation::kGelu) {
    return gelu_erf(x);
  } else if constexpr (kAct == Activation::kGeluTanh) {
    const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
  } else if constexpr (kAct == Activation::kRelu) {
    return fmaxf(x, 0.0f);
  } else if constexpr (kAct == Activation::kTanh) {
    return tanhf(x);
  } else if constexpr (kAct == Activation::kSigmoid) {
    return 1.0f / (1.0f + expf(-x));
  } else {
    return x;
  }
}

// kVec elements of T per step; cols % kVec == 0 (checked by the launcher).
template <typename T, int kVec, Activation kAct>
__global__ void __launch_bounds__(kThreads) bias_activation_kernel(BiasActivationParams p) {
  struct alignas(sizeof(T) * kVec) Pack {
    T v[kVec];
  };
  Pack* x = static_cast<Pack*>(p.x);
  const Pack* bias = static_cast<const Pack*>(p.bias);  // aligned like x (the launcher checks)
  const int64_t packs_per_row = p.cols / kVec;
  const int64_t packs = p.rows * packs_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  // The column advances by a constant per step: one 64-bit division per thread, not per step
  // (the division cost as much as the activation).
  const int64_t col_step = stride % packs_per_row;
  int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  int64_t col = i % packs_per_row;
  for (; i < packs; i += stride) {
    Pack pack = x[i];
    Pack b;
    if (bias != nullptr) b = bias[col];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      float value = Convert<T>::load(pack.v[j]);
      if (bias != nullptr) value += Convert<T>::load(b.v[j]);
      pack.v[j] = Convert<T>::store(activate<kAct>(value));
    }
    x[i] = pack;
    col += col_step;
    if (col >= packs_per_row) col -= packs_per_row;
  }
}

/// Calls launch(std::integral_constant<Activation, A>{}) for the A that `activation` is: one
/// kernel instantiation per activation, chosen at run time.
template <typename Launch>
void with_activation(Activation activation, Launch&& launch) {
  switch (activation) {
#define SUTRA_ACTIVATION_CASE(ACT)                    \
  case ACT:                                           \
    launch(std::integral_constant<Activation, ACT>{}); \
    break;
    SUTRA_ACTIVATION_CASE(Activation::kIdentity)
    SUTRA_ACTIVATION_CASE(Activation::kGelu)
    SUTRA_ACTIVATION_CASE(Activation::kGeluTanh)
    SUTRA_ACTIVATION_CASE(Activation::kRelu)
    SUTRA_ACTIVATION_CASE(Activation::kTanh)
    SUTRA_ACTIVATION_CASE(Activation::kSigmoid)
#undef SUTRA_ACTIVATION_CASE
  }
}

template <typename T, int kVec>
void launch_for_activation(const BiasActivationParams& p, cudaStream_t stream, int blocks) {
  with_activation(p.activation, [&](auto act) {
    bias_activation_kernel<T, kVec, decltype(act)::value><<<blocks, kThreads, 0, stream>>>(p);
  });
  cuda::check_launch("bias_activation_kernel", stream);
}

// out[r, c..c+kVec) = act(x[r, c..]) * x[r, cols + c..]; cols % kVec == 0 (the launcher checks).
template <typename T, int kVec, Activation kAct>
__global__ void __launch_bounds__(kThreads) gated_activation_kernel(GatedActivationParams p) {
  struct alignas(sizeof(T) * kVec) Pack {
    T v[kVec];
  };
  const Pack* x = static_cast<const Pack*>(p.x);
  Pack* out = static_cast<Pack*>(p.out);
  const int64_t packs_per_row = p.cols / kVec;
  const int64_t packs = p.rows * packs_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  // Row and column advance by constants per step (divisions once per thread, as above).
  const int64_t row_step = stride / packs_per_row, col_step = stride % packs_per_row;
  int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  int64_t row = i / packs_per_row, col = i % packs_per_row;
  for (; i < packs; i += stride) {
    const Pack a = x[row * 2 * packs_per_row + col];
    const Pack b = x[row * 2 * packs_per_row + packs_per_row + col];
    Pack result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      result.v[j] = Convert<T>::store(activate<kAct>(Convert<T>::load(a.v[j])) *
                                      Convert<T>::load(b.v[j]));
    }
    out[i] = result;
    row += row_step;
    col += col_step;
    if (col >= packs_per_row) {
      col -= packs_per_row;
      ++row;
    }
  }
}

template <typename T, int kVec>
void launch_gated_for_activation(const GatedActivationParams& p, cudaStream_t stream, int blocks) {
  with_activation(p.activation, [&](auto act) {
    gated_activation_kernel<T, kVec, decltype(act)::value><<<blocks, kThreads, 0, stream>>>(p);
  });
  cuda::check_launch("gated_activation_kernel", stream);
}

/// Blocks of a grid-stride loop over `steps` elements: enough to fill the device, no more.
int grid_blocks(int64_t steps, int device) {
  int sms = 0;
  cuda::check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
              "cudaDeviceGetAttribute");
  const int64_t wanted = (steps + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 8LL * sms)));
}

template <typename T>
void launch_gated_typed(const GatedActivationParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vector = p.cols % kVec == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  const int64_t steps = p.rows * (vector ? p.cols / kVec : p.cols);
  if (vector) {
    launch_gated_for_activation<T, kVec>(p, stream, grid_blocks(steps, p.device));
  } else {
    launch_gated_for_activation<T, 1>(p, stream, grid_blocks(steps, p.device));
  }
}

template <typename T>
void launch_typed(const BiasActivationParams& p, cudaStream_t stream) {
  // 16-byte vectors when every row is made of them and the pointers allow it.
  constexpr int kVec = 16 / sizeof(T);
  const bool vector = p.cols % kVec == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0 &&
                      (p.bias == nullptr || reinterpret_cast<uintptr_t>(p.bias) % 16 == 0);
  const int64_t steps = p.rows * (vector ? p.cols / kVec : p.cols);
  const int blocks = grid_blocks(steps, p.device);
  if (vector) {
    launch_for_activation<T, kVec>(p, stream, blocks);
  } else {
    launch_for_activation<T, 1>(p, stream, blocks);
  }
}

}  // namespace

void gated_activation(const GatedActivationParams& p, cudaStream_t stream) {
  SUTRA_CHECK(p.rows >= 0, "rows", ">= 0", p.rows);
  SUTRA_CHECK(p.cols > 0, "cols", "> 0", p.cols);
  SUTRA_CHECK(static_cast<int>(p.activation) >= 0 && static_cast<int>(p.activation) <= 5,
              "activation", "one of the Activation values", static_cast<int>(p.activation));
  if (p.rows == 0) return;
  SUTRA_CHECK(p.x != nullptr && p.out != nullptr, "x and out", "device pointers",
              "a null pointer");
  cuda::DeviceGuard guard(p.device);
  if (p.dtype == DeviceDtype::kBFloat16) {
    launch_gated_typed<__nv_bfloat16>(p, stream);
  } else {
    launch_gated_typed<__half>(p, stream);
  }
}

void bias_activation(const BiasActivationParams& p, cudaStream_t stream) {
  SUTRA_CHECK(p.rows >= 0, "rows", ">= 0", p.rows);
  SUTRA_CHECK(p.cols > 0, "cols", "> 0", p.cols);
  SUTRA_CHECK(static_cast<int>(p.activation) >= 0 && static_cast<int>(p.activation) <= 5,
              "activation", "one of the Activation values", static_cast<int>(p.activation));
  if (p.rows == 0) return;
  SUTRA_CHECK(p.x != nullptr, "x", "a device pointer", "a null pointer");
  cuda::DeviceGuard guard(p.device);
  if (p.float32) {
    launch_typed<float>(p, stream);
  } else if (p.dtype == DeviceDtype::kBFloat16) {
    launch_typed<__nv_bfloat16>(p, stream);
  } else {
    launch_typed<__half>(p, stream);
  }
}

}  // namespace sutra
