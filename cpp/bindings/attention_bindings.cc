// Bindings of sutra/kernels/attention.h: reads the device arrays (DLPack or __cuda_array_interface__, zero
// copy), checks every shape, dtype, device and layout the kernel relies on, fills FlashAttnParams
// and releases the GIL around the launch. sutra/flash_attention.py only finds the caller's stream
// and allocates missing outputs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "device_tensor.h"
#include "sutra/kernels/attention.h"
#include "sutra/cuda_info.h"
#include "sutra/error.h"
#include "sutra/relative_position.h"

namespace py = pybind11;

namespace sutra::bindings {
namespace {

constexpr int kHeadDims[] = {32, 64, 128};
// mpnet_bucket_table needs max_distance > num_buckets / 4.
constexpr int kMinRelMaxDistance = kMpnetNumBuckets / 4 + 1;

using BucketMap = std::vector<uint8_t>;  // 2 * max_distance + 1 entries

// The kernel's bucket map for one max_distance: bucket(d) for d in [-max_distance,
// max_distance], MPNet's 32 buckets (transformers buckets with num_buckets=32 whatever the table
// width is). Past max_distance every bucket is the edge one, which the kernel's clamp gives.
// Built once per max_distance; std::map nodes never move, so the copy under the lock is all.
void fill_bucket_map(int max_distance, uint8_t* out) {
  static std::mutex mutex;
  static std::map<int, BucketMap> maps;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = maps.find(max_distance);
  if (it == maps.end()) {
    std::vector<int32_t> table(static_cast<size_t>(2 * max_distance + 1));
    mpnet_bucket_table(max_distance, kMpnetNumBuckets, max_distance, table.data());
    it = maps.emplace(max_distance, BucketMap(table.begin(), table.end())).first;
  }
  std::copy(it->second.begin(), it->second.end(), out);
}

void check_same_device(const DeviceTensor& t, const DeviceTensor& q) {
  if (t.device() != q.device()) {
    throw py::value_error(t.name() + " must be on " + q.device_text() + ", got " + t.device_text());
  }
}

// q, k, v and out: the kernel loads and stores 16-byte vectors along head_dim.
void check_rows(const DeviceTensor& t) {
  if (t.stride(t.ndim() - 1) != 1) {
    const std::string got = t.strides_text();
    throw py::value_error(t.name() +
                          " must have a contiguous last (head_dim) dimension, got strides " + got);
  }
  bool aligned = t.data() % 16 == 0;
  for (int axis = 0; axis + 1 < t.ndim(); ++axis) {
    // An axis of size 1 is never stepped along (and torch's DLPack export sets its stride to 1).
    aligned = aligned && (t.shape(axis) == 1 || t.stride(axis) % 8 == 0);
  }
  if (!aligned) {
    char pointer[32];
    std::snprintf(pointer, sizeof(pointer), "0x%llx", static_cast<unsigned long long>(t.data()));
    throw py::value_error(t.name() +
                          " must be 16-byte aligned with strides that are multiples of 8 " +
                          "elements, got strides " + t.strides_text() + " and data pointer " +
                          pointer);
  }
}

std::string head_dims_text() {
  std::vector<int64_t> dims(std::begin(kHeadDims), std::end(kHeadDims));
  return tuple_text(dims);
}

AttnPath attention_path(const std::string& path) {
  if (path == "auto") return AttnPath::kAuto;
  if (path == "sm80") return AttnPath::kSm80;
  if (path == "sm90") return AttnPath::kSm90;
  throw py::value_error("path must be 'auto', 'sm80' or 'sm90', got '" + path + "'");
}

void flash_attention_forward_py(py::object q_obj, py::object k_obj, py::object v_obj,
                                py::object out_obj, py::object cu_seqlens_obj,
                                std::optional<int64_t> max_seqlen,
                                std::optional<double> softmax_scale, bool causal, int window_left,
                                int window_right, py::object alibi_obj, py::object rel_bias_obj,
                                int rel_max_distance, py::object lse_obj,
                                py::object packed_bounds_obj, const std::string& path,
                                uintptr_t stream, bool stream_is_producers) {
  // Before any argument check, so that a CPU-only build says what is missing.
  if (!cuda_compiled()) throw Error("this build of sutra has no CUDA support");

  // Views release their DLPack exports when they go out of scope, after the GIL is taken back.
  // On the producer's own current stream there is nothing to order: DLPack's -1 (no sync).
  const int64_t exported = stream_is_producers ? -1 : dlpack_stream_of(stream);
  const DeviceTensor q(q_obj, "q", exported);
  const DeviceTensor k(k_obj, "k", exported);
  const DeviceTensor v(v_obj, "v", exported);
  if (q.dtype() != DType::kFloat16 && q.dtype() != DType::kBFloat16) {
    throw py::value_error(std::string("q must be float16 or bfloat16, got ") + q.dtype_text());
  }
  for (const DeviceTensor* t : {&k, &v}) {
    if (t->dtype() != q.dtype()) {
      throw py::value_error(t->name() + " must have q's dtype " + q.dtype_text() + ", got " +
                            t->dtype_text());
    }
    if (t->shape() != q.shape()) {
      throw py::value_error(t->name() + " must have q's shape " + q.shape_text() + ", got " +
                            t->shape_text());
    }
    if (t->device() != q.device()) {
      throw py::value_error(t->name() + " must live on q's device " + q.device_text() + ", got " +
                            t->device_text());
    }
  }

  FlashAttnParams p;
  const bool varlen = !cu_seqlens_obj.is_none();
  std::optional<DeviceTensor> cu_seqlens;
  int64_t batch = 0, max_len = 0, heads = 0, head_dim = 0;
  if (varlen) {
    if (q.ndim() != 3) {
      const std::string got = q.shape_text();
      throw py::value_error(
          "q must be [total_tokens, heads, head_dim] with cu_seqlens, got shape " + got);
    }
    heads = q.shape(1);
    head_dim = q.shape(2);
    cu_seqlens.emplace(cu_seqlens_obj, "cu_seqlens", exported);
    const DeviceTensor& cu = *cu_seqlens;
    if (cu.dtype() != DType::kInt32 || cu.ndim() != 1 || cu.shape(0) < 1 || !cu.is_c_contiguous()) {
      throw py::value_error(std::string("cu_seqlens must be a contiguous int32 [batch + 1] array, "
                                        "got ") +
                            cu.dtype_text() + " shape " + cu.shape_text());
    }
    check_same_device(cu, q);
    if (!max_seqlen || *max_seqlen < 0) {
      throw py::value_error("max_seqlen (int >= 0) is required with cu_seqlens, got " +
                            (max_seqlen ? std::to_string(*max_seqlen) : std::string("None")));
    }
    batch = cu.shape(0) - 1;
    max_len = *max_seqlen;
    if (max_len > q.shape(0)) {
      throw py::value_error("max_seqlen must be <= total_tokens " + std::to_string(q.shape(0)) +
                            ", got " + std::to_string(max_len));
    }
  } else {
    if (q.ndim() != 4) {
      const std::string got = q.shape_text();
      throw py::value_error("q must be [batch, seqlen, heads, head_dim] (or pass cu_seqlens), " +
                            ("got shape " + got));
    }
    batch = q.shape(0);
    max_len = q.shape(1);
    heads = q.shape(2);
    head_dim = q.shape(3);
    if (max_seqlen && *max_seqlen != max_len) {
      throw py::value_error("max_seqlen must be the padded seqlen " + std::to_string(max_len) +
                            " or None, got " + std::to_string(*max_seqlen));
    }
  }
  if (std::find(std::begin(kHeadDims), std::end(kHeadDims), head_dim) == std::end(kHeadDims)) {
    throw py::value_error("q's head_dim must be one of " + head_dims_text() + ", got " +
                          std::to_string(head_dim));
  }
  for (const DeviceTensor* t : {&q, &k, &v}) check_rows(*t);
  for (int64_t size : q.shape()) {
    if (size > INT_MAX) {
      throw py::value_error("q must have sizes below 2^31, got shape " + q.shape_text());
    }
  }

  if (window_left < -1 || window_right < -1) {
    throw py::value_error("window bounds must be >= 0 or -1 (unbounded), got (" +
                          std::to_string(window_left) + ", " + std::to_string(window_right) + ")");
  }
  if (causal) window_right = window_right < 0 ? 0 : std::min(window_right, 0);
  const double scale =
      softmax_scale ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
  SUTRA_CHECK(scale > 0.0 && std::isfinite(scale), "softmax_scale", "a finite number > 0", scale);

  if (!alibi_obj.is_none() && !rel_bias_obj.is_none()) {
    throw py::value_error("alibi_slopes and rel_bias cannot be combined");
  }
  std::optional<DeviceTensor> alibi, rel_bias;
  if (!alibi_obj.is_none()) {
    alibi.emplace(alibi_obj, "alibi_slopes", exported);
    if (alibi->dtype() != DType::kFloat32 || alibi->shape() != std::vector<int64_t>{heads} ||
        !alibi->is_c_contiguous()) {
      throw py::value_error("alibi_slopes must be contiguous float32 [" + std::to_string(heads) +
                            "], got " + alibi->dtype_text() + " shape " + alibi->shape_text() +
                            " strides " + alibi->strides_text());
    }
    check_same_device(*alibi, q);
    p.alibi_slopes = reinterpret_cast<const float*>(alibi->data());
    p.bias = AttnBias::kAlibi;
  }
  if (!rel_bias_obj.is_none()) {
    rel_bias.emplace(rel_bias_obj, "rel_bias", exported);
    const DeviceTensor& rb = *rel_bias;
    // Any width from MPNet's 32 buckets up: the kernel reads row h at h * width, and the bucket
    // map only ever indexes the first 32 columns.
    if (rb.dtype() != DType::kFloat32 || rb.ndim() != 2 || rb.shape(0) != heads ||
        rb.shape(1) < kMpnetNumBuckets || !rb.is_c_contiguous()) {
      throw py::value_error("rel_bias must be contiguous float32 [" + std::to_string(heads) +
                            ", num_buckets >= " + std::to_string(kMpnetNumBuckets) + "], got " +
                            rb.dtype_text() + " shape " + rb.shape_text() + " strides " +
                            rb.strides_text());
    }
    check_same_device(rb, q);
    SUTRA_CHECK(rel_max_distance >= kMinRelMaxDistance && rel_max_distance <= kAttnMaxRelDistance,
                "rel_max_distance",
                "in [" + std::to_string(kMinRelMaxDistance) + ", " +
                    std::to_string(kAttnMaxRelDistance) + "] (MPNet's 32 buckets)",
                rel_max_distance);
    p.rel_bias = reinterpret_cast<const float*>(rb.data());
    p.rel_num_buckets = static_cast<int>(rb.shape(1));
    p.rel_max_distance = rel_max_distance;
    fill_bucket_map(rel_max_distance, p.rel_bucket);
    p.bias = AttnBias::kRelative;
  }

  if (out_obj.is_none()) {
    throw py::value_error(
        "out must be a CUDA device array shaped like q (flash_attention "
        "allocates it only for torch tensors and CuPy arrays), got None");
  }
  const DeviceTensor out(out_obj, "out", exported);
  if (out.shape() != q.shape() || out.dtype() != q.dtype() || out.device() != q.device()) {
    throw py::value_error(std::string("out must be ") + q.dtype_text() + " " + q.shape_text() +
                          " on " + q.device_text() + ", got " + out.dtype_text() + " " +
                          out.shape_text() + " on " + out.device_text());
  }
  if (out.readonly()) throw py::value_error("out must be writable, got a read-only array");
  check_rows(out);

  std::optional<DeviceTensor> lse;
  if (!lse_obj.is_none()) {
    lse.emplace(lse_obj, "lse", exported);
    const std::vector<int64_t> shape = varlen ? std::vector<int64_t>{heads, q.shape(0)}
                                              : std::vector<int64_t>{batch, heads, max_len};
    const int last = lse->ndim() - 1;
    if (lse->dtype() != DType::kFloat32 || lse->shape() != shape || lse->device() != q.device() ||
        (lse->shape(last) > 1 && lse->stride(last) != 1) || lse->data() % 4 != 0) {
      throw py::value_error("lse must be float32 " + tuple_text(shape) +
                            " with contiguous rows on " + q.device_text() + ", got " +
                            lse->dtype_text() + " " + lse->shape_text() + " strides " +
                            lse->strides_text() + " on " + lse->device_text());
    }
    if (lse->readonly()) throw py::value_error("lse must be writable, got a read-only array");
    p.lse = reinterpret_cast<float*>(lse->data());
    p.lse_batch_stride = varlen ? 0 : lse->stride(0);
    p.lse_head_stride = varlen ? lse->stride(0) : lse->stride(1);
  }

  p.q = reinterpret_cast<const void*>(q.data());
  p.k = reinterpret_cast<const void*>(k.data());
  p.v = reinterpret_cast<const void*>(v.data());
  p.o = reinterpret_cast<void*>(out.data());
  if (varlen) p.cu_seqlens = reinterpret_cast<const int32_t*>(cu_seqlens->data());
  std::optional<DeviceTensor> packed_bounds;
  if (!packed_bounds_obj.is_none()) {
    if (!varlen) throw py::value_error("pack_sequences=True needs cu_seqlens (a varlen batch)");
    packed_bounds.emplace(packed_bounds_obj, "packed_bounds", exported);
    const std::vector<int64_t> shape{2, q.shape(0)};
    if (packed_bounds->dtype() != DType::kInt32 || packed_bounds->shape() != shape ||
        !packed_bounds->is_c_contiguous() || packed_bounds->device() != q.device() ||
        packed_bounds->readonly()) {
      throw py::value_error("packed_bounds must be a writable contiguous int32 " +
                            tuple_text(shape) + " on " + q.device_text() + ", got " +
                            packed_bounds->dtype_text() + " " + packed_bounds->shape_text() +
                            " on " + packed_bounds->device_text());
    }
    p.packed_tokens = q.shape(0);
    p.packed_bounds = reinterpret_cast<const int32_t*>(packed_bounds->data());
  }
  // [batch, row, head] element strides; varlen arrays have no batch axis (cu_seqlens offsets).
  const auto strides = [varlen](const DeviceTensor& t, int64_t& b, int64_t& row, int64_t& head) {
    b = varlen ? 0 : t.stride(0);
    row = t.stride(varlen ? 0 : 1);
    head = t.stride(varlen ? 1 : 2);
  };
  strides(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  strides(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  strides(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  strides(out, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
  p.batch = static_cast<int>(batch);
  p.heads = static_cast<int>(heads);
  p.head_dim = static_cast<int>(head_dim);
  p.max_seqlen = static_cast<int>(max_len);
  p.softmax_scale = static_cast<float>(scale);
  p.window_left = window_left;
  p.window_right = window_right;
  p.dtype = q.dtype() == DType::kBFloat16 ? AttnDtype::kBFloat16 : AttnDtype::kFloat16;
  p.device = q.device();
  p.varlen_rows = varlen ? q.shape(0) : 0;
  p.path = attention_path(path);

  py::gil_scoped_release release;
  if (p.packed_tokens > 0) {
    flash_attention_packed_bounds(p.cu_seqlens, p.batch, p.packed_tokens,
                                  reinterpret_cast<int32_t*>(packed_bounds->data()), p.device,
                                  reinterpret_cast<cudaStream_t>(stream));
  }
  flash_attention_forward(p, reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def(
      "flash_attention_forward", &flash_attention_forward_py, py::arg("q"), py::arg("k"),
      py::arg("v"), py::arg("out").none(true), py::kw_only(),
      py::arg("cu_seqlens").none(true) = py::none(), py::arg("max_seqlen") = py::none(),
      py::arg("softmax_scale") = py::none(), py::arg("causal") = false, py::arg("window_left") = -1,
      py::arg("window_right") = -1, py::arg("alibi_slopes").none(true) = py::none(),
      py::arg("rel_bias").none(true) = py::none(), py::arg("rel_max_distance") = kMpnetMaxDistance,
      py::arg("lse").none(true) = py::none(), py::arg("packed_bounds").none(true) = py::none(),
      py::arg("path") = "auto", py::arg("stream") = 0,
      py::arg("stream_is_producers") = false,
      R"doc(Flash attention forward on device arrays, zero copy: the launcher behind
sutra.ops.flash_attention, which finds the caller's stream and allocates out and lse.

q, k, v, out, cu_seqlens, alibi_slopes, rel_bias, lse: objects with __dlpack__ (preferred, and
asked to order their pending work before `stream`) or __cuda_array_interface__ v2/v3 (ordering
is the caller's). Shapes and dtypes as in sutra.ops.flash_attention: q, k, v, out float16 or
bfloat16, padded [batch, seqlen, heads, head_dim] or, with cu_seqlens (int32 [batch + 1]),
varlen [total_tokens, heads, head_dim]; head_dim 32, 64 or 128, the last axis contiguous,
16-byte aligned rows. out is required (None raises once every other argument is checked).
lse: float32 [batch, heads, seqlen] or [heads, total_tokens], rows contiguous, or None.
softmax_scale: None for 1 / sqrt(head_dim). window_left / window_right: inclusive key bounds
around the query, -1 unbounded; causal folds in window_right <= 0. alibi_slopes: float32
[heads]. rel_bias: float32 [heads, width >= 32], MPNet's 32 buckets with max_distance =
rel_max_distance (9..512). packed_bounds: int32 [2, total_tokens] scratch (varlen only): row
tiles span sequences (sutra.ops.flash_attention's pack_sequences); the binding fills it with
each token's sequence range first. path: 'auto' (the sm90a wgmma/TMA kernels on a
compute capability 9.0 GPU where they apply, else sm80), 'sm80' or 'sm90' (forced; ValueError
where it cannot run). stream: the cudaStream_t as an integer, 0 for the legacy default.
stream_is_producers: the arrays' library runs its own work on `stream` (flash_attention passes
True for torch and CuPy on their current stream), so DLPack exports need no synchronization.
Enqueues the kernel and returns; the GIL is released meanwhile.

Raises ValueError naming the argument, SutraError without CUDA support, GPU, or sm_80.)doc");

  m.def(
      "flash_attention_kernel_info",
      [](int head_dim, bool with_bias, int window_left, int window_right, const std::string& path,
         int device) {
        const FlashAttnKernelInfo info = flash_attention_kernel_info(
            head_dim, with_bias, window_left, window_right, attention_path(path), device);
        py::dict out;
        out["block_m"] = info.block_m;
        out["block_n"] = info.block_n;
        out["threads"] = info.threads;
        out["stages"] = info.stages;
        out["smem_bytes"] = info.smem_bytes;
        out["path"] = info.path;
        return out;
      },
      py::arg("head_dim"), py::arg("with_bias") = false, py::arg("window_left") = -1,
      py::arg("window_right") = -1, py::arg("path") = "auto", py::arg("device") = 0,
      "Tile configuration of the flash attention kernel an unpacked call with this head dim (32,\n"
      "64, 128) and window (inclusive bounds, -1 unbounded) runs on `device` with `path` ('auto',\n"
      "'sm80', 'sm90'; ValueError where 'sm90' cannot run):\n"
      "{'block_m', 'block_n', 'threads', 'stages', 'smem_bytes', 'path'}. Raises SutraError in a\n"
      "build without CUDA.");
}

}  // namespace sutra::bindings
