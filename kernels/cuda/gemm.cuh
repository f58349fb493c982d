// GEMM on CUDA through cuBLASLt: row-major c[M, N] = alpha * a[M, K] @ op(b) + beta * c (+ bias[N]
// through the BIAS epilogue), batched with strides. f32/f16/bf16 storage (a, b, c and bias share
// `dtype`), f32 accumulation and scaling (CUBLAS_COMPUTE_32F: no TF32 for f32, so results stay
// comparable with the CPU's f32 GEMM). One cuBLASLt handle per device, created on first use and
// kept for the process; a 32 MiB workspace per (device, stream). Host launcher only; cuBLASLt
// calls in gemm.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

struct GemmArgs {
  const void* a = nullptr;     // [batch, m, k]
  const void* b = nullptr;     // [batch, n, k] when trans_b, else [batch, k, n]
  const void* bias = nullptr;  // [n] or nullptr (only with batch == 1)
  void* c = nullptr;           // [batch, m, n]
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_b = true;
  float alpha = 1.0f;
  float beta = 0.0f;
  int device = 0;  // the CUDA device all pointers live on
};

LaunchResult InvokeGemm(cudaDataType_t dtype, const GemmArgs& args, cudaStream_t stream);

}  // namespace archi::kernels::cuda
