// The CUDA encoder engine (sutra/engine/encoder.h): host orchestration of the kernels in cuda/
// and the GEMMs of engine/gemm. Everything a pass touches on the device is allocated by the
// constructor; encode() only enqueues work, copies and waits on events.
#include "sutra/engine/encoder.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/resources.h"
#include "engine/gemm.h"
#include "sutra/cuda_info.h"
#include "sutra/engine/batch_plan.h"
#include "sutra/error.h"
#include "sutra/kernels/attention.h"
#include "sutra/kernels/layernorm.h"
#include "sutra/kernels/pooling.h"
#include "sutra/kernels/rotary.h"
#include "sutra/relative_position.h"

namespace sutra::engine {
namespace {

using Clock = std::chrono::steady_clock;

// Every workspace region starts on its own 256-byte boundary (cuBLASLt's heuristic assumes it,
// and the kernels' vector loads need 16).
constexpr int64_t kRegionAlignment = 256;
// The "auto" token budget: at most this share of the free memory left after the weights, and
// at most this many tokens (beyond it a pass is long enough that the GPU is busy anyway).
constexpr double kAutoMemoryShare = 0.5;
constexpr int64_t kAutoMaxTokens = int64_t{1} << 18;
// Sequences one pass holds at most, whatever the token budget (sizes the per-sequence buffers).
constexpr int64_t kMaxSequencesPerPass = 65536;
constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
// How long the host polls for a pass's results before it sleeps on them: one short text's pass
// (about 0.2 ms on the H200) never pays a wake-up; a longer one frees its core after this.
constexpr std::chrono::microseconds kSpinBeforeSleep{1000};

int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int64_t element_bytes(DeviceDtype) { return 2; }  // fp16 and bf16

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

/// Token states leave the device in the engine's dtype; the caller gets float32.
void half_to_float(const uint16_t* in, int64_t count, DeviceDtype dtype, float* out) {
  if (dtype == DeviceDtype::kBFloat16) {
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
      std::memcpy(out + i, &bits, sizeof(float));
    }
    return;
  }
  for (int64_t i = 0; i < count; ++i) out[i] = half_bits_to_float(in[i]);
}

// A null pointer: the model has no such tensor (a bias it turns off; layer 0's attention_norm in a
// pre-norm model).
struct LayerWeights {
  const void* qkv_weight;
  const void* qkv_bias;
  const void* o_weight;
  const void* o_bias;
  const void* attention_norm_weight;
  const void* attention_norm_bias;
  const void* ffn_in_weight;
  const void* ffn_in_bias;
  const void* ffn_out_weight;
  const void* ffn_out_bias;
  const void* ffn_norm_weight;
  const void* ffn_norm_bias;
  const float* rotary_cos_sin;  // [max_positions, head_dim / 2] (cos, sin), or null
  int window;                   // -1: global attention; else |i - j| <= window
};

/// Bump allocation of regions inside one buffer.
class Regions {
 public:
  template <typename T>
  int64_t add(int64_t count) {
    const int64_t offset = round_up(size_, kRegionAlignment);
    size_ = offset + count * static_cast<int64_t>(sizeof(T));
    return offset;
  }
  int64_t size() const { return round_up(size_, kRegionAlignment); }

 private:
  int64_t size_ = 0;
};

/// The sizes a pass's buffers are planned for.
struct PassCapacity {
  int64_t tokens = 0;
  int64_t sequences = 0;
};

/// Device regions of the workspace, as offsets first and pointers once allocated.
struct DeviceLayout {
  int64_t hidden_states = 0, wide = 0, context = 0, sublayer = 0;  // activations
  int64_t residual = 0;  // pre-norm only: the residual stream (hidden_states: its normed form)
  int64_t ids = 0, positions = 0, cu_seqlens = 0, prompt_lengths = 0;
  int64_t packed_bounds = 0;  // [2, tokens]: each token's sequence range, for packed attention
  int64_t pooled = 0, head_a = 0, head_b = 0;
  int64_t pool_scratch = 0;  // lets the pooling split a few long sequences over many blocks
  int64_t bytes = 0;
};

int head_width(const EncoderModel& model) {
  int width = model.spec.hidden;
  for (const DenseLayer& dense : model.dense) width = std::max(width, dense.out_features);
  return width;
}

DeviceLayout plan_device_layout(const EncoderModel& model, PassCapacity capacity) {
  const int64_t hidden = model.spec.hidden;
  const int64_t inter = model.spec.intermediate;
  const int64_t wide = std::max<int64_t>(3 * hidden, (model.spec.gated_ffn ? 2 : 1) * inter);
  // The attention context, and the gated feed-forward's activation after it.
  const int64_t context = std::max<int64_t>(hidden, model.spec.gated_ffn ? inter : 0);
  const int64_t t = capacity.tokens, s = capacity.sequences;
  const int64_t e = element_bytes(DeviceDtype::kFloat16);
  Regions r;
  DeviceLayout layout;
  // Activations in the engine's 2-byte dtype: the layer output, the QKV / feed-forward inner
  // buffer (never live at once), the attention context and a sublayer output; for pre-norm the
  // residual stream too (the layer output is then the next sublayer's normalized input).
  layout.hidden_states = r.add<uint16_t>(t * hidden * e / 2);
  layout.wide = r.add<uint16_t>(t * wide * e / 2);
  layout.context = r.add<uint16_t>(t * context * e / 2);
  layout.sublayer = r.add<uint16_t>(t * hidden * e / 2);
  if (model.spec.pre_norm) layout.residual = r.add<uint16_t>(t * hidden * e / 2);
  layout.ids = r.add<int32_t>(t);
  layout.positions = r.add<int32_t>(t);
  layout.cu_seqlens = r.add<int32_t>(s + 1);
  layout.prompt_lengths = r.add<int32_t>(s);
  layout.packed_bounds = r.add<int32_t>(2 * t);
  const int64_t width = head_width(model);
  layout.pooled = r.add<float>(s * hidden);
  layout.head_a = r.add<float>(s * width);
  layout.head_b = r.add<float>(s * width);
  layout.pool_scratch = r.add<float>(pool_scratch_floats(static_cast<int>(hidden)));
  layout.bytes = r.size();
  return layout;
}

int64_t sequences_for(int64_t tokens) { return std::min(tokens, kMaxSequencesPerPass); }

void validate_model(const EncoderModel& model) {
  validate(model.spec);
  const int head_size = model.spec.head_size();
  SUTRA_CHECK(head_size == 32 || head_size == 64 || head_size == 128, "the model's head size",
              "32, 64 or 128 (the engine's attention kernels)", head_size);
  SUTRA_CHECK(model.layer_norm_eps > 0.0f, "layer_norm_eps", "> 0",
              static_cast<double>(model.layer_norm_eps));
  if (model.positions == PositionKind::kPaddingOffset) {
    SUTRA_CHECK(model.padding_idx >= 0 && model.padding_idx + 1 < model.spec.max_positions,
                "padding_idx", "in [0, max_positions - 1)", model.padding_idx);
  }
  const bool rotary = model.positions == PositionKind::kRotary;
  SUTRA_CHECK(model.spec.position_table != rotary, "spec.position_table",
              rotary ? "false with rotary positions" : "true with learned positions",
              model.spec.position_table);
  const size_t layers = static_cast<size_t>(model.spec.layers);
  SUTRA_CHECK(model.rotary_thetas.size() == (rotary ? layers : 0), "rotary_thetas",
              rotary ? "one rotary base per layer" : "empty (no rotary positions)",
              model.rotary_thetas.size());
  for (double theta : model.rotary_thetas) {
    SUTRA_CHECK(theta > 0, "rotary_thetas", "bases > 0", theta);
  }
  SUTRA_CHECK(model.attention_windows.empty() || model.attention_windows.size() == layers,
              "attention_windows", "empty or one value per layer", model.attention_windows.size());
  for (int window : model.attention_windows) {
    SUTRA_CHECK(window >= -1, "attention_windows", "-1 (global) or a window >= 0", window);
  }
  int width = model.spec.hidden;
  for (size_t i = 0; i < model.dense.size(); ++i) {
    const DenseLayer& dense = model.dense[i];
    const std::string name = "dense[" + std::to_string(i) + "]";
    SUTRA_CHECK(dense.in_features == width, (name + ".in_features").c_str(),
                "the previous module's width " + std::to_string(width), dense.in_features);
    SUTRA_CHECK(dense.out_features >= 1, (name + ".out_features").c_str(), ">= 1",
                dense.out_features);
    SUTRA_CHECK(dense.weight.size() == static_cast<size_t>(dense.out_features) * dense.in_features,
                (name + ".weight").c_str(), "out_features x in_features values",
                dense.weight.size());
    SUTRA_CHECK(dense.bias.empty() || dense.bias.size() == static_cast<size_t>(dense.out_features),
                (name + ".bias").c_str(), "empty or out_features values", dense.bias.size());
    width = dense.out_features;
  }
}

GemmType gemm_type(DeviceDtype dtype) {
  return dtype == DeviceDtype::kBFloat16 ? GemmType::kBFloat16 : GemmType::kFloat16;
}

}  // namespace

