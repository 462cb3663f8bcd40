// Packed-row-tile instantiations for head dim 32 (FlashAttnParams::packed_tokens): the default
// tile, {fp16, bf16} x {no bias, bias (ALiBi / relative buckets)}; windows use it too.
#include "flash_fwd_launch.cuh"

namespace sutra::cuda::attn {

void run_flash_fwd_hdim32_packed(const FlashAttnParams& p, cudaStream_t stream) {
  run_flash_fwd<DefaultTraits<32>::type, true>(p, stream);
}

}  // namespace sutra::cuda::attn
