// The smoke op of the device path: a real kernel plus the host entry point that runs it on host
// arrays (allocate, copy, launch, copy back), each CUDA call checked.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
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

// Owns one device allocation.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0) check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* get() const { return static_cast<float*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

// Makes `device` current for the scope and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

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
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(dim) * sizeof(float);
  cuda::DeviceBuffer buffer(bytes);
  cuda::check(cudaMemcpyAsync(buffer.get(), host_in, bytes, cudaMemcpyHostToDevice, stream.get()),
              "cudaMemcpyAsync (host to device)");
  cuda::L2NormalizeParams params;
  params.in = buffer.get();
  params.out = buffer.get();
  params.rows = rows;
  params.dim = dim;
  params.in_row_stride = dim;
  params.out_row_stride = dim;
  cuda::launch_l2_normalize_rows(params, stream.get());
  cuda::check(cudaMemcpyAsync(host_out, buffer.get(), bytes, cudaMemcpyDeviceToHost, stream.get()),
              "cudaMemcpyAsync (device to host)");
  cuda::check(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
}

}  // namespace sutra