int64_t workspace_bytes_per_token(const EncoderModel& model) {
  // The regions of one token, plus its share of the per-sequence regions when every sequence of
  // a pass is one token long (the worst case the capacity must hold).
  const DeviceLayout one = plan_device_layout(model, {1024, 1024});
  return one.bytes / 1024 + 1;
}

struct GpuEncoder::Impl {
  EncoderModel model;
  EncoderOptions options;
  WeightLayout weights_layout;
  int64_t max_sequence_length = 0;

  cuda::DeviceBuffer<unsigned char> weights;
  cuda::DeviceBuffer<float> dense_weights;  // the head's Dense modules, float32
  std::vector<const float*> dense_weight_ptrs, dense_bias_ptrs;
  std::vector<LayerWeights> layers;
  const void* word_embeddings = nullptr;
  const void* position_embeddings = nullptr;
  const void* token_type_row = nullptr;
  const void* embedding_norm_weight = nullptr;
  const void* embedding_norm_bias = nullptr;
  const void* final_norm_weight = nullptr;  // pre-norm only
  const void* final_norm_bias = nullptr;
  cuda::DeviceBuffer<float> rotary_tables;  // one (cos, sin) table per distinct rotary base
  FlashAttnParams attention_template;  // the per-model fields (relative bias, bucket map)

  PassCapacity capacity;
  DeviceLayout device_layout;
  cuda::DeviceBuffer<unsigned char> workspace;
  std::unique_ptr<cuda::Stream> stream;
  std::unique_ptr<Gemm> gemm;

  // Double-buffered host staging: the host fills slot (i % 2) while the GPU runs pass i - 1.
  struct Slot {
    cuda::PinnedBuffer<int32_t> ids, positions, cu_seqlens, prompt_lengths;
    cuda::PinnedBuffer<float> out;
    cuda::PinnedBuffer<uint16_t> token_states;  // allocated on the first call that wants them
    // Late-chunking spans of the pass: their packed bounds and pooled means (grown on demand).
    cuda::PinnedBuffer<int32_t> segment_bounds;
    cuda::PinnedBuffer<float> segment_means;
    cuda::Event staged;                         // the H2D copies out of this slot are done
    // The pass's results are in this slot. Waited for with wait(kSpinBeforeSleep): a long pass
    // sleeps rather than spins, so the core goes to the tokenizer running beside the engine.
    cuda::Event done{cudaEventDisableTiming | cudaEventBlockingSync};
    cuda::Event start{cudaEventDefault}, after_h2d{cudaEventDefault},
        after_layers{cudaEventDefault}, after_head{cudaEventDefault}, after_d2h{cudaEventDefault};
    bool used = false;
  };
  std::vector<Slot> slots;  // two, made on the engine's device by allocate_workspace

  mutable std::mutex mutex;  // encode() calls run one at a time
  StageSeconds stages;

  template <typename T>
  T* region(int64_t offset) const {
    return reinterpret_cast<T*>(workspace.data() + offset);
  }
  const void* slot_ptr(const std::string& name) const {
    const WeightSlot* slot = weights_layout.find(name);
    if (slot == nullptr) throw Error("the weight layout has no slot '" + name + "'");
    return weights.data() + slot->offset;
  }
  // Null where the model has no such tensor (the layout leaves out what the spec rules out).
  const void* slot_or_null(const std::string& name) const {
    const WeightSlot* slot = weights_layout.find(name);
    return slot == nullptr ? nullptr : weights.data() + slot->offset;
  }

  void upload(const void* arena, int64_t arena_bytes);
  void upload_rotary_tables();
  void allocate_workspace();
  // pack_attention: attention row tiles span sequences (FlashAttnParams::packed_tokens).
  void forward(int64_t tokens, int64_t sequences, int max_seqlen, bool pack_attention);
  void head(int64_t tokens, int64_t sequences, bool prompts);
  // Mean-pools `count` spans of this pass's token states (packed bounds staged in `slot`) into
  // slot.segment_means, in rounds of at most capacity.sequences rows.
  void pool_segments(Slot& slot, int64_t count);
  // forward + head, eagerly or through the graph of the pass's shape.
  void run_pass(int64_t tokens, int64_t sequences, int max_seqlen, bool pack_attention,
                bool prompts);

