// sutra._core: the native core as seen from Python. Translation only; the work is in cpp/ and cuda/.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include "bindings.h"
#include "sutra/build_info.h"
#include "sutra/cpu_info.h"
#include "sutra/cuda_info.h"
#include "sutra/error.h"

namespace py = pybind11;

using InfoDict = py::typing::Dict<py::str, py::object>;

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "Native core of sutra: batch planning, sliding windows, aggregation, pooling, "
      "normalization, quantization, CPU/GPU discovery. Arrays must be C-contiguous and of the stated dtype; "
      "nothing is converted or copied silently.";

  // sutra::Error -> SutraError(RuntimeError); std::invalid_argument -> ValueError (pybind11).
  py::register_exception<sutra::Error>(m, "SutraError", PyExc_RuntimeError);

  sutra::bindings::bind_ops(m);
  sutra::bindings::bind_cuda(m);
  sutra::bindings::bind_attention(m);
  sutra::bindings::bind_engine(m);
  sutra::bindings::bind_kernels(m);
  sutra::bindings::bind_encoder(m);
  sutra::bindings::bind_tokenizer(m);
  sutra::bindings::bind_scheduler(m);

  m.def(
      "cpu_features",
      []() -> InfoDict {
        const sutra::CpuInfo info = sutra::cpu_info();
        InfoDict out;
        out["arch"] = info.arch;
        out["cores"] = info.logical_cores;
        for (const auto& [name, present] : info.features) out[py::str(name)] = present;
        return out;
      },
      "CPU of this machine: {'arch': str, 'cores': int (logical), '<feature>': bool, ...} with\n"
      "features sse4_2, avx, avx2, fma, f16c, avx512f, avx512bw, avx512_vnni, avx512_bf16 and\n"
      "amx_tile/amx_int8/amx_bf16 on x86-64 (CPU support, not OS enablement).");

  m.def(
      "build_info",
      []() -> InfoDict {
        const sutra::BuildInfo info = sutra::build_info();
        const bool cuda = sutra::cuda_compiled();
        InfoDict out;
        out["version"] = info.version;
        out["cuda"] = cuda;
        out["cuda_runtime"] = cuda ? py::object(py::str(sutra::cuda_runtime_version())) : py::none();
        out["cublaslt"] = cuda ? py::object(py::int_(sutra::cuda_cublaslt_version())) : py::none();
        out["cuda_architectures"] = info.cuda_architectures;
        out["compiler"] = info.compiler;
        return out;
      },
      "How this core was built: {'version': str, 'cuda': bool, 'cuda_runtime': str | None,\n"
      "'cublaslt': int | None (cublasLtGetVersion of the loaded library), 'cuda_architectures':\n"
      "str (CMake syntax, '' without CUDA), 'compiler': str}. Touches no GPU.");
}
