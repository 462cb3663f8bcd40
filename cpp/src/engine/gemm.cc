// cuBLASLt GEMMs of the engine (see gemm.h). Row-major out = x · wᵀ is computed as the
// column-major outᵀ[n, rows] = w[k, n]ᵀ · xᵀ[k, rows]: A = w with op T, B = x with op N, so the
// bias epilogue adds bias[n] along what cuBLASLt calls the rows of D.
#include "engine/gemm.h"

#include <string>

#include "engine/cublaslt.h"
#include "sutra/error.h"

namespace sutra::engine {
namespace {

// A new shape evicts the whole cache past this many plans (each holds four small descriptors);
// an encoder sees a handful of shapes per pass size.
constexpr size_t kMaxPlans = 512;

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

  void release(const CublasLtApi& api) noexcept {
    if (c != nullptr) api.MatrixLayoutDestroy(c);
    if (b != nullptr) api.MatrixLayoutDestroy(b);
    if (a != nullptr) api.MatrixLayoutDestroy(a);
    if (desc != nullptr) api.MatmulDescDestroy(desc);
  }
};

Gemm::Gemm(size_t workspace_bytes) : workspace_(workspace_bytes) {
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

const Gemm::Plan& Gemm::plan_for(const GemmArgs& args) {
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

    cublasLtMatmulPreference_t preference = nullptr;
    check_cublas(api.MatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
    const uint64_t workspace_bytes = workspace_.bytes();
    cublasLtMatmulHeuristicResult_t result{};
    int found_count = 0;
    cublasStatus_t status =
        api.MatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &workspace_bytes, sizeof(workspace_bytes));
    if (status == CUBLAS_STATUS_SUCCESS) {
      status = api.MatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->c,
                                          preference, 1, &result, &found_count);
    }
    api.MatmulPreferenceDestroy(preference);
    check_cublas(status, "cublasLtMatmulAlgoGetHeuristic");
    if (found_count == 0) {
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

void Gemm::run(const GemmArgs& args, cudaStream_t stream) {
  SUTRA_CHECK(args.rows >= 0, "rows", ">= 0", args.rows);
  SUTRA_CHECK(args.n > 0 && args.k > 0, "n and k", "> 0",
              std::to_string(args.n) + " and " + std::to_string(args.k));
  SUTRA_CHECK(args.x && args.w && args.out, "x, w and out", "device pointers", "a null pointer");
  SUTRA_CHECK(args.epilogue == GemmEpilogue::kNone || args.bias != nullptr, "bias",
              "a device pointer with a bias epilogue", "a null pointer");
  if (args.rows == 0) return;
  const Plan& plan = plan_for(args);
  const CublasLtApi& api = cublaslt();
  if (args.epilogue != GemmEpilogue::kNone) {
    check_cublas(api.MatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                            &args.bias, sizeof(args.bias)),
                 "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  const float alpha = 1.0f, beta = 0.0f;
  check_cublas(api.Matmul(handle_, plan.desc, &alpha, args.w, plan.a, args.x, plan.b, &beta,
                          args.out, plan.c, args.out, plan.c, &plan.algo, workspace_.data(),
                          workspace_.bytes(), stream),
               "cublasLtMatmul");
}

}  // namespace sutra::engine
