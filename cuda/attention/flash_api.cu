// Host entry points of sutra/kernels/attention.h: argument checks, device guard, dispatch on head dim.
#include <cuda_runtime.h>

#include <string>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "flash_fwd_launch.cuh"
#include "sutra/kernels/attention.h"
#include "sutra/error.h"

namespace sutra {
namespace {

void check_head_dim(int head_dim) {
  SUTRA_CHECK(head_dim == 32 || head_dim == 64 || head_dim == 128, "head_dim", "32, 64 or 128",
              head_dim);
}

// What the kernel relies on and the bindings already check for Python callers; C++ callers (the
// engine) get the same checks here.
void check_params(const FlashAttnParams& p) {
  SUTRA_CHECK(p.batch >= 0, "batch", ">= 0", p.batch);
  SUTRA_CHECK(p.heads > 0, "heads", "> 0", p.heads);
  SUTRA_CHECK(p.max_seqlen >= 0, "max_seqlen", ">= 0", p.max_seqlen);
  check_head_dim(p.head_dim);
  SUTRA_CHECK(p.window_left >= -1, "window_left", ">= 0 or -1 (unbounded)", p.window_left);
  SUTRA_CHECK(p.window_right >= -1, "window_right", ">= 0 or -1 (unbounded)", p.window_right);
  SUTRA_CHECK(p.bias != AttnBias::kAlibi || p.alibi_slopes != nullptr, "alibi_slopes",
              "a device pointer with bias kAlibi", "a null pointer");
  if (p.bias == AttnBias::kRelative) {
    SUTRA_CHECK(p.rel_bias != nullptr, "rel_bias", "a device pointer with bias kRelative",
                "a null pointer");
    SUTRA_CHECK(p.rel_num_buckets > 0, "rel_num_buckets", "> 0", p.rel_num_buckets);
    SUTRA_CHECK(p.rel_max_distance >= 0 && p.rel_max_distance <= kAttnMaxRelDistance,
                "rel_max_distance", "in [0, " + std::to_string(kAttnMaxRelDistance) + "]",
                p.rel_max_distance);
    // The kernel gathers rel_bias[h * rel_num_buckets + rel_bucket[i]]: an entry past the row
    // would read the next head's row (or past the table).
    for (int i = 0; i <= 2 * p.rel_max_distance; ++i) {
      SUTRA_CHECK(p.rel_bucket[i] < p.rel_num_buckets, "rel_bucket entries",
                  "< rel_num_buckets = " + std::to_string(p.rel_num_buckets),
                  static_cast<int>(p.rel_bucket[i]));
    }
  }
}

}  // namespace

FlashAttnKernelInfo flash_attention_kernel_info(int head_dim, bool with_bias, int window_left,
                                                int window_right) {
  using namespace cuda::attn;
  check_head_dim(head_dim);
  if (head_dim == 32) return flash_fwd_info<DefaultTraits<32>::type>(with_bias);
  if (head_dim == 128) return flash_fwd_info<DefaultTraits<128>::type>(with_bias);
  return uses_window_tiles(head_dim, window_left, window_right)
             ? flash_fwd_info<WindowTraits64>(with_bias)
             : flash_fwd_info<DefaultTraits<64>::type>(with_bias);
}

void flash_attention_forward(const FlashAttnParams& p, cudaStream_t stream) {
  check_params(p);
  if (p.batch == 0 || p.max_seqlen == 0) return;  // empty arrays may have null data pointers
  SUTRA_CHECK(p.q && p.k && p.v && p.o, "q, k, v and o", "device pointers", "a null pointer");

  cuda::DeviceGuard guard(p.device);
  int major = 0;
  cuda::check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p.device),
              "cudaDeviceGetAttribute");
  if (major < 8) {
    throw Error("flash_attention needs an sm_80 or newer GPU (device " + std::to_string(p.device) +
                " is sm_" + std::to_string(major) + "x)");
  }
  switch (p.head_dim) {  // one of the three: check_params
    case 32: cuda::attn::run_flash_fwd_hdim32(p, stream); break;
    case 64:
      if (cuda::attn::uses_window_tiles(p.head_dim, p.window_left, p.window_right)) {
        cuda::attn::run_flash_fwd_hdim64_window(p, stream);
      } else {
        cuda::attn::run_flash_fwd_hdim64(p, stream);
      }
      break;
    case 128: cuda::attn::run_flash_fwd_hdim128(p, stream); break;
  }
}

}  // namespace sutra
