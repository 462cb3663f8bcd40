// Row-wise L2 normalization: one block per row, warp-shuffle reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sutra::cuda {

struct L2NormalizeParams {
  const float* in = nullptr;  // [rows, dim], device, row stride in_row_stride
  float* out = nullptr;       // [rows, dim], device, row stride out_row_stride (may alias in)
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t in_row_stride = 0;   // elements
  int64_t out_row_stride = 0;  // elements
  float eps = 1e-12f;          // out = in / max(||in||, eps), as torch F.normalize
};

/// Enqueues the kernel on `stream`; checks the launch. rows == 0 or dim == 0 enqueue nothing.
void launch_l2_normalize_rows(const L2NormalizeParams& params, cudaStream_t stream);

}  // namespace sutra::cuda
