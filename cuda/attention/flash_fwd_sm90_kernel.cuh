// Flash attention forward for sm_90a (Hopper): warpgroup MMA from shared memory (wgmma), bulk
// tensor copies (TMA) completing on mbarriers, and warp specialization. A block walks work tiles
// blockIdx.x, + gridDim.x, ... (one block per SM where the tiles cost the same, else one tile
// per block: sm90_grid_blocks) of kBlockM = 64 x kConsumers query rows of one (sequence, head),
// or of the packed token stream (kPacked, as the sm80 kernel), m-block fastest so that blocks
// running side by side share a head's K and V in L2. Warpgroup 0
// is the producer (one thread issues every copy: per tile Q, then its K and V tiles into a
// kStages ring that runs on across tiles), the others are consumers of 64 rows each. Per key tile
// a consumer runs S = Q K^T (wgmma, both operands in shared memory), the score hook and mask
// shared with the sm80 kernel (flash_fwd_kernel.cuh: the accumulator layout per warp is
// mma.sync's), an online softmax, then O += P V with P straight from registers. Setmaxnreg
// moves registers from the producer (24) to the consumers. The consumer loop is
// software-pipelined: the tensor cores run S(i) = Q K(i)^T and O += P(i-1) V(i-1) back to back
// while the softmax of tile i overlaps the second. A block that walks several tiles hides most
// of the fixed cost a block per tile pays in full: the next tile's Q (released once the last S
// is done) and first K and V land while the consumers normalize and store O, which goes out
// through its own buffer.
//
// Softmax: the running row max is renewed only when a tile's max exceeds it by more than
// kRescaleLog2 (log2 units), so most tiles skip the O rescale; every P stays <= 2^kRescaleLog2
// (finite in fp16 and bf16) and O / sum and lse do not depend on the max used. Unlike the sm80
// kernel's lazy path this never recomputes scores (a per-warp recompute would break wgmma's
// warpgroup-wide convergence).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "flash_fwd_kernel.cuh"
#include "hopper.cuh"
#include "sutra/kernels/attention.h"

#ifndef SUTRA_ATTN_SM90_SHARED_BASE
#define SUTRA_ATTN_SM90_SHARED_BASE 0  // see flash_fwd_sm90_launch.cuh; not yet run
#endif

namespace sutra::cuda::attn {

/// The bulk-copy descriptors of q, k and v: 4-D tensors (head_dim, heads, rows, batch), boxes of
/// 64 x 1 x rows x 1 with the 128-byte swizzle (made by make_sm90_tensor_maps in flash_api.cu).
struct Sm90TensorMaps {
  CUtensorMap q;
  CUtensorMap k;
  CUtensorMap v;
};

template <int kHeadDim_, int kStages_ = 2, int kConsumers_ = 2, bool kPersistent_ = false>
struct Sm90Traits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kConsumers = kConsumers_;  // warpgroups of 64 rows
  // A block may walk several work tiles (sm90_grid_blocks); false compiles the one-tile kernel.
  static constexpr bool kPersistent = kPersistent_;
  static constexpr int kBlockM = 64 * kConsumers;
  static constexpr int kBlockN = 128;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  // setmaxnreg: the producer keeps 24 registers, the consumers share the rest of the 64K.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = kConsumers == 2 ? 240 : 160;
  static_assert(128 * (kProducerRegs + kConsumers * kConsumerRegs) <= 65536, "one block per SM");
  static constexpr int kStages = kStages_;
  static constexpr int kHalves = kHeadDim / 64;  // 128-byte swizzle atoms across a row
  // The fragment shape score_hook / RowBounds index: one m16 tile per warp.
  static constexpr int kMT = 1;
  static constexpr int kNT = kBlockN / 8;
  static constexpr int kDT = kHeadDim / 8;
  static constexpr int kKD = kHeadDim / 16;  // k16 steps of Q K^T
  static constexpr int kKN = kBlockN / 16;   // k16 steps of P V
  static constexpr float kRescaleLog2 = 8.0f;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  // O's staging: apart from Q when the next tile's Q lands during the epilogue, else (a block
  // per tile) each warpgroup's own rows of Q, read for the last time by then.
  static constexpr int kOBytes = kPersistent ? kQBytes : 0;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;
  static constexpr int kBarriers = 2 + 4 * kStages;  // full/empty Q, full/empty K and V per stage
  static constexpr int kSmemBytes = 1024 /* alignment slack */ + kQBytes + kOBytes +
                                    2 * kStages * kKVBytes + 8 * kBarriers;
  static constexpr int kSmemLutBytes = (2 * kAttnMaxRelDistance + 1) * 4;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "whole 128-byte swizzle atoms per row");
  static_assert(kSmemBytes + kSmemLutBytes <= 227 * 1024, "fits the opt-in shared memory of sm_90");
};

