// Rotary position embeddings on CUDA ("rotate half", GPT-NeoX / LLaMA), in place on x
// [B, H, S, D] seen as rows = B*H*S rows of D (D even): row r is at position
// position_offset + r % seq. Angles from numeric.h RotaryAngle/RotatePair (shared with the CPU).
// Host launcher only; kernel in rotary.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

LaunchResult InvokeRotary(cudaDataType_t dtype, void* x, int64_t rows, int64_t seq,
                          int64_t head_dim, int64_t position_offset, float theta,
                          cudaStream_t stream);

}  // namespace archi::kernels::cuda
