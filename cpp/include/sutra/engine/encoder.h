// GpuEncoder: the CUDA encoder engine. One per device and model: it holds the weights (uploaded
// once into one arena, fp16 or bf16), a cuBLASLt handle, a stream and a workspace sized for
// `max_tokens` tokens per pass, so that the forward pass allocates nothing. encode() plans the
// passes with the one batch planner (packed, no padding anywhere), and per pass: host gather into
// pinned staging → H2D → embeddings + LayerNorm → per layer fused QKV GEMM (bias epilogue) →
// varlen flash attention (MPNet's relative bias where the model has one) → output GEMM → bias +
// residual + LayerNorm → FFN GEMM + activation → GEMM → bias + residual + LayerNorm → pooling →
// Dense → normalize → D2H. Pre-LayerNorm encoders (ModernBERT) run the same steps with the norm
// moved before each sublayer, rotary positions on q and k after the QKV GEMM, a sliding window
// on the layers that have one and a gated feed-forward. The host prepares pass i + 1 while the
// GPU runs pass i.
//
// Plain C++ (pimpl): implemented in cpp/src/engine/encoder.cc by a CUDA build and by
// cpp/src/cuda_stub.cc (which raises) in a CPU-only one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "sutra/engine/weights.h"
#include "sutra/kernels/activation.h"
#include "sutra/kernels/layernorm.h"  // DeviceDtype
#include "sutra/pooling.h"

namespace sutra::engine {

/// How position ids are formed from a sequence's tokens.
enum class PositionKind : int {
  kAbsolute = 0,       // token i has position i (BERT, DistilBERT)
  kPaddingOffset = 1,  // Hugging Face's create_position_ids_from_input_ids (RoBERTa, MPNet)
  kRotary = 2,         // token i has position i, rotating q and k (no position table)
};

/// One sentence-transformers Dense module: activation(x · weightᵀ + bias), run in float32.
struct DenseLayer {
  int in_features = 0;
  int out_features = 0;
  std::vector<float> weight;  // [out_features, in_features]
  std::vector<float> bias;    // [out_features] or empty
  Activation activation = Activation::kIdentity;
};

/// What the engine runs: the encoder's sizes and semantics, then the pipeline's head.
struct EncoderModel {
  EncoderSpec spec;
  Activation activation = Activation::kGelu;  // of the feed-forward
  PositionKind positions = PositionKind::kAbsolute;
  int padding_idx = 0;  // kPaddingOffset: the pad id positions count from
  // kRotary: the rotary base of each layer (ModernBERT: one for global layers, one for local).
  std::vector<double> rotary_thetas;
  // Per layer, or empty for all global: -1 for global attention, w >= 0 for a sliding window
  // (query i sees key j iff |i - j| <= w).
  std::vector<int> attention_windows;
  float layer_norm_eps = 1e-12f;
  PoolingMode pooling = PoolingMode::kMean;
  std::vector<DenseLayer> dense;
  bool normalize = false;  // L2-normalize the output rows
  int output_dim() const { return dense.empty() ? spec.hidden : dense.back().out_features; }
};

struct EncoderOptions {
  int device = 0;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  // Tokens one pass holds (the workspace is sized for it); 0: from the device's free memory
  // after the weights are uploaded (see GpuEncoder::max_tokens).
  int64_t max_tokens = 0;
  // Time each stage with CUDA events (stage_seconds); costs a little per pass.
  bool profile = false;
  // Passes of at most this many tokens replay a CUDA graph of their shape (tokens, sequences,
  // longest sequence, attention layout, prompts), captured the first time the shape is seen:
  // one launch instead of ~8 per layer, which is most of a small pass's time. 0: never. Not
  // used with profile (its events sit between the stages).
  int64_t graph_max_tokens = 4096;
  // GEMMs of at least this many rows (tokens) are tuned: the first time a size (per power-of-two
  // bucket) is seen, cuBLASLt's first heuristic candidates are timed and the fastest is kept
  // (engine/gemm.h). 0: never, the heuristic's first choice throughout.
  int64_t gemm_tune_min_rows = 16384;
};

/// Seconds spent per stage, summed over encode() calls since the last reset. Host stages are
/// wall time of the calling thread; device stages are CUDA-event time on the engine's stream.
struct StageSeconds {
  double plan = 0;     // host: batch planning and input checks
  double gather = 0;   // host: ids and positions of a pass into pinned staging
  double h2d = 0;      // device: inputs to the device
  double layers = 0;   // device: embeddings and every encoder layer
  double head = 0;     // device: pooling, Dense, normalize
  double d2h = 0;      // device: results to pinned host memory
  double scatter = 0;  // host: results into the caller's rows, in input order
  double wait = 0;     // host: blocked on the device
  int64_t passes = 0;
  int64_t tokens = 0;
};

/// Spans of the input sequences whose final token states encode() mean-pools on the device
/// (late chunking: chunk vectors without copying every token's state back).
struct TokenSegments {
  const int32_t* sequence = nullptr;  // [count]: the input sequence of each span
  const int32_t* begin = nullptr;     // [count]: its first token, within the sequence
  const int32_t* end = nullptr;       // [count]: one past its last; begin < end <= length
  int64_t count = 0;
  float* means = nullptr;  // [count, hidden] float32 host rows: the mean of the span's states
};

/// Called after each finished pass with (passes done, passes planned); returning false stops
/// encode() before the next pass (it then throws sutra::Interrupted).
using PassCallback = std::function<bool(int64_t, int64_t)>;

class GpuEncoder {
 public:
  /// Uploads `arena` (host memory: plan_weight_layout(model.spec).total_bytes bytes, packed by
  /// pack_weights in the dtype of `options`) to `options.device` and allocates the workspace.
  /// Throws std::invalid_argument for an unsupported model (a head size other than 32, 64 or
  /// 128) or a wrong arena size, sutra::Error when CUDA or cuBLASLt fail (out of memory
  /// included; nothing is left allocated).
  GpuEncoder(const EncoderModel& model, const void* arena, int64_t arena_bytes,
             const EncoderOptions& options);
  ~GpuEncoder();
  GpuEncoder(const GpuEncoder&) = delete;
  GpuEncoder& operator=(const GpuEncoder&) = delete;

