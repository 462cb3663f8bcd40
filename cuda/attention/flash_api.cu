// Host entry points of sutra/kernels/attention.h: argument checks, device guard, dispatch on head dim.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
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
  SUTRA_CHECK(p.packed_tokens >= 0, "packed_tokens", ">= 0 (0: one block per sequence)",
              p.packed_tokens);
  SUTRA_CHECK(p.packed_tokens == 0 || p.cu_seqlens != nullptr, "packed_tokens",
              "0 without cu_seqlens (packing is for varlen batches)", p.packed_tokens);
  SUTRA_CHECK(p.packed_tokens <= INT32_MAX, "packed_tokens", "<= 2^31 - 1", p.packed_tokens);
  SUTRA_CHECK(p.packed_tokens == 0 || p.packed_bounds != nullptr, "packed_bounds",
              "a device pointer with packed_tokens > 0", "a null pointer");
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

bool flash_attention_packing_pays(int head_dim, bool with_bias, int window_left, int window_right,
                                  const int32_t* cu_seqlens, int64_t batch) {
  if (batch <= 1) return false;
  // Per-sequence blocks run the window's tile; packed rows always the head dim's default tile.
  // Key ranges are counted without the window (an upper bound for both layouts).
  const FlashAttnKernelInfo own =
      flash_attention_kernel_info(head_dim, with_bias, window_left, window_right);
  const FlashAttnKernelInfo shared = flash_attention_kernel_info(head_dim, with_bias);
  int64_t per_sequence = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = cu_seqlens[b + 1] - cu_seqlens[b];
    per_sequence += ((length + own.block_m - 1) / own.block_m) *
                    ((length + own.block_n - 1) / own.block_n);
  }
  // A packed tile of rows [r0, r1] sees the keys from its first row's sequence start to its last
  // row's sequence end. `first` / `last` walk the sequences forward with the tiles.
  const int64_t total = cu_seqlens[batch];
  const int64_t bm = shared.block_m, bn = shared.block_n;
  int64_t packed = 0;
  int64_t first = 0, last = 0;
  for (int64_t r0 = 0; r0 < total; r0 += bm) {
    const int64_t r1 = std::min(r0 + bm, total) - 1;
    while (cu_seqlens[first + 1] <= r0) ++first;
    last = std::max(last, first);
    while (cu_seqlens[last + 1] <= r1) ++last;
    packed += (cu_seqlens[last + 1] + bn - 1) / bn - cu_seqlens[first] / bn;
    // 1.25: stop counting once the packed layout cannot win.
    if (packed * 5 >= per_sequence * 4) return false;
  }
  return true;
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
  if (p.packed_tokens > 0) {
    switch (p.head_dim) {
      case 32: cuda::attn::run_flash_fwd_hdim32_packed(p, stream); break;
      case 64: cuda::attn::run_flash_fwd_hdim64_packed(p, stream); break;
      case 128: cuda::attn::run_flash_fwd_hdim128_packed(p, stream); break;
    }
    return;
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