  // The kernels of a pass read its ids, positions and cu_seqlens from fixed workspace regions, so
  // one graph serves every pass of its shape.
  struct GraphShape {
    int64_t tokens, sequences;
    int max_seqlen;
    bool pack_attention, prompts;
    bool operator<(const GraphShape& o) const {
      return std::tie(tokens, sequences, max_seqlen, pack_attention, prompts) <
             std::tie(o.tokens, o.sequences, o.max_seqlen, o.pack_attention, o.prompts);
    }
  };
  std::map<GraphShape, cuda::GraphExec> graphs;
  static constexpr size_t kMaxGraphs = 256;  // then the cache starts over
};

void GpuEncoder::Impl::upload(const void* arena, int64_t arena_bytes) {
  weights = cuda::DeviceBuffer<unsigned char>(static_cast<size_t>(arena_bytes));
  cuda::check(
      cudaMemcpy(weights.data(), arena, static_cast<size_t>(arena_bytes), cudaMemcpyHostToDevice),
      "cudaMemcpy of the weights");
  word_embeddings = slot_ptr("embeddings.word");
  position_embeddings = model.spec.position_table ? slot_ptr("embeddings.position") : nullptr;
  token_type_row = model.spec.token_types > 0 ? slot_ptr("embeddings.token_type") : nullptr;
  embedding_norm_weight = slot_ptr("embeddings.norm.weight");
  embedding_norm_bias = slot_or_null("embeddings.norm.bias");
  if (model.spec.pre_norm) {
    final_norm_weight = slot_ptr("final_norm.weight");
    final_norm_bias = slot_or_null("final_norm.bias");
  }
  for (int i = 0; i < model.spec.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const bool has_attention_norm = !model.spec.pre_norm || i > 0;
    const int window =
        model.attention_windows.empty() ? -1 : model.attention_windows[static_cast<size_t>(i)];
    layers.push_back({slot_ptr(p + "attention.qkv.weight"), slot_or_null(p + "attention.qkv.bias"),
                      slot_ptr(p + "attention.o.weight"), slot_or_null(p + "attention.o.bias"),
                      has_attention_norm ? slot_ptr(p + "attention_norm.weight") : nullptr,
                      slot_or_null(p + "attention_norm.bias"), slot_ptr(p + "ffn.in.weight"),
                      slot_or_null(p + "ffn.in.bias"), slot_ptr(p + "ffn.out.weight"),
                      slot_or_null(p + "ffn.out.bias"), slot_ptr(p + "ffn_norm.weight"),
                      slot_or_null(p + "ffn_norm.bias"), nullptr, window});
  }
  if (model.positions == PositionKind::kRotary) upload_rotary_tables();

  // The Dense modules: one float32 buffer, each tensor on a 64-float (256-byte) boundary.
  std::vector<int64_t> offsets;
  int64_t floats = 0;
  for (const DenseLayer& dense : model.dense) {
    offsets.push_back(floats);
    floats = round_up(floats + static_cast<int64_t>(dense.weight.size()), 64);
    offsets.push_back(dense.bias.empty() ? -1 : floats);
    floats = round_up(floats + static_cast<int64_t>(dense.bias.size()), 64);
  }
  if (floats > 0) {
    std::vector<float> host(static_cast<size_t>(floats), 0.0f);
    for (size_t i = 0; i < model.dense.size(); ++i) {
      const DenseLayer& dense = model.dense[i];
      std::copy(dense.weight.begin(), dense.weight.end(), host.begin() + offsets[2 * i]);
      if (!dense.bias.empty()) {
        std::copy(dense.bias.begin(), dense.bias.end(), host.begin() + offsets[2 * i + 1]);
      }
    }
    dense_weights = cuda::DeviceBuffer<float>(static_cast<size_t>(floats));
    cuda::check(cudaMemcpy(dense_weights.data(), host.data(), host.size() * sizeof(float),
                           cudaMemcpyHostToDevice),
                "cudaMemcpy of the Dense weights");
    for (size_t i = 0; i < model.dense.size(); ++i) {
      dense_weight_ptrs.push_back(dense_weights.data() + offsets[2 * i]);
      dense_bias_ptrs.push_back(offsets[2 * i + 1] < 0 ? nullptr
                                                       : dense_weights.data() + offsets[2 * i + 1]);
    }
  }

  FlashAttnParams& a = attention_template;
  a.heads = model.spec.heads;
  a.head_dim = model.spec.head_size();
  a.softmax_scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  a.dtype = options.dtype == DeviceDtype::kBFloat16 ? AttnDtype::kBFloat16 : AttnDtype::kFloat16;
  a.device = options.device;
  if (model.spec.relative_buckets > 0) {
    // MPNet: transformers' compute_position_bias buckets with its defaults (32, 128) whatever
    // the table's width; distances past max_distance share the edge bucket, which the kernel
    // reaches by clamping |j - i| to rel_max_distance.
    a.bias = AttnBias::kRelative;
    a.rel_bias = static_cast<const float*>(slot_ptr("relative_attention_bias"));
    a.rel_num_buckets = model.spec.relative_buckets;
    a.rel_max_distance = kMpnetMaxDistance;
    std::vector<int32_t> table(2 * kMpnetMaxDistance + 1);
    mpnet_bucket_table(kMpnetMaxDistance, kMpnetNumBuckets, kMpnetMaxDistance, table.data());
    for (size_t i = 0; i < table.size(); ++i) a.rel_bucket[i] = static_cast<uint8_t>(table[i]);
  }
}

void GpuEncoder::Impl::upload_rotary_tables() {
  std::vector<double> bases;  // distinct, in order of first use
  for (double theta : model.rotary_thetas) {
    if (std::find(bases.begin(), bases.end(), theta) == bases.end()) bases.push_back(theta);
  }
  const int64_t floats = model.spec.max_positions * model.spec.head_size();  // (cos, sin) pairs
  std::vector<float> host(static_cast<size_t>(floats) * bases.size());
  for (size_t b = 0; b < bases.size(); ++b) {
    rotary_cos_sin_table(bases[b], model.spec.head_size(), model.spec.max_positions,
                         host.data() + static_cast<int64_t>(b) * floats);
  }
  rotary_tables = cuda::DeviceBuffer<float>(host.size());
  cuda::check(cudaMemcpy(rotary_tables.data(), host.data(), host.size() * sizeof(float),
                         cudaMemcpyHostToDevice),
              "cudaMemcpy of the rotary tables");
  for (size_t i = 0; i < layers.size(); ++i) {
    const size_t b = static_cast<size_t>(
        std::find(bases.begin(), bases.end(), model.rotary_thetas[i]) - bases.begin());
    layers[i].rotary_cos_sin = rotary_tables.data() + static_cast<int64_t>(b) * floats;
  }
}

