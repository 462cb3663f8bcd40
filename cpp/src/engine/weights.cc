#include "sutra/engine/weights.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "sutra/error.h"

namespace sutra::engine {
namespace {

int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) text += ",";
    if (i + 1 < shape.size()) text += " ";
  }
  return text + ")";
}

/// The shape each source of `slot` must have.
std::vector<int64_t> source_shape(const WeightSlot& slot) {
  if (slot.transposed) return {slot.shape[1], slot.shape[0]};
  std::vector<int64_t> shape = slot.shape;
  shape[0] /= static_cast<int64_t>(slot.sources.size());
  return shape;
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;
  return count;
}

class LayoutBuilder {
 public:
  explicit LayoutBuilder(int64_t element_bytes) { layout_.element_bytes = element_bytes; }

  /// A slot made of one canonical tensor of the same name.
  void add(const std::string& name, std::vector<int64_t> shape) {
    add(name, std::move(shape), {name});
  }

  void add(const std::string& name, std::vector<int64_t> shape, std::vector<std::string> sources,
           bool float32 = false, bool transposed = false) {
    WeightSlot slot;
    slot.name = name;
    slot.shape = std::move(shape);
    slot.float32 = float32;
    slot.sources = std::move(sources);
    slot.transposed = transposed;
    slot.offset = round_up(layout_.total_bytes, kWeightAlignment);
    slot.bytes = element_count(slot.shape) * (float32 ? 4 : layout_.element_bytes);
    layout_.total_bytes = slot.offset + slot.bytes;
    layout_.slots.push_back(std::move(slot));
  }

  WeightLayout finish() {
    layout_.total_bytes = round_up(layout_.total_bytes, kWeightAlignment);
    return std::move(layout_);
  }

 private:
  WeightLayout layout_;
};

}  // namespace

void validate(const EncoderSpec& spec) {
  SUTRA_CHECK(spec.vocab >= 1, "vocab", ">= 1", spec.vocab);
  SUTRA_CHECK(spec.max_positions >= 1, "max_positions", ">= 1", spec.max_positions);
  SUTRA_CHECK(spec.token_types >= 0, "token_types", ">= 0", spec.token_types);
  SUTRA_CHECK(spec.heads >= 1, "heads", ">= 1", spec.heads);
  SUTRA_CHECK(spec.hidden >= 1 && spec.hidden % spec.heads == 0, "hidden",
              ">= 1 and a multiple of heads (" + std::to_string(spec.heads) + ")", spec.hidden);
  SUTRA_CHECK(spec.layers >= 1, "layers", ">= 1", spec.layers);
  SUTRA_CHECK(spec.intermediate >= 1, "intermediate", ">= 1", spec.intermediate);
  SUTRA_CHECK(spec.relative_buckets >= 0, "relative_buckets", ">= 0", spec.relative_buckets);
}

const WeightSlot* WeightLayout::find(const std::string& name) const {
  for (const WeightSlot& slot : slots) {
    if (slot.name == name) return &slot;
  }
  return nullptr;
}

