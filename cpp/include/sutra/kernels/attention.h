// Flash attention forward: the params struct the dispatch layer fills and the launcher that runs
// it. Plain C++ (no CUDA headers): implemented in cuda/attention/ by a CUDA build and by
// cpp/src/cuda_stub.cc (which raises) in a CPU-only one.
//
// Shapes (element strides, the head dimension contiguous):
//   padded: q, k, v, o [batch, seqlen, heads, head_dim];    lse float32 [batch, heads, seqlen]
//   varlen: q, k, v, o [total_tokens, heads, head_dim] with cu_seqlens int32 [batch + 1];
//           lse float32 [heads, total_tokens]
#pragma once

#include <cstdint>

// The CUDA runtime's own declaration of the stream handle, so this header needs no CUDA headers.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace sutra {

enum class AttnDtype : int { kFloat16 = 0, kBFloat16 = 1 };
enum class AttnBias : int { kNone = 0, kAlibi = 1, kRelative = 2 };
/// Which kernel family runs a call. kAuto: the sm_90a (wgmma + TMA) kernels on a compute
/// capability 9.0 GPU when this build has sm_90a code and the call is one they win (head dim 64
/// or 128, no two-sided window, no packed row tiles; varlen_rows known for a varlen call), the
/// sm_80 kernels otherwise. kSm80 / kSm90 force one (kSm90 throws
/// std::invalid_argument where it cannot run).
enum class AttnPath : int { kAuto = 0, kSm80 = 1, kSm90 = 2 };

/// Largest |j - i| the relative-bias bucket map can distinguish; farther pairs use the edge bucket.
constexpr int kAttnMaxRelDistance = 512;

struct FlashAttnParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // optional: natural-log log-sum-exp of the scaled scores per query row
  // Varlen when non-null: sequence b holds tokens [cu_seqlens[b], cu_seqlens[b+1]); the batch
  // strides are then unused.
  const int32_t* cu_seqlens = nullptr;
  // Varlen only. > 0: row tiles span sequences. A block computes block_m consecutive tokens of
  // the packed stream (whatever sequences they belong to) against the keys of those sequences,
  // each row masked to its own. The value is an upper bound of cu_seqlens[batch] (q's rows): it
  // sizes the grid and is the row stride of packed_bounds, int32 [2, packed_tokens] on the
  // device, for each token the first token of its sequence and one past its last (made by
  // flash_attention_packed_bounds). Same result; faster when most sequences are much shorter
  // than a tile (the engine decides per pass). 0: one block per (row tile, head, sequence).
  int64_t packed_tokens = 0;
  const int32_t* packed_bounds = nullptr;
  // Varlen only: the rows q, k, v and o hold (>= cu_seqlens[batch]). The sm_90 path's bulk copies
  // are bounded by it (a copy past it reads zeros); 0 (unknown) keeps a call on the sm_80 path.
  int64_t varlen_rows = 0;
  AttnPath path = AttnPath::kAuto;

  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;  // lse rows are contiguous

  int batch = 0;
  int heads = 0;
  int head_dim = 0;   // 32, 64 or 128
  int max_seqlen = 0;  // padded: the sequence length; varlen: an upper bound of every length
  float softmax_scale = 1.0f;
  // Key j is visible from query i iff (window_left < 0 || j - i >= -window_left) and
  // (window_right < 0 || j - i <= window_right): inclusive bounds, -1 unbounded; causal is right=0.
  int window_left = -1;
  int window_right = -1;
  AttnDtype dtype = AttnDtype::kFloat16;

  AttnBias bias = AttnBias::kNone;
  const float* alibi_slopes = nullptr;  // [heads]: score += -slope * |j - i|
  // [heads, rel_num_buckets]: score += rel_bias[h, rel_bucket[clamp(j - i) + rel_max_distance]]
  const float* rel_bias = nullptr;
  int rel_num_buckets = 0;
  int rel_max_distance = 0;  // <= kAttnMaxRelDistance
  uint8_t rel_bucket[2 * kAttnMaxRelDistance + 1] = {};

  int device = 0;
};

/// The kernel configuration a head dimension runs with (what get_stats reports).
struct FlashAttnKernelInfo {
  int block_m = 0;
  int block_n = 0;
  int threads = 0;
  int stages = 0;
  int smem_bytes = 0;  // dynamic shared memory per block, bias variant included when asked
  const char* path = "";
};

/// Tile configuration of the kernel a call with `head_dim` (32, 64, 128) and this window
/// (inclusive bounds, -1 unbounded) runs on `device` with `path` (kAuto: as flash_attention_forward
/// decides for an unpacked call whose layout the sm_90 path accepts). Throws
/// std::invalid_argument for another head dim or a kSm90 that cannot run, sutra::Error in a
/// CPU-only build.
FlashAttnKernelInfo flash_attention_kernel_info(int head_dim, bool with_bias, int window_left = -1,
                                                int window_right = -1,
                                                AttnPath path = AttnPath::kAuto, int device = 0);

/// How a caller that may choose per call (the GPU engine, per pass) should run an unpacked call
/// whose longest sequence is `max_seqlen`. flash_attention_forward's own kAuto stays one kernel
/// per head dim and window, so that a sequence's output there does not depend on what it is
/// batched with; a per-pass choice changes results within the dtype's rounding.
struct AttnPassChoice {
  /// kSm80 below the length where the sm_90 kernels start to lead on an H200 (512 keys at head
  /// dim 64, 256 at 128; their fixed cost per block is higher), else kAuto.
  AttnPath path = AttnPath::kAuto;
  /// For layers without a window: a two-sided window of this many keys each side (max_seqlen -
  /// 1, so the same attention) where the window kernels' smaller tile is faster (head dim 64,
  /// passes of at most 192 tokens); -1 otherwise. Not for packed row tiles.
  int dense_window = -1;
};
AttnPassChoice flash_attention_pass_choice(int head_dim, int max_seqlen);

/// Whether packed row tiles (FlashAttnParams::packed_tokens) are modelled to run a varlen batch
/// faster than one block per sequence: counts the (query tile, key tile) pairs either layout
/// computes, per-sequence blocks with the tile flash_attention_pass_choice picks for the
/// batch's longest sequence and the window, packed rows with the sm80 default tile (the packed
/// kernels are sm80 ones), each pair weighted by its tile's area and a packed pair by a further
/// 1.25 (every packed tile pays the per-element mask). `cu_seqlens` is the host copy, [batch + 1].
bool flash_attention_packing_pays(int head_dim, bool with_bias, int window_left, int window_right,
                                  const int32_t* cu_seqlens, int64_t batch);

/// Writes packed_bounds (int32 [2, packed_tokens], device) for the varlen batch `cu_seqlens`
/// (device, [batch + 1]) on `stream`: bounds[t] and bounds[packed_tokens + t] are the first token
/// of token t's sequence and one past its last, for t < cu_seqlens[batch] (later entries are
/// left alone). One pass of the engine computes it once for all its layers.
void flash_attention_packed_bounds(const int32_t* cu_seqlens, int batch, int64_t packed_tokens,
                                   int32_t* bounds, int device, cudaStream_t stream);

/// Runs the forward pass on `stream` (of `p.device`). Throws std::invalid_argument for
/// inconsistent parameters, sutra::Error for CUDA failures or a device older than sm_80.
void flash_attention_forward(const FlashAttnParams& p, cudaStream_t stream);

}  // namespace sutra
