// Flash attention forward for sm_80+: mma.sync m16n8k16 (fp16/bf16 in, fp32 accumulate),
// ldmatrix fragments, a kStages-deep cp.async ring of K/V tiles with one barrier per tile, exact
// online softmax in base 2 with a lazily rescaled output (see FwdTraits::kLazyRescale).
//
// One block computes kBlockM query rows of one (sequence, head); each warp owns kBlockM / kNWarps
// rows and walks the key tiles [n_block_lo, n_block_hi) that its window can see. With
// packed_tokens (varlen), a block's rows are instead kBlockM consecutive tokens of the packed
// stream, of as many sequences as they hold: the keys are those of the sequences the rows belong
// to, and each row is masked to its own sequence (bounds per token, packed_bounds). Sentences of
// ~10 tokens otherwise leave 92% of a 128-row tile empty. kPacked is a template flag: the
// per-sequence kernel compiles as it did without it. Tiles wholly
// outside the window are never loaded; only tiles that straddle a window edge or the sequence end
// pay for the per-element mask. Bias variants (ALiBi, relative buckets) are the kHasBias flag plus
// a uniform runtime switch inside the score hook.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "sutra/kernels/attention.h"

// Stage O through shared memory for 16-byte stores (1) or store the fragments directly (0); the
// switch exists to compare the two in one benchmark session.
#ifndef SUTRA_ATTN_SMEM_EPILOGUE
#define SUTRA_ATTN_SMEM_EPILOGUE 1
#endif

namespace sutra::cuda::attn {

template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_, bool kQInRegs_,
          int kStages_ = 2, bool kLazyRescale_ = false>
struct FwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  // Q fragments loaded once into registers instead of re-read from smem for every key tile.
  static constexpr bool kQInRegs = kQInRegs_;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int kWarpRows = kBlockM / kNWarps;
  static constexpr int kMT = kWarpRows / 16;  // m16 tiles per warp
  static constexpr int kNT = kBlockN / 8;     // n8 tiles of S = Q K^T per warp
  static constexpr int kDT = kHeadDim / 8;    // n8 tiles of O per warp
  static constexpr int kKD = kHeadDim / 16;   // k16 steps of Q K^T
  static constexpr int kKN = kBlockN / 16;    // k16 steps of P V
  // One 16-byte pad per smem row: 8 consecutive rows read by ldmatrix land in 8 distinct
  // 16-byte bank groups, so neither ldmatrix nor the cp.async stores conflict.
  static constexpr int kPad = 8;
  static constexpr int kRowStride = kHeadDim + kPad;  // elements
  // K/V tiles in flight: tile nb + kStages - 1 is requested while tile nb is computed.
  static constexpr int kStages = kStages_;
  // Lazy rescale: exponentiate against the stale running row max and skip the max reduction and
  // the O rescale; fall back to the exact path (new max, rescale, exp) only on a row's first
  // visible tile or when some thread's partial row sum of P exceeds kMaxPartialSum, which bounds
  // every P by 2^14 (finite in fp16, exact in the fp32 sums). O / sum and lse do not depend on the
  // max used, so the result is the same function. In the d=128 kernel the max, its shuffles and
  // the O rescale were ~220 of ~600 SASS instructions per key tile and warp; the lazy path runs
  // ~400, of which 128 are the mma.sync.
  static constexpr bool kLazyRescale = kLazyRescale_;
  static constexpr float kMaxPartialSum = 16384.0f;
  static constexpr int kSmemQ = kBlockM * kRowStride;
  static constexpr int kSmemKV = kBlockN * kRowStride;
  static constexpr int kSmemBytes = (kSmemQ + 2 * kStages * kSmemKV) * 2;
  static constexpr int kSmemLutBytes = (2 * kAttnMaxRelDistance + 1) * 4;

  static_assert(kStages >= 2, "tile nb resident while tile nb + 1 lands");
  static_assert(kHeadDim % 16 == 0 && kDT % 2 == 0, "head dim: whole k16 steps, pairs of n8 tiles");
  static_assert(kBlockN % 16 == 0 && kNT % 2 == 0, "key tile: whole k16 steps, pairs of n8 tiles");
  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole m16 tiles");
  static_assert((kRowStride * 2) % 16 == 0, "smem rows stay 16-byte aligned for cp.async/ldmatrix");
  static_assert(kSmemBytes + kSmemLutBytes <= 227 * 1024, "fits the opt-in shared memory of sm_90");
};

