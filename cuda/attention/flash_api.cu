// Host entry points of attention.h: argument checks, device guard, dispatch on head dim.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../cuda_check.cuh"
#include "flash_fwd_launch.cuh"
#include "sutra/attention.h"

namespace sutra {
namespace {

// Makes `device` current for the scope of an API call and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cuda::check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) cuda::check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace

FlashAttnKernelInfo flash_attention_kernel_info(int head_dim, bool with_bias, int window_left,
                                                int window_right) {
  using namespace cuda::attn;
  switch (head_dim) {
    case 32: return flash_fwd_info<DefaultTraits<32>::type>(with_bias);
    case 64:
      return uses_window_tiles(head_dim, window_left, window_right)
                 ? flash_fwd_info<WindowTraits64>(with_bias)
                 : flash_fwd_info<DefaultTraits<64>::type>(with_bias);
    case 128: return flash_fwd_info<DefaultTraits<128>::type>(with_bias);
    default:
      throw std::invalid_argument("head_dim must be 32, 64 or 128, got " +
                                  std::to_string(head_dim));
  }
}

void flash_attention_forward(const FlashAttnParams& p, cudaStream_t stream) {
  require(p.q && p.k && p.v && p.o, "q, k, v and o must be device pointers, got a null pointer");
  require(p.batch >= 0 && p.heads > 0 && p.max_seqlen >= 0,
          "batch >= 0, heads > 0 and max_seqlen >= 0 expected");
  require(p.window_left >= -1 && p.window_right >= -1,
          "window bounds must be >= 0, or -1 for unbounded");
  require(p.bias != AttnBias::kAlibi || p.alibi_slopes, "alibi_slopes is null");
  require(p.bias != AttnBias::kRelative ||
              (p.rel_bias && p.rel_num_buckets > 0 && p.rel_num_buckets <= 256 &&
               p.rel_max_distance >= 0 && p.rel_max_distance <= kAttnMaxRelDistance),
          "rel_bias needs a table, 1..256 buckets and 0 <= max_distance <= " +
              std::to_string(kAttnMaxRelDistance));
  if (p.batch == 0 || p.max_seqlen == 0) return;

  DeviceGuard guard(p.device);
  int major = 0;
  cuda::check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p.device),
              "cudaDeviceGetAttribute");
  if (major < 8) {
    throw Error("flash_attention needs an sm_80 or newer GPU (device " + std::to_string(p.device) +
                " is sm_" + std::to_string(major) + "x)");
  }
  switch (p.head_dim) {
    case 32: cuda::attn::run_flash_fwd_hdim32(p, stream); break;
    case 64:
      if (cuda::attn::uses_window_tiles(p.head_dim, p.window_left, p.window_right)) {
        cuda::attn::run_flash_fwd_hdim64_window(p, stream);
      } else {
        cuda::attn::run_flash_fwd_hdim64(p, stream);
      }
      break;
    case 128: cuda::attn::run_flash_fwd_hdim128(p, stream); break;
    default:
      throw std::invalid_argument("head_dim must be 32, 64 or 128, got " +
                                  std::to_string(p.head_dim));
  }
}

}  // namespace sutra
