// The engine's weights on the host side: which tensors an encoder has, where each lies in the one
// device arena (uploaded with a single copy), and how the checkpoint's canonical tensors
// (python/sutra/models/architecture.py names them) are packed into it: q, k and v concatenated
// into one QKV weight for the fused GEMM, MPNet's bias table transposed to the [heads, buckets]
// fp32 layout the attention kernel reads. Plain C++: nothing here touches a device.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sutra::engine {

/// The sizes of a transformer encoder and the parts its checkpoint has: post-LayerNorm with
/// learned positions and biases everywhere (the BERT family, MPNet) by default; pre-LayerNorm,
/// rotary, gated and without biases for ModernBERT.
struct EncoderSpec {
  int64_t vocab = 0;  // rows of the word table, >= 1
  // Rows of the position table, >= 1; without a table (rotary positions), the longest sequence.
  int64_t max_positions = 0;
  int64_t token_types = 0;    // rows of the token-type table; 0: the model has none (MPNet)
  int hidden = 0;             // >= 1, a multiple of heads
  int heads = 0;              // >= 1
  int layers = 0;             // >= 1
  int intermediate = 0;       // the feed-forward width, >= 1
  int relative_buckets = 0;   // columns of MPNet's relative bias table; 0: no relative bias
  bool position_table = true;  // false: no embeddings.position (rotary positions)
  // x = x + sublayer(LayerNorm(x)): layer 0 has no attention_norm, and final_norm follows the
  // last layer. false: x = LayerNorm(x + sublayer(x)).
  bool pre_norm = false;
  bool gated_ffn = false;       // ffn.in is [2I, H]: act(first I rows) * (second I rows)
  bool attention_bias = true;   // qkv and o have biases
  bool ffn_bias = true;         // ffn.in and ffn.out have biases
  bool norm_bias = true;        // every LayerNorm has a bias
  int head_size() const { return heads > 0 ? hidden / heads : 0; }
};

/// Throws std::invalid_argument naming the first size that is out of range.
void validate(const EncoderSpec& spec);

/// Every slot starts at a multiple of this many bytes (cuBLASLt and vector loads want 16; 256
/// keeps each tensor on its own cache lines and matches cudaMalloc's own alignment).
constexpr int64_t kWeightAlignment = 256;

struct WeightSlot {
  std::string name;            // the engine's name, e.g. "layers.0.attention.qkv.weight"
  std::vector<int64_t> shape;  // as stored in the arena, row-major
  bool float32 = false;        // stored as fp32 rather than the engine's 2-byte element type
  // The canonical tensors the slot is made of: concatenated along dimension 0 in this order, or
  // (when `transposed`) the one 2-D source stored transposed.
  std::vector<std::string> sources;
  bool transposed = false;
  int64_t offset = 0;  // bytes from the arena's start, a multiple of kWeightAlignment
  int64_t bytes = 0;
};

struct WeightLayout {
  std::vector<WeightSlot> slots;  // in arena order
  int64_t element_bytes = 2;      // of the non-fp32 slots (fp16 and bf16 are both 2)
  int64_t total_bytes = 0;        // the arena's size
  /// The slot of this engine name, or nullptr.
  const WeightSlot* find(const std::string& name) const;
};

/// The arena of this encoder. Per layer: attention.qkv.weight [3H, H] (q, k, v) / .bias [3H],
/// attention.o.weight [H, H] / .bias, attention_norm.weight / .bias [H], ffn.in.weight [I, H]
/// ([2I, H] gated) / .bias, ffn.out.weight [H, I] / .bias [H], ffn_norm.weight / .bias; before
/// the layers the embedding tables and their norm, and relative_attention_bias [heads, buckets]
/// (fp32); after them final_norm.weight / .bias (pre-norm). The slots the spec rules out are
/// absent: biases it turns off, the position table, layer 0's attention_norm (pre-norm). Linear
/// weights keep torch's [out, in] layout. Throws std::invalid_argument for a bad spec.
WeightLayout plan_weight_layout(const EncoderSpec& spec, int64_t element_bytes = 2);

/// One canonical tensor as the caller holds it: row-major, contiguous, already in the slot's
/// element type (fp32 for float32 slots, the 2-byte engine type otherwise).
struct SourceTensor {
  const void* data = nullptr;  // null: the caller has no tensor of that name
  std::vector<int64_t> shape;
  int64_t element_bytes = 0;
};

/// Fills `arena` (layout.total_bytes, host memory) from the canonical tensors `lookup` returns,
/// zeroing the gaps between slots. Checks every source before writing anything and throws
/// std::invalid_argument naming the first one that is missing, mis-shaped or of the wrong
/// element size.
void pack_weights(const WeightLayout& layout,
                  const std::function<SourceTensor(const std::string&)>& lookup, void* arena);

}  // namespace sutra::engine
