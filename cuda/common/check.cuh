// Error checking shared by the CUDA sources: every runtime call is checked and turned into a
// sutra::Error carrying the CUDA error string.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "sutra/error.h"

namespace sutra::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    // Clears a non-sticky error (a failed cudaMalloc, say) so that the next check_launch does not
    // report it again as the failure of an unrelated kernel.
    cudaGetLastError();
    throw Error(std::string(what) + " failed: " + cudaGetErrorString(status) + " (" +
                cudaGetErrorName(status) + ")");
  }
}

/// Call right after a kernel launch. Configuration errors surface here; with
/// -DSUTRA_CUDA_SYNC_CHECK=ON the stream is also synchronized so that a fault is reported by the
/// kernel that caused it rather than by a later call.
inline void check_launch(const char* kernel, cudaStream_t stream) {
  check(cudaGetLastError(), kernel);
#ifdef SUTRA_CUDA_SYNC_CHECK
  check(cudaStreamSynchronize(stream), kernel);
#else
  (void)stream;
#endif
}

/// True for the errors that mean "this machine has no usable GPU" rather than "something broke".
inline bool is_no_gpu_error(cudaError_t status) {
  return status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver ||
         status == cudaErrorStubLibrary || status == cudaErrorSystemDriverMismatch ||
         status == cudaErrorCompatNotSupportedOnDevice;
}

}  // namespace sutra::cuda
