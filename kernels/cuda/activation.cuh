// Element-wise ops on CUDA: fused bias + activation (GELU erf/tanh, SiLU, identity), SwiGLU and
// residual add. Host launchers only; kernels in activation.cu. Pointers are device pointers of
// `dtype` (CUDA_R_32F, CUDA_R_16F or CUDA_R_16BF); math in f32 (kernels/common/numeric.h).
// Outputs may alias inputs. Work is enqueued on `stream`; nothing synchronises.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

enum class Activation : uint8_t { kIdentity, kGeluErf, kGeluTanh, kSilu };

// y[i] = act(x[i] + bias[i % cols]) over n elements; bias (cols elements) may be nullptr.
LaunchResult InvokeBiasActivation(cudaDataType_t dtype, Activation act, const void* x,
                                  const void* bias, void* y, int64_t n, int64_t cols,
                                  cudaStream_t stream);
// y = silu(gate) * up over n elements.
LaunchResult InvokeSwiGlu(cudaDataType_t dtype, const void* gate, const void* up, void* y,
                          int64_t n, cudaStream_t stream);
// out = a + b over n elements.
LaunchResult InvokeAdd(cudaDataType_t dtype, const void* a, const void* b, void* out, int64_t n,
                       cudaStream_t stream);

}  // namespace archi::kernels::cuda
