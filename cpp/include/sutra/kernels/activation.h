// Bias + activation in place, the elementwise step after a GEMM whose epilogue cuBLASLt cannot
// fuse: the exact (erf) GELU of BERT's feed-forward, and the Dense modules' activations on the
// pooled float32 rows; and the gated form of ModernBERT's GeGLU feed-forward. Plain C++: implemented in cuda/activation/ by a CUDA build and by
// cpp/src/cuda_stub.cc (which raises) in a CPU-only one.
#pragma once

#include <cstdint>

#include "sutra/kernels/layernorm.h"  // DeviceDtype, cudaStream_t

namespace sutra {

enum class Activation : int {
  kIdentity = 0,
  kGelu = 1,      // x * Phi(x), the exact erf form (torch.nn.GELU(), HF "gelu")
  kGeluTanh = 2,  // the tanh approximation (HF "gelu_new", "gelu_pytorch_tanh")
  kRelu = 3,
  kTanh = 4,
  kSigmoid = 5,
};

struct BiasActivationParams {
  void* x = nullptr;           // [rows, cols], rewritten in place
  const void* bias = nullptr;  // [cols] or null
  int64_t rows = 0;
  int64_t cols = 0;
  Activation activation = Activation::kGelu;
  // x and bias are float32 (the pooled rows of the pipeline's head) rather than `dtype`.
  bool float32 = false;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  int device = 0;
};

/// x = activation(x + bias), computed in fp32. Throws std::invalid_argument for bad sizes,
/// sutra::Error for CUDA failures.
void bias_activation(const BiasActivationParams& p, cudaStream_t stream);

struct GatedActivationParams {
  const void* x = nullptr;  // [rows, 2 * cols]: the halves a | b of each row
  void* out = nullptr;      // [rows, cols]; must not overlap x
  int64_t rows = 0;
  int64_t cols = 0;
  Activation activation = Activation::kGelu;
  DeviceDtype dtype = DeviceDtype::kFloat16;
  int device = 0;
};

/// out = activation(a) * b per row (GeGLU with kGelu: transformers' ModernBertMLP, whose Wi
/// output is chunked into input | gate), computed in fp32 and rounded once. Throws
/// std::invalid_argument for bad sizes, sutra::Error for CUDA failures.
void gated_activation(const GatedActivationParams& p, cudaStream_t stream);

}  // namespace sutra
