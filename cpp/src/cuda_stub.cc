// cuda_info.h for a build without CUDA: no devices, and device work fails loudly.
#include "sutra/cuda_info.h"
#include "sutra/engine/encoder.h"
#include "sutra/error.h"
#include "sutra/kernels/activation.h"
#include "sutra/kernels/attention.h"
#include "sutra/kernels/layernorm.h"
#include "sutra/kernels/pooling.h"
#include "sutra/kernels/rotary.h"

namespace sutra {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
std::vector<DeviceInfo> cuda_devices() { return {}; }
std::string cuda_runtime_version() { return {}; }
int cuda_driver_version() { return 0; }
size_t cuda_cublaslt_version() { return 0; }
bool cuda_set_cublaslt_path(const std::string&) { return false; }

void cuda_l2_normalize_rows(const float*, int64_t, int64_t, float*, int) {
  throw Error("this build of sutra has no CUDA support");
}

FlashAttnKernelInfo flash_attention_kernel_info(int, bool, int, int, AttnPath, int) {
  throw Error("this build of sutra has no CUDA support");
}

void flash_attention_packed_bounds(const int32_t*, int, int64_t, int32_t*, int, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

AttnPassChoice flash_attention_pass_choice(int, int) {
  throw Error("this build of sutra has no CUDA support");
}

bool flash_attention_packing_pays(int, bool, int, int, const int32_t*, int64_t) {
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

void l2_normalize_device(float*, int64_t, int64_t, int, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

void bias_activation(const BiasActivationParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

void gated_activation(const GatedActivationParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

void rotary_embedding(const RotaryParams&, cudaStream_t) {
  throw Error("this build of sutra has no CUDA support");
}

}  // namespace sutra

namespace sutra::engine {

// No engine without CUDA: the constructor raises, so no other member is ever reached.
struct GpuEncoder::Impl {};

GpuEncoder::GpuEncoder(const EncoderModel&, const void*, int64_t, const EncoderOptions&) {
  throw Error("this build of sutra has no CUDA support (the GPU engine needs a CUDA build)");
}
GpuEncoder::~GpuEncoder() = default;
void GpuEncoder::encode(const int32_t*, const int32_t*, int64_t, const int32_t*, int64_t, float*,
                        float*, const TokenSegments*, const PassCallback&) {
  throw Error("this build of sutra has no CUDA support");
}
int64_t GpuEncoder::max_tokens() const { return 0; }
int64_t GpuEncoder::max_sequence_length() const { return 0; }
int GpuEncoder::output_dim() const { return 0; }
int GpuEncoder::hidden() const { return 0; }
int GpuEncoder::device() const { return 0; }
DeviceDtype GpuEncoder::dtype() const { return DeviceDtype::kFloat16; }
int64_t GpuEncoder::weight_bytes() const { return 0; }
int64_t GpuEncoder::workspace_bytes() const { return 0; }
StageSeconds GpuEncoder::stage_seconds() const { return {}; }
void GpuEncoder::reset_stage_seconds() {}
int64_t workspace_bytes_per_token(const EncoderModel&) { return 0; }

}  // namespace sutra::engine
