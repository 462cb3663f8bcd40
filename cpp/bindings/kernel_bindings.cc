// Bindings of the engine's kernels (sutra/kernels/layernorm.h, activation.h, pooling.h) on device arrays: what the tests
// check against torch, and a way to run one kernel from Python. The engine calls them from C++.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "device_tensor.h"
#include "sutra/cuda_info.h"
#include "sutra/error.h"
#include "sutra/kernels/activation.h"
#include "sutra/kernels/layernorm.h"
#include "sutra/kernels/pooling.h"

namespace py = pybind11;

namespace sutra::bindings {
namespace {

DeviceDtype activation_dtype(const DeviceTensor& t) {
  if (t.dtype() == DType::kFloat16) return DeviceDtype::kFloat16;
  if (t.dtype() == DType::kBFloat16) return DeviceDtype::kBFloat16;
  throw py::value_error(t.name() + " must be float16 or bfloat16, got " + t.dtype_text());
}

/// `t` is a C-contiguous array of `shape` (-1: any size) with `like`'s dtype and device.
void require(const DeviceTensor& t, const std::vector<int64_t>& shape, const DeviceTensor& like,
             const std::string& shape_text) {
  bool ok = t.ndim() == static_cast<int>(shape.size()) && t.is_c_contiguous();
  for (size_t axis = 0; ok && axis < shape.size(); ++axis) {
    ok = shape[axis] < 0 || t.shape(static_cast<int>(axis)) == shape[axis];
  }
  if (!ok) {
    throw py::value_error(t.name() + " must be a contiguous " + shape_text + " array, got shape " +
                          t.shape_text() + " strides " + t.strides_text());
  }
  if (t.dtype() != like.dtype() && like.dtype() != DType::kInt32) {
    throw py::value_error(t.name() + " must have " + like.name() + "'s dtype " + like.dtype_text() +
                          ", got " + t.dtype_text());
  }
  if (t.device() != like.device()) {
    throw py::value_error(t.name() + " must be on " + like.device_text() + ", got " +
                          t.device_text());
  }
}

void require_ids(const DeviceTensor& t, int64_t tokens, const DeviceTensor& like) {
  if (t.dtype() != DType::kInt32 || t.ndim() != 1 || t.shape(0) != tokens || !t.is_c_contiguous()) {
    throw py::value_error(t.name() + " must be a contiguous int32 [" + std::to_string(tokens) +
                          "] array, got " + t.dtype_text() + " shape " + t.shape_text());
  }
  if (t.device() != like.device()) {
    throw py::value_error(t.name() + " must be on " + like.device_text() + ", got " +
                          t.device_text());
  }
}

const void* ptr(const DeviceTensor& t) { return reinterpret_cast<const void*>(t.data()); }

void embedding_layernorm_py(py::object ids_obj, py::object positions_obj, py::object word_obj,
                            py::object position_obj, py::object type_obj, py::object gamma_obj,
                            py::object beta_obj, py::object out_obj, float eps, uintptr_t stream,
                            bool stream_is_producers) {
  if (!cuda_compiled()) throw Error("this build of sutra has no CUDA support");
  const int64_t exported = stream_is_producers ? -1 : dlpack_stream_of(stream);
  const DeviceTensor out(out_obj, "out", exported);
  const DeviceDtype dtype = activation_dtype(out);
  if (out.ndim() != 2)
    throw py::value_error("out must be [tokens, hidden], got shape " + out.shape_text());
  const int64_t tokens = out.shape(0);
  const int64_t hidden = out.shape(1);
  const DeviceTensor ids(ids_obj, "ids", exported);
  const DeviceTensor positions(positions_obj, "positions", exported);
  const DeviceTensor word(word_obj, "word_embeddings", exported);
  const DeviceTensor position(position_obj, "position_embeddings", exported);
  const DeviceTensor gamma(gamma_obj, "gamma", exported);
  const DeviceTensor beta(beta_obj, "beta", exported);
  require(out, {tokens, hidden}, out, "[tokens, hidden]");
  require_ids(ids, tokens, out);
  require_ids(positions, tokens, out);
  require(word, {-1, hidden}, out, "[vocab, hidden]");
  require(position, {-1, hidden}, out, "[max_positions, hidden]");
  require(gamma, {hidden}, out, "[hidden]");
  require(beta, {hidden}, out, "[hidden]");
  std::optional<DeviceTensor> type_row;
  if (!type_obj.is_none()) {
    type_row.emplace(type_obj, "token_type_row", exported);
    require(*type_row, {hidden}, out, "[hidden]");
  }
  EmbeddingLayerNormParams p;
  p.ids = reinterpret_cast<const int32_t*>(ids.data());
  p.positions = reinterpret_cast<const int32_t*>(positions.data());
  p.word_embeddings = ptr(word);
  p.position_embeddings = ptr(position);
  p.token_type_row = type_row ? ptr(*type_row) : nullptr;
  p.gamma = ptr(gamma);
  p.beta = ptr(beta);
  p.out = reinterpret_cast<void*>(out.data());
  p.tokens = tokens;
  p.hidden = static_cast<int>(hidden);
  p.vocab = word.shape(0);
  p.max_positions = position.shape(0);
  p.eps = eps;
  p.dtype = dtype;
  p.device = out.device();
  py::gil_scoped_release release;
  embedding_layernorm(p, reinterpret_cast<cudaStream_t>(stream));
}

void add_layernorm_py(py::object x_obj, py::object bias_obj, py::object residual_obj,
                      py::object gamma_obj, py::object beta_obj, py::object out_obj, float eps,
                      uintptr_t stream, bool stream_is_producers) {
  if (!cuda_compiled()) throw Error("this build of sutra has no CUDA support");
  const int64_t exported = stream_is_producers ? -1 : dlpack_stream_of(stream);
  const DeviceTensor x(x_obj, "x", exported);
  const DeviceDtype dtype = activation_dtype(x);
  if (x.ndim() != 2)
    throw py::value_error("x must be [tokens, hidden], got shape " + x.shape_text());
  const int64_t tokens = x.shape(0);
  const int64_t hidden = x.shape(1);
  require(x, {tokens, hidden}, x, "[tokens, hidden]");
  const DeviceTensor gamma(gamma_obj, "gamma", exported);
  const DeviceTensor beta(beta_obj, "beta", exported);
  const DeviceTensor out(out_obj, "out", exported);
  require(gamma, {hidden}, x, "[hidden]");
  require(beta, {hidden}, x, "[hidden]");
  require(out, {tokens, hidden}, x, "[tokens, hidden]");
  std::optional<DeviceTensor> bias, residual;
  if (!bias_obj.is_none()) {
    bias.emplace(bias_obj, "bias", exported);
    require(*bias, {hidden}, x, "[hidden]");
  }
  if (!residual_obj.is_none()) {
    residual.emplace(residual_obj, "residual", exported);
    require(*residual, {tokens, hidden}, x, "[tokens, hidden]");
  }
  AddLayerNormParams p;
  p.x = ptr(x);
  p.bias = bias ? ptr(*bias) : nullptr;
  p.residual = residual ? ptr(*residual) : nullptr;
  p.gamma = ptr(gamma);
  p.beta = ptr(beta);
  p.out = reinterpret_cast<void*>(out.data());
  p.tokens = tokens;
  p.hidden = static_cast<int>(hidden);
  p.eps = eps;
  p.dtype = dtype;
  p.device = x.device();
  py::gil_scoped_release release;
  add_layernorm(p, reinterpret_cast<cudaStream_t>(stream));
}

void bias_activation_py(py::object x_obj, py::object bias_obj, const std::string& activation,
                        uintptr_t stream, bool stream_is_producers) {
  if (!cuda_compiled()) throw Error("this build of sutra has no CUDA support");
  const Activation act = parse_activation(activation, "activation");
  const int64_t exported = stream_is_producers ? -1 : dlpack_stream_of(stream);
  const DeviceTensor x(x_obj, "x", exported);
  const bool float32 = x.dtype() == DType::kFloat32;
  const DeviceDtype dtype = float32 ? DeviceDtype::kFloat16 : activation_dtype(x);
  if (x.ndim() != 2) throw py::value_error("x must be [rows, cols], got shape " + x.shape_text());
  require(x, {-1, x.shape(1)}, x, "[rows, cols]");
  std::optional<DeviceTensor> bias;
  if (!bias_obj.is_none()) {
    bias.emplace(bias_obj, "bias", exported);
    require(*bias, {x.shape(1)}, x, "[cols]");
  }
  BiasActivationParams p;
  p.x = reinterpret_cast<void*>(x.data());
  p.bias = bias ? ptr(*bias) : nullptr;
  p.rows = x.shape(0);
  p.cols = x.shape(1);
  p.activation = act;
  p.float32 = float32;
  p.dtype = dtype;
  p.device = x.device();
  py::gil_scoped_release release;
  bias_activation(p, reinterpret_cast<cudaStream_t>(stream));
}

void gated_activation_py(py::object x_obj, py::object out_obj, const std::string& activation,
                         uintptr_t stream, bool stream_is_producers) {
  if (!cuda_compiled()) throw Error("this build of sutra has no CUDA support");
  const Activation act = parse_activation(activation, "activation");
  const int64_t exported = stream_is_producers ? -1 : dlpack_stream_of(stream);
  const DeviceTensor x(x_obj, "x", exported);
  const DeviceDtype dtype = activation_dtype(x);
  if (x.ndim() != 2 || x.shape(1) % 2 != 0) {
    throw py::value_error("x must be [rows, 2 * cols] (the halves a | b), got shape " +
                          x.shape_text());
  }
  require(x, {-1, x.shape(1)}, x, "[rows, 2 * cols]");
  const DeviceTensor out(out_obj, "out", exported);
  require(out, {x.shape(0), x.shape(1) / 2}, x, "[rows, cols]");
  GatedActivationParams p;
  p.x = ptr(x);
  p.out = reinterpret_cast<void*>(out.data());
  p.rows = x.shape(0);
  p.cols = x.shape(1) / 2;
  p.activation = act;
  p.dtype = dtype;
  p.device = x.device();
  py::gil_scoped_release release;
  gated_activation(p, reinterpret_cast<cudaStream_t>(stream));
}

void pool_tokens_device_py(py::object tokens_obj, py::object cu_obj, py::object out_obj,
                           const std::string& mode, py::object prompts_obj, bool normalize,
                           py::object scratch_obj, uintptr_t stream, bool stream_is_producers) {
  if (!cuda_compiled()) throw Error("this build of sutra has no CUDA support");
  const PoolingMode how = pooling_mode_from_name(mode);
  const int64_t exported = stream_is_producers ? -1 : dlpack_stream_of(stream);
  const DeviceTensor tokens(tokens_obj, "tokens", exported);
  const DeviceDtype dtype = activation_dtype(tokens);
  if (tokens.ndim() != 2) {
    throw py::value_error("tokens must be [total_tokens, hidden], got shape " +
                          tokens.shape_text());
  }
  require(tokens, {-1, tokens.shape(1)}, tokens, "[total_tokens, hidden]");
  const DeviceTensor cu(cu_obj, "cu_seqlens", exported);
  if (cu.dtype() != DType::kInt32 || cu.ndim() != 1 || cu.shape(0) < 1 || !cu.is_c_contiguous()) {
    throw py::value_error("cu_seqlens must be a contiguous int32 [batch + 1] array, got " +
                          std::string(cu.dtype_text()) + " shape " + cu.shape_text());
  }
  const int64_t batch = cu.shape(0) - 1;
  const DeviceTensor out(out_obj, "out", exported);
  if (out.dtype() != DType::kFloat32 || out.ndim() != 2 || out.shape(0) != batch ||
      out.shape(1) != tokens.shape(1) || !out.is_c_contiguous() ||
      out.device() != tokens.device()) {
    throw py::value_error("out must be a contiguous float32 [" + std::to_string(batch) + ", " +
                          std::to_string(tokens.shape(1)) + "] array on " + tokens.device_text() +
                          ", got " + out.dtype_text() + " shape " + out.shape_text());
  }
  std::optional<DeviceTensor> prompts;
  if (!prompts_obj.is_none()) {
    prompts.emplace(prompts_obj, "prompt_lengths", exported);
    require_ids(*prompts, batch, tokens);
  }
  std::optional<DeviceTensor> scratch;
  if (!scratch_obj.is_none()) {
    scratch.emplace(scratch_obj, "scratch", exported);
    const int64_t floats = pool_scratch_floats(static_cast<int>(tokens.shape(1)));
    if (scratch->dtype() != DType::kFloat32 || scratch->ndim() != 1 ||
        scratch->shape(0) < floats || !scratch->is_c_contiguous() ||
        scratch->device() != tokens.device()) {
      throw py::value_error("scratch must be a contiguous float32 array of at least " +
                            std::to_string(floats) + " values (pool_scratch_floats(hidden)) on " +
                            tokens.device_text() + ", got " + scratch->dtype_text() + " shape " +
                            scratch->shape_text());
    }
  }
  DevicePoolParams p;
  p.tokens = ptr(tokens);
  p.cu_seqlens = reinterpret_cast<const int32_t*>(cu.data());
  p.prompt_lengths = prompts ? reinterpret_cast<const int32_t*>(prompts->data()) : nullptr;
  p.out = reinterpret_cast<float*>(out.data());
  p.batch = static_cast<int>(batch);
  p.hidden = static_cast<int>(tokens.shape(1));
  p.mode = how;
  p.normalize = normalize;
  p.scratch = scratch ? reinterpret_cast<float*>(scratch->data()) : nullptr;
  p.dtype = dtype;
  p.device = tokens.device();
  py::gil_scoped_release release;
  pool_tokens_device(p, reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace

void bind_kernels(py::module_& m) {
  m.def("pool_tokens_device", &pool_tokens_device_py, py::arg("tokens"), py::arg("cu_seqlens"),
        py::arg("out"), py::kw_only(), py::arg("mode"),
        py::arg("prompt_lengths").none(true) = py::none(), py::arg("normalize") = false,
        py::arg("scratch").none(true) = py::none(), py::arg("stream") = 0,
        py::arg("stream_is_producers") = false,
        R"doc(The engine's pooling on device arrays: pool_tokens (the one pooling semantics) of
packed float16/bfloat16 tokens [total_tokens, hidden] with int32 cu_seqlens [batch + 1] (and
optional int32 prompt_lengths [batch]) into float32 out [batch, hidden], L2-normalized when
normalize. Sums in fp32. cu_seqlens must describe the tokens (not checked on the device).
scratch: float32 [pool_scratch_floats(hidden)] on the device, or None; with it a small batch
is split over token ranges (the engine's path for a few long documents).)doc");
  m.def("pool_scratch_floats", &pool_scratch_floats, py::arg("hidden"),
        "Floats of the scratch pool_tokens_device needs to split long sequences.");

  m.def("embedding_layernorm", &embedding_layernorm_py, py::arg("ids"), py::arg("positions"),
        py::arg("word_embeddings"), py::arg("position_embeddings"),
        py::arg("token_type_row").none(true), py::arg("gamma"), py::arg("beta"), py::arg("out"),
        py::kw_only(), py::arg("eps"), py::arg("stream") = 0,
        py::arg("stream_is_producers") = false,
        R"doc(The engine's embedding kernel on device arrays (DLPack or __cuda_array_interface__):
out[t] = LayerNorm(word_embeddings[ids[t]] + position_embeddings[positions[t]]
(+ token_type_row)) * gamma + beta, in fp32, written as out's dtype (float16 or bfloat16).
ids, positions: int32 [tokens]; tables [rows, hidden]; gamma, beta, token_type_row [hidden];
out [tokens, hidden]. Enqueued on `stream` (a cudaStream_t as an integer); stream_is_producers:
the arrays' library runs its own work on that stream (no DLPack synchronization).)doc");

  m.def("add_layernorm", &add_layernorm_py, py::arg("x"), py::arg("bias").none(true),
        py::arg("residual").none(true), py::arg("gamma"), py::arg("beta"), py::arg("out"),
        py::kw_only(), py::arg("eps"), py::arg("stream") = 0,
        py::arg("stream_is_producers") = false,
        R"doc(The engine's sublayer-output kernel on device arrays: out[t] = LayerNorm(x[t] + bias +
residual[t]) * gamma + beta in fp32. x, residual, out: [tokens, hidden] float16 or bfloat16 (out
may be x or residual); bias, gamma, beta: [hidden]; bias and residual may be None.)doc");

  m.def("bias_activation", &bias_activation_py, py::arg("x"), py::arg("bias").none(true),
        py::kw_only(), py::arg("activation"), py::arg("stream") = 0,
        py::arg("stream_is_producers") = false,
        R"doc(The engine's bias + activation kernel in place on device arrays: x = act(x + bias),
computed in fp32. x: [rows, cols] float16, bfloat16 or float32 (the Dense head's rows); bias:
[cols] of x's dtype, or None. activation: 'gelu' (exact), 'gelu_tanh', 'relu', 'tanh',
'sigmoid' or 'identity'.)doc");
  m.def("gated_activation", &gated_activation_py, py::arg("x"), py::arg("out"), py::kw_only(),
        py::arg("activation"), py::arg("stream") = 0, py::arg("stream_is_producers") = false,
        R"doc(The engine's gated activation (GeGLU with 'gelu') on device arrays: out = act(a) * b
for each row a | b of x, computed in fp32 and rounded once. x: [rows, 2 * cols] float16 or
bfloat16; out: [rows, cols] of x's dtype, not overlapping x.)doc");
}

}  // namespace sutra::bindings