void GpuEncoder::Impl::allocate_workspace() {
  const int64_t per_token = workspace_bytes_per_token(model);
  int64_t tokens = options.max_tokens;
  if (tokens <= 0) {
    size_t free_bytes = 0, total_bytes = 0;
    cuda::check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const double usable = kAutoMemoryShare * static_cast<double>(free_bytes) -
                          static_cast<double>(kGemmWorkspaceBytes);
    tokens = std::min<int64_t>(kAutoMaxTokens, static_cast<int64_t>(usable / per_token));
    tokens = tokens / 256 * 256;
    if (tokens < max_sequence_length) {
      throw Error(
          "the GPU has too little free memory for the engine: " + std::to_string(free_bytes >> 20) +
          " MiB free after the weights, and one pass " + "of the longest sequence (" +
          std::to_string(max_sequence_length) + " tokens) needs about " +
          std::to_string((max_sequence_length * per_token) >> 20) + " MiB of workspace");
    }
  }
  SUTRA_CHECK(tokens >= max_sequence_length, "max_tokens",
              ">= the longest sequence the model takes (" + std::to_string(max_sequence_length) +
                  "), or 0 for auto",
              tokens);
  capacity = {tokens, sequences_for(tokens)};
  device_layout = plan_device_layout(model, capacity);
  try {
    workspace = cuda::DeviceBuffer<unsigned char>(static_cast<size_t>(device_layout.bytes));
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + ": the workspace for " + std::to_string(tokens) +
                " tokens per pass needs " + std::to_string(device_layout.bytes >> 20) +
                " MiB; ask for fewer tokens per pass (max_batch_tokens)");
  }
  const int64_t out_width = model.output_dim();
  slots.resize(2);
  for (Slot& slot : slots) {
    slot.ids = cuda::PinnedBuffer<int32_t>(static_cast<size_t>(capacity.tokens));
    slot.positions = cuda::PinnedBuffer<int32_t>(static_cast<size_t>(capacity.tokens));
    slot.cu_seqlens = cuda::PinnedBuffer<int32_t>(static_cast<size_t>(capacity.sequences + 1));
    slot.prompt_lengths = cuda::PinnedBuffer<int32_t>(static_cast<size_t>(capacity.sequences));
    slot.out = cuda::PinnedBuffer<float>(static_cast<size_t>(capacity.sequences * out_width));
  }
}

