// Bindings of the GPU engine (sutra/engine/encoder.h): numpy in, numpy out, the GIL released for
// the upload and for the whole of encode(), retaken only for the per-pass callback (which also
// checks for Ctrl-C). Translation only.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "numpy_checks.h"
#include "sutra/cuda_info.h"
#include "sutra/engine/encoder.h"
#include "sutra/error.h"

namespace sutra::bindings {

Activation parse_activation(const std::string& name, const char* what) {
  if (name == "gelu") return Activation::kGelu;
  if (name == "gelu_tanh") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "tanh") return Activation::kTanh;
  if (name == "sigmoid") return Activation::kSigmoid;
  if (name == "identity") return Activation::kIdentity;
  throw py::value_error(std::string(what) +
                        " must be one of 'gelu', 'gelu_tanh', 'relu', 'tanh', 'sigmoid', "
                        "'identity', got '" +
                        name + "'");
}

namespace {

using engine::EncoderModel;
using engine::GpuEncoder;

DeviceDtype parse_dtype(const std::string& name) {
  if (name == "float16") return DeviceDtype::kFloat16;
  if (name == "bfloat16") return DeviceDtype::kBFloat16;
  throw py::value_error(
      "dtype must be 'float16' or 'bfloat16' (the engine computes in 16-bit "
      "floats with float32 accumulation), got '" +
      name + "'");
}

engine::PositionKind parse_positions(const std::string& name) {
  if (name == "absolute") return engine::PositionKind::kAbsolute;
  if (name == "padding_offset") return engine::PositionKind::kPaddingOffset;
  if (name == "rotary") return engine::PositionKind::kRotary;
  throw py::value_error("positions must be 'absolute', 'padding_offset' or 'rotary', got '" +
                        name + "'");
}

/// (weight float32 [out, in], bias float32 [out] or None, activation name) per Dense module.
std::vector<engine::DenseLayer> parse_dense(const py::list& modules) {
  std::vector<engine::DenseLayer> layers;
  for (size_t i = 0; i < modules.size(); ++i) {
    const std::string name = "dense[" + std::to_string(i) + "]";
    auto item = modules[i].cast<py::tuple>();
    if (item.size() != 3) {
      throw py::value_error(name + " must be (weight, bias or None, activation), got " +
                            std::to_string(item.size()) + " items");
    }
    auto weight = require_array<float>(item[0], (name + " weight").c_str(), {-1, -1},
                                       "(out_features, in_features)");
    engine::DenseLayer layer;
    layer.out_features = static_cast<int>(weight.shape(0));
    layer.in_features = static_cast<int>(weight.shape(1));
    layer.weight.assign(weight.data(), weight.data() + weight.size());
    if (!item[1].is_none()) {
      auto bias = require_array<float>(item[1], (name + " bias").c_str(), {weight.shape(0)},
                                       "(out_features,)");
      layer.bias.assign(bias.data(), bias.data() + bias.size());
    }
    layer.activation =
        parse_activation(item[2].cast<std::string>(), (name + " activation").c_str());
    layers.push_back(std::move(layer));
  }
  return layers;
}

std::shared_ptr<GpuEncoder> make_encoder(const engine::EncoderSpec& spec, ArrayArg<uint8_t> arena,
                                         const std::string& activation,
                                         const std::string& positions, int padding_idx,
                                         double layer_norm_eps, const std::string& pooling,
                                         const py::list& dense, bool normalize,
                                         std::vector<double> rotary_thetas,
                                         std::vector<int> attention_windows, int device,
                                         const std::string& dtype, int64_t max_tokens,
                                         bool profile, int64_t graph_max_tokens,
                                         int64_t gemm_tune_min_rows) {
  auto bytes = require_array<uint8_t>(arena.object, "arena", {-1}, "(total_bytes,)");
  EncoderModel model;
  model.spec = spec;
  model.activation = parse_activation(activation, "activation");
  model.positions = parse_positions(positions);
  model.padding_idx = padding_idx;
  model.layer_norm_eps = static_cast<float>(layer_norm_eps);
  model.pooling = pooling_mode_from_name(pooling);
  model.dense = parse_dense(dense);
  model.normalize = normalize;
  model.rotary_thetas = std::move(rotary_thetas);
  model.attention_windows = std::move(attention_windows);
  engine::EncoderOptions options;
  options.device = device;
  options.dtype = parse_dtype(dtype);
  options.max_tokens = max_tokens;
  options.profile = profile;
  SUTRA_CHECK(graph_max_tokens >= 0, "graph_max_tokens", ">= 0 (0: no CUDA graphs)",
              graph_max_tokens);
  options.graph_max_tokens = graph_max_tokens;
  SUTRA_CHECK(gemm_tune_min_rows >= 0, "gemm_tune_min_rows", ">= 0 (0: no GEMM tuning)",
              gemm_tune_min_rows);
  options.gemm_tune_min_rows = gemm_tune_min_rows;
  py::gil_scoped_release release;
  return std::make_shared<GpuEncoder>(model, bytes.data(), static_cast<int64_t>(bytes.size()),
                                      options);
}

struct EncodeResult {
  py::array_t<float> embeddings;
  std::optional<py::array_t<float>> token_states;
  std::optional<py::array_t<float>> segment_means;
};

EncodeResult run_encode(GpuEncoder& encoder, ArrayArg<int32_t> ids_arg, ArrayArg<int32_t> cu_arg,
                        py::object prompt_obj, int64_t max_sequences, bool want_tokens,
                        py::object segments_obj, py::object on_pass) {
  auto ids = require_array<int32_t>(ids_arg.object, "ids", {-1}, "(tokens,)");
  auto cu = require_array<int32_t>(cu_arg.object, "cu_seqlens", {-1}, "(sequences + 1,)");
  if (cu.shape(0) < 1) {
    throw py::value_error("cu_seqlens must hold at least one value (0), got an empty array");
  }
  const int64_t batch = cu.shape(0) - 1;
  const int32_t* cu_data = cu.data();
  for (int64_t b = 0; b < batch; ++b) {
    if (cu_data[b + 1] < cu_data[b]) {
      throw py::value_error("cu_seqlens must be nondecreasing; it falls from " +
                            std::to_string(cu_data[b]) + " to " + std::to_string(cu_data[b + 1]) +
                            " at index " + std::to_string(b + 1));
    }
  }
  if (cu_data[batch] != ids.shape(0)) {
    throw py::value_error("cu_seqlens must end at the token count " + std::to_string(ids.shape(0)) +
                          ", got " + std::to_string(cu_data[batch]));
  }
  std::optional<py::array_t<int32_t, py::array::c_style>> prompts;
  if (!prompt_obj.is_none()) {
    prompts = require_array<int32_t>(prompt_obj, "prompt_lengths", {batch}, "(sequences,)");
  }
  py::array_t<float> out(
      {static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(encoder.output_dim())});
  std::optional<py::array_t<float>> tokens;
  if (want_tokens) {
    // The hidden size is the pooled width before any Dense module: the model's, known to the
    // caller; the engine reports the output width only, so take it from the arena's spec.
    tokens = py::array_t<float>(
        {static_cast<py::ssize_t>(ids.shape(0)), static_cast<py::ssize_t>(encoder.hidden())});
  }
  // (sequence, begin, end) per segment; the engine checks the values.
  std::optional<py::array_t<int32_t, py::array::c_style>> segment_table;
  std::vector<int32_t> segment_columns;
  engine::TokenSegments segments;
  std::optional<py::array_t<float>> means;
  if (!segments_obj.is_none()) {
    segment_table = require_array<int32_t>(segments_obj, "segments", {-1, 3},
                                           "(segments, 3): sequence, begin, end");
    const int64_t count = segment_table->shape(0);
    segment_columns.resize(static_cast<size_t>(3 * count));
    const int32_t* table = segment_table->data();
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t c = 0; c < 3; ++c) segment_columns[c * count + i] = table[3 * i + c];
    }
    means = py::array_t<float>(
        {static_cast<py::ssize_t>(count), static_cast<py::ssize_t>(encoder.hidden())});
    segments.sequence = segment_columns.data();
    segments.begin = segment_columns.data() + count;
    segments.end = segment_columns.data() + 2 * count;
    segments.count = count;
    segments.means = means->mutable_data();
  }
  // Ctrl-C and the caller's progress callback between passes; an exception raised there stops
  // the call and is re-raised as itself once the GIL is back.
  std::optional<py::error_already_set> raised;
  engine::PassCallback callback = [&](int64_t done, int64_t total) {
    py::gil_scoped_acquire acquire;
    try {
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (!on_pass.is_none()) on_pass(done, total);
      return true;
    } catch (py::error_already_set& e) {
      raised.emplace(std::move(e));
      return false;
    }
  };
  float* token_data = tokens ? tokens->mutable_data() : nullptr;
  try {
    py::gil_scoped_release release;
    encoder.encode(ids.data(), cu_data, batch, prompts ? prompts->data() : nullptr, max_sequences,
                   out.mutable_data(), token_data, means ? &segments : nullptr, callback);
  } catch (const Interrupted&) {
    if (raised) throw std::move(*raised);
    throw;
  }
  return {std::move(out), std::move(tokens), std::move(means)};
}