// ---------------------------------------------------------------------------------------------
// PTX wrappers

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  // src-size 0 writes 16 zero bytes: rows past the sequence end read as zeros, never as garbage.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
               "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

template <typename T>
struct Mma;
template <>
struct Mma<__half> {
  __device__ __forceinline__ static void run(float c[4], const uint32_t a[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <>
struct Mma<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float c[4], const uint32_t a[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// ---------------------------------------------------------------------------------------------

/// Copies rows [row0, row0 + kRows) of one head (row stride `stride` elements) into smem with
/// padded rows; rows at or past `rows_valid` become zeros. Each thread owns one 16-byte column
/// chunk and every kThreads / kChunks-th row, so its addresses are one base plus multiples of a
/// single row step: nothing per copy has to stay live across the main loop (precomputed
/// per-copy 64-bit addresses were what pushed the 128x64 tile of d=128 into spills).
template <typename Tr, int kRows, typename T>
__device__ __forceinline__ void load_tile(T* smem, const T* gmem, int64_t stride, int row0,
                                          int rows_valid, int tid) {
  constexpr int kChunks = Tr::kHeadDim / 8;  // 16-byte chunks per row
  static_assert(Tr::kThreads % kChunks == 0, "whole rows per pass");
  constexpr int kRowsPerPass = Tr::kThreads / kChunks;
  static_assert(kRows % kRowsPerPass == 0, "every thread copies the same count");
  const int r0 = tid / kChunks;
  const int c = tid % kChunks;
  const T* src = gmem + static_cast<int64_t>(row0 + r0) * stride + c * 8;
  T* dst = smem + r0 * Tr::kRowStride + c * 8;
  if (row0 + kRows <= rows_valid) {  // uniform: interior tiles skip the per-row checks
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerPass; ++i) {
      cp_async_16(dst + i * kRowsPerPass * Tr::kRowStride, src + i * kRowsPerPass * stride, true);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerPass; ++i) {
      const bool valid = row0 + r0 + i * kRowsPerPass < rows_valid;
      cp_async_16(dst + i * kRowsPerPass * Tr::kRowStride,
                  valid ? src + i * kRowsPerPass * stride : gmem, valid);
    }
  }
}

// exp2 on the SFU with denormals flushed: the plain exp2f adds range fix-ups around ex2.approx.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/// The token range [lo, hi) of the sequence of each of a thread's query rows (packed tiles):
/// row (mt, h) is row_base + mt * 16 + h * 8. Registers, loaded once per block.
template <typename Tr>
struct RowBounds {
  int lo[Tr::kMT][2];
  int hi[Tr::kMT][2];
};

/// Adds the bias (kHasBias: scores become log2 units) and masks keys outside the window or past
/// the sequence end with -inf (kMask). Element r of n8 tile nt of m16 tile mt sits at query row
/// row_base + mt * 16 + (r / 2) * 8 and key col_base + nt * 8 + (r % 2). Packed rows (kPacked)
/// see only the keys of their own sequence, `rows`.
#ifndef SUTRA_ATTN_ALIBI_FLOAT_DISTANCE
#define SUTRA_ATTN_ALIBI_FLOAT_DISTANCE 0  // see flash_fwd_sm90_launch.cuh; not yet run
#endif
template <typename Tr, bool kHasBias, bool kMask, bool kPacked>
__device__ __forceinline__ void score_hook(float (&s)[Tr::kMT][Tr::kNT][4],
                                           const FlashAttnParams& p, int row_base, int col_base,
                                           int seqlen, float scale_log2, float slope_log2,
                                           const float* sLut, const RowBounds<Tr>& rows) {
  // j - i of this thread's first element as a float; every other element adds a compile-time
  // offset, exact in float32 (|j - i| < 2^24), so ALiBi needs no int-to-float convert each.
  [[maybe_unused]] const float rel0 = static_cast<float>(col_base - row_base);
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < Tr::kNT; ++nt) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float x = s[mt][nt][r];
        const int row = row_base + mt * 16 + (r / 2) * 8;
        const int col = col_base + nt * 8 + (r % 2);
        const int rel = col - row;
        if constexpr (kHasBias) {
          x *= scale_log2;
          if (p.bias == AttnBias::kAlibi) {
#if SUTRA_ATTN_ALIBI_FLOAT_DISTANCE
            const float relf = rel0 + static_cast<float>(nt * 8 + (r % 2) - mt * 16 - (r / 2) * 8);
            x = fmaf(-slope_log2, fabsf(relf), x);
#else
            x -= slope_log2 * static_cast<float>(abs(rel));
#endif
          } else {
            const int d = min(max(rel, -p.rel_max_distance), p.rel_max_distance);
            x += sLut[d + p.rel_max_distance];
          }
        }
        if constexpr (kMask) {
          const bool outside = kPacked
                                   ? col < rows.lo[mt][r / 2] || col >= rows.hi[mt][r / 2]
                                   : col >= seqlen;
          if (outside || (p.window_left >= 0 && rel < -p.window_left) ||
              (p.window_right >= 0 && rel > p.window_right)) {
            x = -INFINITY;
          }
        }
        s[mt][nt][r] = x;
      }
    }
  }
}

