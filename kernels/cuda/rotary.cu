// Rotary kernel: one thread per rotated pair (row, i < D/2), grid-stride.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/rotary.cuh"

namespace archi::kernels::cuda {
namespace {

template <typename T>
__global__ void RotaryKernel(typename T::Storage* x, int64_t pairs, int64_t seq, int half,
                             int64_t position_offset, float theta) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += step) {
    const int64_t row = p / half;
    const int i = static_cast<int>(p % half);
    const float angle = RotaryAngle(position_offset + row % seq, i, 2 * half, theta);
    typename T::Storage* xr = x + row * 2 * half;
    float x1 = T::Load(xr[i]);
    float x2 = T::Load(xr[i + half]);
    RotatePair(x1, x2, cosf(angle), sinf(angle));
    xr[i] = T::Store(x1);
    xr[i + half] = T::Store(x2);
  }
}

template <typename T>
LaunchResult LaunchRotary(void* x, int64_t rows, int64_t seq, int64_t head_dim,
                          int64_t position_offset, float theta, cudaStream_t stream) {
  const int half = static_cast<int>(head_dim / 2);
  const int64_t pairs = rows * half;
  RotaryKernel<T><<<ElementwiseBlocks(pairs), kElementwiseThreads, 0, stream>>>(
      static_cast<typename T::Storage*>(x), pairs, seq, half, position_offset, theta);
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeRotary(cudaDataType_t dtype, void* x, int64_t rows, int64_t seq,
                          int64_t head_dim, int64_t position_offset, float theta,
                          cudaStream_t stream) {
  if (rows == 0 || head_dim < 2 || seq <= 0) return LaunchResult::Ok();
  if (head_dim % 2 != 0) {
    return MakeLaunchError(LaunchCode::kInvalidArgument,
                           "rotary head dim " + std::to_string(head_dim) + " is odd", __FILE__,
                           __LINE__);
  }
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchRotary, x, rows, seq, head_dim, position_offset, theta,
                            stream);
}

}  // namespace archi::kernels::cuda
