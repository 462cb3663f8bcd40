// cuBLASLt GEMMs of the engine (see gemm.h). Row-major out = x · wᵀ is computed as the
// column-major outᵀ[n, rows] = w[k, n]ᵀ · xᵀ[k, rows]: A = w with op T, B = x with op N, so the
// bias epilogue adds bias[n] along what cuBLASLt calls the rows of D.
#include "engine/gemm.h"

#include <array>
#include <limits>
#include <string>

#include "engine/cublaslt.h"
#include "sutra/error.h"

namespace sutra::engine {
namespace {

// A new shape evicts the whole cache past this many plans (each holds four small descriptors);
// an encoder sees a handful of shapes per pass size.
constexpr size_t kMaxPlans = 512;
// Tuning: the heuristic's first candidates, each run once to warm up, then timed over a few runs.
constexpr int kTuneCandidates = 8;
constexpr int kTuneRuns = 4;

/// The power of two at or above rows: the bucket whose tuned algorithm a GEMM of `rows` uses.
int64_t rows_bucket(int64_t rows) {
  int64_t bucket = 1;
  while (bucket < rows) bucket *= 2;
  return bucket;
}

cudaDataType_t data_type(GemmType type) {
  switch (type) {
    case GemmType::kFloat16:
      return CUDA_R_16F;
    case GemmType::kBFloat16:
      return CUDA_R_16BF;
    case GemmType::kFloat32:
      return CUDA_R_32F;
  }
  return CUDA_R_16F;
}

cublasLtEpilogue_t epilogue_of(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kNone:
      return CUBLASLT_EPILOGUE_DEFAULT;
    case GemmEpilogue::kBias:
      return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::kBiasGeluTanh:
      return CUBLASLT_EPILOGUE_GELU_BIAS;
    case GemmEpilogue::kBiasRelu:
      return CUBLASLT_EPILOGUE_RELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

}  // namespace

struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool tuned = false;  // algo is the bucket's tuned one (or tuning found nothing better to try)

  void release(const CublasLtApi& api) noexcept {
    if (c != nullptr) api.MatrixLayoutDestroy(c);
    if (b != nullptr) api.MatrixLayoutDestroy(b);
    if (a != nullptr) api.MatrixLayoutDestroy(a);
    if (desc != nullptr) api.MatmulDescDestroy(desc);
  }
};

Gemm::Gemm(size_t workspace_bytes, int64_t tune_min_rows)
    : workspace_(workspace_bytes), tune_min_rows_(tune_min_rows) {
  check_cublas(cublaslt().Create(&handle_), "cublasLtCreate");
}

Gemm::~Gemm() {
  const CublasLtApi& api = cublaslt();  // loaded: the constructor succeeded
  for (auto& entry : plans_) {
    entry.second->release(api);
    delete entry.second;
  }
  if (handle_ != nullptr) api.Destroy(handle_);
}

int Gemm::heuristic(const Plan& plan, int count, cublasLtMatmulHeuristicResult_t* results) {
  const CublasLtApi& api = cublaslt();
  cublasLtMatmulPreference_t preference = nullptr;
  check_cublas(api.MatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  const uint64_t workspace_bytes = workspace_.bytes();
  int found = 0;
  cublasStatus_t status =
      api.MatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes, sizeof(workspace_bytes));
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = api.MatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                        preference, count, results, &found);
  }
  api.MatmulPreferenceDestroy(preference);
  check_cublas(status, "cublasLtMatmulAlgoGetHeuristic");
  return found;
}

Gemm::Plan& Gemm::plan_for(const GemmArgs& args) {
  const Key key{args.rows, args.n, args.k, static_cast<int>(args.epilogue),
                static_cast<int>(args.type)};
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;

  const CublasLtApi& api = cublaslt();
  if (plans_.size() >= kMaxPlans) {
    for (auto& entry : plans_) {
      entry.second->release(api);
      delete entry.second;
    }
    plans_.clear();
  }
  auto* plan = new Plan();
  try {
    const cudaDataType_t type = data_type(args.type);
    const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    check_cublas(api.MatmulDescCreate(&plan->desc, compute, CUDA_R_32F),
                 "cublasLtMatmulDescCreate");
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    check_cublas(
        api.MatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)),
        "cublasLtMatmulDescSetAttribute(TRANSA)");
    check_cublas(
        api.MatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)),
        "cublasLtMatmulDescSetAttribute(TRANSB)");
    const cublasLtEpilogue_t epilogue = epilogue_of(args.epilogue);
    check_cublas(api.MatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                            sizeof(epilogue)),
                 "cublasLtMatmulDescSetAttribute(EPILOGUE)");
    if (args.epilogue != GemmEpilogue::kNone) {
      check_cublas(api.MatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                              &type, sizeof(type)),
                   "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)");
    }
    // Column-major views: A = w as [k, n] (ld k), B = x as [k, rows] (ld k), C = D as [n, rows].
    check_cublas(api.MatrixLayoutCreate(&plan->a, type, args.k, args.n, args.k),
                 "cublasLtMatrixLayoutCreate(w)");
    check_cublas(api.MatrixLayoutCreate(&plan->b, type, args.k, args.rows, args.k),
                 "cublasLtMatrixLayoutCreate(x)");
    check_cublas(api.MatrixLayoutCreate(&plan->c, type, args.n, args.rows, args.n),
                 "cublasLtMatrixLayoutCreate(out)");

    cublasLtMatmulHeuristicResult_t result{};
    if (heuristic(*plan, 1, &result) == 0) {
      throw Error("cuBLASLt has no algorithm for the GEMM [" + std::to_string(args.rows) + ", " +
                  std::to_string(args.k) + "] x [" + std::to_string(args.n) + ", " +
                  std::to_string(args.k) + "]^T on this GPU");
    }
    plan->algo = result.algo;
  } catch (...) {
    plan->release(api);
    delete plan;
    throw;
  }
  plans_.emplace(key, plan);
  return *plan;
}

