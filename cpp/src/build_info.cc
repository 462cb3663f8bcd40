#include "sutra/build_info.h"

#include "build_config.h"  // generated: SUTRA_VERSION, SUTRA_COMPILER, SUTRA_CUDA_ARCHITECTURES

namespace sutra {

BuildInfo build_info() { return {SUTRA_VERSION, SUTRA_COMPILER, SUTRA_CUDA_ARCHITECTURES}; }

}  // namespace sutra