void GpuEncoder::Impl::forward(int64_t tokens, int64_t sequences, int max_seqlen,
                               bool pack_attention) {
  const cudaStream_t s = stream->get();
  const EncoderSpec& spec = model.spec;
  const int hidden = spec.hidden;
  const int inter = spec.intermediate;
  const DeviceDtype dtype = options.dtype;
  const int device = options.device;
  void* x = region<void>(device_layout.hidden_states);
  void* wide = region<void>(device_layout.wide);
  void* context = region<void>(device_layout.context);
  void* sublayer = region<void>(device_layout.sublayer);
  // Post-norm: x is the stream and each norm's output. Pre-norm: the stream lives in `residual`
  // and x holds the normalized input of the next sublayer (after the last layer, the final norm).
  void* residual = spec.pre_norm ? region<void>(device_layout.residual) : x;
  const int64_t e = element_bytes(dtype);

  EmbeddingLayerNormParams embed;
  embed.ids = region<int32_t>(device_layout.ids);
  embed.positions = region<int32_t>(device_layout.positions);
  embed.word_embeddings = word_embeddings;
  embed.position_embeddings = position_embeddings;
  embed.token_type_row = token_type_row;
  embed.gamma = embedding_norm_weight;
  embed.beta = embedding_norm_bias;
  embed.out = residual;
  embed.tokens = tokens;
  embed.hidden = hidden;
  embed.vocab = spec.vocab;
  embed.max_positions = spec.max_positions;
  embed.eps = model.layer_norm_eps;
  embed.dtype = dtype;
  embed.device = device;
  embedding_layernorm(embed, s);

  FlashAttnParams attn = attention_template;
  attn.cu_seqlens = region<int32_t>(device_layout.cu_seqlens);
  attn.batch = static_cast<int>(sequences);
  attn.max_seqlen = max_seqlen;
  attn.varlen_rows = tokens;  // the sm_90 kernels' bulk copies stop at the pass's last token
  // The faster kernel for this pass's lengths (results then depend on the pass, as they do with
  // packed tiles, within the dtype's rounding).
  const AttnPassChoice attention_choice = flash_attention_pass_choice(attn.head_dim, max_seqlen);
  attn.path = attention_choice.path;
  const int global_window = pack_attention ? -1 : attention_choice.dense_window;
  if (pack_attention) {  // once per pass, for every layer
    attn.packed_tokens = tokens;
    attn.packed_bounds = region<int32_t>(device_layout.packed_bounds);
    flash_attention_packed_bounds(attn.cu_seqlens, static_cast<int>(sequences), tokens,
                                  region<int32_t>(device_layout.packed_bounds), device, s);
  }
  const int64_t qkv_row = 3 * static_cast<int64_t>(hidden);
  attn.q = wide;
  attn.k = static_cast<const char*>(wide) + hidden * e;
  attn.v = static_cast<const char*>(wide) + 2 * hidden * e;
  attn.q_row_stride = attn.k_row_stride = attn.v_row_stride = qkv_row;
  attn.q_head_stride = attn.k_head_stride = attn.v_head_stride = attn.head_dim;
  attn.o = context;
  attn.o_row_stride = hidden;
  attn.o_head_stride = attn.head_dim;

  RotaryParams rotary;
  rotary.qkv = wide;
  rotary.row_stride = qkv_row;
  rotary.k_offset = hidden;
  rotary.positions = region<int32_t>(device_layout.positions);
  rotary.tokens = tokens;
  rotary.heads = spec.heads;
  rotary.head_dim = spec.head_size();
  rotary.max_positions = spec.max_positions;
  rotary.dtype = dtype;
  rotary.device = device;

  const GemmType type = gemm_type(dtype);
  const auto bias_epilogue = [](const void* bias) {
    return bias != nullptr ? GemmEpilogue::kBias : GemmEpilogue::kNone;
  };
  // The plain feed-forward's activation: in the GEMM's epilogue where cuBLASLt has it (with a
  // bias), else a separate pass (BERT's erf GELU: cuBLASLt's GELU is the tanh approximation).
  const auto fused_activation = [&](const void* bias) {
    return bias != nullptr &&
           (model.activation == Activation::kGeluTanh || model.activation == Activation::kRelu);
  };

  AddLayerNormParams norm;
  norm.residual = residual;
  norm.out = x;
  norm.sum_out = spec.pre_norm ? residual : nullptr;
  norm.x = sublayer;
  norm.tokens = tokens;
  norm.hidden = hidden;
  norm.eps = model.layer_norm_eps;
  norm.dtype = dtype;
  norm.device = device;

  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& w = layers[i];
    // Pre-norm layer 0 has no attention norm: it reads the embeddings' output, the stream.
    const void* attention_in = spec.pre_norm && i == 0 ? residual : x;
    gemm->run({attention_in, w.qkv_weight, w.qkv_bias, wide, tokens, qkv_row, hidden,
               bias_epilogue(w.qkv_bias), type},
              s);
    if (w.rotary_cos_sin != nullptr) {
      rotary.cos_sin = w.rotary_cos_sin;
      rotary_embedding(rotary, s);
    }
    attn.window_left = attn.window_right = w.window >= 0 ? w.window : global_window;
    flash_attention_forward(attn, s);
    gemm->run(
        {context, w.o_weight, nullptr, sublayer, tokens, hidden, hidden, GemmEpilogue::kNone, type},
        s);
    // Post-norm: x = attention_norm(x + o). Pre-norm: stream += o; x = ffn_norm(stream).
    norm.bias = w.o_bias;
    norm.gamma = spec.pre_norm ? w.ffn_norm_weight : w.attention_norm_weight;
    norm.beta = spec.pre_norm ? w.ffn_norm_bias : w.attention_norm_bias;
    add_layernorm(norm, s);

    const void* ffn_hidden = wide;  // the feed-forward's activated inner rows
    if (spec.gated_ffn) {
      gemm->run({x, w.ffn_in_weight, w.ffn_in_bias, wide, tokens, 2 * int64_t{inter}, hidden,
                 bias_epilogue(w.ffn_in_bias), type},
                s);
      GatedActivationParams gated;
      gated.x = wide;
      gated.out = context;
      gated.rows = tokens;
      gated.cols = inter;
      gated.activation = model.activation;
      gated.dtype = dtype;
      gated.device = device;
      gated_activation(gated, s);
      ffn_hidden = context;
    } else {
      GemmEpilogue epilogue = bias_epilogue(w.ffn_in_bias);
      if (fused_activation(w.ffn_in_bias)) {
        epilogue = model.activation == Activation::kGeluTanh ? GemmEpilogue::kBiasGeluTanh
                                                             : GemmEpilogue::kBiasRelu;
      }
      gemm->run({x, w.ffn_in_weight, w.ffn_in_bias, wide, tokens, inter, hidden, epilogue, type},
                s);
      if (!fused_activation(w.ffn_in_bias) && model.activation != Activation::kIdentity) {
        BiasActivationParams act;
        act.x = wide;
        act.rows = tokens;
        act.cols = inter;
        act.activation = model.activation;
        act.dtype = dtype;
        act.device = device;
        bias_activation(act, s);
      }
    }
    gemm->run({ffn_hidden, w.ffn_out_weight, nullptr, sublayer, tokens, hidden, inter,
               GemmEpilogue::kNone, type},
              s);
    // Post-norm: x = ffn_norm(x + out). Pre-norm: stream += out; x = the next layer's attention
    // norm of the stream, or the final norm after the last layer.
    norm.bias = w.ffn_out_bias;
    if (!spec.pre_norm) {
      norm.gamma = w.ffn_norm_weight;
      norm.beta = w.ffn_norm_bias;
    } else if (i + 1 < layers.size()) {
      norm.gamma = layers[i + 1].attention_norm_weight;
      norm.beta = layers[i + 1].attention_norm_bias;
    } else {
      norm.gamma = final_norm_weight;
      norm.beta = final_norm_bias;
    }
    add_layernorm(norm, s);
  }
}