/// The work tiles of a call: per-sequence blocks (m-block, head, sequence) or packed row tiles
/// (m-block, head).
template <typename Tr, bool kPacked>
__host__ __device__ inline int sm90_m_blocks(const FlashAttnParams& p) {
  const int rows = kPacked ? static_cast<int>(p.packed_tokens) : p.max_seqlen;
  return (rows + Tr::kBlockM - 1) / Tr::kBlockM;
}
template <typename Tr, bool kPacked>
__host__ __device__ inline int sm90_work_tiles(const FlashAttnParams& p) {
  return sm90_m_blocks<Tr, kPacked>(p) * p.heads * (kPacked ? 1 : p.batch);
}

/// Work tile t: its rows, the key tiles they see and where both lie in q, k, v's tensor maps.
/// Producer and consumers decode the same tiles, so their barrier phases stay in step.
struct Sm90Tile {
  int head, b;
  int tok0;     // first token of the sequence (varlen)
  int seqlen;   // rows of the sequence (packed: of the whole stream)
  int m_start;  // first query row
  int nb_lo, nb_hi;  // key tiles [nb_lo, nb_hi)
  int row0, batch_coord;  // tensor-map coordinates of row 0 and of the batch
  bool empty;   // a per-sequence block past its sequence's end: no rows, no copies
};

template <typename Tr, bool kPacked>
__device__ __forceinline__ Sm90Tile sm90_tile(const FlashAttnParams& p, int t, int m_blocks) {
  Sm90Tile w;
  const int m_block = t % m_blocks;
  const int rest = t / m_blocks;
  w.head = rest % p.heads;
  w.b = rest / p.heads;
  w.tok0 = 0;
  w.seqlen = p.max_seqlen;
  if constexpr (kPacked) {
    w.seqlen = p.cu_seqlens[p.batch];
  } else if (p.cu_seqlens != nullptr) {
    w.tok0 = p.cu_seqlens[w.b];
    w.seqlen = p.cu_seqlens[w.b + 1] - w.tok0;
  }
  w.m_start = m_block * Tr::kBlockM;
  w.empty = w.m_start >= w.seqlen;
  const int m_last = min(w.m_start + Tr::kBlockM, w.seqlen) - 1;
  int n_lo = 0, n_hi = w.seqlen;
  if constexpr (kPacked) {
    if (!w.empty) {
      n_lo = p.packed_bounds[w.m_start];
      n_hi = p.packed_bounds[p.packed_tokens + m_last];
    }
  }
  if (p.window_left >= 0) n_lo = max(n_lo, w.m_start - p.window_left);
  if (p.window_right >= 0) n_hi = min(n_hi, m_last + p.window_right + 1);
  w.nb_lo = n_lo / Tr::kBlockN;
  w.nb_hi = n_hi > n_lo ? (n_hi + Tr::kBlockN - 1) / Tr::kBlockN : w.nb_lo;
  // Varlen rows are tokens of the whole array (batch 1), padded ones rows of sequence b.
  w.row0 = (p.cu_seqlens != nullptr && !kPacked) ? w.tok0 : 0;
  w.batch_coord = p.cu_seqlens != nullptr ? 0 : w.b;
  return w;
}

