// The smoke op of the device path: a real kernel plus the host entry point that runs it on host
// arrays (allocate, copy, launch, copy back), each CUDA call checked.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "normalize_kernel.cuh"
#include "sutra/cuda_info.h"

namespace sutra::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;
static_assert(kThreadsPerBlock % kWarpSize == 0 && kThreadsPerBlock / kWarpSize <= kWarpSize,
              "the block reduction folds one partial per warp inside a single warp");
// gridDim.x limit; longer inputs loop over rows with a grid stride.
constexpr int64_t kMaxBlocks = 2147483647;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum over the block; every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float warp_partials[kThreadsPerBlock / kWarpSize];
  __shared__ float total;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) warp_partials[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreadsPerBlock / kWarpSize ? warp_partials[lane] : 0.0f;
    v = warp_sum(v);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

__global__ void __launch_bounds__(kThreadsPerBlock)
    l2_normalize_rows_kernel(const L2NormalizeParams p) {
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float* in = p.in + row * p.in_row_stride;
    float* out = p.out + row * p.out_row_stride;
    float sum_sq = 0.0f;
    for (int64_t d = threadIdx.x; d < p.dim; d += kThreadsPerBlock) sum_sq += in[d] * in[d];
    const float denom = fmaxf(sqrtf(block_sum(sum_sq)), p.eps);
    for (int64_t d = threadIdx.x; d < p.dim; d += kThreadsPerBlock) out[d] = in[d] / denom;
    __syncthreads();  // block_sum's shared memory is reused by the next row
  }
}

}  // namespace

void launch_l2_normalize_rows(const L2NormalizeParams& params, cudaStream_t stream) {
  if (params.rows == 0 || params.dim == 0) return;
  const auto blocks = static_cast<unsigned>(params.rows < kMaxBlocks ? params.rows : kMaxBlocks);
  l2_normalize_rows_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(params);
  check_launch("l2_normalize_rows_kernel", stream);
}

}  // namespace sutra::cuda

namespace sutra {

void cuda_l2_normalize_rows(const float* host_in, int64_t rows, int64_t dim, float* host_out,
                            int device) {
  if (rows < 0 || dim < 0) {
    throw std::invalid_argument("shape must be non-negative, got (" + std::to_string(rows) + ", " +
                                std::to_string(dim) + ")");
  }
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    if (!cuda::is_no_gpu_error(status)) cuda::check(status, "cudaGetDeviceCount");
    throw Error(std::string("no CUDA GPU is available: ") + cudaGetErrorString(status));
  }
  if (count == 0) throw Error("no CUDA GPU is available: 0 devices visible");
  if (device < 0 || device >= count) {
    throw std::invalid_argument("device must be in [0, " + std::to_string(count) + "), got " +
                                std::to_string(device));
  }
  if (rows == 0 || dim == 0) return;

  cuda::DeviceGuard guard(device);
  cuda::Stream stream;
  cuda::DeviceBuffer<float> buffer(static_cast<size_t>(rows) * static_cast<size_t>(dim));
  cuda::check(cudaMemcpyAsync(buffer.data(), host_in, buffer.bytes(), cudaMemcpyHostToDevice,
                              stream.get()),
              "cudaMemcpyAsync (host to device)");
  cuda::L2NormalizeParams params;
  params.in = buffer.data();
  params.out = buffer.data();
  params.rows = rows;
  params.dim = dim;
  params.in_row_stride = dim;
  params.out_row_stride = dim;
  cuda::launch_l2_normalize_rows(params, stream.get());
  cuda::check(cudaMemcpyAsync(host_out, buffer.data(), buffer.bytes(), cudaMemcpyDeviceToHost,
                              stream.get()),
              "cudaMemcpyAsync (device to host)");
  stream.synchronize();
}

}  // namespace sutra
