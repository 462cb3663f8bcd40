// cuBLASLt, loaded when the GPU engine is first used rather than when the module is imported, so
// that one CUDA build of sutra imports and runs its CPU paths on machines without cuBLAS. The
// functions the engine calls are resolved from the shared library into one table.
//
// Includes cublasLt.h (types and enums only; nothing is linked): engine sources only.
#pragma once

#include <cublasLt.h>

#include <string>

namespace sutra::engine {

struct CublasLtApi {
  decltype(&cublasLtGetVersion) GetVersion = nullptr;
  decltype(&cublasLtGetStatusString) GetStatusString = nullptr;
  decltype(&cublasLtCreate) Create = nullptr;
  decltype(&cublasLtDestroy) Destroy = nullptr;
  decltype(&cublasLtMatmul) Matmul = nullptr;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate = nullptr;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic = nullptr;
  decltype(&cublasLtMatmulAlgoCheck) MatmulAlgoCheck = nullptr;
};

/// The loaded library's functions. The first call loads it: from `library_path` when one was set
/// with set_cublaslt_path (the Python package passes the nvidia-cublas wheel's file), otherwise
/// by its soname through the module's RUNPATH and the system's search path. Throws sutra::Error
/// naming the library, the loader's message and the package that provides it. Thread-safe.
const CublasLtApi& cublaslt();

/// Where cublaslt() loads the library from; must be called before the first load to matter.
/// Returns false when the library is already loaded (from wherever it was found).
bool set_cublaslt_path(const std::string& library_path);

/// Throws sutra::Error "<what> failed: <cuBLASLt status>" unless status is CUBLAS_STATUS_SUCCESS.
void check_cublas(cublasStatus_t status, const char* what);

}  // namespace sutra::engine