/// score_hook for key tile nb of the row block starting at m_start (this thread's first row
/// `row_base`, column pair `tq`). The uniform branch keeps the per-element mask (and its index
/// arithmetic) out of the interior tiles, the vast majority at long lengths.
template <typename Tr, bool kHasBias, bool kPacked>
__device__ __forceinline__ void tile_score_hook(float (&s)[Tr::kMT][Tr::kNT][4],
                                                const FlashAttnParams& p, int nb, int m_start,
                                                int row_base, int tq, int seqlen, float scale_log2,
                                                float slope_log2, const float* sLut,
                                                const RowBounds<Tr>& rows) {
  const int n_start = nb * Tr::kBlockN;
  const bool need_mask =
      kPacked || n_start + Tr::kBlockN > seqlen ||
      (p.window_left >= 0 && n_start - (m_start + Tr::kBlockM - 1) < -p.window_left) ||
      (p.window_right >= 0 && n_start + Tr::kBlockN - 1 - m_start > p.window_right);
  const int col_base = n_start + tq * 2;
  if (need_mask) {
    score_hook<Tr, kHasBias, true, kPacked>(s, p, row_base, col_base, seqlen, scale_log2,
                                            slope_log2, sLut, rows);
  } else if constexpr (kHasBias) {
    score_hook<Tr, kHasBias, false, kPacked>(s, p, row_base, col_base, seqlen, scale_log2,
                                             slope_log2, sLut, rows);
  }
}

/// S = Q K^T for one warp's rows and one key tile (K at sKs, Q from registers or smem).
template <typename Tr, typename T>
__device__ __forceinline__ void qk_tile(float (&s)[Tr::kMT][Tr::kNT][4], const T* sQ,
                                        const uint32_t (&q_frag)[Tr::kQInRegs ? Tr::kMT : 1]
                                                                [Tr::kQInRegs ? Tr::kKD : 1][4],
                                        const T* sKs, int warp_row0, int lane) {
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < Tr::kNT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) s[mt][nt][r] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < Tr::kKD; ++kk) {
    uint32_t a[Tr::kMT][4];
    if constexpr (!Tr::kQInRegs) {
#pragma unroll
      for (int mt = 0; mt < Tr::kMT; ++mt) {
        ldmatrix_x4(a[mt], sQ + (warp_row0 + mt * 16 + lane % 16) * Tr::kRowStride + kk * 16 +
                               (lane / 16) * 8);
      }
    } else {
#pragma unroll
      for (int mt = 0; mt < Tr::kMT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) a[mt][r] = q_frag[mt][kk][r];
    }
#pragma unroll
    for (int nt = 0; nt < Tr::kNT; nt += 2) {
      uint32_t bk[4];
      ldmatrix_x4(bk, sKs + (nt * 8 + lane % 8 + (lane / 16) * 8) * Tr::kRowStride + kk * 16 +
                          ((lane / 8) % 2) * 8);
#pragma unroll
      for (int mt = 0; mt < Tr::kMT; ++mt) {
        Mma<T>::run(s[mt][nt], a[mt], bk[0], bk[1]);
        Mma<T>::run(s[mt][nt + 1], a[mt], bk[2], bk[3]);
      }
    }
  }
}

