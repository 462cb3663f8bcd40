// Host entry points of sutra/kernels/attention.h: argument checks, device guard, dispatch on head dim.
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/check.cuh"
#include "cuda/resources.h"
#include "flash_fwd_launch.cuh"
#include "flash_fwd_sm90_launch.cuh"
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

// ---------------------------------------------------------------------------------------------
// The sm_90a path: where it can run, and its tensor maps.

// SUTRA_ATTN_HAS_SM90A: CMake defines it when the architecture list has sm_90a code.
#ifndef SUTRA_ATTN_HAS_SM90A
#define SUTRA_ATTN_HAS_SM90A 0
#endif

/// Empty when `device` can run the sm_90a kernels for this head dim, else why not.
std::string sm90_unavailable(int head_dim, int device) {
  if (!SUTRA_ATTN_HAS_SM90A) return "this build has no sm_90a code";
  if (head_dim != 64 && head_dim != 128) {
    return "head_dim " + std::to_string(head_dim) + " runs on the sm80 path only (64, 128 on sm90)";
  }
  int major = 0, minor = 0;
  cuda::check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
              "cudaDeviceGetAttribute");
  cuda::check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
              "cudaDeviceGetAttribute");
  if (major != 9 || minor != 0) {
    return "device " + std::to_string(device) + " is sm_" + std::to_string(major) +
           std::to_string(minor) + " (the sm90a kernels need compute capability 9.0)";
  }
  return {};
}

/// What kAuto picks when the sm_90a path is available, from bench/results/attention_h200.md (v1):
/// dense attention, where sm90 ties sm80 up to L = 512 and leads from there (up to 1.3x at d=64
/// and 2x at d=128). One path for every length keeps a sequence's result independent of the
/// lengths batched with it. Packed row tiles and two-sided windows stay on sm80: a block of the
/// sm90 kernel there walks one to five key tiles, and its fixed cost per block (barrier setup,
/// the first copies' latency, one block per SM) outweighs its faster tiles (+-64 at L=16384:
/// 0.31 ms against sm80's 0.12).
bool auto_prefers_sm90(int window_left, int window_right, bool packed) {
  return !packed && (window_left < 0 || window_right < 0);
}

/// Where sm90 starts to lead sm80 on dense calls, on the engine's layout (fused QKV, varlen,
/// 65,536 tokens per call, H200; bench/results/attention_short_passes_h200.md), us sm80 / sm90:
/// d=64 L=128 151 / 199, 192 232 / 479 (ragged lengths cost sm90 a whole 128 x 128 tile), 384
/// 309 / 311, 512 413 / 371; d=128 L=192 276 / 388, 256 280 / 238. sm90's fixed cost per block
/// is higher; it leads from 512 keys at d=64 and from 256 at d=128.
int sm90_min_seqlen(int head_dim) { return head_dim == 128 ? 256 : 512; }

/// Up to this length a dense d=64 pass runs the window tile (64 x 32) with a window spanning the
/// pass. Same file, us, dense 128 x 64 tile against the window tile: L=64 221 / 114, 128
/// 151 / 151, 192 232 / 187, 256 220 / 239. Its smaller blocks keep more copies in flight, and a
/// 64-row tile wastes less of a short sequence.
constexpr int kDenseWindowMaxSeqlen = 192;

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/// cuTensorMapEncodeTiled from the driver through the runtime (nothing links libcuda), or null.
EncodeTiledFn encode_tiled() {
  static const EncodeTiledFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<EncodeTiledFn>(nullptr);
    }
    return reinterpret_cast<EncodeTiledFn>(f);
  }();
  return fn;
}

