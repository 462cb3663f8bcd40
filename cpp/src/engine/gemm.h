// The engine's GEMMs through cuBLASLt: out[rows, n] = x[rows, k] · w[n, k]ᵀ (+ bias, activation),
// every matrix row-major, weights in torch's [out, in] layout, fp32 accumulation. One Gemm per
// encoder: it owns the cuBLASLt handle and workspace and remembers the algorithm picked for each
// shape, so that a repeated shape (every layer of a pass, the next pass of the same size) costs no
// heuristic query. Large GEMMs are tuned: the first time a shape of at least `tune_min_rows` rows
// is seen (per power-of-two bucket of rows), cuBLASLt's first few heuristic candidates are timed
// on the call's own buffers and the fastest is kept for the bucket. Not thread-safe; the encoder
// serializes its passes.
//
// Includes CUDA headers: engine sources only.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "cuda/resources.h"

namespace sutra::engine {

enum class GemmType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };

enum class GemmEpilogue : int {
  kNone = 0,
  kBias = 1,          // + bias[n]
  kBiasGeluTanh = 2,  // gelu_tanh(· + bias): cuBLASLt's GELU is the tanh approximation
  kBiasRelu = 3,      // relu(· + bias)
};

struct GemmArgs {
  const void* x = nullptr;     // [rows, k]
  const void* w = nullptr;     // [n, k]
  const void* bias = nullptr;  // [n], with a bias epilogue
  void* out = nullptr;         // [rows, n]
  int64_t rows = 0;
  int64_t n = 0;
  int64_t k = 0;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  GemmType type = GemmType::kFloat16;  // of x, w, bias and out alike
};

class Gemm {
 public:
  /// On the current device. Loads cuBLASLt (throws sutra::Error when it cannot be loaded).
  /// tune_min_rows: GEMMs of at least this many rows are tuned (see above); 0: never, every
  /// shape takes the heuristic's first algorithm.
  explicit Gemm(size_t workspace_bytes = size_t{32} << 20, int64_t tune_min_rows = 0);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  /// Enqueues the product on `stream`. Pointers must be 16-byte aligned (the engine's buffers
  /// and weight slots are 256-byte aligned). Throws std::invalid_argument for bad sizes and
  /// sutra::Error when cuBLASLt has no algorithm for the shape or fails. The first call of a
  /// shape that is tuned blocks until its timing runs are done (never while `stream` is being
  /// captured into a CUDA graph: such a call takes the heuristic's algorithm).
  void run(const GemmArgs& args, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;  // rows, n, k, epilogue, type
  Plan& plan_for(const GemmArgs& args);
  /// cuBLASLt's first `count` algorithms for the plan within the workspace, into `results`;
  /// returns how many it found.
  int heuristic(const Plan& plan, int count, cublasLtMatmulHeuristicResult_t* results);
  /// Sets plan.algo to the bucket's tuned algorithm, timing the candidates first when the
  /// bucket has none yet.
  void tune(Plan& plan, const GemmArgs& args, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  cuda::DeviceBuffer<unsigned char> workspace_;
  std::map<Key, Plan*> plans_;
  int64_t tune_min_rows_ = 0;
  // The tuned algorithm of each (power-of-two bucket of rows, n, k, epilogue, type).
  std::map<Key, cublasLtMatmulAlgo_t> tuned_;
  cuda::Event tune_start_{cudaEventDefault}, tune_stop_{cudaEventDefault};
};

}  // namespace sutra::engine