/// P = exp2(s * sm_scale - m_scaled) in place for half `h` (rows r and r + 8) of m16 tile `mt`;
/// returns this thread's partial row sum of P.
template <typename Tr>
__device__ __forceinline__ float exp_row_half(float (&s)[Tr::kMT][Tr::kNT][4], int mt, int h,
                                              float sm_scale, float m_scaled) {
  float sum = 0.0f;
#pragma unroll
  for (int nt = 0; nt < Tr::kNT; ++nt) {
    s[mt][nt][2 * h] = fast_exp2(fmaf(s[mt][nt][2 * h], sm_scale, -m_scaled));
    s[mt][nt][2 * h + 1] = fast_exp2(fmaf(s[mt][nt][2 * h + 1], sm_scale, -m_scaled));
    sum += s[mt][nt][2 * h] + s[mt][nt][2 * h + 1];
  }
  return sum;
}

/// Online softmax of one tile: s -> exp2(s * sm_scale - max) in place, running sums, and the output
/// rescaled by exp2(old_max - new_max) when the max is renewed. `recompute(s)` refills the raw
/// (hooked) scores when the lazy path has to fall back after overwriting them.
template <typename Tr, typename Recompute>
__device__ __forceinline__ void softmax_tile(float (&s)[Tr::kMT][Tr::kNT][4],
                                             float (&acc_o)[Tr::kMT][Tr::kDT][4],
                                             float (&row_max)[Tr::kMT][2],
                                             float (&row_sum)[Tr::kMT][2], float sm_scale,
                                             Recompute&& recompute) {
  if constexpr (Tr::kLazyRescale) {
    bool exact = false;
#pragma unroll
    for (int mt = 0; mt < Tr::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) exact |= row_max[mt][h] == -INFINITY;
    if (!__any_sync(0xffffffffu, exact)) {
      float sums[Tr::kMT][2];
      bool big = false;
#pragma unroll
      for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float sum = exp_row_half<Tr>(s, mt, h, sm_scale, row_max[mt][h] * sm_scale);
          sums[mt][h] = sum;
          big |= !(sum <= Tr::kMaxPartialSum);  // also NaN
        }
      }
      if (!__any_sync(0xffffffffu, big)) {
#pragma unroll
        for (int mt = 0; mt < Tr::kMT; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) row_sum[mt][h] += sums[mt][h];
        return;
      }
      recompute(s);  // rare: the scores were overwritten by P
    }
  }
  float tile_max[Tr::kMT][2];
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = row_max[mt][h];
#pragma unroll
      for (int nt = 0; nt < Tr::kNT; ++nt) {
        mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
      }
      tile_max[mt][h] = quad_max(mx);
    }
  }
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float mx = tile_max[mt][h];
      // A row that has seen only masked keys keeps max -inf; subtract 0 so exp2 gives 0, not NaN.
      const float m_use = mx == -INFINITY ? 0.0f : mx * sm_scale;
      const float alpha = fast_exp2(row_max[mt][h] * sm_scale - m_use);
      row_max[mt][h] = mx;
      row_sum[mt][h] *= alpha;
#pragma unroll
      for (int dt = 0; dt < Tr::kDT; ++dt) {
        acc_o[mt][dt][2 * h] *= alpha;
        acc_o[mt][dt][2 * h + 1] *= alpha;
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m_use = row_max[mt][h] == -INFINITY ? 0.0f : row_max[mt][h] * sm_scale;
      // per-thread partial, reduced at the end
      row_sum[mt][h] += exp_row_half<Tr>(s, mt, h, sm_scale, m_use);
    }
  }
}

