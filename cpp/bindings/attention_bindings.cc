// Bindings of attention.h. The Python layer (sutra/flash_attention.py) validates the tensors and
// hands over raw device pointers, element strides and the caller's stream as integers; this file
// only fills FlashAttnParams and releases the GIL around the launch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "sutra/attention.h"

namespace py = pybind11;

namespace sutra::bindings {
namespace {

template <typename T>
T get(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw std::invalid_argument(std::string("missing parameter '") + key + "'");
  return d[key].cast<T>();
}

template <typename P>
P* get_ptr(const py::dict& d, const char* key) {
  if (!d.contains(key) || d[key].is_none()) return nullptr;
  return reinterpret_cast<P*>(static_cast<uintptr_t>(d[key].cast<uint64_t>()));
}

void get_strides(const py::dict& d, const char* key, int64_t& batch, int64_t& row, int64_t& head) {
  const auto s = get<std::vector<int64_t>>(d, key);
  if (s.size() != 3) throw std::invalid_argument(std::string(key) + " needs 3 strides");
  batch = s[0];
  row = s[1];
  head = s[2];
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def(
      "flash_attention_forward",
      [](const py::dict& d) {
        FlashAttnParams p;
        p.q = get_ptr<const void>(d, "q");
        p.k = get_ptr<const void>(d, "k");
        p.v = get_ptr<const void>(d, "v");
        p.o = get_ptr<void>(d, "o");
        p.lse = get_ptr<float>(d, "lse");
        p.cu_seqlens = get_ptr<const int32_t>(d, "cu_seqlens");
        get_strides(d, "q_strides", p.q_batch_stride, p.q_row_stride, p.q_head_stride);
        get_strides(d, "k_strides", p.k_batch_stride, p.k_row_stride, p.k_head_stride);
        get_strides(d, "v_strides", p.v_batch_stride, p.v_row_stride, p.v_head_stride);
        get_strides(d, "o_strides", p.o_batch_stride, p.o_row_stride, p.o_head_stride);
        p.lse_batch_stride = get<int64_t>(d, "lse_batch_stride");
        p.lse_head_stride = get<int64_t>(d, "lse_head_stride");
        p.batch = get<int>(d, "batch");
        p.heads = get<int>(d, "heads");
        p.head_dim = get<int>(d, "head_dim");
        p.max_seqlen = get<int>(d, "max_seqlen");
        p.softmax_scale = get<float>(d, "softmax_scale");
        p.window_left = get<int>(d, "window_left");
        p.window_right = get<int>(d, "window_right");
        p.dtype = get<std::string>(d, "dtype") == "bfloat16" ? AttnDtype::kBFloat16
                                                             : AttnDtype::kFloat16;
        p.alibi_slopes = get_ptr<const float>(d, "alibi_slopes");
        p.rel_bias = get_ptr<const float>(d, "rel_bias");
        if (p.alibi_slopes && p.rel_bias) {
          throw std::invalid_argument("alibi_slopes and rel_bias cannot be combined");
        }
        p.bias = p.alibi_slopes ? AttnBias::kAlibi
                                : (p.rel_bias ? AttnBias::kRelative : AttnBias::kNone);
        if (p.rel_bias) {
          p.rel_num_buckets = get<int>(d, "rel_num_buckets");
          p.rel_max_distance = get<int>(d, "rel_max_distance");
          const auto buckets = get<std::vector<int>>(d, "rel_bucket");
          if (p.rel_max_distance < 0 || p.rel_max_distance > kAttnMaxRelDistance ||
              buckets.size() != static_cast<size_t>(2 * p.rel_max_distance + 1)) {
            throw std::invalid_argument("rel_bucket must hold 2 * max_distance + 1 entries, "
                                        "max_distance <= " +
                                        std::to_string(kAttnMaxRelDistance));
          }
          for (size_t i = 0; i < buckets.size(); ++i) {
            if (buckets[i] < 0 || buckets[i] >= p.rel_num_buckets) {
              throw std::invalid_argument("rel_bucket entry out of [0, num_buckets)");
            }
            p.rel_bucket[i] = static_cast<uint8_t>(buckets[i]);
          }
        }
        p.device = get<int>(d, "device");
        const auto stream = reinterpret_cast<cudaStream_t>(
            static_cast<uintptr_t>(get<uint64_t>(d, "stream")));
        py::gil_scoped_release release;
        flash_attention_forward(p, stream);
      },
      py::arg("params"),
      "Low-level launcher behind sutra.ops.flash_attention: a dict of device pointers (int),\n"
      "element strides, sizes and flags. Use sutra.ops.flash_attention instead; nothing here\n"
      "checks that the pointers are what the strides say.");

  m.def(
      "flash_attention_kernel_info",
      [](int head_dim, bool with_bias, int window_left, int window_right) {
        const FlashAttnKernelInfo info =
            flash_attention_kernel_info(head_dim, with_bias, window_left, window_right);
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
      py::arg("window_right") = -1,
      "Tile configuration of the flash attention kernel a call with this head dim (32, 64, 128)\n"
      "and window (inclusive bounds, -1 unbounded) runs:\n"
      "{'block_m', 'block_n', 'threads', 'stages', 'smem_bytes', 'path'}. Raises SutraError in a\n"
      "build without CUDA.");
}

}  // namespace sutra::bindings
