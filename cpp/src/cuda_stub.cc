// cuda_info.h for a build without CUDA: no devices, and device work fails loudly.
#include "sutra/kernels/attention.h"
#include "sutra/kernels/layernorm.h"
#include "sutra/kernels/pooling.h"
#include "sutra/cuda_info.h"
#include "sutra/error.h"

namespace sutra {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
std::vector<DeviceInfo> cuda_devices() { return {}; }
std::string cuda_runtime_version() { return {}; }
int cuda_driver_version() { return 0; }
size_t cuda_cublaslt_version() { return 0; }

void cuda_l2_normalize_rows(const float*, int64_t, int64_t, float*, int) {
  throw Error("this build of sutra has no CUDA support");
}

FlashAttnKernelInfo flash_attention_kernel_info(int, bool, int, int) {
  throw Error("this build of sutra has no CUDA support");
}

void flash_attention_forward(const FlashAttnParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

void embedding_layernorm(const EmbeddingLayerNormParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

void add_layernorm(const AddLayerNormParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

void pool_tokens_device(const DevicePoolParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

}  // namespace sutra