/// O += P V, P straight from the S accumulators (the C layout of two n8 tiles is the A layout of
/// one k16 step).
template <typename Tr, typename T>
__device__ __forceinline__ void pv_tile(float (&acc_o)[Tr::kMT][Tr::kDT][4],
                                        const float (&s)[Tr::kMT][Tr::kNT][4], const T* sVs,
                                        int lane) {
#pragma unroll
  for (int kk = 0; kk < Tr::kKN; ++kk) {
    uint32_t a[Tr::kMT][4];
#pragma unroll
    for (int mt = 0; mt < Tr::kMT; ++mt) {
      a[mt][0] = Mma<T>::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
      a[mt][1] = Mma<T>::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
      a[mt][2] = Mma<T>::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
      a[mt][3] = Mma<T>::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dt = 0; dt < Tr::kDT; dt += 2) {
      uint32_t bv[4];
      ldmatrix_x4_trans(bv, sVs + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kRowStride +
                                dt * 8 + (lane / 16) * 8);
#pragma unroll
      for (int mt = 0; mt < Tr::kMT; ++mt) {
        Mma<T>::run(acc_o[mt][dt], a[mt], bv[0], bv[1]);
        Mma<T>::run(acc_o[mt][dt + 1], a[mt], bv[2], bv[3]);
      }
    }
  }
}

