// Launch template shared by the per-head-dim instantiation files: the tile traits chosen for each
// head dim, the dtype/bias switch, the grid and the opt-in shared memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/check.cuh"
#include "flash_fwd_kernel.cuh"
#include "sutra/kernels/attention.h"

namespace sutra::cuda::attn {

/// Tile shapes per head dim (block_m, block_n, warps, Q in registers, K/V stages, lazy rescale).
/// Each warp owns block_m / warps rows: the more rows per warp, the fewer times each K/V fragment
/// is read from shared memory, which bounds mma.sync throughput here. The SUTRA_ATTN_D*_ macros
/// exist only to compare configurations in one benchmark session; the defaults are the measured
/// best (bench/results/attention_h100.md, v4). d=32 keeps v3's double buffering and exact rescale.
#ifndef SUTRA_ATTN_D64_BM
#define SUTRA_ATTN_D64_BM 128
#endif
#ifndef SUTRA_ATTN_D64_WARPS
#define SUTRA_ATTN_D64_WARPS 4
#endif
#ifndef SUTRA_ATTN_D64_BN
#define SUTRA_ATTN_D64_BN 64
#endif
#ifndef SUTRA_ATTN_D64_QREGS
#define SUTRA_ATTN_D64_QREGS true
#endif
#ifndef SUTRA_ATTN_D64_STAGES
#define SUTRA_ATTN_D64_STAGES 3
#endif
#ifndef SUTRA_ATTN_D128_BM
#define SUTRA_ATTN_D128_BM 128
#endif
#ifndef SUTRA_ATTN_D128_BN
#define SUTRA_ATTN_D128_BN 32
#endif
#ifndef SUTRA_ATTN_D128_WARPS
#define SUTRA_ATTN_D128_WARPS 4
#endif
#ifndef SUTRA_ATTN_D128_QREGS
#define SUTRA_ATTN_D128_QREGS false
#endif
#ifndef SUTRA_ATTN_D128_STAGES
#define SUTRA_ATTN_D128_STAGES 3
#endif
template <int kHeadDim>
struct DefaultTraits;
template <>
struct DefaultTraits<32> {
  using type = FwdTraits<32, 128, 64, 4, true>;
};
template <>
struct DefaultTraits<64> {
  using type = FwdTraits<64, SUTRA_ATTN_D64_BM, SUTRA_ATTN_D64_BN, SUTRA_ATTN_D64_WARPS,
                         SUTRA_ATTN_D64_QREGS, SUTRA_ATTN_D64_STAGES, true>;
};
template <>
struct DefaultTraits<128> {
  using type = FwdTraits<128, SUTRA_ATTN_D128_BM, SUTRA_ATTN_D128_BN, SUTRA_ATTN_D128_WARPS,
                         SUTRA_ATTN_D128_QREGS, SUTRA_ATTN_D128_STAGES, true>;
};

/// Narrow two-sided windows at d=64 (ModernBERT's local layers, +-64) run a 64x32 tile: with
/// +-64 a 128-row query tile walks 256 keys for each of its rows, a 64-row tile 192, and the
/// smaller blocks (37 KB of smem, 6 per SM) keep more copies in flight. On the H100 at L=16384
/// (bench/results/attention_h100.md, v5): 0.22 -> 0.13 ms for the 128x64 -> 64x64 tile at +-64
/// (0.33 -> 0.26 ms at +-256), 0.12 ms with 64x32; 32x32 matched it at +-64 but lost at +-256.
/// Wider windows keep the 128-row tile, whose K/V fragments serve twice the rows.
#ifndef SUTRA_ATTN_WINDOW_BM
#define SUTRA_ATTN_WINDOW_BM 64
#endif
#ifndef SUTRA_ATTN_WINDOW_BN
#define SUTRA_ATTN_WINDOW_BN 32
#endif
#ifndef SUTRA_ATTN_WINDOW_STAGES
#define SUTRA_ATTN_WINDOW_STAGES 3
#endif
using WindowTraits64 = FwdTraits<64, SUTRA_ATTN_WINDOW_BM, SUTRA_ATTN_WINDOW_BN,
                                 SUTRA_ATTN_WINDOW_BM / 16, true, SUTRA_ATTN_WINDOW_STAGES, true>;
constexpr int kWindowTileMaxSpan = 512;  // left + right, inclusive bounds

/// True when a call runs the window tile instead of DefaultTraits.
inline bool uses_window_tiles(int head_dim, int window_left, int window_right) {
  return head_dim == 64 && window_left >= 0 && window_right >= 0 &&
         window_left + window_right <= kWindowTileMaxSpan;
}

template <typename Tr, typename T, bool kHasBias, bool kPacked>
void launch_flash_fwd(const FlashAttnParams& p, cudaStream_t stream) {
  const int smem = Tr::kSmemBytes + (kHasBias ? Tr::kSmemLutBytes : 0);
  auto kernel = flash_fwd_kernel<Tr, T, kHasBias, kPacked>;
  if (smem > 48 * 1024) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
          "cudaFuncSetAttribute(flash_fwd_kernel)");
  }
  // Packed: row tiles over the whole token stream; otherwise per (tile, head, sequence).
  const dim3 grid =
      kPacked ? dim3(static_cast<unsigned>((p.packed_tokens + Tr::kBlockM - 1) / Tr::kBlockM),
                     p.heads, 1)
              : dim3((p.max_seqlen + Tr::kBlockM - 1) / Tr::kBlockM, p.heads, p.batch);
  kernel<<<grid, Tr::kThreads, smem, stream>>>(p);
  check_launch("flash_fwd_kernel", stream);
}

