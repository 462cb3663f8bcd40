// Bindings of the engine's host side: the batch planner (sutra/engine/batch_plan.h: lengths in,
// passes out, the inputs of each pass gathered from the flat token arrays) and the weight arena
// (sutra/engine/weights.h). Translation only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bindings.h"
#include "numpy_checks.h"
#include "sutra/engine/batch_plan.h"
#include "sutra/engine/weights.h"

namespace sutra::bindings {
namespace {

using engine::BatchPlanParams;
using engine::Packing;
using engine::PlannedPass;

Packing parse_packing(const std::string& packing) {
  if (packing == "never") return Packing::kNever;
  if (packing == "when_it_pays") return Packing::kWhenItPays;
  if (packing == "always") return Packing::kAlways;
  throw py::value_error("packing must be one of 'never', 'when_it_pays', 'always', got '" +
                        packing + "'");
}

py::array_t<int32_t> int32_array(const std::vector<int32_t>& values) {
  py::array_t<int32_t> out(static_cast<py::ssize_t>(values.size()));
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

py::array_t<int64_t> int64_array(const std::vector<int32_t>& values) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(values.size()));
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

/// The flat token arrays of the planned sequences, checked against each other.
struct FlatTokens {
  py::array_t<int32_t, py::array::c_style> ids;
  py::array_t<int32_t, py::array::c_style> cu_seqlens;
  int64_t sequences = 0;
};

FlatTokens require_flat(py::handle ids, py::handle cu_seqlens) {
  FlatTokens flat{require_array<int32_t>(ids, "ids", {-1}, "(tokens,)"),
                  require_array<int32_t>(cu_seqlens, "cu_seqlens", {-1}, "(sequences + 1,)")};
  if (flat.cu_seqlens.shape(0) < 1) {
    throw py::value_error("cu_seqlens must hold at least one value (0), got an empty array");
  }
  flat.sequences = flat.cu_seqlens.shape(0) - 1;
  const int32_t last = flat.cu_seqlens.data()[flat.sequences];
  if (last > flat.ids.shape(0)) {
    throw py::value_error("cu_seqlens ends at " + std::to_string(last) + " but ids holds only " +
                          std::to_string(flat.ids.shape(0)) + " tokens");
  }
  return flat;
}

using PaddedInputs = py::typing::Tuple<py::array_t<int64_t>, py::array_t<int64_t>>;
using PackedInputs =
    py::typing::Tuple<py::array_t<int64_t>, py::array_t<int64_t>, py::array_t<int64_t>>;

PaddedInputs padded_inputs(const PlannedPass& pass, ArrayArg<int32_t> ids,
                           ArrayArg<int32_t> cu_seqlens, int64_t pad_id) {
  FlatTokens flat = require_flat(ids.object, cu_seqlens.object);
  const auto rows = static_cast<py::ssize_t>(pass.order.size());
  py::array_t<int64_t> input_ids({rows, static_cast<py::ssize_t>(pass.max_seqlen)});
  py::array_t<int64_t> mask({rows, static_cast<py::ssize_t>(pass.max_seqlen)});
  {
    py::gil_scoped_release release;
    engine::gather_padded(pass, flat.ids.data(), flat.cu_seqlens.data(), flat.sequences, pad_id,
                          input_ids.mutable_data(), mask.mutable_data());
  }
  return PaddedInputs(py::make_tuple(input_ids, mask));
}

PackedInputs packed_inputs(const PlannedPass& pass, ArrayArg<int32_t> ids,
                           ArrayArg<int32_t> cu_seqlens) {
  FlatTokens flat = require_flat(ids.object, cu_seqlens.object);
  py::array_t<int64_t> input_ids(static_cast<py::ssize_t>(pass.tokens()));
  {
    py::gil_scoped_release release;
    engine::gather_packed(pass, flat.ids.data(), flat.cu_seqlens.data(), flat.sequences,
                          input_ids.mutable_data());
  }
  const std::vector<int32_t>& rows = pass.cu_rowlens.empty() ? pass.cu_seqlens : pass.cu_rowlens;
  return PackedInputs(py::make_tuple(input_ids, int64_array(pass.cu_seqlens), int64_array(rows)));
}

std::vector<PlannedPass> plan_batches_py(ArrayArg<int32_t> lengths, int64_t max_sequences,
                                         int64_t max_tokens, std::optional<double> pass_cost_tokens,
                                         const std::string& packing, double packing_overhead,
                                         bool attention_rows) {
  auto lens = require_array<int32_t>(lengths.object, "lengths", {-1}, "(n,)");
  BatchPlanParams params;
  params.max_sequences = max_sequences;
  params.max_tokens = max_tokens;
  params.pass_cost_tokens = pass_cost_tokens.value_or(-1.0);
  if (pass_cost_tokens && !(*pass_cost_tokens >= 0.0)) {
    throw py::value_error("pass_cost_tokens must be a number >= 0 or None, got " +
                          std::to_string(*pass_cost_tokens));
  }
  params.packing = parse_packing(packing);
  params.packing_overhead = packing_overhead;
  params.attention_rows = attention_rows;
  py::gil_scoped_release release;
  return engine::plan_batches(lens.data(), lens.shape(0), params);
}

/// The arena of `layout` filled from `tensors` (canonical name -> C-contiguous numpy array of
/// float16, uint16 holding bfloat16 bits, or float32), as a uint8 array of layout.total_bytes.
py::array_t<uint8_t> pack_weights_py(const engine::WeightLayout& layout, const py::dict& tensors) {
  std::unordered_map<std::string, engine::SourceTensor> sources;
  std::vector<py::array> keep_alive;
  for (auto item : tensors) {
    const std::string name = py::str(item.first);
    if (!py::isinstance<py::array>(item.second)) {
      throw py::value_error("tensor '" + name + "' must be a numpy.ndarray, got " +
                            describe(item.second));
    }
    auto arr = py::reinterpret_borrow<py::array>(item.second);
    const bool accepted = arr.dtype().is(py::dtype::of<float>()) ||
                          arr.dtype().is(py::dtype("float16")) ||
                          arr.dtype().is(py::dtype::of<uint16_t>());
    if (!accepted || !(arr.flags() & py::array::c_style)) {
      throw py::value_error("tensor '" + name +
                            "' must be a C-contiguous numpy.ndarray of dtype float16, uint16 "
                            "(bfloat16 bits) or float32, got " +
                            describe(arr));
    }
    engine::SourceTensor tensor;
    tensor.data = arr.data();
    tensor.element_bytes = arr.itemsize();
    for (py::ssize_t axis = 0; axis < arr.ndim(); ++axis) tensor.shape.push_back(arr.shape(axis));
    sources.emplace(name, std::move(tensor));
    keep_alive.push_back(arr);
  }
  std::vector<uint8_t> arena(static_cast<size_t>(layout.total_bytes));
  {
    py::gil_scoped_release release;
    engine::pack_weights(
        layout,
        [&sources](const std::string& name) {
          auto it = sources.find(name);
          return it == sources.end() ? engine::SourceTensor{} : it->second;
        },
        arena.data());
  }
  return to_numpy(std::move(arena), {static_cast<py::ssize_t>(layout.total_bytes)});
}

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<engine::EncoderSpec>(m, "EncoderSpec",
                                  "The sizes of a transformer encoder and the parts it has.")
      .def(py::init([](int64_t vocab, int64_t max_positions, int64_t token_types, int hidden,
                       int heads, int layers, int intermediate, int relative_buckets,
                       bool position_table, bool pre_norm, bool gated_ffn, bool attention_bias,
                       bool ffn_bias, bool norm_bias) {
             engine::EncoderSpec spec;
             spec.vocab = vocab;
             spec.max_positions = max_positions;
             spec.token_types = token_types;
             spec.hidden = hidden;
             spec.heads = heads;
             spec.layers = layers;
             spec.intermediate = intermediate;
             spec.relative_buckets = relative_buckets;
             spec.position_table = position_table;
             spec.pre_norm = pre_norm;
             spec.gated_ffn = gated_ffn;
             spec.attention_bias = attention_bias;
             spec.ffn_bias = ffn_bias;
             spec.norm_bias = norm_bias;
             engine::validate(spec);
             return spec;
           }),
           py::kw_only(), py::arg("vocab"), py::arg("max_positions"), py::arg("token_types"),
           py::arg("hidden"), py::arg("heads"), py::arg("layers"), py::arg("intermediate"),
           py::arg("relative_buckets") = 0, py::arg("position_table") = true,
           py::arg("pre_norm") = false, py::arg("gated_ffn") = false,
           py::arg("attention_bias") = true, py::arg("ffn_bias") = true,
           py::arg("norm_bias") = true,
           "Checked on construction (ValueError names the first size out of range).\n"
           "token_types=0: no token-type table; relative_buckets=0: no relative bias.\n"
           "position_table=False: no position table (rotary positions; max_positions is then\n"
           "the longest sequence). pre_norm: x = x + sublayer(LayerNorm(x)), no attention norm\n"
           "on layer 0, a final norm (ModernBERT). gated_ffn: ffn.in is [2I, H] (GeGLU).\n"
           "attention_bias, ffn_bias, norm_bias: whether those layers have biases.")
      .def_readonly("vocab", &engine::EncoderSpec::vocab)
      .def_readonly("max_positions", &engine::EncoderSpec::max_positions)
      .def_readonly("token_types", &engine::EncoderSpec::token_types)
      .def_readonly("hidden", &engine::EncoderSpec::hidden)
      .def_readonly("heads", &engine::EncoderSpec::heads)
      .def_readonly("layers", &engine::EncoderSpec::layers)
      .def_readonly("intermediate", &engine::EncoderSpec::intermediate)
      .def_readonly("relative_buckets", &engine::EncoderSpec::relative_buckets)
      .def_readonly("position_table", &engine::EncoderSpec::position_table)
      .def_readonly("pre_norm", &engine::EncoderSpec::pre_norm)
      .def_readonly("gated_ffn", &engine::EncoderSpec::gated_ffn)
      .def_readonly("attention_bias", &engine::EncoderSpec::attention_bias)
      .def_readonly("ffn_bias", &engine::EncoderSpec::ffn_bias)
      .def_readonly("norm_bias", &engine::EncoderSpec::norm_bias)
      .def_property_readonly("head_size", &engine::EncoderSpec::head_size);