py::dict stage_dict(const engine::StageSeconds& s) {
  py::dict d;
  d["plan"] = s.plan;
  d["gather"] = s.gather;
  d["h2d"] = s.h2d;
  d["layers"] = s.layers;
  d["head"] = s.head;
  d["d2h"] = s.d2h;
  d["scatter"] = s.scatter;
  d["wait"] = s.wait;
  d["passes"] = s.passes;
  d["tokens"] = s.tokens;
  return d;
}

}  // namespace

void bind_encoder(py::module_& m) {
  m.def("set_cublaslt_path", &cuda_set_cublaslt_path, py::arg("path"),
        "Load cuBLASLt from this file when the GPU engine first needs it (rather than by its\n"
        "soname). False when it is already loaded (or the build has no CUDA).");

  // shared_ptr: a DevicePool worker (PoolWorker.engine) shares the encoder with Python.
  py::class_<GpuEncoder, std::shared_ptr<GpuEncoder>>(m, "GpuEncoder", R"doc(The CUDA encoder engine for one model on one GPU.

Built from an EncoderSpec and its packed weight arena (WeightLayout.pack, in the dtype asked
for); the weights are uploaded once, the workspace holds max_tokens tokens per pass (0: sized
from the free memory). Raises SutraError in a build without CUDA, without a GPU or without
cuBLASLt (naming the nvidia-cublas package).)doc")
      .def(py::init(&make_encoder), py::arg("spec"), py::arg("arena"), py::kw_only(),
           py::arg("activation"), py::arg("positions"), py::arg("padding_idx"),
           py::arg("layer_norm_eps"), py::arg("pooling"), py::arg("dense"), py::arg("normalize"),
           py::arg("rotary_thetas") = std::vector<double>{},
           py::arg("attention_windows") = std::vector<int>{}, py::arg("device") = 0, py::arg("dtype") = "float16", py::arg("max_tokens") = 0,
           py::arg("profile") = false,
           py::arg("graph_max_tokens") = engine::EncoderOptions{}.graph_max_tokens,
           py::arg("gemm_tune_min_rows") = engine::EncoderOptions{}.gemm_tune_min_rows,
           "activation: 'gelu' (erf), 'gelu_tanh' or 'relu' (the feed-forward's). positions:\n"
           "'absolute', 'padding_offset' (RoBERTa/MPNet, counted from padding_idx + 1) or\n"
           "'rotary' (with rotary_thetas, one base per layer). attention_windows: per layer -1\n"
           "(global) or w (query i sees key j iff |i - j| <= w); empty: all global.\n"
           "pooling: a sentence-transformers mode name. dense: list of (weight float32\n"
           "[out, in], bias float32 [out] or None, activation) run after pooling. normalize:\n"
           "L2-normalize the output rows. dtype: 'float16' or 'bfloat16'. profile: time the\n"
           "device stages with CUDA events (stage_seconds). graph_max_tokens: passes of at\n"
           "most this many tokens replay a CUDA graph of their shape (0: never).\n"
           "gemm_tune_min_rows: passes of at least this many tokens time cuBLASLt's first\n"
           "heuristic GEMM candidates the first time their size (per power of two) is seen\n"
           "and keep the fastest (0: never; the heuristic's first choice).")
      .def(
          "encode",
          [](GpuEncoder& e, ArrayArg<int32_t> ids, ArrayArg<int32_t> cu, py::object prompts,
             int64_t max_sequences, bool want_tokens, py::object on_pass) {
            EncodeResult r = run_encode(e, ids, cu, prompts, max_sequences, want_tokens,
                                        py::none(), on_pass);
            return std::make_pair(std::move(r.embeddings), std::move(r.token_states));
          },
          py::arg("ids"), py::arg("cu_seqlens"),
          py::arg("prompt_lengths") = py::none(), py::arg("max_sequences") = 0,
          py::arg("want_tokens") = false, py::arg("on_pass") = py::none(),
          R"doc(Embed the sequences of the flat arrays ids (int32 [T]) / cu_seqlens (int32 [B + 1]).

Each sequence 1..max_sequence_length tokens, ids in [0, vocab) (ValueError naming the sequence
otherwise, before any work). prompt_lengths: int32 [B] leading tokens the pooling leaves out, or
None. max_sequences: most sequences per pass (0: the token budget alone). Returns
(embeddings float32 [B, output_dim], token states float32 [T, hidden] or None) in input order.
on_pass(done, total) is called after each pass; Ctrl-C or an exception there stops the call
between passes. The GIL is released throughout.)doc")
      .def(
          "segment_means",
          [](GpuEncoder& e, ArrayArg<int32_t> ids, ArrayArg<int32_t> cu, py::object segments,
             int64_t max_sequences, py::object on_pass) {
            return *run_encode(e, ids, cu, py::none(), max_sequences, false, segments, on_pass)
                        .segment_means;
          },
          py::arg("ids"), py::arg("cu_seqlens"), py::arg("segments"),
          py::arg("max_sequences") = 0, py::arg("on_pass") = py::none(),
          R"doc(Means of the final token states over spans of the sequences, pooled on the device.

segments: int32 [S, 3] rows (sequence, begin, end): tokens [begin, end) of that sequence, with
0 <= begin < end <= its length (ValueError naming the segment otherwise). Returns float32
[S, hidden] (before the pipeline's head: late chunking combines and finishes them). The
sequences run as in encode(); the GIL is released throughout.)doc")
      .def_property_readonly("max_tokens", &GpuEncoder::max_tokens, "Tokens per pass.")
      .def_property_readonly("max_sequence_length", &GpuEncoder::max_sequence_length)
      .def_property_readonly("output_dim", &GpuEncoder::output_dim)
      .def_property_readonly("hidden", &GpuEncoder::hidden)
      .def_property_readonly("device", &GpuEncoder::device)
      .def_property_readonly("dtype",
                             [](const GpuEncoder& e) {
                               return e.dtype() == DeviceDtype::kBFloat16 ? "bfloat16" : "float16";
                             })
      .def_property_readonly("weight_bytes", &GpuEncoder::weight_bytes)
      .def_property_readonly("workspace_bytes", &GpuEncoder::workspace_bytes)
      .def(
          "stage_seconds", [](const GpuEncoder& e) { return stage_dict(e.stage_seconds()); },
          "Seconds per stage since the last reset: host plan, gather, scatter, wait; device h2d,\n"
          "layers, head, d2h (CUDA events; zero unless built with profile=True); passes, tokens.")
      .def("reset_stage_seconds", &GpuEncoder::reset_stage_seconds);
}

}  // namespace sutra::bindings
