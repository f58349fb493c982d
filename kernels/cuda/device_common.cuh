// Device-side helpers shared by the kernels of kernels/cuda/*.cu: storage-type traits over the
// scalar conversions of kernels/common/numeric.h (one source of truth with the CPU path), warp and
// row reductions, and the dtype dispatch of launchers. Included only by .cu files (unlike the
// per-family .cuh headers, which declare host launchers only).
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>
#include <string>

#include "kernels/common/numeric.h"
#include "kernels/cuda/launch_config.h"
#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

// Storage types: Load widens to f32, Store rounds to nearest even (numeric.h).
struct F32 {
  using Storage = float;
  static __device__ __forceinline__ float Load(float v) { return v; }
  static __device__ __forceinline__ float Store(float f) { return f; }
};
struct F16 {
  using Storage = uint16_t;
  static __device__ __forceinline__ float Load(uint16_t v) { return HalfToFloat(v); }
  static __device__ __forceinline__ uint16_t Store(float f) { return FloatToHalf(f); }
};
struct BF16 {
  using Storage = uint16_t;
  static __device__ __forceinline__ float Load(uint16_t v) { return Bf16ToFloat(v); }
  static __device__ __forceinline__ uint16_t Store(float f) { return FloatToBf16(f); }
};

struct SumOp {
  static __device__ __forceinline__ float Apply(float a, float b) { return a + b; }
  static constexpr float kIdentity = 0.0f;
};
struct MaxOp {
  static __device__ __forceinline__ float Apply(float a, float b) { return fmaxf(a, b); }
  static constexpr float kIdentity = -INFINITY;
};

template <typename Op>
__device__ __forceinline__ float WarpReduce(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v = Op::Apply(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// A thread's place in a row kernel (launch_config.h ChooseRowConfig): warp-per-row blocks hold
// kRowWarpsPerBlock rows; block-per-row blocks hold one.
template <bool kWarpPerRow>
struct RowThread {
  int64_t row;
  int lane;    // index of this thread within its row
  int stride;  // threads per row
  __device__ __forceinline__ RowThread() {
    if constexpr (kWarpPerRow) {
      row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
      lane = static_cast<int>(threadIdx.x % kWarpSize);
      stride = kWarpSize;
    } else {
      row = blockIdx.x;
      lane = static_cast<int>(threadIdx.x);
      stride = static_cast<int>(blockDim.x);
    }
  }
};

// Reduction over the threads of one row; every thread of the row gets the result. Block mode
// uses `scratch` (kWarpSize floats of shared memory) and __syncthreads, so every thread of the
// block must call it (block-per-row kernels never return early).
template <bool kWarpPerRow, typename Op>
__device__ __forceinline__ float RowReduce(float v, float* scratch) {
  v = WarpReduce<Op>(v);
  if constexpr (kWarpPerRow) {
    return v;
  } else {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    const int warps = blockDim.x / kWarpSize;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : Op::kIdentity;
    t = WarpReduce<Op>(t);
    __syncthreads();  // scratch may be reused right after
    return t;
  }
}

}  // namespace archi::kernels::cuda

// Calls fn<F32|F16|BF16>(args...) for a cudaDataType_t and returns its LaunchResult.
#define ARCHI_CUDA_DISPATCH_FLOAT(dtype, fn, ...)                                              \
  switch (dtype) {                                                                             \
    case CUDA_R_32F:                                                                           \
      return fn<::archi::kernels::cuda::F32>(__VA_ARGS__);                                     \
    case CUDA_R_16F:                                                                           \
      return fn<::archi::kernels::cuda::F16>(__VA_ARGS__);                                     \
    case CUDA_R_16BF:                                                                          \
      return fn<::archi::kernels::cuda::BF16>(__VA_ARGS__);                                    \
    default:                                                                                   \
      return ::archi::kernels::cuda::MakeLaunchError(                                          \
          ::archi::kernels::cuda::LaunchCode::kInvalidArgument,                                \
          "unsupported dtype " + std::to_string(static_cast<int>(dtype)), __FILE__, __LINE__); \
  }
