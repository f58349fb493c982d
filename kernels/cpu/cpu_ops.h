// CPU implementations of the ops in kernels/ops.h (namespace archi::kernels::cpu), one function
// per op with the public op's parameter list. Called only by kernels/ops.cc after it has
// validated every argument, so these functions assume valid shapes, dtypes and aliasing and host
// tensors. Each function implements the whole op (KvAppend also advances cache.length).
// GEMM goes to oneDNN (see docs/kernels.md for the measurement behind that choice); the other ops
// are OpenMP loops over contiguous rows using the scalar math of kernels/common/numeric.h.
// Thread safety: reentrant; each call uses up to ctx.num_threads threads (0 = OpenMP default).
#pragma once

#include "kernels/ops.h"

namespace archi::kernels::cpu {

Status Gemm(const Tensor& a, const Tensor& b, const Tensor* bias, Tensor& c,
            const GemmOptions& opts, const KernelContext& ctx);
Status BatchedGemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts,
                   const KernelContext& ctx);

Status Embedding(const Tensor& ids, const Tensor& table, Tensor& out, const KernelContext& ctx);
Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y,
                 const KernelContext& ctx);
Status RmsNorm(const Tensor& x, const Tensor& gamma, float eps, Tensor& y,
               const KernelContext& ctx);

Status Gelu(const Tensor& x, Tensor& y, GeluKind kind, const KernelContext& ctx);
Status Silu(const Tensor& x, Tensor& y, const KernelContext& ctx);
Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& y, const KernelContext& ctx);
Status Add(const Tensor& a, const Tensor& b, Tensor& out, const KernelContext& ctx);
Status Softmax(const Tensor& x, Tensor& y, const KernelContext& ctx);

Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_lengths,
                 Tensor& out, const AttentionOptions& opts, const KernelContext& ctx);
Status KvAppend(KvCache& cache, const Tensor& k_new, const Tensor& v_new,
                const KernelContext& ctx);
Status AttentionKv(const Tensor& q, const KvCache& cache, Tensor& out,
                   const AttentionOptions& opts, const KernelContext& ctx);
Status Rotary(Tensor& x, int64_t position_offset, float theta, const KernelContext& ctx);

Status MeanPool(const Tensor& x, const Tensor* lengths, Tensor& out, const KernelContext& ctx);
Status L2Normalize(const Tensor& x, Tensor& y, float eps, const KernelContext& ctx);

}  // namespace archi::kernels::cpu
