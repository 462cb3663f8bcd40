// Hopper (sm_90a) building blocks of the attention kernels, as inline PTX: mbarriers, bulk tensor
// copies (TMA) that complete on them, warpgroup MMA (wgmma) with shared-memory descriptors, and
// register reallocation between warpgroups. The kernels that call them compile their bodies only
// in the sm_90a pass (SUTRA_SM90A below); the wgmma and setmaxnreg wrappers, which no other target
// can assemble, are empty elsewhere as well.
#pragma once

#include <cuda.h>  // CUtensorMap (a type only; nothing from the driver library is linked)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

// True while compiling device code for sm_90a, whose wgmma and setmaxnreg no other target has.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SUTRA_SM90A 1
#else
#define SUTRA_SM90A 0
#endif

namespace sutra::cuda::hopper {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---------------------------------------------------------------------------------------------
// mbarriers (64-bit shared-memory barriers with a transaction count)

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(arrivals));
}
/// Makes barrier initialization visible to the async proxy (the copy engine) before first use.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
/// One arrival that also announces `bytes` of copies to land before the phase can complete.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
/// Waits until the phase of parity `parity` has completed (phases alternate 0, 1, 0, ...).
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_u32(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// ---------------------------------------------------------------------------------------------
// Bulk tensor copies

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
/// Copies the box at element coordinates (c0 innermost .. c3) of `map` into `smem`, completing
/// `bytes` of `bar`'s transaction count. Coordinates past the tensor's extent read zeros.
__device__ __forceinline__ void tma_load_4d(void* smem, const CUtensorMap* map, uint64_t* bar,
                                            int c0, int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(smem_u32(smem)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

// ---------------------------------------------------------------------------------------------
// Warpgroups: register reallocation and named barriers

template <uint32_t kRegs>
__device__ __forceinline__ void warpgroup_reg_alloc() {
#if SUTRA_SM90A
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <uint32_t kRegs>
__device__ __forceinline__ void warpgroup_reg_dealloc() {
#if SUTRA_SM90A
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
/// bar.sync on hardware barrier `id` (1..15; 0 is __syncthreads) among `threads` threads.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---------------------------------------------------------------------------------------------
// wgmma

/// Shared-memory matrix descriptor of a tile stored with the 128-byte swizzle (what TMA writes
/// with CU_TENSOR_MAP_SWIZZLE_128B): rows of 64 16-bit elements, 8-row atoms of 1024 bytes, the
/// tile's base 1024-byte aligned. K-major operands (Q, K): `sbo` = 1024 (the next 8 rows), the
/// leading offset unused; a k16 step inside the 128-byte row adds 32 bytes to `addr`. MN-major
/// operands (V for P V): `sbo` = 1024 (the next 8 rows along K), `lbo` = the byte distance to the
/// next 64 columns along N.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

/// Orders earlier register and shared-memory writes before the wgmma that follow (required
/// whenever the accumulators or A fragments were written by ordinary instructions).
__device__ __forceinline__ void wgmma_fence() {
#if SUTRA_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if SUTRA_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if SUTRA_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
/// Keeps the compiler from moving reads or writes of `x` across a wgmma issue or wait.
template <int kRows, int kCols>
__device__ __forceinline__ void fence_operands(float (&x)[kRows][kCols]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int j = 0; j < kCols; ++j) asm volatile("" : "+f"(x[i][j])::"memory");
}

/// m64nNk16 with fp32 accumulators, per warpgroup of 128 threads. Accumulator d[n8][r] of a
/// thread sits at row 16 * (warp % 4) + lane / 4 + 8 * (r / 2), column 8 * n8 + 2 * (lane % 4) +
/// r % 2: per warp, the mma.sync m16n8 C layout, repeated over N.
template <int N>
struct Wgmma;

#if SUTRA_SM90A
// The accumulator operands and their register lists: 32 (N = 64) or 64 (N = 128) floats.
#define SUTRA_WGMMA_ACC8(d, i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define SUTRA_WGMMA_ACC_N64(d)                                                        \
  SUTRA_WGMMA_ACC8(d, 0), SUTRA_WGMMA_ACC8(d, 1), SUTRA_WGMMA_ACC8(d, 2),             \
      SUTRA_WGMMA_ACC8(d, 3), SUTRA_WGMMA_ACC8(d, 4), SUTRA_WGMMA_ACC8(d, 5),         \
      SUTRA_WGMMA_ACC8(d, 6), SUTRA_WGMMA_ACC8(d, 7)
#define SUTRA_WGMMA_ACC_N128(d)                                                       \
  SUTRA_WGMMA_ACC_N64(d), SUTRA_WGMMA_ACC8(d, 8), SUTRA_WGMMA_ACC8(d, 9),             \
      SUTRA_WGMMA_ACC8(d, 10), SUTRA_WGMMA_ACC8(d, 11), SUTRA_WGMMA_ACC8(d, 12),      \
      SUTRA_WGMMA_ACC8(d, 13), SUTRA_WGMMA_ACC8(d, 14), SUTRA_WGMMA_ACC8(d, 15)
#define SUTRA_WGMMA_REGS_N64 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define SUTRA_WGMMA_REGS_N128                                                                 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
// D (+)= A B, A and B K-major in shared memory; SCALE the operand index of scale_d (D is
// overwritten when it is 0).
#define SUTRA_WGMMA_SS(N, TY, REGS, ACC, IA, IB, SCALE)                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SCALE ", 0;\n"                            \
               "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " REGS ", %" IA  \
               ", %" IB ", p, 1, 1, 0, 0;\n}\n"                                              \
               : ACC                                                                          \
               : "l"(desc_a), "l"(desc_b), "r"(scale_d))
// D (+)= A B, A from registers (operands IA .. IA + 3), B MN-major in shared memory.
#define SUTRA_WGMMA_RS(N, TY, REGS, ACC, IA0, IA1, IA2, IA3, IB, SCALE)                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SCALE ", 0;\n"                            \
               "wgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " REGS ", {%" IA0  \
               ", %" IA1 ", %" IA2 ", %" IA3 "}, %" IB ", p, 1, 1, 1;\n}\n"                     \
               : ACC                                                                          \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))

template <>
struct Wgmma<64> {
  /// D[64 x 64] (+)= A[64 x 16] B[16 x 64], A and B K-major in shared memory.
  template <typename T>
  __device__ __forceinline__ static void ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b,
                                            int scale_d) {
    if constexpr (std::is_same_v<T, __half>) {
      SUTRA_WGMMA_SS("64", "f16", SUTRA_WGMMA_REGS_N64, SUTRA_WGMMA_ACC_N64(d), "32", "33", "34");
    } else {
      SUTRA_WGMMA_SS("64", "bf16", SUTRA_WGMMA_REGS_N64, SUTRA_WGMMA_ACC_N64(d), "32", "33", "34");
    }
  }
  /// D[64 x 64] (+)= A[64 x 16] B[16 x 64], A from registers (the mma.sync m16n8k16 A layout
  /// per warp), B MN-major in shared memory (transposed on the fly).
  template <typename T>
  __device__ __forceinline__ static void rs(float (&d)[8][4], const uint32_t (&a)[4],
                                            uint64_t desc_b, int scale_d) {
    if constexpr (std::is_same_v<T, __half>) {
      SUTRA_WGMMA_RS("64", "f16", SUTRA_WGMMA_REGS_N64, SUTRA_WGMMA_ACC_N64(d), "32", "33", "34",
                     "35", "36", "37");
    } else {
      SUTRA_WGMMA_RS("64", "bf16", SUTRA_WGMMA_REGS_N64, SUTRA_WGMMA_ACC_N64(d), "32", "33", "34",
                     "35", "36", "37");
    }
  }
};

template <>
struct Wgmma<128> {
  /// D[64 x 128] (+)= A[64 x 16] B[16 x 128], A and B K-major in shared memory.
  template <typename T>
  __device__ __forceinline__ static void ss(float (&d)[16][4], uint64_t desc_a, uint64_t desc_b,
                                            int scale_d) {
    if constexpr (std::is_same_v<T, __half>) {
      SUTRA_WGMMA_SS("128", "f16", SUTRA_WGMMA_REGS_N128, SUTRA_WGMMA_ACC_N128(d), "64", "65",
                     "66");
    } else {
      SUTRA_WGMMA_SS("128", "bf16", SUTRA_WGMMA_REGS_N128, SUTRA_WGMMA_ACC_N128(d), "64", "65",
                     "66");
    }
  }
  /// D[64 x 128] (+)= A[64 x 16] B[16 x 128], A from registers, B MN-major in shared memory.
  template <typename T>
  __device__ __forceinline__ static void rs(float (&d)[16][4], const uint32_t (&a)[4],
                                            uint64_t desc_b, int scale_d) {
    if constexpr (std::is_same_v<T, __half>) {
      SUTRA_WGMMA_RS("128", "f16", SUTRA_WGMMA_REGS_N128, SUTRA_WGMMA_ACC_N128(d), "64", "65",
                     "66", "67", "68", "69");
    } else {
      SUTRA_WGMMA_RS("128", "bf16", SUTRA_WGMMA_REGS_N128, SUTRA_WGMMA_ACC_N128(d), "64", "65",
                     "66", "67", "68", "69");
    }
  }
};

#undef SUTRA_WGMMA_RS
#undef SUTRA_WGMMA_SS
#undef SUTRA_WGMMA_REGS_N128
#undef SUTRA_WGMMA_REGS_N64
#undef SUTRA_WGMMA_ACC_N128
#undef SUTRA_WGMMA_ACC_N64
#undef SUTRA_WGMMA_ACC8
#else
// Other targets: the same interface with empty bodies (the sm_90a kernels never run there).
template <int N>
struct Wgmma {
  template <typename T>
  __device__ __forceinline__ static void ss(float (&)[N / 8][4], uint64_t, uint64_t, int) {}
  template <typename T>
  __device__ __forceinline__ static void rs(float (&)[N / 8][4], const uint32_t (&)[4], uint64_t,
                                            int) {}
};
#endif

}  // namespace sutra::cuda::hopper