template <typename Tr, typename T, bool kHasBias, bool kPacked>
__global__ void __launch_bounds__(Tr::kThreads)
    flash_fwd_kernel(const __grid_constant__ FlashAttnParams p) {
  constexpr float kLog2e = 1.4426950408889634f;
  const int m_block = blockIdx.x;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;

  constexpr bool packed = kPacked;  // rows are tokens of the packed stream
  int64_t tok0 = 0;                  // first token of the sequence (varlen)
  int seqlen = p.max_seqlen;
  if constexpr (packed) {
    seqlen = p.cu_seqlens[p.batch];  // the stream is one row space; b is 0
  } else if (p.cu_seqlens != nullptr) {
    tok0 = p.cu_seqlens[b];
    seqlen = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
  }
  const int m_start = m_block * Tr::kBlockM;
  if (m_start >= seqlen) return;

  const T* q = static_cast<const T*>(p.q) + head * p.q_head_stride +
               (p.cu_seqlens ? tok0 * p.q_row_stride : b * p.q_batch_stride);
  const T* k = static_cast<const T*>(p.k) + head * p.k_head_stride +
               (p.cu_seqlens ? tok0 * p.k_row_stride : b * p.k_batch_stride);
  const T* v = static_cast<const T*>(p.v) + head * p.v_head_stride +
               (p.cu_seqlens ? tok0 * p.v_row_stride : b * p.v_batch_stride);
  T* o = static_cast<T*>(p.o) + head * p.o_head_stride +
         (p.cu_seqlens ? tok0 * p.o_row_stride : b * p.o_batch_stride);

  // Key range this row block can see; tiles outside it are skipped entirely.
  const int m_last = min(m_start + Tr::kBlockM, seqlen) - 1;
  int n_lo = 0, n_hi = seqlen;
  if constexpr (packed) {  // from the first row's sequence start to the last row's end
    n_lo = p.packed_bounds[m_start];
    n_hi = p.packed_bounds[p.packed_tokens + m_last];
  }
  if (p.window_left >= 0) n_lo = max(n_lo, m_start - p.window_left);
  if (p.window_right >= 0) n_hi = min(seqlen, m_last + p.window_right + 1);
  const int nb_lo = n_lo / Tr::kBlockN;
  const int nb_hi = n_hi > n_lo ? (n_hi + Tr::kBlockN - 1) / Tr::kBlockN : nb_lo;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Tr::kSmemQ;                   // [kStages][kBlockN][kRowStride]
  T* sV = sK + Tr::kStages * Tr::kSmemKV;    // [kStages][kBlockN][kRowStride]
  float* sLut = reinterpret_cast<float*>(smem_raw + Tr::kSmemBytes);  // kHasBias only

  // Prologue: Q with key tile nb_lo in group 0, then tiles nb_lo + 1 .. nb_lo + kStages - 2 one
  // group each (empty groups past the end keep the count uniform for cp.async.wait_group).
  load_tile<Tr, Tr::kBlockM>(sQ, q, p.q_row_stride, m_start, seqlen, tid);
#pragma unroll
  for (int s = 0; s < Tr::kStages - 1; ++s) {
    if (nb_lo + s < nb_hi) {
      load_tile<Tr, Tr::kBlockN>(sK + s * Tr::kSmemKV, k, p.k_row_stride,
                                 (nb_lo + s) * Tr::kBlockN, seqlen, tid);
      load_tile<Tr, Tr::kBlockN>(sV + s * Tr::kSmemKV, v, p.v_row_stride,
                                 (nb_lo + s) * Tr::kBlockN, seqlen, tid);
    }
    cp_async_commit();
  }


  float slope_log2 = 0.0f;
  if constexpr (kHasBias) {
    if (p.bias == AttnBias::kAlibi) {
      slope_log2 = p.alibi_slopes[head] * kLog2e;
    } else {
      const int n_lut = 2 * p.rel_max_distance + 1;
      for (int i = tid; i < n_lut; i += Tr::kThreads) {
        sLut[i] = p.rel_bias[head * p.rel_num_buckets + p.rel_bucket[i]] * kLog2e;
      }
      // made visible by the __syncthreads() at the top of the first tile
    }
  }

  const float scale_log2 = p.softmax_scale * kLog2e;
  // Multiplier from the row-max domain to log2 units: the bias hook already scaled the scores.
  const float sm_scale = kHasBias ? 1.0f : scale_log2;
  const int g = lane / 4;   // row inside an m16 tile (and +8)
  const int tq = lane % 4;  // column pair inside an n8 tile
  const int warp_row0 = warp * Tr::kWarpRows;

  RowBounds<Tr> rows{};  // kPacked only; its loads overlap the prologue's copies
  if constexpr (packed) {
#pragma unroll
    for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m_start + warp_row0 + mt * 16 + g + h * 8;
        const bool valid = row < seqlen;  // rows past the stream see nothing (and are not stored)
        rows.lo[mt][h] = valid ? p.packed_bounds[row] : 0;
        rows.hi[mt][h] = valid ? p.packed_bounds[p.packed_tokens + row] : 0;
      }
    }
  }

  uint32_t q_frag[Tr::kQInRegs ? Tr::kMT : 1][Tr::kQInRegs ? Tr::kKD : 1][4];
  float acc_o[Tr::kMT][Tr::kDT][4];
  float row_max[Tr::kMT][2];
  float row_sum[Tr::kMT][2];
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < Tr::kDT; ++dt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc_o[mt][dt][r] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }

  // Bias and mask of the scores of key tile nb.
  const auto hook = [&](float (&s)[Tr::kMT][Tr::kNT][4], int nb) {
    tile_score_hook<Tr, kHasBias, kPacked>(s, p, nb, m_start, m_start + warp_row0 + g, tq, seqlen,
                                           scale_log2, slope_log2, sLut, rows);
  };
  const auto load_q_frags = [&]() {
    if constexpr (Tr::kQInRegs) {
#pragma unroll
      for (int mt = 0; mt < Tr::kMT; ++mt)
#pragma unroll
        for (int kk = 0; kk < Tr::kKD; ++kk)
          ldmatrix_x4(q_frag[mt][kk], sQ + (warp_row0 + mt * 16 + lane % 16) * Tr::kRowStride +
                                          kk * 16 + (lane / 16) * 8);
    }
  };
  const auto prefetch = [&](int nb, int fill_stage) {  // tile nb into stage fill_stage, if any
    if (nb < nb_hi) {
      const int n_row = nb * Tr::kBlockN;
      load_tile<Tr, Tr::kBlockN>(sK + fill_stage * Tr::kSmemKV, k, p.k_row_stride, n_row, seqlen,
                                 tid);
      load_tile<Tr, Tr::kBlockN>(sV + fill_stage * Tr::kSmemKV, v, p.v_row_stride, n_row, seqlen,
                                 tid);
    }
    cp_async_commit();  // empty past the end: keeps one group per iteration
  };

  int stage = 0;                     // stage holding tile nb
  int fill_stage = Tr::kStages - 1;  // stage that receives tile nb + kStages - 1
  for (int nb = nb_lo; nb < nb_hi; ++nb) {
    cp_async_wait<Tr::kStages - 2>();  // this thread's copies of tile nb have landed
    // One barrier per tile: it publishes every thread's copies of tile nb and also proves that
    // all warps are done with tile nb - 1, whose stage the prefetch below overwrites.
    __syncthreads();
    prefetch(nb + Tr::kStages - 1, fill_stage);
    if (nb == nb_lo) load_q_frags();
    float s[Tr::kMT][Tr::kNT][4];
    qk_tile<Tr>(s, sQ, q_frag, sK + stage * Tr::kSmemKV, warp_row0, lane);
    hook(s, nb);
    softmax_tile<Tr>(s, acc_o, row_max, row_sum, sm_scale,
                     [&](float (&s2)[Tr::kMT][Tr::kNT][4]) {
                       qk_tile<Tr>(s2, sQ, q_frag, sK + stage * Tr::kSmemKV, warp_row0, lane);
                       hook(s2, nb);
                     });
    pv_tile<Tr>(acc_o, s, sV + stage * Tr::kSmemKV, lane);
    stage = stage + 1 == Tr::kStages ? 0 : stage + 1;
    fill_stage = fill_stage + 1 == Tr::kStages ? 0 : fill_stage + 1;
  }
  cp_async_wait<0>();  // no copy may still target smem when the block exits (empty key range)

  // Epilogue: normalize; lse = ln(sum) + max (natural log).
  float inv_sum[Tr::kMT][2];
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sum = quad_sum(row_sum[mt][h]);
      inv_sum[mt][h] = sum > 0.0f ? 1.0f / sum : 0.0f;
      const int row = m_start + warp_row0 + mt * 16 + g + h * 8;
      if (p.lse != nullptr && tq == 0 && row < seqlen) {
        const float lse = sum > 0.0f ? (row_max[mt][h] * sm_scale + log2f(sum)) * 0.6931471805599453f
                                     : -INFINITY;
        p.lse[(p.cu_seqlens ? tok0 : b * p.lse_batch_stride) + head * p.lse_head_stride + row] = lse;
      }
    }
  }