template <typename Tr, typename T, bool kHasBias, bool kPacked>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    flash_fwd_sm90_kernel(const __grid_constant__ FlashAttnParams p,
                          const __grid_constant__ Sm90TensorMaps maps) {
#if SUTRA_SM90A
  using namespace hopper;
  constexpr float kLog2e = 1.4426950408889634f;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int m_blocks = sm90_m_blocks<Tr, kPacked>(p);
  const int n_work = sm90_work_tiles<Tr, kPacked>(p);
  // Without kPersistent the stride ends every loop over tiles after one (and the compiler knows).
  const int tile_stride = Tr::kPersistent ? static_cast<int>(gridDim.x) : n_work;
  // One tile per block, past its sequence's end: leave before any barrier exists.
  if (gridDim.x == n_work && sm90_tile<Tr, kPacked>(p, blockIdx.x, m_blocks).empty) return;

  extern __shared__ unsigned char smem_raw[];
  // The 128-byte swizzle repeats every 1024 bytes: tiles start on such a boundary.
#if SUTRA_ATTN_SM90_SHARED_BASE
  // The offset goes onto the shared array itself, not onto an integer address, so the compiler
  // still knows the pointers below are shared memory: the LUT reads and O's staging stores
  // become LDS / STS instead of generic loads and stores with 64-bit address arithmetic.
  unsigned char* base = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
#else
  unsigned char* base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
#endif
  T* sQ = reinterpret_cast<T*>(base);                    // [kHalves][kBlockM][64]
  unsigned char* sO_all = base + (Tr::kPersistent ? Tr::kQBytes : 0);  // [kHalves][kBlockM][64]
  // [kStages][kHalves][kBlockN][64]
  T* sK = reinterpret_cast<T*>(base + Tr::kQBytes + Tr::kOBytes);
  T* sV = sK + Tr::kStages * (Tr::kKVBytes / 2);
  uint64_t* bars = reinterpret_cast<uint64_t*>(base + Tr::kQBytes + Tr::kOBytes +
                                               2 * Tr::kStages * Tr::kKVBytes);
  uint64_t* full_q = bars;
  uint64_t* empty_q = bars + 1;
  uint64_t* full_k = bars + 2;
  uint64_t* full_v = full_k + Tr::kStages;
  uint64_t* empty_k = full_v + Tr::kStages;
  uint64_t* empty_v = empty_k + Tr::kStages;
  float* sLut = reinterpret_cast<float*>(bars + Tr::kBarriers);  // kHasBias only
  constexpr int kKVElems = Tr::kKVBytes / 2;

  if (tid == 0) {
    mbarrier_init(full_q, 1);
    mbarrier_init(empty_q, 128 * Tr::kConsumers);
    for (int s = 0; s < Tr::kStages; ++s) {
      mbarrier_init(&full_k[s], 1);
      mbarrier_init(&full_v[s], 1);
      mbarrier_init(&empty_k[s], 128 * Tr::kConsumers);
      mbarrier_init(&empty_v[s], 128 * Tr::kConsumers);
    }
    fence_barrier_init();
  }
  __syncthreads();

  // Both roles count the same two sequences: `done`, the work tiles with rows handled so far
  // (Q's barrier phase), and `kv`, the key tiles so far over all of them (the ring's stage and
  // phase: key tile kv sits in stage kv % kStages, its barriers' parity (kv / kStages) & 1).
  if (warp < 4) {  // producer warpgroup
    warpgroup_reg_dealloc<Tr::kProducerRegs>();
    if (tid == 0) {
      prefetch_tensor_map(&maps.q);
      prefetch_tensor_map(&maps.k);
      prefetch_tensor_map(&maps.v);
      // Rows [row, row + kBlockN) into `tile` once its stage's previous tile (use - 1) is free.
      const auto load_kv = [&](T* tile, const CUtensorMap* map, uint64_t* full, uint64_t* empty,
                               int use, int row, const Sm90Tile& w) {
        if (use > 0) mbarrier_wait(empty, (use - 1) & 1);
        mbarrier_arrive_expect_tx(full, Tr::kKVBytes);
#pragma unroll
        for (int h = 0; h < Tr::kHalves; ++h) {
          tma_load_4d(tile + h * Tr::kBlockN * 64, map, full, 64 * h, w.head, row, w.batch_coord);
        }
      };
      int kv = 0, done = 0;
      for (int t = blockIdx.x; t < n_work; t += tile_stride) {
        const Sm90Tile w = sm90_tile<Tr, kPacked>(p, t, m_blocks);
        if (w.empty) continue;
        if (done > 0) mbarrier_wait(empty_q, (done - 1) & 1);  // the last tile's S are done
        mbarrier_arrive_expect_tx(full_q, Tr::kQBytes);
#pragma unroll
        for (int h = 0; h < Tr::kHalves; ++h) {
          tma_load_4d(sQ + h * Tr::kBlockM * 64, &maps.q, full_q, 64 * h, w.head,
                      w.row0 + w.m_start, w.batch_coord);
        }
        for (int nb = w.nb_lo; nb < w.nb_hi; ++nb, ++kv) {
          const int s = kv % Tr::kStages;
          const int use = kv / Tr::kStages;
          const int row = w.row0 + nb * Tr::kBlockN;
          load_kv(sK + s * kKVElems, &maps.k, &full_k[s], &empty_k[s], use, row, w);
          load_kv(sV + s * kKVElems, &maps.v, &full_v[s], &empty_v[s], use, row, w);
        }
        ++done;
      }
    }
    return;
  }

  // Consumers.
  warpgroup_reg_alloc<Tr::kConsumerRegs>();
  const int consumer = warp / 4 - 1;
  const int ctid = tid - 128;  // 0 .. 128 * kConsumers - 1
  const int g = lane / 4;
  const int tq = lane % 4;
  const int warp_row0 = consumer * 64 + (warp % 4) * 16;  // this warp's 16 rows in the block
  const float scale_log2 = p.softmax_scale * kLog2e;
  const float sm_scale = kHasBias ? 1.0f : scale_log2;
  const uint32_t q_base = smem_u32(sQ) + consumer * 64 * 128;  // this warpgroup's 64 rows
  unsigned char* sO = sO_all + consumer * 64 * 128;

  float acc_o[1][Tr::kDT][4];
  float sc[1][Tr::kNT][4];
#pragma unroll
  for (int nt = 0; nt < Tr::kNT; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) sc[0][nt][r] = 0.0f;
  uint32_t pa[Tr::kKN][4];  // P of the previous key tile, the A operand of its P V
  float alpha[2];           // per row: the O rescale factor of the last softmax (1: max kept)

  // S = Q K^T of the tile in stage s, issued (not waited for).
  const auto issue_qk = [&](int s) {
    const uint32_t k_base = smem_u32(sK + s * kKVElems);
    fence_operands(sc[0]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Tr::kKD; ++kk) {
      const uint32_t offset = (kk % 4) * 32;  // k16 step inside the 128-byte row
      const uint64_t desc_q = sw128_desc(q_base + (kk / 4) * Tr::kBlockM * 128 + offset, 16, 1024);
      const uint64_t desc_k = sw128_desc(k_base + (kk / 4) * Tr::kBlockN * 128 + offset, 16, 1024);
      Wgmma<Tr::kBlockN>::template ss<T>(sc[0], desc_q, desc_k, kk > 0);
    }
    wgmma_commit();
  };
  // O += P V of the tile in stage s, P from `pa` (issued, not waited for).
  const auto issue_pv = [&](int s) {
    const uint32_t v_base = smem_u32(sV + s * kKVElems);
    fence_operands(acc_o[0]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Tr::kKN; ++kk) {
      const uint64_t desc_v = sw128_desc(v_base + kk * 16 * 128, Tr::kBlockN * 128, 1024);
      Wgmma<Tr::kHeadDim>::template rs<T>(acc_o[0], pa[kk], desc_v, 1);
    }
    wgmma_commit();
  };
  // O *= alpha (rows whose max was renewed), then P packed as the A operand of the next P V
  // (two n8 accumulator tiles are one k16 step).
  const auto rescale_and_pack = [&]() {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (alpha[h] != 1.0f) {
#pragma unroll
        for (int dt = 0; dt < Tr::kDT; ++dt) {
          acc_o[0][dt][2 * h] *= alpha[h];
          acc_o[0][dt][2 * h + 1] *= alpha[h];
        }
      }
    }
#pragma unroll
    for (int kk = 0; kk < Tr::kKN; ++kk) {
      pa[kk][0] = Mma<T>::pack(sc[0][2 * kk][0], sc[0][2 * kk][1]);
      pa[kk][1] = Mma<T>::pack(sc[0][2 * kk][2], sc[0][2 * kk][3]);
      pa[kk][2] = Mma<T>::pack(sc[0][2 * kk + 1][0], sc[0][2 * kk + 1][1]);
      pa[kk][3] = Mma<T>::pack(sc[0][2 * kk + 1][2], sc[0][2 * kk + 1][3]);
    }
  };

  int kv = 0, done = 0;
  int lut_head = -1;  // the head whose relative-bias table sLut holds
  for (int t = blockIdx.x; t < n_work; t += tile_stride) {
    const Sm90Tile w = sm90_tile<Tr, kPacked>(p, t, m_blocks);
    if (w.empty) continue;

    float slope_log2 = 0.0f;
    if constexpr (kHasBias) {
      if (p.bias == AttnBias::kAlibi) {
        slope_log2 = p.alibi_slopes[w.head] * kLog2e;
      } else if (w.head != lut_head) {  // the same for every consumer: all of them sync
        named_barrier_sync(1, 128 * Tr::kConsumers);  // every softmax of the old table is done
        const int n_lut = 2 * p.rel_max_distance + 1;
        for (int i = ctid; i < n_lut; i += 128 * Tr::kConsumers) {
          sLut[i] = p.rel_bias[w.head * p.rel_num_buckets + p.rel_bucket[i]] * kLog2e;
        }
        named_barrier_sync(1, 128 * Tr::kConsumers);
        lut_head = w.head;
      }
    }

    RowBounds<Tr> rows{};
    if constexpr (kPacked) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = w.m_start + warp_row0 + g + h * 8;
        const bool valid = row < w.seqlen;
        rows.lo[0][h] = valid ? p.packed_bounds[row] : 0;
        rows.hi[0][h] = valid ? p.packed_bounds[p.packed_tokens + row] : 0;
      }
    }
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < Tr::kDT; ++dt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc_o[0][dt][r] = 0.0f;

    // Bias, mask and the online softmax of key tile nb's scores in sc: P = exp2(...) in place,
    // the row stats renewed; the O rescale factor of each row goes to `alpha` (1 when the max is
    // kept), for rescale_and_pack to apply once no wgmma is accumulating into O.
    const auto softmax = [&](int nb) {
      tile_score_hook<Tr, kHasBias, kPacked>(sc, p, nb, w.m_start, w.m_start + warp_row0 + g, tq,
                                             w.seqlen, scale_log2, slope_log2, sLut, rows);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < Tr::kNT; ++nt) {
          mx = fmaxf(mx, fmaxf(sc[0][nt][2 * h], sc[0][nt][2 * h + 1]));
        }
        mx = quad_max(mx);
        const float m_old = row_max[h];
        alpha[h] = 1.0f;
        if (mx > m_old && (m_old == -INFINITY || (mx - m_old) * sm_scale > Tr::kRescaleLog2)) {
          alpha[h] = m_old == -INFINITY ? 0.0f : fast_exp2((m_old - mx) * sm_scale);
          row_max[h] = mx;
          row_sum[h] *= alpha[h];
        }
        const float m_use = row_max[h] == -INFINITY ? 0.0f : row_max[h] * sm_scale;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < Tr::kNT; ++nt) {
          sc[0][nt][2 * h] = fast_exp2(fmaf(sc[0][nt][2 * h], sm_scale, -m_use));
          sc[0][nt][2 * h + 1] = fast_exp2(fmaf(sc[0][nt][2 * h + 1], sm_scale, -m_use));
          sum += sc[0][nt][2 * h] + sc[0][nt][2 * h + 1];
        }
        row_sum[h] += sum;
      }
    };

    // Software pipeline: in iteration i the tensor cores run S(i) = Q K(i)^T and then O +=
    // P(i-1) V(i-1) back to back while the softmax of key tile i waits only for S(i); the O
    // rescale waits for the P V. Q is released to the producer (the next work tile's) as soon
    // as the last S is done, before that tile's softmax and last P V.
    mbarrier_wait(full_q, done & 1);
    const int n_tiles = w.nb_hi - w.nb_lo;
    if (n_tiles == 0) mbarrier_arrive(empty_q);  // rows that see no key: zeros, lse -inf
    if (n_tiles > 0) {
      const int s = kv % Tr::kStages;
      mbarrier_wait(&full_k[s], (kv / Tr::kStages) & 1);
      issue_qk(s);
      wgmma_wait<0>();
      fence_operands(sc[0]);
      mbarrier_arrive(&empty_k[s]);
      if (n_tiles == 1) mbarrier_arrive(empty_q);
      softmax(w.nb_lo);
      rescale_and_pack();
    }
    for (int i = 1; i < n_tiles; ++i) {
      const int j = kv + i;
      const int s = j % Tr::kStages, s_prev = (j - 1) % Tr::kStages;
      mbarrier_wait(&full_k[s], (j / Tr::kStages) & 1);
      issue_qk(s);
      mbarrier_wait(&full_v[s_prev], ((j - 1) / Tr::kStages) & 1);
      issue_pv(s_prev);
      wgmma_wait<1>();  // S(i) is done (groups complete in order); P(i-1) V(i-1) may still run
      fence_operands(sc[0]);
      mbarrier_arrive(&empty_k[s]);
      if (i == n_tiles - 1) mbarrier_arrive(empty_q);
      softmax(w.nb_lo + i);
      wgmma_wait<0>();
      fence_operands(acc_o[0]);
      mbarrier_arrive(&empty_v[s_prev]);
      rescale_and_pack();
    }
    if (n_tiles > 0) {
      const int j = kv + n_tiles - 1;
      const int s = j % Tr::kStages;
      mbarrier_wait(&full_v[s], (j / Tr::kStages) & 1);
      issue_pv(s);
      wgmma_wait<0>();
      fence_operands(acc_o[0]);
      mbarrier_arrive(&empty_v[s]);
    }
    kv += n_tiles;
    ++done;

    // Epilogue: normalize; lse = ln(sum) + max (natural log).
    float inv_sum[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sum = quad_sum(row_sum[h]);
      inv_sum[h] = sum > 0.0f ? 1.0f / sum : 0.0f;
      const int row = w.m_start + warp_row0 + g + h * 8;
      if (p.lse != nullptr && tq == 0 && row < w.seqlen) {
        const float lse =
            sum > 0.0f ? (row_max[h] * sm_scale + log2f(sum)) * 0.6931471805599453f : -INFINITY;
        const int64_t lse_row = p.cu_seqlens ? static_cast<int64_t>(w.tok0) + row
                                             : w.b * p.lse_batch_stride + row;
        p.lse[lse_row + w.head * p.lse_head_stride] = lse;
      }
    }
    // O goes out through this warpgroup's rows of the O buffer, in the 128-byte swizzle so that
    // neither the fragment stores nor the 16-byte row reads conflict, then as 16-byte row
    // chunks. The first barrier keeps these stores behind the warpgroup's reads of the last
    // tile's O.
    named_barrier_sync(2 + consumer, 128);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = (warp % 4) * 16 + g + h * 8;  // row inside the warpgroup's 64
