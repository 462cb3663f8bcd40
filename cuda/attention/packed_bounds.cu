// flash_attention_packed_bounds (sutra/kernels/attention.h): for each token of a varlen batch,
// the token range of its sequence, read by the packed-row-tile attention kernels instead of a
// search of cu_seqlens per row.
#include <cuda_runtime.h>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "sutra/error.h"
#include "sutra/kernels/attention.h"

namespace sutra {
namespace {

constexpr int kThreads = 128;

// One block per sequence; its threads stride over the sequence's tokens.
__global__ void __launch_bounds__(kThreads)
    packed_bounds_kernel(const int32_t* cu_seqlens, int64_t packed_tokens, int32_t* bounds) {
  const int32_t start = cu_seqlens[blockIdx.x];
  const int32_t end = cu_seqlens[blockIdx.x + 1];
  for (int32_t t = start + static_cast<int32_t>(threadIdx.x); t < end; t += kThreads) {
    bounds[t] = start;
    bounds[packed_tokens + t] = end;
  }
}

}  // namespace

void flash_attention_packed_bounds(const int32_t* cu_seqlens, int batch, int64_t packed_tokens,
                                   int32_t* bounds, int device, cudaStream_t stream) {
  SUTRA_CHECK(batch >= 0, "batch", ">= 0", batch);
  SUTRA_CHECK(packed_tokens >= 0, "packed_tokens", ">= 0", packed_tokens);
  if (batch == 0 || packed_tokens == 0) return;
  SUTRA_CHECK(cu_seqlens != nullptr && bounds != nullptr, "cu_seqlens and bounds",
              "device pointers", "a null pointer");
  cuda::DeviceGuard guard(device);
  packed_bounds_kernel<<<batch, kThreads, 0, stream>>>(cu_seqlens, packed_tokens, bounds);
  cuda::check_launch("packed_bounds_kernel", stream);
}

}  // namespace sutra
