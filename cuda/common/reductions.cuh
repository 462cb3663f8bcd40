// Reductions shared by the device kernels.
#pragma once

#include <cuda_runtime.h>

namespace sutra::cuda {

/// Sum of `value` over a warp; every lane gets it.
__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

/// Sum of `value` over a block of kThreads threads (a multiple of 32, at most 1024); every
/// thread gets it. `scratch` holds kThreads / 32 floats of shared memory; the call begins with
/// a barrier, so the same scratch can serve consecutive calls.
template <int kThreads>
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, one block");
  value = warp_sum(value);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  return warp_sum(lane < kThreads / 32 ? scratch[lane] : 0.0f);
}

}  // namespace sutra::cuda