  py::class_<engine::WeightSlot>(m, "WeightSlot", "One tensor of the weight arena; read-only.")
      .def_readonly("name", &engine::WeightSlot::name, "The engine's name of the tensor.")
      .def_property_readonly(
          "shape",
          [](const engine::WeightSlot& s) {
            py::tuple shape(s.shape.size());
            for (size_t i = 0; i < s.shape.size(); ++i) shape[i] = s.shape[i];
            return shape;
          },
          "Shape as stored in the arena (row-major).")
      .def_readonly("float32", &engine::WeightSlot::float32,
                    "Stored as float32 rather than the engine's 2-byte dtype.")
      .def_readonly("sources", &engine::WeightSlot::sources,
                    "Canonical tensors concatenated along dimension 0 (or the one transposed).")
      .def_readonly("transposed", &engine::WeightSlot::transposed)
      .def_readonly("offset", &engine::WeightSlot::offset, "Bytes from the arena's start.")
      .def_readonly("bytes", &engine::WeightSlot::bytes)
      .def("__repr__", [](const engine::WeightSlot& s) {
        return "WeightSlot('" + s.name + "', offset=" + std::to_string(s.offset) +
               ", bytes=" + std::to_string(s.bytes) + ")";
      });

  py::class_<engine::WeightLayout>(m, "WeightLayout",
                                   "Where each tensor lies in the engine's one weight arena.")
      .def_readonly("slots", &engine::WeightLayout::slots, "list[WeightSlot], in arena order.")
      .def_readonly("element_bytes", &engine::WeightLayout::element_bytes)
      .def_readonly("total_bytes", &engine::WeightLayout::total_bytes)
      .def(
          "find",
          [](const engine::WeightLayout& layout, const std::string& name) {
            const engine::WeightSlot* slot = layout.find(name);
            if (slot == nullptr) throw py::key_error("no weight slot named '" + name + "'");
            return *slot;
          },
          py::arg("name"), "The slot of this engine name (KeyError if none).")
      .def("pack", &pack_weights_py, py::arg("tensors"),
           "The arena (uint8 [total_bytes]) filled from `tensors`: canonical name ->\n"
           "C-contiguous array, float32 for float32 slots and float16 (or uint16 holding\n"
           "bfloat16 bits) otherwise. Every source is checked before anything is written;\n"
           "ValueError names the first missing, mis-shaped or mistyped tensor.");

