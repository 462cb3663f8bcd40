// cuBLASLt loaded at first use (see cublaslt.h).
#include "engine/cublaslt.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "sutra/cuda_info.h"
#include "sutra/error.h"

#ifndef SUTRA_CUBLASLT_SONAME
#error "the build defines SUTRA_CUBLASLT_SONAME (e.g. libcublasLt.so.13)"
#endif

namespace sutra::engine {
namespace {

struct Loader {
  std::mutex mutex;
  std::string path;        // set_cublaslt_path's, or empty for the soname
  void* handle = nullptr;  // never closed: the table outlives every engine
  CublasLtApi api;
  bool loaded = false;
};

Loader& loader() {
  static Loader* instance = new Loader();  // leaked on purpose: engines may outlive statics
  return *instance;
}

template <typename Fn>
void resolve(void* handle, const char* name, Fn& out) {
  void* symbol = dlsym(handle, name);
  if (symbol == nullptr) {
    throw Error(std::string("the cuBLASLt library that was loaded has no ") + name +
                " (it is older than this build of sutra needs: install nvidia-cublas 13)");
  }
  out = reinterpret_cast<Fn>(symbol);
}

void load(Loader& l) {
  const std::string target = l.path.empty() ? std::string(SUTRA_CUBLASLT_SONAME) : l.path;
  void* handle = dlopen(target.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    throw Error("the GPU engine needs cuBLASLt (" + std::string(SUTRA_CUBLASLT_SONAME) +
                ") and it could not be loaded from '" + target +
                "': " + (reason != nullptr ? reason : "unknown reason") +
                ". Install it with `pip install 'nvidia-cublas>=13,<14'` (the sutra[cuda] extra)");
  }
  CublasLtApi api;
  resolve(handle, "cublasLtGetVersion", api.GetVersion);
  resolve(handle, "cublasLtGetStatusString", api.GetStatusString);
  resolve(handle, "cublasLtCreate", api.Create);
  resolve(handle, "cublasLtDestroy", api.Destroy);
  resolve(handle, "cublasLtMatmul", api.Matmul);
  resolve(handle, "cublasLtMatmulDescCreate", api.MatmulDescCreate);
  resolve(handle, "cublasLtMatmulDescDestroy", api.MatmulDescDestroy);
  resolve(handle, "cublasLtMatmulDescSetAttribute", api.MatmulDescSetAttribute);
  resolve(handle, "cublasLtMatrixLayoutCreate", api.MatrixLayoutCreate);
  resolve(handle, "cublasLtMatrixLayoutDestroy", api.MatrixLayoutDestroy);
  resolve(handle, "cublasLtMatmulPreferenceCreate", api.MatmulPreferenceCreate);
  resolve(handle, "cublasLtMatmulPreferenceDestroy", api.MatmulPreferenceDestroy);
  resolve(handle, "cublasLtMatmulPreferenceSetAttribute", api.MatmulPreferenceSetAttribute);
  resolve(handle, "cublasLtMatmulAlgoGetHeuristic", api.MatmulAlgoGetHeuristic);
  resolve(handle, "cublasLtMatmulAlgoCheck", api.MatmulAlgoCheck);
  l.handle = handle;
  l.api = api;
  l.loaded = true;
}

}  // namespace

const CublasLtApi& cublaslt() {
  Loader& l = loader();
  const std::lock_guard<std::mutex> lock(l.mutex);
  if (!l.loaded) load(l);
  return l.api;
}

bool set_cublaslt_path(const std::string& library_path) {
  Loader& l = loader();
  const std::lock_guard<std::mutex> lock(l.mutex);
  if (l.loaded) return false;
  l.path = library_path;
  return true;
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const char* text = loader().api.GetStatusString != nullptr ? loader().api.GetStatusString(status)
                                                             : "unknown status";
  throw Error(std::string(what) + " failed: " + text + " (cublasStatus_t " +
              std::to_string(static_cast<int>(status)) + ")");
}

}  // namespace sutra::engine

namespace sutra {

bool cuda_set_cublaslt_path(const std::string& path) { return engine::set_cublaslt_path(path); }

// cuda_info.h: the version of the library the engine uses, loading it if it can; 0 when it
// cannot be loaded (build_info then reports it missing instead of failing).
size_t cuda_cublaslt_version() {
  try {
    return engine::cublaslt().GetVersion();
  } catch (const Error&) {
    return 0;
  }
}

}  // namespace sutra