  /// Embeds `batch` sequences given as flat host arrays (ids [T], cu_seqlens [batch + 1]); each
  /// sequence 1..max_sequence_length() tokens, ids in [0, vocab). out: [batch, output_dim()]
  /// float32 host rows, in input order. token_states: null, or [T, hidden] float32 aligned with
  /// `ids`. prompt_lengths: null, or [batch] leading tokens the pooling leaves out.
  /// max_sequences caps the sequences per pass (0: only the token budget). segments: null, or
  /// spans whose token states are mean-pooled (before the pipeline's head) into their `means`.
  /// Thread-safe (calls are serialized). Throws std::invalid_argument for bad input (naming the sequence), nothing
  /// written to the device yet; sutra::Error for CUDA failures; sutra::Interrupted when
  /// on_pass asked to stop.
  void encode(const int32_t* ids, const int32_t* cu_seqlens, int64_t batch,
              const int32_t* prompt_lengths, int64_t max_sequences, float* out, float* token_states,
              const TokenSegments* segments, const PassCallback& on_pass);

  int64_t max_tokens() const;           // tokens per pass the workspace holds
  int64_t max_sequence_length() const;  // longest sequence the position table allows
  int output_dim() const;
  int hidden() const;  // width of the token states
  int device() const;
  DeviceDtype dtype() const;
  int64_t weight_bytes() const;     // device memory of the weights
  int64_t workspace_bytes() const;  // device memory of the workspace (cuBLASLt's included)
  StageSeconds stage_seconds() const;
  void reset_stage_seconds();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Bytes of device workspace one token of a pass needs for this model (activations, inputs).
int64_t workspace_bytes_per_token(const EncoderModel& model);

}  // namespace sutra::engine
