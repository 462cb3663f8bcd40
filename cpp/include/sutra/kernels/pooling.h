// Pooling of the engine's token states on the device: the one pooling semantics of
// sutra/pooling.h (sentence-transformers' modes, prompt exclusion), on packed fp16/bf16 tokens,
// into fp32 rows, optionally L2-normalized. Plain C++: implemented in cuda/pooling/ by a CUDA
// build and by cpp/src/cuda_stub.cc (which raises) in a CPU-only one.
#pragma once

#include <cstdint>

#include "sutra/kernels/layernorm.h"  // DeviceDtype
#include "sutra/pooling.h"            // PoolingMode

namespace sutra {

/// Partial rows the split pooling may use (see DevicePoolParams::scratch).
constexpr int64_t kPoolSplitRows = 512;
constexpr int64_t kPoolSplitMinTokens = 256;

/// Floats of the scratch that lets pool_tokens_device split long sequences over many blocks.
inline int64_t pool_scratch_floats(int hidden) { return kPoolSplitRows * hidden; }

struct DevicePoolParams {
  const void* tokens = nullptr;             // [total_tokens, hidden], fp16 or bf16
  const int32_t* cu_seqlens = nullptr;      // [batch + 1] on the device
  const int32_t* prompt_lengths = nullptr;  // [batch] on the device, or null
  // [batch, 2] on the device, or null: row b pools tokens [bounds[2b], bounds[2b + 1]) of the
  // packed stream instead of sequence b of cu_seqlens (which is then unused, as are the
  // prompt lengths): spans inside sequences, which may overlap (late chunking).
  const int32_t* segment_bounds = nullptr;
  float* out = nullptr;                     // [batch, hidden] float32
  int batch = 0;
  int hidden = 0;  // 1..16384
  PoolingMode mode = PoolingMode::kMean;
  bool normalize = false;  // x / max(||x||, 1e-12) after pooling (a pipeline with no Dense)
  // Device scratch of pool_scratch_floats(hidden) floats, or null. With it, a batch of fewer
  // sequences than the GPU has room for blocks (a few documents of 8192 tokens) is summed in
  // token ranges by many blocks, then reduced in a fixed order (the result does not depend on
  // scheduling); without it, one block per sequence.
  float* scratch = nullptr;
  // cu_seqlens[batch] when the caller knows it: with scratch, the split is taken only when the
  // sequences average kPoolSplitMinTokens or more (short ones gain nothing from it). 0: unknown.
  int64_t total_tokens = 0;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  int device = 0;
};

/// out[b] = pool_tokens of sequence b (see sutra/pooling.h), then normalized when asked. Sums
/// in fp32. Throws std::invalid_argument for bad sizes, sutra::Error for CUDA failures.
void pool_tokens_device(const DevicePoolParams& p, cudaStream_t stream);

/// rows[r] /= max(||rows[r]||, 1e-12) in place for `n` float32 rows of `dim` on `device`: the
/// Normalize after Dense modules (without them, pool_tokens_device normalizes in its own pass).
void l2_normalize_device(float* rows, int64_t n, int64_t dim, int device, cudaStream_t stream);

}  // namespace sutra
