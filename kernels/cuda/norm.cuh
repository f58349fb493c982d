// LayerNorm and RMSNorm on CUDA over the last dimension of a row-major [rows, cols] tensor: one
// warp per row up to 1024 columns, else one block per row (launch_config.h ChooseRowConfig); f32
// accumulation, two passes for the LayerNorm variance (mean of squared deviations). gamma/beta
// have `cols` elements. y may alias x. Host launchers only; kernels in norm.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

LaunchResult InvokeLayerNorm(cudaDataType_t dtype, const void* x, const void* gamma,
                             const void* beta, void* y, int64_t rows, int64_t cols, float eps,
                             cudaStream_t stream);
LaunchResult InvokeRmsNorm(cudaDataType_t dtype, const void* x, const void* gamma, void* y,
                           int64_t rows, int64_t cols, float eps, cudaStream_t stream);

}  // namespace archi::kernels::cuda
