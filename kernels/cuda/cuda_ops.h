// CUDA implementations of the ops in kernels/ops.h, one function per op with exactly the public
// op's parameter list, in namespace archi::kernels::cuda. Defined by the archi_kernels_cuda target
// (kernels/cuda/, compiled only with ARCHI_HAVE_CUDA); called only by kernels/ops.cc after it has
// validated every argument (shapes, dtypes, devices, aliasing), so these functions may assume
// valid input and all tensors on the same CUDA device. Launches go to ctx.cuda_stream; functions
// return once the work is enqueued (they do not synchronise the stream) unless stated otherwise.
// Returns kUnavailable when no usable GPU/driver is present, kInternal on a CUDA/cuBLAS error.
// No CUDA types here: this header is included from plain C++ translation units.
#pragma once

#include "kernels/ops.h"

namespace archi::kernels::cuda {

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

}  // namespace archi::kernels::cuda