#if SUTRA_ATTN_SMEM_EPILOGUE
  // O goes out through this warp's own rows of sQ, then as 16-byte row chunks: the fragment
  // layout would otherwise store 4 bytes per thread, 8 rows per instruction. Every warp reads
  // only its own Q rows, but the Q tile was copied in by all threads: the barrier makes sure no
  // copy into sQ is still landing when the key range was empty (no barrier ran in the loop).
  __syncthreads();
  T* sO = sQ + warp_row0 * Tr::kRowStride;
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int dt = 0; dt < Tr::kDT; ++dt)
        *reinterpret_cast<uint32_t*>(sO + (mt * 16 + g + h * 8) * Tr::kRowStride + dt * 8 +
                                     tq * 2) =
            Mma<T>::pack(acc_o[mt][dt][2 * h] * inv_sum[mt][h],
                         acc_o[mt][dt][2 * h + 1] * inv_sum[mt][h]);
  __syncwarp();
  constexpr int kChunks = Tr::kHeadDim / 8;   // 16-byte chunks per row
  constexpr int kRowsPerPass = 32 / kChunks;  // rows one warp instruction stores
  static_assert(32 % kChunks == 0 && Tr::kWarpRows % kRowsPerPass == 0, "whole rows per pass");
  const int c = lane % kChunks;
#pragma unroll
  for (int i = 0; i < Tr::kWarpRows / kRowsPerPass; ++i) {
    const int r = lane / kChunks + i * kRowsPerPass;
    const int row = m_start + warp_row0 + r;
    if (row < seqlen) {
      *reinterpret_cast<uint4*>(o + static_cast<int64_t>(row) * p.o_row_stride + c * 8) =
          *reinterpret_cast<const uint4*>(sO + r * Tr::kRowStride + c * 8);
    }
  }
#else
#pragma unroll
  for (int mt = 0; mt < Tr::kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m_start + warp_row0 + mt * 16 + g + h * 8;
      if (row < seqlen) {
        T* orow = o + static_cast<int64_t>(row) * p.o_row_stride;
#pragma unroll
        for (int dt = 0; dt < Tr::kDT; ++dt) {
          *reinterpret_cast<uint32_t*>(orow + dt * 8 + tq * 2) =
              Mma<T>::pack(acc_o[mt][dt][2 * h] * inv_sum[mt][h],
                           acc_o[mt][dt][2 * h + 1] * inv_sum[mt][h]);
        }
      }
    }
  }
#endif
}

}  // namespace sutra::cuda::attn
