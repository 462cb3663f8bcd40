// Bindings of the CPU ops: argument checks and array plumbing, then the GIL is released for the
// work itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <algorithm>
#include <cstdint>
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

py::array_t<float> pool_tokens_py(ArrayArg<float> token_embeddings, ArrayArg<int32_t> cu_seqlens,
                                  const std::string& mode,
                                  std::optional<ArrayArg<int32_t>> prompt_lengths) {
  const PoolingMode how = pooling_mode_from_name(mode);
  auto cu = require_array<int32_t>(cu_seqlens.object, "cu_seqlens", {-1}, "(batch + 1,)");
  if (cu.shape(0) < 1) throw py::value_error("cu_seqlens must hold at least one value (0)");
  const int64_t batch = cu.shape(0) - 1;
  const bool padded = py::isinstance<py::array>(token_embeddings.object) &&
                      py::reinterpret_borrow<py::array>(token_embeddings.object).ndim() == 3;
  py::array_t<float, py::array::c_style> x =
      padded ? require_array<float>(token_embeddings.object, "token_embeddings", {batch, -1, -1},
                                    "(batch, seq, hidden) with batch = len(cu_seqlens) - 1")
             : require_array<float>(token_embeddings.object, "token_embeddings", {-1, -1},
                                    "(tokens, hidden) or (batch, seq, hidden)");
  PoolParams params;
  params.tokens = x.data();
  params.cu_seqlens = cu.data();
  params.batch = batch;
  params.hidden = x.shape(x.ndim() - 1);
  params.padded_length = padded ? x.shape(1) : 0;
  params.mode = how;
  if (!padded && batch > 0 && cu.data()[batch] > x.shape(0)) {
    throw py::value_error("cu_seqlens ends at " + std::to_string(cu.data()[batch]) +
                          " but token_embeddings has " + std::to_string(x.shape(0)) + " rows");
  }
  py::array_t<int32_t, py::array::c_style> prompts;
  if (prompt_lengths) {
    prompts = require_array<int32_t>(prompt_lengths->object, "prompt_lengths", {batch},
                                     "(batch,)");
    params.prompt_lengths = prompts.data();
  }
  py::array_t<float> out({static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(params.hidden)});
  params.out = out.mutable_data();
  {
    py::gil_scoped_release release;
    pool_tokens(params);
  }
  return out;
}