template <typename Tr, bool kPacked>
void run_flash_fwd(const FlashAttnParams& p, cudaStream_t stream) {
  const bool bias = p.bias != AttnBias::kNone;
  if (p.dtype == AttnDtype::kFloat16) {
    bias ? launch_flash_fwd<Tr, __half, true, kPacked>(p, stream)
         : launch_flash_fwd<Tr, __half, false, kPacked>(p, stream);
  } else {
    bias ? launch_flash_fwd<Tr, __nv_bfloat16, true, kPacked>(p, stream)
         : launch_flash_fwd<Tr, __nv_bfloat16, false, kPacked>(p, stream);
  }
}

template <typename Tr>
FlashAttnKernelInfo flash_fwd_info(bool with_bias) {
  FlashAttnKernelInfo info;
  info.block_m = Tr::kBlockM;
  info.block_n = Tr::kBlockN;
  info.threads = Tr::kThreads;
  info.stages = Tr::kStages;
  info.smem_bytes = Tr::kSmemBytes + (with_bias ? Tr::kSmemLutBytes : 0);
  constexpr const char* kPaths[] = {"sm80 mma.sync m16n8k16 + ldmatrix + cp.async (2 stages)",
                                     "sm80 mma.sync m16n8k16 + ldmatrix + cp.async (3 stages)",
                                     "sm80 mma.sync m16n8k16 + ldmatrix + cp.async (4 stages)"};
  static_assert(Tr::kStages <= 4, "name the pipeline depth in kPaths");
  info.path = kPaths[Tr::kStages - 2];
  return info;
}

// Defined in attn_fwd_hdim*_sm80.cu, one translation unit per instantiation family; the
// *_packed ones are the packed-row-tile kernels (FlashAttnParams::packed_tokens) of the default
// tiles, windows included.
void run_flash_fwd_hdim32(const FlashAttnParams& p, cudaStream_t stream);
void run_flash_fwd_hdim32_packed(const FlashAttnParams& p, cudaStream_t stream);
void run_flash_fwd_hdim64_packed(const FlashAttnParams& p, cudaStream_t stream);
void run_flash_fwd_hdim128_packed(const FlashAttnParams& p, cudaStream_t stream);
void run_flash_fwd_hdim64(const FlashAttnParams& p, cudaStream_t stream);
void run_flash_fwd_hdim64_window(const FlashAttnParams& p, cudaStream_t stream);
void run_flash_fwd_hdim128(const FlashAttnParams& p, cudaStream_t stream);

}  // namespace sutra::cuda::attn
