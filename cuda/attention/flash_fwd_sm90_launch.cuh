// Launch template of the sm_90a kernel (flash_fwd_sm90_kernel.cuh): the tile traits per head dim,
// the dtype/bias switch, the grid and the opt-in shared memory. The tensor maps come from the
// dispatch layer (flash_api.cu), which also decides whether this path runs at all.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/check.cuh"
#include "flash_fwd_sm90_kernel.cuh"
#include "sutra/kernels/attention.h"

namespace sutra::cuda::attn {

/// 128 query rows (two consumer warpgroups) and 128-key tiles; K/V stages: three at d=64
/// (112 KB), two at d=128 (160 KB: a third would not leave room for the relative-bias table).
/// SUTRA_ATTN_SM90_D64_CONSUMERS=3 builds a 192-row d=64 tile for comparison. ptxas allocates
/// the consumers within their setmaxnreg count (160 with 512 threads; at 152 it serializes the
/// wgmma, warning C7512), and at 160 the no-bias variants spill 44 bytes, in the masked-tile
/// branch only (CUDA 13.0 SASS: the interior-tile loop reloads one value per tile), the bias
/// variants 88-420 bytes. Not yet timed. The macro exists only to compare configurations in one
/// benchmark session.
/// SUTRA_ATTN_SM90_D64_FMA_EXP2_EVERY=N (2, 4, 8) moves the exponentials of every Nth score
/// column tile at d=64 onto the FMA pipe (Sm90Traits::kFmaExp2Every); not yet timed either.
#ifndef SUTRA_ATTN_SM90_D64_CONSUMERS
#define SUTRA_ATTN_SM90_D64_CONSUMERS 2
#endif
#ifndef SUTRA_ATTN_SM90_D64_FMA_EXP2_EVERY
#define SUTRA_ATTN_SM90_D64_FMA_EXP2_EVERY 0
#endif
template <int kHeadDim>
using Sm90DefaultTraits = Sm90Traits<kHeadDim, kHeadDim == 64 ? 3 : 2,
                                     kHeadDim == 64 ? SUTRA_ATTN_SM90_D64_CONSUMERS : 2,
                                     kHeadDim == 64 ? SUTRA_ATTN_SM90_D64_FMA_EXP2_EVERY : 0>;

template <typename Tr, typename T, bool kHasBias, bool kPacked>
void launch_flash_fwd_sm90(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                           cudaStream_t stream) {
  const int smem = Tr::kSmemBytes + (kHasBias ? Tr::kSmemLutBytes : 0);
  auto kernel = flash_fwd_sm90_kernel<Tr, T, kHasBias, kPacked>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
        "cudaFuncSetAttribute(flash_fwd_sm90_kernel)");
  const dim3 grid =
      kPacked ? dim3(static_cast<unsigned>((p.packed_tokens + Tr::kBlockM - 1) / Tr::kBlockM),
                     p.heads, 1)
              : dim3((p.max_seqlen + Tr::kBlockM - 1) / Tr::kBlockM, p.heads, p.batch);
  kernel<<<grid, Tr::kThreads, smem, stream>>>(p, maps);
  check_launch("flash_fwd_sm90_kernel", stream);
}

template <typename Tr>
void run_flash_fwd_sm90(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                        cudaStream_t stream) {
  const bool bias = p.bias != AttnBias::kNone;
  const bool packed = p.packed_tokens > 0;
  const auto by_layout = [&](auto dtype_tag) {
    using T = decltype(dtype_tag);
    if (packed) {
      bias ? launch_flash_fwd_sm90<Tr, T, true, true>(p, maps, stream)
           : launch_flash_fwd_sm90<Tr, T, false, true>(p, maps, stream);
    } else {
      bias ? launch_flash_fwd_sm90<Tr, T, true, false>(p, maps, stream)
           : launch_flash_fwd_sm90<Tr, T, false, false>(p, maps, stream);
    }
  };
  if (p.dtype == AttnDtype::kFloat16) {
    by_layout(__half{});
  } else {
    by_layout(__nv_bfloat16{});
  }
}

template <typename Tr>
FlashAttnKernelInfo flash_fwd_sm90_info(bool with_bias) {
  FlashAttnKernelInfo info;
  info.block_m = Tr::kBlockM;
  info.block_n = Tr::kBlockN;
  info.threads = Tr::kThreads;
  info.stages = Tr::kStages;
  info.smem_bytes = Tr::kSmemBytes + (with_bias ? Tr::kSmemLutBytes : 0);
  // [consumers - 2][stages - 2]
  constexpr const char* kPaths[2][2] = {
      {"sm90a wgmma m64n128k16 + TMA + mbarriers, producer + 2 consumer warpgroups (2 stages)",
       "sm90a wgmma m64n128k16 + TMA + mbarriers, producer + 2 consumer warpgroups (3 stages)"},
      {"sm90a wgmma m64n128k16 + TMA + mbarriers, producer + 3 consumer warpgroups (2 stages)",
       "sm90a wgmma m64n128k16 + TMA + mbarriers, producer + 3 consumer warpgroups (3 stages)"}};
  static_assert(Tr::kStages == 2 || Tr::kStages == 3, "name the pipeline depth in kPaths");
  static_assert(Tr::kConsumers == 2 || Tr::kConsumers == 3, "name the warpgroups in kPaths");
  info.path = kPaths[Tr::kConsumers - 2][Tr::kStages - 2];
  return info;
}

// Defined in attn_fwd_hdim{64,128}_sm90.cu: every variant of one head dim (both dtypes, bias or
// not, per-sequence or packed row tiles).
void run_flash_fwd_sm90_hdim64(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                               cudaStream_t stream);
void run_flash_fwd_sm90_hdim128(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                                cudaStream_t stream);

}  // namespace sutra::cuda::attn
