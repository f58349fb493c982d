// cuBLASLt GEMM (host code only). Row-major C = A @ op(B) is computed as the column-major
// C^T = op(B)^T-as-stored @ A^T: cuBLASLt's "A" is our b (ld k, transposed when trans_b), its "B"
// is our a (ld k), its D is our c (ld n), and a bias of n elements is one per row of D^T, which
// is what CUBLASLT_EPILOGUE_BIAS adds (broadcast over the other dimension).
#include <cublasLt.h>

#include <memory>
#include <mutex>
#include <unordered_map>

#include "kernels/cuda/gemm.cuh"

namespace archi::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // NVIDIA's recommendation for Hopper

// Owns one device's cuBLASLt handle and its per-stream workspaces (a workspace must not be used
// by two streams at once). Thread-safe: Workspace() takes a lock; the handle itself is safe to
// share between threads and streams. A destroyed stream's address reused by a new stream reuses
// its workspace, which is safe as long as the old stream's work has finished (callers
// synchronise a stream before destroying it).
class LtDevice {
 public:
  static LaunchResult Create(int device, std::unique_ptr<LtDevice>* out) {
    ARCHI_CU_RETURN_IF_ERROR(cudaSetDevice(device));
    auto d = std::unique_ptr<LtDevice>(new LtDevice());
    ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&d->handle_));
    *out = std::move(d);
    return LaunchResult::Ok();
  }
  ~LtDevice() {
    for (auto& [stream, ws] : workspaces_) (void)cudaFree(ws);
    if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
  }
  LtDevice(const LtDevice&) = delete;
  LtDevice& operator=(const LtDevice&) = delete;

  cublasLtHandle_t handle() const { return handle_; }

  LaunchResult Workspace(cudaStream_t stream, void** ws) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = workspaces_.find(stream);
    if (it == workspaces_.end()) {
      void* p = nullptr;
      ARCHI_CU_RETURN_IF_ERROR(cudaMalloc(&p, kWorkspaceBytes));
      it = workspaces_.emplace(stream, p).first;
    }
    *ws = it->second;
    return LaunchResult::Ok();
  }

 private:
  LtDevice() = default;
  cublasLtHandle_t handle_ = nullptr;
  std::mutex mu_;
  std::unordered_map<cudaStream_t, void*> workspaces_;
};

// Per-device LtDevice, created on first use. Deliberately never destroyed: static destructors
// run after the CUDA runtime has begun tearing down, when freeing would fail anyway; the driver
// reclaims everything at process exit.
LaunchResult GetLtDevice(int device, LtDevice** out) {
  static std::mutex* mu = new std::mutex;
  static auto* devices = new std::unordered_map<int, std::unique_ptr<LtDevice>>;
  std::lock_guard<std::mutex> lock(*mu);
  auto it = devices->find(device);
  if (it == devices->end()) {
    std::unique_ptr<LtDevice> d;
    ARCHI_LAUNCH_RETURN_IF_ERROR(LtDevice::Create(device, &d));
    it = devices->emplace(device, std::move(d)).first;
  }
  *out = it->second.get();
  return LaunchResult::Ok();
}

// RAII owners of the per-call descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d != nullptr) (void)cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() {
    if (l != nullptr) (void)cublasLtMatrixLayoutDestroy(l);
  }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() {
    if (p != nullptr) (void)cublasLtMatmulPreferenceDestroy(p);
  }
};

// Largest power-of-two alignment of a pointer, capped at 256 (what cuBLASLt assumes by default).
uint32_t Alignment(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (addr % a) != 0) a >>= 1;
  return a;
}

// Column-major rows x cols with leading dimension ld, batched with a stride when batch > 1.
LaunchResult MakeLayout(Layout* out, cudaDataType_t dtype, uint64_t rows, uint64_t cols, int64_t ld,
                        int64_t batch, int64_t stride) {
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&out->l, dtype, rows, cols, ld));
  if (batch > 1) {
    const auto count = static_cast<int32_t>(batch);
    ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
        out->l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
        out->l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeGemm(cudaDataType_t dtype, const GemmArgs& g, cudaStream_t stream) {
  if (g.batch == 0 || g.m == 0 || g.n == 0) return LaunchResult::Ok();
  if (dtype != CUDA_R_32F && dtype != CUDA_R_16F && dtype != CUDA_R_16BF) {
    return MakeLaunchError(LaunchCode::kInvalidArgument,
                           "Gemm: unsupported dtype " + std::to_string(static_cast<int>(dtype)),
                           __FILE__, __LINE__);
  }
  if (g.k == 0) {
    return MakeLaunchError(LaunchCode::kInvalidArgument, "Gemm: k = 0 is not supported on CUDA",
                           __FILE__, __LINE__);
  }
  if (g.batch > INT32_MAX || (g.bias != nullptr && g.batch != 1)) {
    return MakeLaunchError(LaunchCode::kInvalidArgument, "Gemm: bad batch for this call", __FILE__,
                           __LINE__);
  }
  LtDevice* lt = nullptr;
  ARCHI_LAUNCH_RETURN_IF_ERROR(GetLtDevice(g.device, &lt));
  void* workspace = nullptr;
  ARCHI_LAUNCH_RETURN_IF_ERROR(lt->Workspace(stream, &workspace));

  MatmulDesc desc;
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = CUBLAS_OP_N;
  ARCHI_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof(op_b)));
  ARCHI_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof(op_a)));
  if (g.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
    ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dtype, sizeof(dtype)));
  }

  // cuBLASLt A := our b, B := our a, D = C := our c (see the file comment).
  const auto m = static_cast<uint64_t>(g.m), n = static_cast<uint64_t>(g.n),
             k = static_cast<uint64_t>(g.k);
  Layout lay_b, lay_a, lay_c;
  if (g.trans_b) {  // b [n, k] row-major = col-major k x n, ld k; op T gives n x k
    ARCHI_LAUNCH_RETURN_IF_ERROR(MakeLayout(&lay_b, dtype, k, n, g.k, g.batch, g.n * g.k));
  } else {  // b [k, n] row-major = col-major n x k, ld n
    ARCHI_LAUNCH_RETURN_IF_ERROR(MakeLayout(&lay_b, dtype, n, k, g.n, g.batch, g.n * g.k));
  }
  ARCHI_LAUNCH_RETURN_IF_ERROR(MakeLayout(&lay_a, dtype, k, m, g.k, g.batch, g.m * g.k));
  ARCHI_LAUNCH_RETURN_IF_ERROR(MakeLayout(&lay_c, dtype, n, m, g.n, g.batch, g.m * g.n));

  Preference pref;
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref.p));
  const uint64_t ws_bytes = kWorkspaceBytes;
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
  // Tell the heuristic the real pointer alignments (views may start at any element).
  const uint32_t align_a = Alignment(g.b), align_b = Alignment(g.a), align_c = Alignment(g.c);
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));

  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(
      lt->handle(), desc.d, lay_b.l, lay_a.l, lay_c.l, lay_c.l, pref.p, 1, &heuristic, &found));
  if (found == 0) {
    return MakeLaunchError(LaunchCode::kInternal,
                           "Gemm: cuBLASLt has no algorithm for m=" + std::to_string(g.m) +
                               " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k),
                           __FILE__, __LINE__);
  }
  ARCHI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(lt->handle(), desc.d, &g.alpha, g.b, lay_b.l, g.a,
                                              lay_a.l, &g.beta, g.c, lay_c.l, g.c, lay_c.l,
                                              &heuristic.algo, workspace, kWorkspaceBytes, stream));
  return LaunchResult::Ok();
}

}  // namespace archi::kernels::cuda
