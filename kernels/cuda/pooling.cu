// Mean pooling and L2 normalisation kernels.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/pooling.cuh"

namespace archi::kernels::cuda {
namespace {

// grid (ceil(hidden / threads), batch): consecutive threads read consecutive hidden elements.
template <typename T>
__global__ void MeanPoolKernel(const typename T::Storage* x, const int32_t* lengths,
                               typename T::Storage* out, int64_t seq, int64_t hidden) {
  const int64_t b = blockIdx.y;
  const int64_t h = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (h >= hidden) return;
  int64_t len = seq;
  if (lengths != nullptr) len = min(max(static_cast<int64_t>(lengths[b]), int64_t{0}), seq);
  const typename T::Storage* xb = x + b * seq * hidden + h;
  float sum = 0.0f;
  for (int64_t s = 0; s < len; ++s) sum += T::Load(xb[s * hidden]);
  const float inv = len > 0 ? 1.0f / static_cast<float>(len) : 0.0f;  // as the CPU path
  out[b * hidden + h] = T::Store(sum * inv);
}

template <typename T, bool kWarpPerRow>
__global__ void L2NormalizeKernel(const typename T::Storage* x, typename T::Storage* y,
                                  int64_t rows, int64_t cols, float eps) {
  __shared__ float scratch[kWarpSize];
  const RowThread<kWarpPerRow> t;
  if (t.row >= rows) return;  // only in warp-per-row mode
  const typename T::Storage* xr = x + t.row * cols;
  typename T::Storage* yr = y + t.row * cols;
  float ss = 0.0f;
  for (int64_t c = t.lane; c < cols; c += t.stride) {
    const float v = T::Load(xr[c]);
    ss += v * v;
  }
  const float scale = L2Scale(RowReduce<kWarpPerRow, SumOp>(ss, scratch), eps);
  for (int64_t c = t.lane; c < cols; c += t.stride) yr[c] = T::Store(T::Load(xr[c]) * scale);
}

template <typename T>
LaunchResult LaunchMeanPool(const void* x, const int32_t* lengths, void* out, int64_t batch,
                            int64_t seq, int64_t hidden, cudaStream_t stream) {
  using S = typename T::Storage;
  constexpr int kThreads = 128;
  if (batch > 65535) {
    return MakeLaunchError(LaunchCode::kInvalidArgument,
                           "MeanPool batch " + std::to_string(batch) + " > 65535", __FILE__,
                           __LINE__);
  }
  const dim3 grid(static_cast<unsigned>((hidden + kThreads - 1) / kThreads),
                  static_cast<unsigned>(batch));
  MeanPoolKernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const S*>(x), lengths,
                                                   static_cast<S*>(out), seq, hidden);
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

template <typename T>
LaunchResult LaunchL2Normalize(const void* x, void* y, int64_t rows, int64_t cols, float eps,
                               cudaStream_t stream) {
  using S = typename T::Storage;
  const RowLaunchConfig cfg = ChooseRowConfig(rows, cols);
  if (cfg.warp_per_row) {
    L2NormalizeKernel<T, true><<<cfg.blocks, cfg.threads, 0, stream>>>(
        static_cast<const S*>(x), static_cast<S*>(y), rows, cols, eps);
  } else {
    L2NormalizeKernel<T, false><<<cfg.blocks, cfg.threads, 0, stream>>>(
        static_cast<const S*>(x), static_cast<S*>(y), rows, cols, eps);
  }
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeMeanPool(cudaDataType_t dtype, const void* x, const int32_t* lengths, void* out,
                            int64_t batch, int64_t seq, int64_t hidden, cudaStream_t stream) {
  if (batch == 0 || hidden == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchMeanPool, x, lengths, out, batch, seq, hidden, stream);
}

LaunchResult InvokeL2Normalize(cudaDataType_t dtype, const void* x, void* y, int64_t rows,
                               int64_t cols, float eps, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchL2Normalize, x, y, rows, cols, eps, stream);
}

}  // namespace archi::kernels::cuda