WeightLayout plan_weight_layout(const EncoderSpec& spec, int64_t element_bytes) {
  validate(spec);
  SUTRA_CHECK(element_bytes == 2 || element_bytes == 4, "element_bytes", "2 or 4", element_bytes);
  const int64_t hidden = spec.hidden;
  const int64_t inter = spec.intermediate;
  LayoutBuilder arena(element_bytes);
  // A LayerNorm or Linear slot pair; the bias only where the spec has it.
  auto add_affine = [&](const std::string& name, std::vector<int64_t> weight_shape, bool bias,
                        std::vector<std::string> weight_sources = {},
                        std::vector<std::string> bias_sources = {}) {
    const int64_t rows = weight_shape[0];
    if (weight_sources.empty()) weight_sources = {name + ".weight"};
    if (bias_sources.empty()) bias_sources = {name + ".bias"};
    arena.add(name + ".weight", std::move(weight_shape), std::move(weight_sources));
    if (bias) arena.add(name + ".bias", {rows}, std::move(bias_sources));
  };
  arena.add("embeddings.word", {spec.vocab, hidden});
  if (spec.position_table) arena.add("embeddings.position", {spec.max_positions, hidden});
  if (spec.token_types > 0) arena.add("embeddings.token_type", {spec.token_types, hidden});
  add_affine("embeddings.norm", {hidden}, spec.norm_bias);
  if (spec.relative_buckets > 0) {
    arena.add("relative_attention_bias", {spec.heads, spec.relative_buckets},
              {"relative_attention_bias"}, /*float32=*/true, /*transposed=*/true);
  }
  for (int i = 0; i < spec.layers; ++i) {
    const std::string layer = "layers." + std::to_string(i) + ".";
    const std::string attn = layer + "attention.";
    add_affine(attn + "qkv", {3 * hidden, hidden}, spec.attention_bias,
               {attn + "q.weight", attn + "k.weight", attn + "v.weight"},
               {attn + "q.bias", attn + "k.bias", attn + "v.bias"});
    add_affine(attn + "o", {hidden, hidden}, spec.attention_bias);
    if (!spec.pre_norm || i > 0) add_affine(layer + "attention_norm", {hidden}, spec.norm_bias);
    add_affine(layer + "ffn.in", {(spec.gated_ffn ? 2 : 1) * inter, hidden}, spec.ffn_bias);
    add_affine(layer + "ffn.out", {hidden, inter}, spec.ffn_bias);
    add_affine(layer + "ffn_norm", {hidden}, spec.norm_bias);
  }
  if (spec.pre_norm) add_affine("final_norm", {hidden}, spec.norm_bias);
  return arena.finish();
}

void pack_weights(const WeightLayout& layout,
                  const std::function<SourceTensor(const std::string&)>& lookup, void* arena) {
  if (arena == nullptr) throw std::invalid_argument("pack_weights: arena must not be null");
  // Every source is looked up and checked first, so a bad checkpoint leaves the arena untouched.
  std::vector<std::vector<SourceTensor>> found(layout.slots.size());
  for (size_t s = 0; s < layout.slots.size(); ++s) {
    const WeightSlot& slot = layout.slots[s];
    const std::vector<int64_t> expected = source_shape(slot);
    const int64_t element_bytes = slot.float32 ? 4 : layout.element_bytes;
    for (const std::string& name : slot.sources) {
      SourceTensor tensor = lookup(name);
      if (tensor.data == nullptr) {
        throw std::invalid_argument("the checkpoint has no tensor '" + name + "' (needed for " +
                                    slot.name + ")");
      }
      if (tensor.shape != expected) {
        throw std::invalid_argument("tensor '" + name + "' must have shape " +
                                    shape_text(expected) + ", got " + shape_text(tensor.shape));
      }
      if (tensor.element_bytes != element_bytes) {
        throw std::invalid_argument("tensor '" + name + "' must have " +
                                    std::to_string(element_bytes) + "-byte elements" +
                                    (slot.float32 ? " (float32)" : " (the engine's dtype)") +
                                    ", got " + std::to_string(tensor.element_bytes));
      }
      found[s].push_back(std::move(tensor));
    }
  }
  auto* bytes = static_cast<unsigned char*>(arena);
  std::memset(bytes, 0, static_cast<size_t>(layout.total_bytes));
  for (size_t s = 0; s < layout.slots.size(); ++s) {
    const WeightSlot& slot = layout.slots[s];
    unsigned char* out = bytes + slot.offset;
    if (slot.transposed) {
      const SourceTensor& src = found[s][0];
      const int64_t rows = src.shape[0], cols = src.shape[1], size = src.element_bytes;
      const auto* in = static_cast<const unsigned char*>(src.data);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          std::memcpy(out + (c * rows + r) * size, in + (r * cols + c) * size,
                      static_cast<size_t>(size));
        }
      }
      continue;
    }
    for (const SourceTensor& src : found[s]) {
      const int64_t size = element_count(src.shape) * src.element_bytes;
      std::memcpy(out, src.data, static_cast<size_t>(size));
      out += size;
    }
  }
}

}  // namespace sutra::engine