  m.def("plan_weight_layout", &engine::plan_weight_layout, py::arg("spec"),
        py::arg("element_bytes") = 2,
        "The weight arena of an encoder: per layer a fused QKV weight [3H, H] (q, k, v) and\n"
        "bias, the output, feed-forward and LayerNorm tensors in torch's [out, in] layout;\n"
        "MPNet's relative bias as float32 [heads, buckets]. Every slot 256-byte aligned.");

  py::class_<PlannedPass>(m, "BatchPass",
                          "One planned forward pass (from plan_batches); read-only.")
      .def_property_readonly(
          "order", [](const PlannedPass& p) { return int32_array(p.order); },
          "int32 [n]: the indices of the planned sequences in this pass, in layout order.")
      .def_property_readonly(
          "cu_seqlens", [](const PlannedPass& p) { return int32_array(p.cu_seqlens); },
          "int32 [n + 1]: 0, then the running total of the lengths in layout order.")
      .def_property_readonly(
          "cu_rowlens", [](const PlannedPass& p) { return int32_array(p.cu_rowlens); },
          "int32 [rows + 1]: attention rows of a packed pass planned with attention_rows=True\n"
          "(each end a sequence end); empty otherwise.")
      .def_readonly("max_seqlen", &PlannedPass::max_seqlen, "The longest sequence of the pass.")
      .def_readonly("packed", &PlannedPass::packed, "Packed (concatenated) rather than padded.")
      .def_property_readonly("tokens", &PlannedPass::tokens, "Real tokens in the pass.")
      .def_property_readonly("padded_tokens", &PlannedPass::padded_tokens,
                             "Sequences x the longest one: what a padded layout computes.")
      .def("__len__", [](const PlannedPass& p) { return p.order.size(); })
      .def(
          "padded_inputs", &padded_inputs, py::arg("ids"), py::arg("cu_seqlens"), py::arg("pad_id"),
          "(input_ids, attention_mask), both int64 [n, max_seqlen]: the pass's sequences taken\n"
          "from the flat ids (int32 [tokens]) / cu_seqlens (int32 [sequences + 1]) it was planned\n"
          "from, right-padded with pad_id.")
      .def("packed_inputs", &packed_inputs, py::arg("ids"), py::arg("cu_seqlens"),
           "(input_ids int64 [tokens], cu_seqlens int64 [n + 1], cu_rowlens int64 [rows + 1]):\n"
           "the pass's tokens concatenated in layout order; cu_rowlens is cu_seqlens (one row per\n"
           "sequence) when the pass has no attention rows.")
      .def("__repr__", [](const PlannedPass& p) {
        return "BatchPass(sequences=" + std::to_string(p.order.size()) +
               ", tokens=" + std::to_string(p.tokens()) +
               ", max_seqlen=" + std::to_string(p.max_seqlen) +
               ", packed=" + (p.packed ? "True" : "False") + ")";
      });

