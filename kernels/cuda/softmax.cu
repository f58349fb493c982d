// Row softmax kernel: three passes over the row (max, sum of exp, write), f32 throughout.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/softmax.cuh"

namespace archi::kernels::cuda {
namespace {

template <typename T, bool kWarpPerRow>
__global__ void SoftmaxKernel(const typename T::Storage* x, typename T::Storage* y, int64_t rows,
                              int64_t cols) {
  __shared__ float scratch[kWarpSize];
  const RowThread<kWarpPerRow> t;
  if (t.row >= rows) return;  // only in warp-per-row mode
  const typename T::Storage* xr = x + t.row * cols;
  typename T::Storage* yr = y + t.row * cols;
  float m = -INFINITY;
  for (int64_t c = t.lane; c < cols; c += t.stride) m = fmaxf(m, T::Load(xr[c]));
  m = RowReduce<kWarpPerRow, MaxOp>(m, scratch);
  float sum = 0.0f;
  for (int64_t c = t.lane; c < cols; c += t.stride) sum += expf(T::Load(xr[c]) - m);
  const float inv = 1.0f / RowReduce<kWarpPerRow, SumOp>(sum, scratch);
  for (int64_t c = t.lane; c < cols; c += t.stride)
    yr[c] = T::Store(expf(T::Load(xr[c]) - m) * inv);
}

template <typename T>
LaunchResult LaunchSoftmax(const void* x, void* y, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  using S = typename T::Storage;
  const RowLaunchConfig cfg = ChooseRowConfig(rows, cols);
  if (cfg.warp_per_row) {
    SoftmaxKernel<T, true><<<cfg.blocks, cfg.threads, 0, stream>>>(static_cast<const S*>(x),
                                                                   static_cast<S*>(y), rows, cols);
  } else {
    SoftmaxKernel<T, false><<<cfg.blocks, cfg.threads, 0, stream>>>(static_cast<const S*>(x),
                                                                    static_cast<S*>(y), rows, cols);
  }
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeSoftmax(cudaDataType_t dtype, const void* x, void* y, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  if (rows == 0 || cols == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchSoftmax, x, y, rows, cols, stream);
}

}  // namespace archi::kernels::cuda