/// The (head_dim, heads, rows, batch) tensor at `data` with element strides (row, head, batch),
/// boxes of 64 x 1 x box_rows x 1 with the 128-byte swizzle. False where the copy engine cannot
/// describe it (strides not multiples of 16 bytes, sizes out of range).
bool encode_map(CUtensorMap* map, const void* data, AttnDtype dtype, int head_dim, int heads,
                int64_t rows, int64_t batch, int64_t row_stride, int64_t head_stride,
                int64_t batch_stride, int box_rows) {
  const EncodeTiledFn fn = encode_tiled();
  if (fn == nullptr || rows <= 0 || batch <= 0) return false;
  // A size-1 axis is never stepped along: any stride the driver accepts will do.
  const int64_t head_bytes = heads == 1 ? head_dim * 2 : head_stride * 2;
  const int64_t row_bytes = rows == 1 ? head_bytes * heads : row_stride * 2;
  const int64_t batch_bytes = batch == 1 ? row_bytes * rows : batch_stride * 2;
  for (int64_t stride : {head_bytes, row_bytes, batch_bytes}) {
    if (stride <= 0 || stride % 16 != 0 || stride >= (int64_t{1} << 40)) return false;
  }
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(heads),
                              static_cast<cuuint64_t>(rows), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(head_bytes),
                                 static_cast<cuuint64_t>(row_bytes),
                                 static_cast<cuuint64_t>(batch_bytes)};
  const cuuint32_t box[4] = {64, 1, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type = dtype == AttnDtype::kFloat16
                                       ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                       : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  return fn(map, type, 4, const_cast<void*>(data), dims, strides, box, element_strides,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/// Fills `maps` for the call; empty on success, else why the sm_90 path cannot take it.
std::string make_sm90_tensor_maps(const FlashAttnParams& p, cuda::attn::Sm90TensorMaps* maps) {
  const bool varlen = p.cu_seqlens != nullptr;
  if (varlen && p.varlen_rows <= 0) return "varlen_rows (the rows of q, k, v) is not set";
  const int64_t rows = varlen ? p.varlen_rows : p.max_seqlen;
  const int64_t batch = varlen ? 1 : p.batch;
  // Boxes: Q tiles of block_m rows, K and V tiles of block_n.
  const FlashAttnKernelInfo tile =
      cuda::attn::flash_fwd_sm90_info(p.head_dim, p.bias != AttnBias::kNone);
  const bool ok =
      encode_map(&maps->q, p.q, p.dtype, p.head_dim, p.heads, rows, batch, p.q_row_stride,
                 p.q_head_stride, p.q_batch_stride, tile.block_m) &&
      encode_map(&maps->k, p.k, p.dtype, p.head_dim, p.heads, rows, batch, p.k_row_stride,
                 p.k_head_stride, p.k_batch_stride, tile.block_n) &&
      encode_map(&maps->v, p.v, p.dtype, p.head_dim, p.heads, rows, batch, p.v_row_stride,
                 p.v_head_stride, p.v_batch_stride, tile.block_n);
  return ok ? std::string() : std::string("the copy engine cannot describe q, k or v's layout");
}

}  // namespace

FlashAttnKernelInfo flash_attention_kernel_info(int head_dim, bool with_bias, int window_left,
                                                int window_right, AttnPath path, int device) {
  using namespace cuda::attn;
  check_head_dim(head_dim);
  if (path != AttnPath::kSm80) {
    const std::string why = sm90_unavailable(head_dim, device);
    if (path == AttnPath::kSm90 && !why.empty()) {
      throw std::invalid_argument("the sm90 attention path cannot run: " + why);
    }
    if (why.empty() &&
        (path == AttnPath::kSm90 ||
         auto_prefers_sm90(window_left, window_right, false))) {
      return flash_fwd_sm90_info(head_dim, with_bias);
    }
  }
  if (head_dim == 32) return flash_fwd_info<DefaultTraits<32>::type>(with_bias);
  if (head_dim == 128) return flash_fwd_info<DefaultTraits<128>::type>(with_bias);
  return uses_window_tiles(head_dim, window_left, window_right)
             ? flash_fwd_info<WindowTraits64>(with_bias)
             : flash_fwd_info<DefaultTraits<64>::type>(with_bias);
}

AttnPassChoice flash_attention_pass_choice(int head_dim, int max_seqlen) {
  check_head_dim(head_dim);
  AttnPassChoice choice;
  choice.path = max_seqlen < sm90_min_seqlen(head_dim) ? AttnPath::kSm80 : AttnPath::kAuto;
  if (head_dim == 64 && max_seqlen >= 1 && max_seqlen <= kDenseWindowMaxSeqlen) {
    choice.dense_window = max_seqlen - 1;
  }
  return choice;
}

bool flash_attention_packing_pays(int head_dim, bool with_bias, int window_left, int window_right,
                                  const int32_t* cu_seqlens, int64_t batch) {
  if (batch <= 1) return false;
  // Per-sequence blocks run the window's tile on the path the pass takes (by its longest
  // sequence); packed rows always the sm80 kernels' default tile (the only packed kernels). The
  // two tiles may differ in shape (sm90's 192 x 128 against sm80's 128 x 64 at head dim 64), so
  // work is counted as tile pairs times their area, in units of the packed tile. Key ranges are
  // counted without the window (an upper bound for both layouts).
  int32_t max_length = 0;
  for (int64_t b = 0; b < batch; ++b) {
    max_length = std::max(max_length, cu_seqlens[b + 1] - cu_seqlens[b]);
  }
  const AttnPassChoice choice = flash_attention_pass_choice(head_dim, max_length);
  const bool dense = window_left < 0 && window_right < 0;
  const FlashAttnKernelInfo own = flash_attention_kernel_info(
      head_dim, with_bias, dense ? choice.dense_window : window_left,
      dense ? choice.dense_window : window_right, choice.path);
  const FlashAttnKernelInfo shared =
      flash_attention_kernel_info(head_dim, with_bias, -1, -1, AttnPath::kSm80);
  int64_t per_sequence_pairs = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = cu_seqlens[b + 1] - cu_seqlens[b];
    per_sequence_pairs += ((length + own.block_m - 1) / own.block_m) *
                          ((length + own.block_n - 1) / own.block_n);
  }
  const double per_sequence = static_cast<double>(per_sequence_pairs) * own.block_m *
                              own.block_n / (static_cast<double>(shared.block_m) * shared.block_n);
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
  if (p.path != AttnPath::kSm80 &&
      (p.path == AttnPath::kSm90 || auto_prefers_sm90(p.window_left, p.window_right, p.packed_tokens > 0))) {
    std::string why = sm90_unavailable(p.head_dim, p.device);
    cuda::attn::Sm90TensorMaps maps;
    if (why.empty()) why = make_sm90_tensor_maps(p, &maps);
    if (why.empty()) {
      if (p.head_dim == 64) {
        cuda::attn::run_flash_fwd_sm90_hdim64(p, maps, stream);
      } else {
        cuda::attn::run_flash_fwd_sm90_hdim128(p, maps, stream);
      }
      return;
    }
    if (p.path == AttnPath::kSm90) {
      throw std::invalid_argument("the sm90 attention path cannot run this call: " + why);
    }
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
