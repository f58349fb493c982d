// The CUDA side of kernels/ops.h (declared in cuda_ops.h): reads shapes and pointers off the
// already-validated Tensors, makes the tensors' device current for the call (restoring the
// caller's afterwards), calls the launchers of kernels/cuda/*.cuh on ctx.cuda_stream and turns
// their LaunchResult into an archi::Status (file:line of the failing CUDA/cuBLAS call included).
// Compiled by the host compiler: the only file of this target that sees Archipelago's Status.
#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime.h>
#include <library_types.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/launch_result.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/pooling.cuh"
#include "kernels/cuda/rotary.cuh"
#include "kernels/cuda/softmax.cuh"

namespace archi::kernels::cuda {
namespace {

Status ToStatus(LaunchResult r) {
  switch (r.code) {
    case LaunchCode::kOk:
      return Status::Ok();
    case LaunchCode::kUnavailable:
      return UnavailableError(std::move(r.message));
    case LaunchCode::kOutOfRange:
      return OutOfRangeError(std::move(r.message));
    case LaunchCode::kInvalidArgument:
      return InvalidArgumentError(std::move(r.message));
    case LaunchCode::kInternal:
      break;
  }
  return InternalError(std::move(r.message));
}

// Makes `device` current for the scope of one op; restores the caller's current device.
class ScopedDevice {
 public:
  ScopedDevice() = default;
  ~ScopedDevice() {
    if (restore_) (void)cudaSetDevice(previous_);
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  Status Enter(const Device& device) {
    // With the toolkit but no driver this is where "insufficient driver" (kUnavailable) shows.
    ARCHI_RETURN_IF_ERROR(ToStatus([&]() -> LaunchResult {
      ARCHI_CU_RETURN_IF_ERROR(cudaGetDevice(&previous_));
      if (previous_ != device.index) {
        ARCHI_CU_RETURN_IF_ERROR(cudaSetDevice(device.index));
        restore_ = true;
      }
      return LaunchResult::Ok();
    }()));
    return Status::Ok();
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

cudaStream_t StreamOf(const KernelContext& ctx) {
  return static_cast<cudaStream_t>(ctx.cuda_stream);
}

// Only floating dtypes reach here (ops.cc validated); anything else maps to a type every
// launcher rejects with kInvalidArgument.
cudaDataType_t CudaType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_8I;
  }
}

int64_t LastDim(const Tensor& t) { return t.shape().empty() ? 1 : t.shape().back(); }
int64_t RowsOf(const Tensor& t) {
  const int64_t cols = LastDim(t);
  return cols == 0 ? 0 : t.numel() / cols;
}

#define ARCHI_CUDA_OP(device, launch)                          \
  do {                                                         \
    ScopedDevice archi_scoped_device_;                         \
    ARCHI_RETURN_IF_ERROR(archi_scoped_device_.Enter(device)); \
    ARCHI_RETURN_IF_ERROR(ToStatus(launch));                   \
    return Status::Ok();                                       \
  } while (0)

}  // namespace

Status Gemm(const Tensor& a, const Tensor& b, const Tensor* bias, Tensor& c,
            const GemmOptions& opts, const KernelContext& ctx) {
  GemmArgs g;
  g.a = a.data();
  g.b = b.data();
  g.bias = bias != nullptr ? bias->data() : nullptr;
  g.c = c.data();
  g.k = LastDim(a);
  g.m = RowsOf(a);
  g.n = opts.trans_b ? b.shape()[0] : b.shape()[1];
  g.trans_b = opts.trans_b;
  g.alpha = opts.alpha;
  g.beta = opts.beta;
  g.device = a.device().index;
  ARCHI_CUDA_OP(a.device(), InvokeGemm(CudaType(a.dtype()), g, StreamOf(ctx)));
}

Status BatchedGemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts,
                   const KernelContext& ctx) {
  GemmArgs g;
  g.a = a.data();
  g.b = b.data();
  g.c = c.data();
  g.batch = a.shape()[0];
  g.m = a.shape()[1];
  g.k = a.shape()[2];
  g.n = opts.trans_b ? b.shape()[1] : b.shape()[2];
  g.trans_b = opts.trans_b;
  g.alpha = opts.alpha;
  g.beta = opts.beta;
  g.device = a.device().index;
  ARCHI_CUDA_OP(a.device(), InvokeGemm(CudaType(a.dtype()), g, StreamOf(ctx)));
}

// Waits for ctx.cuda_stream before returning: an id outside [0, V) is found on the device and must
// come back as kOutOfRange (embedding.cuh).
Status Embedding(const Tensor& ids, const Tensor& table, Tensor& out, const KernelContext& ctx) {
  ARCHI_CUDA_OP(
      table.device(),
      InvokeEmbedding(CudaType(table.dtype()), ids.data(), ids.dtype() == DType::kI64, table.data(),
                      out.data(), ids.numel(), table.shape()[0], table.shape()[1], StreamOf(ctx)));
}

Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y,
                 const KernelContext& ctx) {
  ARCHI_CUDA_OP(x.device(),
                InvokeLayerNorm(CudaType(x.dtype()), x.data(), gamma.data(), beta.data(), y.data(),
                                RowsOf(x), LastDim(x), eps, StreamOf(ctx)));
}

Status RmsNorm(const Tensor& x, const Tensor& gamma, float eps, Tensor& y,
               const KernelContext& ctx) {
  ARCHI_CUDA_OP(x.device(), InvokeRmsNorm(CudaType(x.dtype()), x.data(), gamma.data(), y.data(),
                                          RowsOf(x), LastDim(x), eps, StreamOf(ctx)));
}

