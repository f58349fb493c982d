// Row softmax on CUDA over the last dimension of a row-major [rows, cols] tensor (one warp or one
// block per row, launch_config.h ChooseRowConfig; f32 max/sum). y may alias x. A row whose
// entries are all -inf gives NaN, as exp(-inf - -inf) does on the CPU. Kernels in softmax.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

LaunchResult InvokeSoftmax(cudaDataType_t dtype, const void* x, void* y, int64_t rows, int64_t cols,
                           cudaStream_t stream);

}  // namespace archi::kernels::cuda