void GpuEncoder::Impl::run_pass(int64_t tokens, int64_t sequences, int max_seqlen,
                                bool pack_attention, bool prompts) {
  if (options.profile || tokens > options.graph_max_tokens) {
    forward(tokens, sequences, max_seqlen, pack_attention);
    head(tokens, sequences, prompts);
    return;
  }
  const cudaStream_t s = stream->get();
  const GraphShape shape{tokens, sequences, max_seqlen, pack_attention, prompts};
  auto found = graphs.find(shape);
  if (found == graphs.end()) {
    if (graphs.size() >= kMaxGraphs) graphs.clear();
    // Relaxed: the first pass of a shape may create cuBLASLt plans and set kernel attributes,
    // host calls that the stricter capture modes refuse.
    cuda::check(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
      forward(tokens, sequences, max_seqlen, pack_attention);
      head(tokens, sequences, prompts);
    } catch (...) {
      cudaStreamEndCapture(s, &graph);  // leaves the stream usable
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    cuda::check(cudaStreamEndCapture(s, &graph), "cudaStreamEndCapture");
    try {
      found = graphs.emplace(shape, cuda::GraphExec(graph)).first;
    } catch (...) {
      cudaGraphDestroy(graph);
      throw;
    }
    cudaGraphDestroy(graph);
  }
  found->second.launch(s);
}

void GpuEncoder::Impl::head(int64_t tokens, int64_t sequences, bool prompts) {
  const cudaStream_t s = stream->get();
  DevicePoolParams pool;
  pool.tokens = region<void>(device_layout.hidden_states);
  pool.cu_seqlens = region<int32_t>(device_layout.cu_seqlens);
  pool.prompt_lengths = prompts ? region<int32_t>(device_layout.prompt_lengths) : nullptr;
  pool.out = region<float>(device_layout.pooled);
  pool.batch = static_cast<int>(sequences);
  pool.hidden = model.spec.hidden;
  pool.mode = model.pooling;
  pool.normalize = model.normalize && model.dense.empty();
  pool.scratch = region<float>(device_layout.pool_scratch);
  pool.total_tokens = tokens;
  pool.dtype = options.dtype;
  pool.device = options.device;
  pool_tokens_device(pool, s);

  const float* in = pool.out;
  float* buffers[2] = {region<float>(device_layout.head_a), region<float>(device_layout.head_b)};
  for (size_t i = 0; i < model.dense.size(); ++i) {
    const DenseLayer& dense = model.dense[i];
    float* out = buffers[i % 2];
    const bool bias = dense_bias_ptrs[i] != nullptr;
    gemm->run(
        {in, dense_weight_ptrs[i], dense_bias_ptrs[i], out, sequences, dense.out_features,
         dense.in_features, bias ? GemmEpilogue::kBias : GemmEpilogue::kNone, GemmType::kFloat32},
        s);
    if (dense.activation != Activation::kIdentity) {
      BiasActivationParams act;
      act.x = out;
      act.rows = sequences;
      act.cols = dense.out_features;
      act.activation = dense.activation;
      act.float32 = true;
      act.device = options.device;
      bias_activation(act, s);
    }
    in = out;
  }
  if (!model.dense.empty() && model.normalize) {
    l2_normalize_device(const_cast<float*>(in), sequences, model.output_dim(), options.device, s);
  }
}

void GpuEncoder::Impl::pool_segments(Slot& slot, int64_t count) {
  const cudaStream_t s = stream->get();
  const int hidden = model.spec.hidden;
  // The packed-attention bounds region is free once the pass's layers have run, and it holds
  // 2 * tokens >= 2 * capacity.sequences values; the pooled rows go where the head's did (the
  // head's results were copied out earlier on this stream).
  int32_t* bounds = region<int32_t>(device_layout.packed_bounds);
  float* pooled = region<float>(device_layout.pooled);
  for (int64_t first = 0; first < count; first += capacity.sequences) {
    const int64_t rows = std::min(capacity.sequences, count - first);
    cuda::check(cudaMemcpyAsync(bounds, slot.segment_bounds.data() + 2 * first,
                                sizeof(int32_t) * 2 * rows, cudaMemcpyHostToDevice, s),
                "cudaMemcpyAsync(segment bounds)");
    DevicePoolParams pool;
    pool.tokens = region<void>(device_layout.hidden_states);
    pool.segment_bounds = bounds;
    pool.out = pooled;
    pool.batch = static_cast<int>(rows);
    pool.hidden = hidden;
    pool.mode = PoolingMode::kMean;
    pool.scratch = region<float>(device_layout.pool_scratch);
    pool.dtype = options.dtype;
    pool.device = options.device;
    pool_tokens_device(pool, s);
    cuda::check(cudaMemcpyAsync(slot.segment_means.data() + first * hidden, pooled,
                                sizeof(float) * rows * hidden, cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync(segment means)");
  }
}

GpuEncoder::GpuEncoder(const EncoderModel& model, const void* arena, int64_t arena_bytes,
                       const EncoderOptions& options)
    : impl_(std::make_unique<Impl>()) {
  validate_model(model);
  SUTRA_CHECK(options.device >= 0, "device", ">= 0", options.device);
  SUTRA_CHECK(options.max_tokens >= 0, "max_tokens", ">= 0 (0: auto)", options.max_tokens);
  Impl& m = *impl_;
  m.model = model;
  m.options = options;
  m.weights_layout = plan_weight_layout(model.spec, element_bytes(options.dtype));
  SUTRA_CHECK(arena_bytes == m.weights_layout.total_bytes, "arena_bytes",
              "the layout's total_bytes " + std::to_string(m.weights_layout.total_bytes),
              arena_bytes);
  SUTRA_CHECK(arena != nullptr, "arena", "a host pointer", "a null pointer");
  m.max_sequence_length = model.positions == PositionKind::kPaddingOffset
                              ? model.spec.max_positions - model.padding_idx - 1
                              : model.spec.max_positions;
  const int count = cuda_device_count();
  if (count == 0) throw Error("the GPU engine needs an NVIDIA GPU and none is visible");
  SUTRA_CHECK(options.device < count, "device",
              "a visible device index in [0, " + std::to_string(count) + ")", options.device);
  cuda::DeviceGuard guard(options.device);
  int major = 0;
  cuda::check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, options.device),
              "cudaDeviceGetAttribute");
  if (major < 8) {
    throw Error("the GPU engine needs an sm_80 or newer GPU (device " +
                std::to_string(options.device) + " is sm_" + std::to_string(major) + "x)");
  }
  m.stream = std::make_unique<cuda::Stream>();
  m.gemm = std::make_unique<Gemm>(kGemmWorkspaceBytes, options.gemm_tune_min_rows);
  m.upload(arena, arena_bytes);
  m.allocate_workspace();
}

GpuEncoder::~GpuEncoder() {
  if (impl_ && impl_->stream) {
    cuda::DeviceGuard guard(impl_->options.device);
    cudaStreamSynchronize(impl_->stream->get());  // the buffers below are in use until then
  }
}

void GpuEncoder::encode(const int32_t* ids, const int32_t* cu_seqlens, int64_t batch,
                        const int32_t* prompt_lengths, int64_t max_sequences, float* out,
                        float* token_states, const TokenSegments* segments,
                        const PassCallback& on_pass) {
  SUTRA_CHECK(batch >= 0, "batch", ">= 0", batch);
  SUTRA_CHECK(max_sequences >= 0, "max_sequences", ">= 0 (0: the token budget only)",
              max_sequences);
  Impl& m = *impl_;
  const std::lock_guard<std::mutex> lock(m.mutex);
  if (batch == 0) return;
  SUTRA_CHECK(ids != nullptr && cu_seqlens != nullptr && out != nullptr, "ids, cu_seqlens, out",
              "host pointers", "a null pointer");
  const auto plan_start = Clock::now();

  // Every input is checked before anything reaches the device.
  SUTRA_CHECK(cu_seqlens[0] == 0, "cu_seqlens[0]", "0", cu_seqlens[0]);
  std::vector<int32_t> lengths(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = static_cast<int64_t>(cu_seqlens[b + 1]) - cu_seqlens[b];
    if (length < 1 || length > m.max_sequence_length) {
      throw std::invalid_argument("sequence " + std::to_string(b) + " has " +
                                  std::to_string(length) + " tokens; the engine takes 1.." +
                                  std::to_string(m.max_sequence_length) +
                                  " tokens per sequence (special tokens included)");
    }
    if (prompt_lengths != nullptr && prompt_lengths[b] < 0) {
      throw std::invalid_argument("prompt_lengths[" + std::to_string(b) + "] must be >= 0, got " +
                                  std::to_string(prompt_lengths[b]));
    }
    lengths[static_cast<size_t>(b)] = static_cast<int32_t>(length);
  }
  const int64_t total_tokens = cu_seqlens[batch];
  for (int64_t t = 0; t < total_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= m.model.spec.vocab) {
      const int64_t b = std::upper_bound(cu_seqlens, cu_seqlens + batch + 1, t) - cu_seqlens - 1;
      throw std::invalid_argument("token " + std::to_string(t - cu_seqlens[b]) + " of sequence " +
                                  std::to_string(b) + " is " + std::to_string(ids[t]) +
                                  ", not a token id in [0, " + std::to_string(m.model.spec.vocab) +
                                  ")");
    }
  }
  const int64_t segment_count = segments != nullptr ? segments->count : 0;
  if (segment_count > 0) {
    SUTRA_CHECK(segments->sequence != nullptr && segments->begin != nullptr &&
                    segments->end != nullptr && segments->means != nullptr,
                "segments", "host arrays", "a null pointer");
    for (int64_t i = 0; i < segment_count; ++i) {
      const int64_t b = segments->sequence[i];
      const int64_t length = b >= 0 && b < batch ? lengths[static_cast<size_t>(b)] : 0;
      if (b < 0 || b >= batch || segments->begin[i] < 0 ||
          segments->begin[i] >= segments->end[i] || segments->end[i] > length) {
        throw std::invalid_argument(
            "segment " + std::to_string(i) + " is (sequence " + std::to_string(b) + ", tokens " +
            std::to_string(segments->begin[i]) + ".." + std::to_string(segments->end[i]) +
            "); a segment needs a sequence in [0, " + std::to_string(batch) +
            ") and 0 <= begin < end <= that sequence's length");
      }
    }
  }
  BatchPlanParams params;
  params.max_tokens = m.capacity.tokens;
  params.max_sequences =
      max_sequences > 0 ? std::min(max_sequences, m.capacity.sequences) : m.capacity.sequences;
  params.packing = Packing::kAlways;
  const std::vector<PlannedPass> passes = plan_batches(lengths.data(), batch, params);
  // Each segment belongs to the pass of its sequence; offset_in_pass places it in the packed
  // stream of that pass.
  std::vector<std::vector<int64_t>> pass_segments(segment_count > 0 ? passes.size() : 0);
  std::vector<int32_t> offset_in_pass(segment_count > 0 ? static_cast<size_t>(batch) : 0);
  if (segment_count > 0) {
    std::vector<int32_t> pass_of(static_cast<size_t>(batch));
    for (size_t i = 0; i < passes.size(); ++i) {
      for (size_t j = 0; j < passes[i].order.size(); ++j) {
        pass_of[static_cast<size_t>(passes[i].order[j])] = static_cast<int32_t>(i);
        offset_in_pass[static_cast<size_t>(passes[i].order[j])] = passes[i].cu_seqlens[j];
      }
    }
    for (int64_t i = 0; i < segment_count; ++i) {
      pass_segments[static_cast<size_t>(pass_of[static_cast<size_t>(segments->sequence[i])])]
          .push_back(i);
    }
    size_t most = 0;
    for (const auto& list : pass_segments) most = std::max(most, list.size());
    const size_t hidden = static_cast<size_t>(m.model.spec.hidden);
    for (Impl::Slot& slot : m.slots) {
      if (slot.segment_means.size() < most * hidden) {
        slot.segment_bounds = cuda::PinnedBuffer<int32_t>(2 * most);
        slot.segment_means = cuda::PinnedBuffer<float>(most * hidden);
      }
    }
  }
  m.stages.plan += seconds_since(plan_start);

  cuda::DeviceGuard guard(m.options.device);
  const cudaStream_t s = m.stream->get();
  const int hidden = m.model.spec.hidden;
  const int out_width = m.model.output_dim();
  const bool prompts = prompt_lengths != nullptr;
  if (token_states != nullptr) {
    for (Impl::Slot& slot : m.slots) {
      if (slot.token_states.empty()) {
        slot.token_states = cuda::PinnedBuffer<uint16_t>(static_cast<size_t>(m.capacity.tokens) *
                                                         static_cast<size_t>(hidden));
      }
    }
  }
  const float* head_out = m.region<float>(m.device_layout.pooled);
  if (!m.model.dense.empty()) {
    head_out = m.region<float>(m.model.dense.size() % 2 == 1 ? m.device_layout.head_a
                                                             : m.device_layout.head_b);
  }

  // Results of pass `index` (in `slot`) into the caller's arrays, in input order.
  auto finish = [&](size_t index, Impl::Slot& slot) {
    auto wait_start = Clock::now();
    slot.done.wait(kSpinBeforeSleep);
    m.stages.wait += seconds_since(wait_start);
    const auto scatter_start = Clock::now();
    const PlannedPass& pass = passes[index];
    for (size_t j = 0; j < pass.order.size(); ++j) {
      std::memcpy(out + static_cast<int64_t>(pass.order[j]) * out_width,
                  slot.out.data() + static_cast<int64_t>(j) * out_width,
                  sizeof(float) * static_cast<size_t>(out_width));
    }
    if (token_states != nullptr) {
      for (size_t j = 0; j < pass.order.size(); ++j) {
        const int64_t source = pass.cu_seqlens[j];
        const int64_t length = pass.cu_seqlens[j + 1] - source;
        const int64_t target = cu_seqlens[pass.order[j]];
        half_to_float(slot.token_states.data() + source * hidden, length * hidden, m.options.dtype,
                      token_states + target * hidden);
      }
    }
    if (segment_count > 0) {
      const std::vector<int64_t>& list = pass_segments[index];
      for (size_t k = 0; k < list.size(); ++k) {
        std::memcpy(segments->means + list[k] * hidden, slot.segment_means.data() + k * hidden,
                    sizeof(float) * static_cast<size_t>(hidden));
      }
    }
    m.stages.scatter += seconds_since(scatter_start);
    if (m.options.profile) {
      m.stages.h2d += slot.after_h2d.elapsed_ms(slot.start) / 1e3;
      m.stages.layers += slot.after_layers.elapsed_ms(slot.after_h2d) / 1e3;
      m.stages.head += slot.after_head.elapsed_ms(slot.after_layers) / 1e3;
      m.stages.d2h += slot.after_d2h.elapsed_ms(slot.after_head) / 1e3;
    }
    m.stages.passes += 1;
    m.stages.tokens += pass.tokens();
  };

  try {
    for (size_t i = 0; i < passes.size(); ++i) {
      const PlannedPass& pass = passes[i];
      Impl::Slot& slot = m.slots[i % 2];
      if (slot.used) slot.staged.synchronize();  // pass i - 2's inputs have left the slot
      slot.used = true;

      const auto gather_start = Clock::now();
      const int64_t n = static_cast<int64_t>(pass.order.size());
      const int64_t tokens = pass.tokens();
      int32_t* staged_ids = slot.ids.data();
      int32_t* staged_positions = slot.positions.data();
      for (int64_t j = 0; j < n; ++j) {
        const int32_t sequence = pass.order[static_cast<size_t>(j)];
        const int32_t* source = ids + cu_seqlens[sequence];
        const int64_t length = lengths[static_cast<size_t>(sequence)];
        const int64_t offset = pass.cu_seqlens[static_cast<size_t>(j)];
        std::memcpy(staged_ids + offset, source, sizeof(int32_t) * static_cast<size_t>(length));
        int32_t* positions = staged_positions + offset;
        if (m.model.positions != PositionKind::kPaddingOffset) {
          for (int64_t t = 0; t < length; ++t) positions[t] = static_cast<int32_t>(t);
        } else {
          // create_position_ids_from_input_ids: pad tokens sit at padding_idx, the others count
          // from padding_idx + 1 (a pad id inside a sequence does not advance the count).
          const int32_t pad = m.model.padding_idx;
          int32_t counted = 0;
          for (int64_t t = 0; t < length; ++t) {
            positions[t] = source[t] == pad ? pad : pad + (++counted);
          }
        }
        slot.prompt_lengths.data()[j] = prompts ? prompt_lengths[sequence] : 0;
      }
      std::copy(pass.cu_seqlens.begin(), pass.cu_seqlens.end(), slot.cu_seqlens.data());
      m.stages.gather += seconds_since(gather_start);

      if (m.options.profile) slot.start.record(s);
      cuda::check(cudaMemcpyAsync(m.region<int32_t>(m.device_layout.ids), staged_ids,
                                  sizeof(int32_t) * tokens, cudaMemcpyHostToDevice, s),
                  "cudaMemcpyAsync(ids)");
      cuda::check(cudaMemcpyAsync(m.region<int32_t>(m.device_layout.positions), staged_positions,
                                  sizeof(int32_t) * tokens, cudaMemcpyHostToDevice, s),
                  "cudaMemcpyAsync(positions)");
      cuda::check(
          cudaMemcpyAsync(m.region<int32_t>(m.device_layout.cu_seqlens), slot.cu_seqlens.data(),
                          sizeof(int32_t) * (n + 1), cudaMemcpyHostToDevice, s),
          "cudaMemcpyAsync(cu_seqlens)");
      if (prompts) {
        cuda::check(cudaMemcpyAsync(m.region<int32_t>(m.device_layout.prompt_lengths),
                                    slot.prompt_lengths.data(), sizeof(int32_t) * n,
                                    cudaMemcpyHostToDevice, s),
                    "cudaMemcpyAsync(prompt_lengths)");
      }
      slot.staged.record(s);
      if (m.options.profile) slot.after_h2d.record(s);
      // Short sequences share attention row tiles when that is modelled to do less work (a
      // pass of sentences of ~10 tokens: about a quarter of the tile pairs).
      const FlashAttnParams& attn = m.attention_template;
      const bool pack_attention = flash_attention_packing_pays(
          attn.head_dim, attn.bias != AttnBias::kNone, attn.window_left, attn.window_right,
          pass.cu_seqlens.data(), n);
      if (m.options.profile) {
        m.forward(tokens, n, pass.max_seqlen, pack_attention);
        slot.after_layers.record(s);
        m.head(tokens, n, prompts);
      } else {
        m.run_pass(tokens, n, pass.max_seqlen, pack_attention, prompts);
      }
      if (m.options.profile) slot.after_head.record(s);
      cuda::check(cudaMemcpyAsync(slot.out.data(), head_out, sizeof(float) * n * out_width,
                                  cudaMemcpyDeviceToHost, s),
                  "cudaMemcpyAsync(embeddings)");
      if (token_states != nullptr) {
        cuda::check(
            cudaMemcpyAsync(slot.token_states.data(), m.region<void>(m.device_layout.hidden_states),
                            sizeof(uint16_t) * tokens * hidden, cudaMemcpyDeviceToHost, s),
            "cudaMemcpyAsync(token states)");
      }
      if (segment_count > 0 && !pass_segments[i].empty()) {
        const std::vector<int64_t>& list = pass_segments[i];
        for (size_t k = 0; k < list.size(); ++k) {
          const int64_t start = offset_in_pass[static_cast<size_t>(segments->sequence[list[k]])];
          slot.segment_bounds.data()[2 * k] = static_cast<int32_t>(start + segments->begin[list[k]]);
          slot.segment_bounds.data()[2 * k + 1] =
              static_cast<int32_t>(start + segments->end[list[k]]);
        }
        m.pool_segments(slot, static_cast<int64_t>(list.size()));
      }
      if (m.options.profile) slot.after_d2h.record(s);
      slot.done.record(s);

      if (i > 0) {
        finish(i - 1, m.slots[(i - 1) % 2]);
        if (on_pass && !on_pass(static_cast<int64_t>(i), static_cast<int64_t>(passes.size()))) {
          throw Interrupted("encode stopped after " + std::to_string(i) + " of " +
                            std::to_string(passes.size()) + " passes");
        }
      }
    }
    finish(passes.size() - 1, m.slots[(passes.size() - 1) % 2]);
    if (on_pass) on_pass(static_cast<int64_t>(passes.size()), static_cast<int64_t>(passes.size()));
  } catch (...) {
    // Leave the engine usable: nothing queued may still read the staging buffers.
    cudaStreamSynchronize(s);
    cudaGetLastError();
    throw;
  }
}

int64_t GpuEncoder::max_tokens() const { return impl_->capacity.tokens; }
int64_t GpuEncoder::max_sequence_length() const { return impl_->max_sequence_length; }
int GpuEncoder::output_dim() const { return impl_->model.output_dim(); }
int GpuEncoder::hidden() const { return impl_->model.spec.hidden; }
int GpuEncoder::device() const { return impl_->options.device; }
DeviceDtype GpuEncoder::dtype() const { return impl_->options.dtype; }
int64_t GpuEncoder::weight_bytes() const {
  return static_cast<int64_t>(impl_->weights.bytes() + impl_->dense_weights.bytes());
}
int64_t GpuEncoder::workspace_bytes() const {
  return static_cast<int64_t>(impl_->workspace.bytes() + kGemmWorkspaceBytes);
}
StageSeconds GpuEncoder::stage_seconds() const {
  const std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->stages;
}
void GpuEncoder::reset_stage_seconds() {
  const std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stages = StageSeconds{};
}

}  // namespace sutra::engine
