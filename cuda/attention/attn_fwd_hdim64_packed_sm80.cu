// Packed-row-tile instantiations for head dim 64 (FlashAttnParams::packed_tokens): the default
// tile, {fp16, bf16} x {no bias, bias (ALiBi / relative buckets)}; windows use it too.
#include "flash_fwd_launch.cuh"

namespace sutra::cuda::attn {

void run_flash_fwd_hdim64_packed(const FlashAttnParams& p, cudaStream_t stream) {
  run_flash_fwd<DefaultTraits<64>::type, true>(p, stream);
}

}  // namespace sutra::cuda::attn
