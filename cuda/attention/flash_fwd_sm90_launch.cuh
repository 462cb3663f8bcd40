// Launch template of the sm_90a kernel (flash_fwd_sm90_kernel.cuh): the tile traits per head dim,
// the dtype/bias switch, the grid and the opt-in shared memory. The tensor maps come from the
// dispatch layer (flash_api.cu), which also decides whether this path runs at all.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "common/check.cuh"
#include "flash_fwd_sm90_kernel.cuh"
#include "sutra/kernels/attention.h"

namespace sutra::cuda::attn {

/// K/V stages: three at d=64, two at d=128 (three would not leave room for O's buffer and the
/// relative-bias table). 128-key tiles; query rows: 64 per consumer warpgroup. At d=64 without a
/// bias three consumers (192 rows) run 1.16-1.21x two from L = 2048 on the H200
/// (bench/results/sm90_variants); ptxas allocates them within their setmaxnreg count, 160 (at
/// 152 it serializes the wgmma, warning C7512), where the biased variants spill 88-420 bytes and
/// lose 3-4% to two consumers, so those keep two, as d=128 does (240 registers).
/// Persistent blocks (kPersistent, on padded calls: sm90_grid_blocks), H200,
/// bench/results/attention_h200.md (session 15): at d=128 1.23x session 14's block-per-tile
/// kernel at L = 512, 1.05x at 2048, 1.0x from 8192 (other runs); at d=64 with three consumers
/// 1.26x this kernel's one-tile build at 512 and 1.01-1.04x from 2048 (same run). That build
/// runs 4-8% under session 14's one-tile kernel with three consumers at d=64 from L = 2048
/// (0.94 / 0.98 / 1.02x cuDNN at 2048 / 4096 / 8192), not yet understood.
/// SUTRA_ATTN_SM90_D64_CONSUMERS=2 and SUTRA_ATTN_SM90_D64_PERSISTENT=0 build the other d=64
/// choices for comparison (bench/sm90_variants.sh).
/// Prepared in session 15, not yet run on a GPU (bench/sm90_variants.sh `shared_base`,
/// `bias_rework`): SUTRA_ATTN_SM90_SHARED_BASE=1 keeps the shared-memory pointers in the shared
/// space (flash_fwd_sm90_kernel.cuh), so the relative-bias LUT reads are LDS instead of generic
/// loads with 64-bit address arithmetic and the 64-bit pointers stop costing registers: CUDA
/// 13.0 ptxas spills 32-40 bytes instead of 188-204 in the three-consumer kernels, none in the
/// biased ones, and a biased d=64 kernel shrinks from 7,168 to 6,384 instructions.
/// SUTRA_ATTN_ALIBI_FLOAT_DISTANCE=1 takes ALiBi's |j - i| without a per-element
/// int-to-float convert (flash_fwd_kernel.cuh's score_hook; I2FP 258 -> 4 in that kernel).
#ifndef SUTRA_ATTN_SM90_D64_CONSUMERS
#define SUTRA_ATTN_SM90_D64_CONSUMERS 3
#endif
#ifndef SUTRA_ATTN_SM90_D64_PERSISTENT
#define SUTRA_ATTN_SM90_D64_PERSISTENT 1
#endif
template <int kHeadDim, bool kHasBias>
using Sm90DefaultTraits =
    Sm90Traits<kHeadDim, kHeadDim == 64 ? 3 : 2,
               kHeadDim == 64 && !kHasBias ? SUTRA_ATTN_SM90_D64_CONSUMERS : 2,
               kHeadDim == 128 || SUTRA_ATTN_SM90_D64_PERSISTENT != 0>;

/// Blocks of the grid. Where every work tile costs the same (padded batches without a window:
/// the same key tiles for every block of rows) one block per SM (one fits, by registers) walks
/// the tiles, a static schedule that is balanced to one tile. Varlen, packed, causal and
/// windowed calls have tiles of unequal cost (and per-sequence blocks past a short sequence's
/// end), which a static stride can pile onto a few SMs (with m-blocks fastest, a grid that is a
/// multiple of the m-block count gives each block the same m-block every time): there each
/// block takes one tile and the hardware's block scheduler balances the work.
template <typename Tr>
int sm90_grid_blocks(const FlashAttnParams& p, int work_tiles, bool packed) {
  const bool uniform = !packed && p.cu_seqlens == nullptr && p.window_left < 0 &&
                       p.window_right < 0;
  if (!Tr::kPersistent || !uniform) return work_tiles;
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, p.device),
        "cudaDeviceGetAttribute(multiprocessors)");
  return work_tiles < sms ? work_tiles : sms;
}

