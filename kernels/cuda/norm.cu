// LayerNorm / RMSNorm kernels. Per-row math (NormRstd, LayerNormApply) comes from
// kernels/common/numeric.h, shared with the CPU implementation.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/norm.cuh"

namespace archi::kernels::cuda {
namespace {

template <typename T, bool kWarpPerRow>
__global__ void LayerNormKernel(const typename T::Storage* x, const typename T::Storage* gamma,
                                const typename T::Storage* beta, typename T::Storage* y,
                                int64_t rows, int64_t cols, float eps) {
  __shared__ float scratch[kWarpSize];
  const RowThread<kWarpPerRow> t;
  if (t.row >= rows) return;  // only in warp-per-row mode (a whole warp leaves together)
  const typename T::Storage* xr = x + t.row * cols;
  typename T::Storage* yr = y + t.row * cols;
  float sum = 0.0f;
  for (int64_t c = t.lane; c < cols; c += t.stride) sum += T::Load(xr[c]);
  const float mean = RowReduce<kWarpPerRow, SumOp>(sum, scratch) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = t.lane; c < cols; c += t.stride) {
    const float d = T::Load(xr[c]) - mean;
    sq += d * d;
  }
  const float var = RowReduce<kWarpPerRow, SumOp>(sq, scratch) / static_cast<float>(cols);
  const float rstd = NormRstd(var, eps);
  for (int64_t c = t.lane; c < cols; c += t.stride) {
    yr[c] =
        T::Store(LayerNormApply(T::Load(xr[c]), mean, rstd, T::Load(gamma[c]), T::Load(beta[c])));
  }
}

template <typename T, bool kWarpPerRow>
__global__ void RmsNormKernel(const typename T::Storage* x, const typename T::Storage* gamma,
                              typename T::Storage* y, int64_t rows, int64_t cols, float eps) {
  __shared__ float scratch[kWarpSize];
  const RowThread<kWarpPerRow> t;
  if (t.row >= rows) return;
  const typename T::Storage* xr = x + t.row * cols;
  typename T::Storage* yr = y + t.row * cols;
  float sq = 0.0f;
  for (int64_t c = t.lane; c < cols; c += t.stride) {
    const float v = T::Load(xr[c]);
    sq += v * v;
  }
  const float ms = RowReduce<kWarpPerRow, SumOp>(sq, scratch) / static_cast<float>(cols);
  const float rstd = NormRstd(ms, eps);
  for (int64_t c = t.lane; c < cols; c += t.stride) {
    yr[c] = T::Store(T::Load(xr[c]) * rstd * T::Load(gamma[c]));
  }
}

template <typename T>
LaunchResult LaunchLayerNorm(const void* x, const void* gamma, const void* beta, void* y,
                             int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  using S = typename T::Storage;
  const RowLaunchConfig cfg = ChooseRowConfig(rows, cols);
  const auto* xs = static_cast<const S*>(x);
  const auto* gs = static_cast<const S*>(gamma);
  const auto* bs = static_cast<const S*>(beta);
  auto* ys = static_cast<S*>(y);
  if (cfg.warp_per_row) {
    LayerNormKernel<T, true>
        <<<cfg.blocks, cfg.threads, 0, stream>>>(xs, gs, bs, ys, rows, cols, eps);
  } else {
    LayerNormKernel<T, false>
        <<<cfg.blocks, cfg.threads, 0, stream>>>(xs, gs, bs, ys, rows, cols, eps);
  }
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

template <typename T>
LaunchResult LaunchRmsNorm(const void* x, const void* gamma, void* y, int64_t rows, int64_t cols,
                           float eps, cudaStream_t stream) {
  using S = typename T::Storage;
  const RowLaunchConfig cfg = ChooseRowConfig(rows, cols);
  const auto* xs = static_cast<const S*>(x);
  const auto* gs = static_cast<const S*>(gamma);
  auto* ys = static_cast<S*>(y);
  if (cfg.warp_per_row) {
    RmsNormKernel<T, true><<<cfg.blocks, cfg.threads, 0, stream>>>(xs, gs, ys, rows, cols, eps);
  } else {
    RmsNormKernel<T, false><<<cfg.blocks, cfg.threads, 0, stream>>>(xs, gs, ys, rows, cols, eps);
  }
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeLayerNorm(cudaDataType_t dtype, const void* x, const void* gamma,
                             const void* beta, void* y, int64_t rows, int64_t cols, float eps,
                             cudaStream_t stream) {
  if (rows == 0 || cols == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchLayerNorm, x, gamma, beta, y, rows, cols, eps, stream);
}

LaunchResult InvokeRmsNorm(cudaDataType_t dtype, const void* x, const void* gamma, void* y,
                           int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchRmsNorm, x, gamma, y, rows, cols, eps, stream);
}

}  // namespace archi::kernels::cuda
