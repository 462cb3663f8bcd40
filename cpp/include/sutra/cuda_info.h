// The core's view of CUDA, in plain C++ so that the bindings and CPU code need no CUDA headers.
// Implemented in cuda/ by a CUDA build and in cpp/src/cuda_stub.cc by a CPU-only one.
//
// Nothing here touches a GPU until called, and the queries never throw: on a machine with no
// driver or no GPU they report zero devices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sutra {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0;  // compute capability
  int minor = 0;
  size_t total_memory = 0;  // bytes
  int multiprocessors = 0;
};

/// True when this build contains the CUDA backend.
bool cuda_compiled();

/// Visible CUDA devices; 0 when the build has no CUDA, there is no driver or no GPU. Never throws.
int cuda_device_count();

/// One entry per visible device; empty when cuda_device_count() is 0. Throws sutra::Error when a
/// device exists but cannot be queried.
std::vector<DeviceInfo> cuda_devices();

/// Version of the CUDA runtime compiled in, "13.0"; empty in a CPU-only build.
std::string cuda_runtime_version();

/// Highest CUDA version the installed driver supports, as 1000 * major + 10 * minor (13000);
/// 0 when there is no driver or no CUDA in this build.
int cuda_driver_version();

/// cublasLtGetVersion() of the cuBLASLt the GPU engine uses (e.g. 130002), loading it first if
/// needed; 0 when it cannot be loaded or in a CPU-only build.
size_t cuda_cublaslt_version();

/// Makes the GPU engine load cuBLASLt from this file (rather than by its soname) when it first
/// needs it. False when it is already loaded, or in a CPU-only build.
bool cuda_set_cublaslt_path(const std::string& path);

/// Smoke test of the device path: copies host_in ([rows, dim] float32) to `device`, L2-normalizes
/// every row there (x / max(||x||, 1e-12)) and copies the result to host_out ([rows, dim]).
/// Throws std::invalid_argument for a bad device index and sutra::Error (with the CUDA error
/// string) when there is no GPU, no CUDA in this build, or any CUDA call fails.
void cuda_l2_normalize_rows(const float* host_in, int64_t rows, int64_t dim, float* host_out,
                            int device);

}  // namespace sutra
