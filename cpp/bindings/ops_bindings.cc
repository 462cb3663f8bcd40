// Bindings of the CPU ops: argument checks and array plumbing, then the GIL is released for the
// work itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "numpy_checks.h"
#include "sutra/aggregate.h"
#include "sutra/pooling.h"
#include "sutra/quantize.h"
#include "sutra/relative_position.h"
#include "sutra/windows.h"

namespace sutra::bindings {
namespace {

// Return types spelled out for signatures and the generated stubs.
using WindowsResult =
    py::typing::Tuple<py::typing::List<py::array_t<int64_t>>, py::array_t<int64_t>>;
using QuantizeResult = py::typing::Union<py::array_t<int8_t>, py::array_t<uint8_t>>;

AggregationMethod parse_method(const std::string& method) {
  if (method == "mean") return AggregationMethod::kMean;
  if (method == "max") return AggregationMethod::kMax;
  if (method == "weighted") return AggregationMethod::kWeighted;
  throw py::value_error("method must be one of 'mean', 'max', 'weighted', got '" + method + "'");
}

Precision parse_precision(const std::string& precision) {
  if (precision == "int8") return Precision::kInt8;
  if (precision == "uint8") return Precision::kUint8;
  if (precision == "binary") return Precision::kBinary;
  if (precision == "ubinary") return Precision::kUbinary;
  throw py::value_error("precision must be one of 'int8', 'uint8', 'binary', 'ubinary', got '" +
                        precision + "'");
}

WindowsResult create_windows_py(ArrayArg<int64_t> token_ids, int64_t window_size, int64_t overlap,
                            int64_t num_prefix_special, int64_t num_suffix_special) {
  auto ids = require_array<int64_t>(token_ids.object, "token_ids", {-1}, "(n,)");
  WindowParams params{window_size, overlap, num_prefix_special, num_suffix_special};
  std::vector<Window> windows;
  {
    py::gil_scoped_release release;
    windows = create_windows(ids.data(), ids.shape(0), params);
  }
  py::list tokens;
  std::vector<int64_t> offsets;
  offsets.reserve(2 * windows.size());
  for (Window& w : windows) {
    offsets.push_back(w.content_start);
    offsets.push_back(w.content_end);
    const auto length = static_cast<py::ssize_t>(w.token_ids.size());
    tokens.append(to_numpy(std::move(w.token_ids), {length}));
  }
  const auto count = static_cast<py::ssize_t>(windows.size());
  return WindowsResult(py::make_tuple(tokens, to_numpy(std::move(offsets), {count, 2})));
}

py::array_t<float> aggregate_embeddings_py(ArrayArg<float> embeddings, const std::string& method,
                                           std::optional<ArrayArg<int64_t>> offsets,
                                           int64_t total_length) {
  auto emb = require_array<float>(embeddings.object, "embeddings", {-1, -1}, "(n, d)");
  const AggregationMethod how = parse_method(method);
  const int64_t n = emb.shape(0);
  const int64_t dim = emb.shape(1);
  if (n < 1) throw py::value_error("embeddings must have at least 1 row, got shape (0, " +
                                   std::to_string(dim) + ")");
  std::vector<int64_t> starts;
  std::vector<int64_t> ends;
  if (offsets) {
    auto spans = require_array<int64_t>(offsets->object, "offsets", {n, 2}, "(n, 2) with n = embeddings rows");
    starts.resize(static_cast<size_t>(n));
    ends.resize(static_cast<size_t>(n));
    for (int64_t w = 0; w < n; ++w) {
      starts[w] = spans.data()[2 * w];
      ends[w] = spans.data()[2 * w + 1];
    }
  } else if (how == AggregationMethod::kWeighted) {
    throw py::value_error("offsets is required for method='weighted', got None");
  }
  py::array_t<float> out(dim);
  {
    py::gil_scoped_release release;
    aggregate_embeddings(emb.data(), n, dim, how, starts.empty() ? nullptr : starts.data(),
                         ends.empty() ? nullptr : ends.data(), total_length, out.mutable_data());
  }
  return out;
}

template <void (*Pool)(const PoolParams&)>
py::array_t<float> pool_py(ArrayArg<float> token_embeddings, ArrayArg<int64_t> attention_mask) {
  auto x = require_array<float>(token_embeddings.object, "token_embeddings", {-1, -1, -1}, "(b, s, h)");
  auto mask = require_array<int64_t>(attention_mask.object, "attention_mask", {x.shape(0), x.shape(1)},
                                     "(b, s) matching token_embeddings");
  py::array_t<float> out({x.shape(0), x.shape(2)});
  PoolParams params;
  params.token_embeddings = x.data();
  params.attention_mask = mask.data();
  params.out = out.mutable_data();
  params.batch = x.shape(0);
  params.seq = x.shape(1);
  params.hidden = x.shape(2);
  {
    py::gil_scoped_release release;
    Pool(params);
  }
  return out;
}

py::array_t<float> l2_normalize_rows_py(ArrayArg<float> x) {
  auto in = require_array<float>(x.object, "x", {-1, -1}, "(n, d)");
  py::array_t<float> out({in.shape(0), in.shape(1)});
  {
    py::gil_scoped_release release;
    std::copy(in.data(), in.data() + in.size(), out.mutable_data());
    l2_normalize_rows(out.mutable_data(), in.shape(0), in.shape(1));
  }
  return out;
}

QuantizeResult quantize_py(ArrayArg<float> embeddings, const std::string& precision,
                           std::optional<ArrayArg<float>> ranges) {
  auto emb = require_array<float>(embeddings.object, "embeddings", {-1, -1}, "(n, d)");
  QuantizeParams params;
  params.precision = parse_precision(precision);
  params.embeddings = emb.data();
  params.rows = emb.shape(0);
  params.dim = emb.shape(1);
  py::array_t<float, py::array::c_style> range_array;
  if (ranges) {
    if (params.precision == Precision::kBinary || params.precision == Precision::kUbinary) {
      throw py::value_error("ranges applies to precision 'int8' and 'uint8' only, got precision='" +
                            precision + "'");
    }
    range_array = require_array<float>(ranges->object, "ranges", {2, params.dim}, "(2, d)");
    params.ranges = range_array.data();
  }
  const std::vector<py::ssize_t> shape = {params.rows,
                                          quantized_row_bytes(params.precision, params.dim)};
  const bool is_signed =
      params.precision == Precision::kInt8 || params.precision == Precision::kBinary;
  py::array out = is_signed ? py::array(py::array_t<int8_t>(shape))
                            : py::array(py::array_t<uint8_t>(shape));
  params.out = out.mutable_data();
  {
    py::gil_scoped_release release;
    quantize(params);
  }
  return QuantizeResult(out);
}

py::array_t<int64_t> mpnet_relative_buckets_py(ArrayArg<int64_t> relative_positions,
                                               int num_buckets, int max_distance) {
  if (!py::isinstance<py::array_t<int64_t>>(relative_positions.object) ||
      !(py::reinterpret_borrow<py::array>(relative_positions.object).flags() &
        py::array::c_style)) {
    throw py::value_error(
        "relative_positions must be a C-contiguous numpy.ndarray of dtype int64 (any shape), got " +
        describe(relative_positions.object));
  }
  auto rel = py::reinterpret_borrow<py::array_t<int64_t, py::array::c_style>>(
      relative_positions.object);
  std::vector<py::ssize_t> shape(rel.shape(), rel.shape() + rel.ndim());
  py::array_t<int64_t> out(shape);
  mpnet_relative_bucket(0, num_buckets, max_distance);  // checks the parameters, with the GIL
  const int64_t* in = rel.data();
  int64_t* dst = out.mutable_data();
  const py::ssize_t n = rel.size();
  {
    py::gil_scoped_release release;
    for (py::ssize_t i = 0; i < n; ++i) dst[i] = mpnet_relative_bucket(in[i], num_buckets, max_distance);
  }
  return out;
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def("create_windows", &create_windows_py, py::arg("token_ids"), py::arg("window_size"),
        py::arg("overlap"), py::arg("num_prefix_special") = 1, py::arg("num_suffix_special") = 1,
        R"doc(Split a tokenized document into overlapping windows of at most window_size tokens.

token_ids: int64 [n], C-contiguous: num_prefix_special special tokens, the content, then
    num_suffix_special special tokens (e.g. [CLS] ... [SEP]).
Each window is the input's prefix specials + a slice of the content + its suffix specials.
Consecutive windows start stride = window_size - specials - overlap content tokens apart; every
window but the last holds window_size - specials content tokens, the last ends at the content's
end (and may be shorter). An input of at most window_size tokens gives one window equal to it.

Returns (windows, offsets): a list of int64 [len_i] arrays and int64 [n_windows, 2] content
spans [start, end) in content coordinates (content token 0 follows the prefix specials).
Raises ValueError when window_size <= specials + overlap, overlap < 0, or the input is shorter
than its special tokens.)doc");

  m.def("aggregate_embeddings", &aggregate_embeddings_py, py::arg("embeddings"),
        py::arg("method") = "mean", py::arg("offsets") = py::none(), py::arg("total_length") = 0,
        R"doc(Combine the embeddings of a document's windows into one vector (not normalized).

embeddings: float32 [n, d], n >= 1. method: 'mean', 'max' (elementwise) or 'weighted'.
offsets: int64 [n, 2] content spans from create_windows; required for 'weighted'.
total_length: content length L. 'weighted' weighs window i by
(end - start) * (1 - 0.5 * |2 * c / L - 1|), c = (start + end) / 2, so central and longer windows
count more; L = 0 (or only empty spans) gives the plain mean.
Returns float32 [d].)doc");

  m.def("mean_pool", &pool_py<mean_pool>, py::arg("token_embeddings"), py::arg("attention_mask"),
        R"doc(Mask-aware mean: sum(x * mask) / max(sum(mask), 1e-9) per row.

token_embeddings: float32 [b, s, h]; attention_mask: int64 [b, s]. Returns float32 [b, h];
a row with no real token gives zeros.)doc");
  m.def("cls_pool", &pool_py<cls_pool>, py::arg("token_embeddings"), py::arg("attention_mask"),
        R"doc(First token of each row: float32 [b, s, h] -> [b, h] (s >= 1; mask shape checked).)doc");
  m.def("max_pool", &pool_py<max_pool>, py::arg("token_embeddings"), py::arg("attention_mask"),
        R"doc(Mask-aware elementwise max, padding counted as -1e9 (sentence-transformers).

token_embeddings: float32 [b, s, h] (s >= 1); attention_mask: int64 [b, s]. Returns float32
[b, h]; a row with no real token gives -1e9.)doc");

  m.def("l2_normalize_rows", &l2_normalize_rows_py, py::arg("x"),
        R"doc(New float32 [n, d] array of x's rows divided by max(||row||, 1e-12) (a zero row stays 0).)doc");

  m.def("mpnet_relative_buckets", &mpnet_relative_buckets_py, py::arg("relative_positions"),
        py::arg("num_buckets") = kMpnetNumBuckets, py::arg("max_distance") = kMpnetMaxDistance,
        R"doc(MPNet's relative-position bucket of every key - query in relative_positions.

relative_positions: int64, any shape, C-contiguous. Returns int64 of the same shape, equal to
transformers' MPNetEncoder.relative_position_bucket (float32 log, truncation); MPNet itself always
uses num_buckets=32, max_distance=128 whatever its config says.)doc");

  m.def("quantize", &quantize_py, py::arg("embeddings"), py::arg("precision"),
        py::arg("ranges") = py::none(),
        R"doc(Quantize float32 [n, d] embeddings like sentence_transformers.quantize_embeddings.

precision: 'int8' -> int8 [n, d], 'uint8' -> uint8 [n, d], 'binary' -> int8 [n, ceil(d/8)],
'ubinary' -> uint8 [n, ceil(d/8)].
ranges: float32 [2, d] per-dimension (min, max) for int8/uint8; None uses the min/max of
embeddings. Values outside the ranges wrap around exactly as numpy's float->int casts do.
Binary packs (x > 0) per row, most significant bit first, padding the last byte with zero bits
(np.packbits(x > 0, axis=1)); 'binary' subtracts 128 from each byte.)doc");
}

}  // namespace sutra::bindings