#pragma unroll
      for (int dt = 0; dt < Tr::kDT; ++dt) {
        const int half = dt / 8, chunk = dt % 8;
        *reinterpret_cast<uint32_t*>(sO + half * Tr::kBlockM * 128 + r * 128 +
                                     ((chunk ^ (r % 8)) * 16) + tq * 4) =
            Mma<T>::pack(acc_o[0][dt][2 * h] * inv_sum[h], acc_o[0][dt][2 * h + 1] * inv_sum[h]);
      }
    }
    named_barrier_sync(2 + consumer, 128);
    T* o = static_cast<T*>(p.o) + w.head * p.o_head_stride +
           (p.cu_seqlens ? static_cast<int64_t>(w.tok0) * p.o_row_stride : w.b * p.o_batch_stride);
    constexpr int kChunks = Tr::kHeadDim / 8;  // 16-byte chunks per row
    const int wtid = ctid % 128;
#pragma unroll
    for (int i = 0; i < 64 * kChunks / 128; ++i) {
      const int idx = i * 128 + wtid;
      const int r = idx / kChunks;
      const int c = idx % kChunks;
      const int row = w.m_start + consumer * 64 + r;
      if (row < w.seqlen) {
        const int half = c / 8, chunk = c % 8;
        *reinterpret_cast<uint4*>(o + static_cast<int64_t>(row) * p.o_row_stride + c * 8) =
            *reinterpret_cast<const uint4*>(sO + half * Tr::kBlockM * 128 + r * 128 +
                                            ((chunk ^ (r % 8)) * 16));
      }
    }
  }
#endif
}

}  // namespace sutra::cuda::attn
