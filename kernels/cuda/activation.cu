// Element-wise kernels: grid-stride loops (launch_config.h ElementwiseBlocks), f32 math from
// kernels/common/numeric.h, one rounding to the storage type per output.
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/device_common.cuh"

namespace archi::kernels::cuda {
namespace {

__device__ __forceinline__ float Activate(Activation act, float v) {
  switch (act) {
    case Activation::kGeluErf:
      return GeluErf(v);
    case Activation::kGeluTanh:
      return GeluTanh(v);
    case Activation::kSilu:
      return Silu(v);
    case Activation::kIdentity:
      break;
  }
  return v;
}

template <typename T>
__global__ void BiasActivationKernel(Activation act, const typename T::Storage* x,
                                     const typename T::Storage* bias, typename T::Storage* y,
                                     int64_t n, int64_t cols) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    float v = T::Load(x[i]);
    if (bias != nullptr) v += T::Load(bias[i % cols]);
    y[i] = T::Store(Activate(act, v));
  }
}

template <typename T>
__global__ void SwiGluKernel(const typename T::Storage* gate, const typename T::Storage* up,
                             typename T::Storage* y, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    y[i] = T::Store(SwiGlu(T::Load(gate[i]), T::Load(up[i])));
  }
}

template <typename T>
__global__ void AddKernel(const typename T::Storage* a, const typename T::Storage* b,
                          typename T::Storage* out, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    out[i] = T::Store(T::Load(a[i]) + T::Load(b[i]));
  }
}

template <typename T>
LaunchResult LaunchBiasActivation(Activation act, const void* x, const void* bias, void* y,
                                  int64_t n, int64_t cols, cudaStream_t stream) {
  using S = typename T::Storage;
  BiasActivationKernel<T><<<ElementwiseBlocks(n), kElementwiseThreads, 0, stream>>>(
      act, static_cast<const S*>(x), static_cast<const S*>(bias), static_cast<S*>(y), n, cols);
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

template <typename T>
LaunchResult LaunchSwiGlu(const void* gate, const void* up, void* y, int64_t n,
                          cudaStream_t stream) {
  using S = typename T::Storage;
  SwiGluKernel<T><<<ElementwiseBlocks(n), kElementwiseThreads, 0, stream>>>(
      static_cast<const S*>(gate), static_cast<const S*>(up), static_cast<S*>(y), n);
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

template <typename T>
LaunchResult LaunchAdd(const void* a, const void* b, void* out, int64_t n, cudaStream_t stream) {
  using S = typename T::Storage;
  AddKernel<T><<<ElementwiseBlocks(n), kElementwiseThreads, 0, stream>>>(
      static_cast<const S*>(a), static_cast<const S*>(b), static_cast<S*>(out), n);
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeBiasActivation(cudaDataType_t dtype, Activation act, const void* x,
                                  const void* bias, void* y, int64_t n, int64_t cols,
                                  cudaStream_t stream) {
  if (n == 0) return LaunchResult::Ok();
  if (bias != nullptr && cols <= 0) {
    return MakeLaunchError(LaunchCode::kInvalidArgument, "bias with no columns", __FILE__,
                           __LINE__);
  }
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchBiasActivation, act, x, bias, y, n, cols, stream);
}

LaunchResult InvokeSwiGlu(cudaDataType_t dtype, const void* gate, const void* up, void* y,
                          int64_t n, cudaStream_t stream) {
  if (n == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchSwiGlu, gate, up, y, n, stream);
}

LaunchResult InvokeAdd(cudaDataType_t dtype, const void* a, const void* b, void* out, int64_t n,
                       cudaStream_t stream) {
  if (n == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchAdd, a, b, out, n, stream);
}

}  // namespace archi::kernels::cuda
