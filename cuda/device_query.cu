// Device and library queries behind cuda_info.h. Safe on machines with no driver or no GPU:
// cudart is linked statically and loads libcuda lazily, so the first runtime call is where a
// missing driver shows up, as an error code that we turn into "0 devices".
#include <cuda_runtime.h>

#include <string>

#include "common/check.cuh"
#include "sutra/cuda_info.h"

namespace sutra {

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // consume the error so that a later cudaGetLastError() does not report it
    return 0;
  }
  return count;
}

std::vector<DeviceInfo> cuda_devices() {
  std::vector<DeviceInfo> devices;
  const int count = cuda_device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, i), "cudaGetDeviceProperties");
    DeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.major = prop.major;
    info.minor = prop.minor;
    info.total_memory = prop.totalGlobalMem;
    info.multiprocessors = prop.multiProcessorCount;
    devices.push_back(std::move(info));
  }
  return devices;
}

std::string cuda_runtime_version() {
  int version = 0;
  if (cudaRuntimeGetVersion(&version) != cudaSuccess) {
    version = CUDART_VERSION;  // static cudart: the compiled-in version is the one that runs
    cudaGetLastError();
  }
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

int cuda_driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

}  // namespace sutra
