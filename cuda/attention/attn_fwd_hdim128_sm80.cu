// Instantiations for head dim 128: {fp16, bf16} x {no bias, bias (ALiBi / relative buckets)}.
#include "flash_fwd_launch.cuh"

namespace sutra::cuda::attn {

void run_flash_fwd_hdim128(const FlashAttnParams& p, cudaStream_t stream) {
  run_flash_fwd<DefaultTraits<128>::type, false>(p, stream);
}

}  // namespace sutra::cuda::attn