template <typename Tr, typename T, bool kHasBias, bool kPacked>
void launch_flash_fwd_sm90(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                           cudaStream_t stream) {
  const int smem = Tr::kSmemBytes + (kHasBias ? Tr::kSmemLutBytes : 0);
  auto kernel = flash_fwd_sm90_kernel<Tr, T, kHasBias, kPacked>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
        "cudaFuncSetAttribute(flash_fwd_sm90_kernel)");
  const int blocks = sm90_grid_blocks<Tr>(p, sm90_work_tiles<Tr, kPacked>(p), kPacked);
  if (blocks == 0) return;
  kernel<<<blocks, Tr::kThreads, smem, stream>>>(p, maps);
  check_launch("flash_fwd_sm90_kernel", stream);
}

template <int kHeadDim>
void run_flash_fwd_sm90(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                        cudaStream_t stream) {
  const bool bias = p.bias != AttnBias::kNone;
  const bool packed = p.packed_tokens > 0;
  using Plain = Sm90DefaultTraits<kHeadDim, false>;
  using Biased = Sm90DefaultTraits<kHeadDim, true>;
  const auto by_layout = [&](auto dtype_tag) {
    using T = decltype(dtype_tag);
    if (packed) {
      bias ? launch_flash_fwd_sm90<Biased, T, true, true>(p, maps, stream)
           : launch_flash_fwd_sm90<Plain, T, false, true>(p, maps, stream);
    } else {
      bias ? launch_flash_fwd_sm90<Biased, T, true, false>(p, maps, stream)
           : launch_flash_fwd_sm90<Plain, T, false, false>(p, maps, stream);
    }
  };
  if (p.dtype == AttnDtype::kFloat16) {
    by_layout(__half{});
  } else {
    by_layout(__nv_bfloat16{});
  }
}

template <typename Tr>
FlashAttnKernelInfo sm90_info_of(bool with_bias) {
  FlashAttnKernelInfo info;
  info.block_m = Tr::kBlockM;
  info.block_n = Tr::kBlockN;
  info.threads = Tr::kThreads;
  info.stages = Tr::kStages;
  info.smem_bytes = Tr::kSmemBytes + (with_bias ? Tr::kSmemLutBytes : 0);
  // One string per traits, built once; FlashAttnKernelInfo holds a pointer to it.
  static const std::string path =
      "sm90a wgmma m64n128k16 + TMA + mbarriers, producer + " + std::to_string(Tr::kConsumers) +
      " consumer warpgroups (" + std::to_string(Tr::kStages) + " stages)" +
      (Tr::kPersistent ? ", a block per SM on padded calls" : "");
  info.path = path.c_str();
  return info;
}

/// The tile a call with this head dim (64, 128) and bias runs on the sm90 path.
inline FlashAttnKernelInfo flash_fwd_sm90_info(int head_dim, bool with_bias) {
  if (head_dim == 64) {
    return with_bias ? sm90_info_of<Sm90DefaultTraits<64, true>>(true)
                     : sm90_info_of<Sm90DefaultTraits<64, false>>(false);
  }
  return with_bias ? sm90_info_of<Sm90DefaultTraits<128, true>>(true)
                   : sm90_info_of<Sm90DefaultTraits<128, false>>(false);
}

// Defined in attn_fwd_hdim{64,128}_sm90.cu: every variant of one head dim (both dtypes, bias or
// not, per-sequence or packed row tiles).
void run_flash_fwd_sm90_hdim64(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                               cudaStream_t stream);
void run_flash_fwd_sm90_hdim128(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                                cudaStream_t stream);

}  // namespace sutra::cuda::attn
