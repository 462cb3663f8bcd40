// sm_90a instantiations for head dim 128: {fp16, bf16} x {no bias, bias} x {per sequence, packed}.
#include "flash_fwd_sm90_launch.cuh"

namespace sutra::cuda::attn {

void run_flash_fwd_sm90_hdim128(const FlashAttnParams& p, const Sm90TensorMaps& maps,
                               cudaStream_t stream) {
  run_flash_fwd_sm90<128>(p, maps, stream);
}

}  // namespace sutra::cuda::attn
