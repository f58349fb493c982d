// Pooling on CUDA: masked mean over the sequence and row-wise L2 normalisation. Host launchers
// only; kernels in pooling.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

// x [batch, seq, hidden], lengths i32 [batch] on the device or nullptr (all `seq` tokens),
// out [batch, hidden] = mean of the first lengths[b] tokens (clamped to [0, seq]; an empty row
// gives zeros). One thread per output element, f32 sums.
LaunchResult InvokeMeanPool(cudaDataType_t dtype, const void* x, const int32_t* lengths, void* out,
                            int64_t batch, int64_t seq, int64_t hidden, cudaStream_t stream);
// y = x / max(|x|_2, eps) per row of [rows, cols] (numeric.h L2Scale); y may alias x.
LaunchResult InvokeL2Normalize(cudaDataType_t dtype, const void* x, void* y, int64_t rows,
                               int64_t cols, float eps, cudaStream_t stream);

}  // namespace archi::kernels::cuda