Status Gelu(const Tensor& x, Tensor& y, GeluKind kind, const KernelContext& ctx) {
  const Activation act = kind == GeluKind::kTanh ? Activation::kGeluTanh : Activation::kGeluErf;
  ARCHI_CUDA_OP(x.device(), InvokeBiasActivation(CudaType(x.dtype()), act, x.data(), nullptr,
                                                 y.data(), x.numel(), LastDim(x), StreamOf(ctx)));
}

Status Silu(const Tensor& x, Tensor& y, const KernelContext& ctx) {
  ARCHI_CUDA_OP(x.device(),
                InvokeBiasActivation(CudaType(x.dtype()), Activation::kSilu, x.data(), nullptr,
                                     y.data(), x.numel(), LastDim(x), StreamOf(ctx)));
}

Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& y, const KernelContext& ctx) {
  ARCHI_CUDA_OP(gate.device(), InvokeSwiGlu(CudaType(gate.dtype()), gate.data(), up.data(),
                                            y.data(), gate.numel(), StreamOf(ctx)));
}

Status Add(const Tensor& a, const Tensor& b, Tensor& out, const KernelContext& ctx) {
  ARCHI_CUDA_OP(a.device(), InvokeAdd(CudaType(a.dtype()), a.data(), b.data(), out.data(),
                                      a.numel(), StreamOf(ctx)));
}

Status Softmax(const Tensor& x, Tensor& y, const KernelContext& ctx) {
  ARCHI_CUDA_OP(x.device(), InvokeSoftmax(CudaType(x.dtype()), x.data(), y.data(), RowsOf(x),
                                          LastDim(x), StreamOf(ctx)));
}

namespace {
AttentionArgs MakeAttentionArgs(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                const AttentionOptions& opts) {
  AttentionArgs a;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.batch = q.shape()[0];
  a.q_heads = q.shape()[1];
  a.q_len = q.shape()[2];
  a.head_dim = q.shape()[3];
  a.kv_heads = k.shape()[1];
  a.kv_capacity = k.shape()[2];
  a.kv_len = a.kv_capacity;
  a.scale = opts.scale != 0.0f
                ? opts.scale
                : 1.0f / std::sqrt(static_cast<float>(std::max<int64_t>(a.head_dim, 1)));
  a.causal = opts.causal;
  return a;
}
}  // namespace

Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_lengths,
                 Tensor& out, const AttentionOptions& opts, const KernelContext& ctx) {
  AttentionArgs a = MakeAttentionArgs(q, k, v, out, opts);
  a.key_lengths = key_lengths != nullptr ? key_lengths->data_as<const int32_t>() : nullptr;
  ARCHI_CUDA_OP(q.device(), InvokeAttention(CudaType(q.dtype()), a, StreamOf(ctx)));
}

// Copies k_new/v_new into the cache at cache.length and advances cache.length by S_new, like the
// public op (ops.cc has already checked that they fit in max_seq).
Status KvAppend(KvCache& cache, const Tensor& k_new, const Tensor& v_new,
                const KernelContext& ctx) {
  const auto& s = k_new.shape();  // [B, H, S_new, D]
  const int64_t rows = s[0] * s[1];
  const int64_t capacity = cache.k.shape()[2];
  const size_t elem = DTypeSize(k_new.dtype());
  ScopedDevice scoped;
  ARCHI_RETURN_IF_ERROR(scoped.Enter(k_new.device()));
  ARCHI_RETURN_IF_ERROR(ToStatus(InvokeKvAppend(k_new.data(), cache.k.data(), rows, s[2], capacity,
                                                cache.length, s[3], elem, StreamOf(ctx))));
  ARCHI_RETURN_IF_ERROR(ToStatus(InvokeKvAppend(v_new.data(), cache.v.data(), rows, s[2], capacity,
                                                cache.length, s[3], elem, StreamOf(ctx))));
  cache.length += s[2];
  return Status::Ok();
}

// Always causal: q holds the newest Sq positions of the cache's first `length`.
Status AttentionKv(const Tensor& q, const KvCache& cache, Tensor& out, const AttentionOptions& opts,
                   const KernelContext& ctx) {
  AttentionArgs a = MakeAttentionArgs(q, cache.k, cache.v, out, opts);
  a.kv_len = cache.length;
  a.causal = true;
  ARCHI_CUDA_OP(q.device(), InvokeAttention(CudaType(q.dtype()), a, StreamOf(ctx)));
}

Status Rotary(Tensor& x, int64_t position_offset, float theta, const KernelContext& ctx) {
  const auto& s = x.shape();  // [B, H, S, D]
  ARCHI_CUDA_OP(x.device(), InvokeRotary(CudaType(x.dtype()), x.data(), s[0] * s[1] * s[2], s[2],
                                         s[3], position_offset, theta, StreamOf(ctx)));
}

Status MeanPool(const Tensor& x, const Tensor* lengths, Tensor& out, const KernelContext& ctx) {
  const auto& s = x.shape();  // [B, S, H]
  ARCHI_CUDA_OP(x.device(),
                InvokeMeanPool(CudaType(x.dtype()), x.data(),
                               lengths != nullptr ? lengths->data_as<const int32_t>() : nullptr,
                               out.data(), s[0], s[1], s[2], StreamOf(ctx)));
}

Status L2Normalize(const Tensor& x, Tensor& y, float eps, const KernelContext& ctx) {
  ARCHI_CUDA_OP(x.device(), InvokeL2Normalize(CudaType(x.dtype()), x.data(), y.data(), RowsOf(x),
                                              LastDim(x), eps, StreamOf(ctx)));
}

}  // namespace archi::kernels::cuda