  m.def("plan_batches", &plan_batches_py, py::arg("lengths"), py::arg("max_sequences"),
        py::arg("max_tokens"), py::arg("pass_cost_tokens") = py::none(),
        py::arg("packing") = "never", py::arg("packing_overhead") = 0.03,
        py::arg("attention_rows") = false,
        R"doc(Plan the forward passes over sequences of these lengths (int32 [n], each >= 1).

max_sequences: most sequences per pass. max_tokens: most tokens a pass computes (rows x longest,
or the real tokens with packing='always'); a longer sequence gets a pass alone.
pass_cost_tokens: None for the fewest passes (filled longest first up to the caps); a number >= 0
is the cost of one more pass in tokens, and passes are then cut where that saves more padding
than it costs (an optimal partition of the length-sorted sequences).
packing: 'never' (padded), 'when_it_pays' (packed when sum(lengths) * (1 + packing_overhead) <
n * longest) or 'always'. attention_rows: lay packed passes out in attention rows
(plan_attention_rows) for the CPU packed graph.
Returns a list of BatchPass, longest first; every index appears in exactly one.)doc");

  m.def(
      "packing_pays",
      [](ArrayArg<int32_t> lengths, double overhead) {
        auto lens = require_array<int32_t>(lengths.object, "lengths", {-1}, "(n,)");
        return engine::packing_pays(lens.data(), lens.shape(0), overhead);
      },
      py::arg("lengths"), py::arg("overhead") = 0.03,
      "Whether one packed pass over sequences of these lengths (int32 [n]) is modelled to cost\n"
      "less than a padded one: n > 1 and sum * (1 + overhead) < n * longest.");

  m.def(
      "plan_attention_rows",
      [](ArrayArg<int32_t> lengths, int64_t capacity) {
        auto lens = require_array<int32_t>(lengths.object, "lengths", {-1}, "(n,)");
        engine::AttentionRows rows;
        {
          py::gil_scoped_release release;
          rows = engine::plan_attention_rows(lens.data(), lens.shape(0), capacity);
        }
        return py::make_tuple(int32_array(rows.order), int32_array(rows.row_lengths));
      },
      py::arg("lengths"), py::arg("capacity") = 0,
      "Bin sequences (int32 [n] lengths, each >= 1) into attention rows of at most `capacity`\n"
      "tokens (less than the longest sequence, 0 included, means the longest), first fit,\n"
      "longest first. Returns (order int32 [n], row_lengths int32 [rows]).");
}

}  // namespace sutra::bindings