/// The padded-mask form of the pooling (sentence-transformers' right-padded batches).
template <PoolingMode Mode>
py::array_t<float> pool_masked_py(ArrayArg<float> token_embeddings, ArrayArg<int64_t> attention_mask) {
  auto x = require_array<float>(token_embeddings.object, "token_embeddings", {-1, -1, -1}, "(b, s, h)");
  auto mask = require_array<int64_t>(attention_mask.object, "attention_mask", {x.shape(0), x.shape(1)},
                                     "(b, s) matching token_embeddings");
  if ((Mode == PoolingMode::kCls || Mode == PoolingMode::kMax) && x.shape(1) < 1) {
    throw py::value_error(std::string(Mode == PoolingMode::kCls ? "cls" : "max") +
                          " pooling needs seq >= 1, got 0");
  }
  const int64_t batch = x.shape(0);
  const int64_t seq = x.shape(1);
  std::vector<int32_t> cu(static_cast<size_t>(batch + 1), 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t* row = mask.data() + b * seq;
    int64_t length = 0;
    while (length < seq && row[length] != 0) ++length;
    for (int64_t s = length; s < seq; ++s) {
      if (row[s] != 0) {
        throw py::value_error("attention_mask row " + std::to_string(b) +
                              " must be right-padded (its 1s first, then 0s), got a 1 at " +
                              std::to_string(s) + " after a 0");
      }
    }
    cu[b + 1] = cu[b] + static_cast<int32_t>(length);
  }
  py::array_t<float> out({x.shape(0), x.shape(2)});
  PoolParams params;
  params.tokens = x.data();
  params.cu_seqlens = cu.data();
  params.padded_length = seq;
  params.out = out.mutable_data();
  params.batch = batch;
  params.hidden = x.shape(2);
  params.mode = Mode;
  {
    py::gil_scoped_release release;
    if (seq > 0) {
      pool_tokens(params);
    } else {
      std::fill(params.out, params.out + batch * params.hidden, 0.0f);
    }
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

py::array_t<float> truncate_and_normalize_py(ArrayArg<float> x, int64_t keep_dim, bool normalize) {
  auto in = require_array<float>(x.object, "x", {-1, -1}, "(n, d)");
  py::array_t<float> out({in.shape(0), static_cast<py::ssize_t>(keep_dim)});
  if (keep_dim < 1 || keep_dim > in.shape(1)) {
    throw py::value_error("keep_dim must be in [1, " + std::to_string(in.shape(1)) + "], got " +
                          std::to_string(keep_dim));
  }
  {
    py::gil_scoped_release release;
    truncate_and_normalize(in.data(), in.shape(0), in.shape(1), keep_dim, normalize,
                           out.mutable_data());
  }
  return out;
}

using FitResult = py::typing::Tuple<py::array_t<int32_t>, py::array_t<int32_t>,
                                    py::array_t<int32_t>, py::array_t<int64_t>,
                                    py::array_t<int64_t>, int64_t, int64_t>;

FitResult fit_sequences_py(ArrayArg<int32_t> ids, ArrayArg<int32_t> cu_seqlens, int64_t max_length,
                           const std::string& long_text, int64_t overlap,
                           int64_t num_prefix_special, int64_t num_suffix_special) {
  auto flat = require_array<int32_t>(ids.object, "ids", {-1}, "(tokens,)");
  auto cu = require_array<int32_t>(cu_seqlens.object, "cu_seqlens", {-1}, "(sequences + 1,)");
  if (cu.shape(0) < 1) throw py::value_error("cu_seqlens must hold at least one value (0)");
  const int64_t n = cu.shape(0) - 1;
  if (cu.data()[n] > flat.shape(0)) {
    throw py::value_error("cu_seqlens ends at " + std::to_string(cu.data()[n]) +
                          " but ids holds only " + std::to_string(flat.shape(0)) + " tokens");
  }
  LongTextMode mode;
  if (long_text == "truncate") {
    mode = LongTextMode::kTruncate;
  } else if (long_text == "window") {
    mode = LongTextMode::kWindow;
  } else {
    throw py::value_error("long_text must be 'truncate' or 'window', got '" + long_text + "'");
  }
  WindowParams params{max_length, overlap, num_prefix_special, num_suffix_special};
  FittedSequences fitted;
  {
    py::gil_scoped_release release;
    fitted = fit_sequences(flat.data(), cu.data(), n, params, mode);
  }
  const auto rows = static_cast<py::ssize_t>(fitted.cu_seqlens.size() - 1);
  const auto tokens = static_cast<py::ssize_t>(fitted.ids.size());
  const auto sequences = static_cast<py::ssize_t>(fitted.content_lengths.size());
  return FitResult(py::make_tuple(
      to_numpy(std::move(fitted.ids), {tokens}),
      to_numpy(std::move(fitted.cu_seqlens), {rows + 1}),
      to_numpy(std::move(fitted.cu_rows), {sequences + 1}),
      to_numpy(std::move(fitted.spans), {rows, 2}),
      to_numpy(std::move(fitted.content_lengths), {sequences}), fitted.truncated,
      fitted.longest_truncated));
}

py::array_t<float> aggregate_rows_py(ArrayArg<float> rows, ArrayArg<int32_t> cu_rows,
                                     const std::string& method,
                                     std::optional<ArrayArg<int64_t>> spans,
                                     std::optional<ArrayArg<int64_t>> content_lengths,
                                     bool normalize) {
  auto x = require_array<float>(rows.object, "rows", {-1, -1}, "(rows, d)");
  auto cu = require_array<int32_t>(cu_rows.object, "cu_rows", {-1}, "(sequences + 1,)");
  if (cu.shape(0) < 1) throw py::value_error("cu_rows must hold at least one value (0)");
  const int64_t n = cu.shape(0) - 1;
  if (cu.data()[0] != 0 || cu.data()[n] != x.shape(0)) {
    throw py::value_error("cu_rows must run from 0 to the number of rows " +
                          std::to_string(x.shape(0)) + ", got " + std::to_string(cu.data()[0]) +
                          " .. " + std::to_string(cu.data()[n]));
  }
  const AggregationMethod how = parse_method(method);
  py::array_t<int64_t, py::array::c_style> span_array;
  py::array_t<int64_t, py::array::c_style> length_array;
  if (spans) span_array = require_array<int64_t>(spans->object, "spans", {x.shape(0), 2}, "(rows, 2)");
  if (content_lengths) {
    length_array = require_array<int64_t>(content_lengths->object, "content_lengths", {n},
                                          "(sequences,)");
  }
  if (how == AggregationMethod::kWeighted && (!spans || !content_lengths)) {
    throw py::value_error("method='weighted' needs spans and content_lengths, got None");
  }
  py::array_t<float> out({static_cast<py::ssize_t>(n), x.shape(1)});
  {
    py::gil_scoped_release release;
    aggregate_rows(x.data(), cu.data(), n, x.shape(1), how, spans ? span_array.data() : nullptr,
                   content_lengths ? length_array.data() : nullptr, normalize, out.mutable_data());
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

  m.def("pool_tokens", &pool_tokens_py, py::arg("token_embeddings"), py::arg("cu_seqlens"),
        py::arg("mode"), py::arg("prompt_lengths") = py::none(),
        R"doc(sentence-transformers' Pooling of every sequence: float32 [batch, hidden].

token_embeddings: float32 [tokens, hidden] packed (sequence b = rows cu_seqlens[b] ..
cu_seqlens[b + 1]) or [batch, seq, hidden] right-padded (lengths from cu_seqlens).
cu_seqlens: int32 [batch + 1]. mode: 'cls' (first token taking part), 'mean', 'max' (-inf where
no token takes part), 'mean_sqrt_len' (sum / sqrt(count)), 'weightedmean' (weights = 1-based
positions), 'lasttoken' (zeros where no token takes part); counts clamp at 1e-9.
prompt_lengths: int32 [batch]: the first prompt_lengths[b] tokens do not take part
(include_prompt=False); None: all do.)doc");

  m.def("mean_pool", &pool_masked_py<PoolingMode::kMean>, py::arg("token_embeddings"),
        py::arg("attention_mask"),
        R"doc(Mask-aware mean: sum(x * mask) / max(sum(mask), 1e-9) per row (pool_tokens, 'mean').

token_embeddings: float32 [b, s, h]; attention_mask: int64 [b, s], right-padded (1s then 0s).
Returns float32 [b, h]; a row with no real token gives zeros.)doc");
  m.def("cls_pool", &pool_masked_py<PoolingMode::kCls>, py::arg("token_embeddings"),
        py::arg("attention_mask"),
        R"doc(First token of each row: float32 [b, s, h] -> [b, h] (s >= 1; mask right-padded).)doc");
  m.def("max_pool", &pool_masked_py<PoolingMode::kMax>, py::arg("token_embeddings"),
        py::arg("attention_mask"),
        R"doc(Mask-aware elementwise max (sentence-transformers: padding is -inf).

token_embeddings: float32 [b, s, h] (s >= 1); attention_mask: int64 [b, s], right-padded.
Returns float32 [b, h]; a row with no real token gives -inf.)doc");

  m.def("truncate_and_normalize", &truncate_and_normalize_py, py::arg("x"), py::arg("keep_dim"),
        py::arg("normalize") = true,
        R"doc(Matryoshka cut: the first keep_dim columns of float32 [n, d] x, as a new float32
[n, keep_dim] array, each row divided by max(||row||, 1e-12) when normalize (the cut of a unit
vector re-normalized; without normalize the columns are only copied). 1 <= keep_dim <= d.)doc");

  m.def("fit_sequences", &fit_sequences_py, py::arg("ids"), py::arg("cu_seqlens"),
        py::arg("max_length"), py::arg("long_text"), py::arg("overlap") = 0,
        py::arg("num_prefix_special") = 1, py::arg("num_suffix_special") = 1,
        R"doc(Fit tokenized sequences to the model: one row per sequence that fits, a cut row
(long_text='truncate': the first max_length - suffix tokens and the suffix specials) or
overlapping windows (long_text='window', see create_windows) for a longer one.

ids int32 [tokens], cu_seqlens int32 [sequences + 1]. Returns (ids int32 [tokens'],
cu_seqlens int32 [rows + 1], cu_rows int32 [sequences + 1] (the rows of sequence s are
cu_rows[s] .. cu_rows[s + 1]), spans int64 [rows, 2] (content spans), content_lengths int64
[sequences], truncated (how many sequences were cut), longest_truncated (the longest of them)).)doc");

  m.def("aggregate_rows", &aggregate_rows_py, py::arg("rows"), py::arg("cu_rows"),
        py::arg("method") = "mean", py::arg("spans") = py::none(),
        py::arg("content_lengths") = py::none(), py::arg("normalize") = false,
        R"doc(One embedding per sequence from the embeddings of its rows (fit_sequences).

rows float32 [R, d]; cu_rows int32 [n + 1] from 0 to R, every sequence with >= 1 row. A single
row is copied; several (windows) are aggregated with method 'mean', 'max' or 'weighted' (spans
int64 [R, 2], content_lengths int64 [n], see aggregate_embeddings), then L2-normalized when
normalize. Returns float32 [n, d].)doc");

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
