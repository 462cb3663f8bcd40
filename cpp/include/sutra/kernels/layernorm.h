// LayerNorm kernels of the encoder engine: the embeddings (gather + sum + LayerNorm) and the
// sublayer output (x + bias + residual, then LayerNorm; a pre-LayerNorm encoder also keeps the
// sum as its residual stream), on packed tokens [tokens, hidden] in fp16 or bf16 with fp32
// statistics. Plain C++: implemented in cuda/layernorm/ by a CUDA build
// and by cpp/src/cuda_stub.cc (which raises) in a CPU-only one.
#pragma once

#include <cstdint>

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace sutra {

/// Element type of the engine's activations and weights on the device.
enum class DeviceDtype : int { kFloat16 = 0, kBFloat16 = 1 };

struct EmbeddingLayerNormParams {
  const int32_t* ids = nullptr;               // [tokens] token ids, each in [0, vocab)
  const int32_t* positions = nullptr;         // [tokens] position ids, each in [0, max_positions)
  const void* word_embeddings = nullptr;      // [vocab, hidden]
  const void* position_embeddings = nullptr;  // [max_positions, hidden], or null (rotary models)
  const void* token_type_row = nullptr;       // [hidden] (row 0 of the token-type table) or null
  const void* gamma = nullptr;                // [hidden]
  const void* beta = nullptr;                 // [hidden], or null (a LayerNorm without bias)
  void* out = nullptr;                        // [tokens, hidden]
  int64_t tokens = 0;
  int hidden = 0;  // 1..8192
  int64_t vocab = 0;
  int64_t max_positions = 0;
  float eps = 1e-12f;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  int device = 0;
};

/// out[t] = LayerNorm(word[ids[t]] (+ position[positions[t]]) (+ token_type_row)) * gamma
/// (+ beta), the sum and the statistics in fp32. An id or position out of range reads row 0 (the host
/// validates them; a kernel cannot raise). Throws std::invalid_argument for bad sizes,
/// sutra::Error for CUDA failures.
void embedding_layernorm(const EmbeddingLayerNormParams& p, cudaStream_t stream);

struct AddLayerNormParams {
  const void* x = nullptr;         // [tokens, hidden], e.g. a GEMM's output
  const void* bias = nullptr;      // [hidden] or null
  const void* residual = nullptr;  // [tokens, hidden] or null
  const void* gamma = nullptr;     // [hidden]
  const void* beta = nullptr;      // [hidden], or null (a LayerNorm without bias)
  void* out = nullptr;             // [tokens, hidden]; may be `residual` or `x` (in place)
  // [tokens, hidden] or null: also receives x + bias + residual itself, the residual stream of a
  // pre-LayerNorm encoder (rounded to the dtype, as the stream is kept); may be `residual`.
  void* sum_out = nullptr;
  int64_t tokens = 0;
  int hidden = 0;  // 1..8192
  float eps = 1e-12f;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  int device = 0;
};

/// out[t] = LayerNorm(x[t] + bias + residual[t]) * gamma + beta, the sum and the statistics in
/// fp32. Post-LayerNorm encoders: the attention and feed-forward outputs. Pre-LayerNorm ones:
/// sum_out = residual (the stream, in place) and out = the next sublayer's normalized input.
void add_layernorm(const AddLayerNormParams& p, cudaStream_t stream);

}  // namespace sutra
