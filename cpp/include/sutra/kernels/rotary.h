// Rotary position embeddings (RoFormer; the NeoX "rotate half" layout that ModernBERT uses) on
// q and k inside the engine's packed QKV rows, in place. Plain C++: implemented in cuda/rotary/
// by a CUDA build and by cpp/src/cuda_stub.cc (which raises) in a CPU-only one.
#pragma once

#include <cstdint>

#include "sutra/kernels/layernorm.h"  // DeviceDtype, cudaStream_t

namespace sutra {

struct RotaryParams {
  // [tokens, row_stride]: token t's q heads at columns [0, heads * head_dim), its k heads at
  // [k_offset, k_offset + heads * head_dim); both rewritten in place, v left alone.
  void* qkv = nullptr;
  int64_t row_stride = 0;
  int64_t k_offset = 0;
  const int32_t* positions = nullptr;  // [tokens], each in [0, max_positions)
  // [max_positions, head_dim / 2] pairs (cos, sin) of positions[t] * inv_freq[i] (float32),
  // e.g. made by rotary_cos_sin_table.
  const float* cos_sin = nullptr;
  int64_t tokens = 0;
  int heads = 0;
  int head_dim = 0;  // even, 2..256
  int64_t max_positions = 0;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  int device = 0;
};

/// For each token, head and i < head_dim / 2, with (x1, x2) = (x[i], x[i + head_dim / 2]) of q and
/// of k and (c, s) = cos_sin[positions[t], i]: x[i] = x1 c - x2 s, x[i + head_dim / 2] = x2 c +
/// x1 s, in fp32, rounded once. A position out of range reads row 0 (the host validates them).
/// Throws std::invalid_argument for bad sizes, sutra::Error for CUDA failures.
void rotary_embedding(const RotaryParams& p, cudaStream_t stream);

/// The (cos, sin) table of base `theta` (host memory, [max_positions, head_dim / 2] pairs), with
/// the angles in float32 as transformers forms them: inv_freq[i] = 1 / theta^(2i / head_dim),
/// angle = float(position) * inv_freq[i], each step rounded to float32. Plain C++ (no device).
void rotary_cos_sin_table(double theta, int head_dim, int64_t max_positions, float* out);

}  // namespace sutra