void Gemm::tune(Plan& plan, const GemmArgs& args, cudaStream_t stream) {
  plan.tuned = true;  // once per plan, whatever happens below
  const CublasLtApi& api = cublaslt();
  const Key bucket{rows_bucket(args.rows), args.n, args.k, static_cast<int>(args.epilogue),
                   static_cast<int>(args.type)};
  const auto known = tuned_.find(bucket);
  if (known != tuned_.end()) {
    // Tuned on another row count of the bucket: kept when it applies to this one as well.
    cublasLtMatmulHeuristicResult_t check{};
    if (api.MatmulAlgoCheck(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, &known->second,
                            &check) == CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= workspace_.bytes()) {
      plan.algo = known->second;
    }
    return;
  }
  std::array<cublasLtMatmulHeuristicResult_t, kTuneCandidates> candidates{};
  const int found = heuristic(plan, kTuneCandidates, candidates.data());
  // The candidates write args.out, which the call itself overwrites next; a candidate that fails
  // to launch is skipped.
  const float alpha = 1.0f, beta = 0.0f;
  auto launch = [&](const cublasLtMatmulAlgo_t& algo) {
    return api.Matmul(handle_, plan.desc, &alpha, args.w, plan.a, args.x, plan.b, &beta, args.out,
                      plan.c, args.out, plan.c, &algo, workspace_.data(), workspace_.bytes(),
                      stream);
  };
  float best_ms = std::numeric_limits<float>::infinity();
  for (int i = 0; i < found; ++i) {
    if (candidates[i].state != CUBLAS_STATUS_SUCCESS) continue;
    if (launch(candidates[i].algo) != CUBLAS_STATUS_SUCCESS) continue;
    tune_start_.record(stream);
    bool launched = true;
    for (int run = 0; run < kTuneRuns && launched; ++run) {
      launched = launch(candidates[i].algo) == CUBLAS_STATUS_SUCCESS;
    }
    tune_stop_.record(stream);
    tune_stop_.synchronize();
    const float ms = tune_stop_.elapsed_ms(tune_start_);
    if (launched && ms < best_ms) {
      best_ms = ms;
      plan.algo = candidates[i].algo;
    }
  }
  tuned_.emplace(bucket, plan.algo);
}

void Gemm::run(const GemmArgs& args, cudaStream_t stream) {
  SUTRA_CHECK(args.rows >= 0, "rows", ">= 0", args.rows);
  SUTRA_CHECK(args.n > 0 && args.k > 0, "n and k", "> 0",
              std::to_string(args.n) + " and " + std::to_string(args.k));
  SUTRA_CHECK(args.x && args.w && args.out, "x, w and out", "device pointers", "a null pointer");
  SUTRA_CHECK(args.epilogue == GemmEpilogue::kNone || args.bias != nullptr, "bias",
              "a device pointer with a bias epilogue", "a null pointer");
  if (args.rows == 0) return;
  Plan& plan = plan_for(args);
  const CublasLtApi& api = cublaslt();
  if (args.epilogue != GemmEpilogue::kNone) {
    check_cublas(api.MatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                            &args.bias, sizeof(args.bias)),
                 "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  if (!plan.tuned && tune_min_rows_ > 0 && args.rows >= tune_min_rows_) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cuda::check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
    if (capture == cudaStreamCaptureStatusNone) tune(plan, args, stream);
  }
  const float alpha = 1.0f, beta = 0.0f;
  check_cublas(api.Matmul(handle_, plan.desc, &alpha, args.w, plan.a, args.x, plan.b, &beta,
                          args.out, plan.c, args.out, plan.c, &plan.algo, workspace_.data(),
                          workspace_.bytes(), stream),
               "cublasLtMatmul");
}

}  // namespace sutra::engine
