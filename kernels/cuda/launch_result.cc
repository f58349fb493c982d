// LaunchResult construction: which CUDA/cuBLAS errors are transient (kUnavailable) and which are
// bugs (kInternal).
#include "kernels/cuda/launch_result.cuh"

#include <string>
#include <utility>

namespace archi::kernels::cuda {
namespace {

std::string Where(const char* file, int line) {
  std::string f(file);
  // Keep the path from the repository root on ("kernels/cuda/x.cu"), not the build's absolute one.
  if (const size_t pos = f.rfind("kernels/cuda/"); pos != std::string::npos) f = f.substr(pos);
  return f + ":" + std::to_string(line) + ": ";
}

bool IsTransient(cudaError_t err) {
  switch (err) {
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
    case cudaErrorMemoryAllocation:
    case cudaErrorInitializationError:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorSystemNotReady:
    case cudaErrorStubLibrary:
    case cudaErrorUnsupportedPtxVersion:
      return true;
    default:
      return false;
  }
}

}  // namespace

LaunchResult FromCudaError(cudaError_t err, const char* expr, const char* file, int line) {
  return {IsTransient(err) ? LaunchCode::kUnavailable : LaunchCode::kInternal,
          Where(file, line) + expr + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
              ")"};
}

LaunchResult FromCublasStatus(cublasStatus_t st, const char* expr, const char* file, int line) {
  const bool transient = st == CUBLAS_STATUS_NOT_INITIALIZED || st == CUBLAS_STATUS_ALLOC_FAILED ||
                         st == CUBLAS_STATUS_ARCH_MISMATCH;
  return {transient ? LaunchCode::kUnavailable : LaunchCode::kInternal,
          Where(file, line) + expr + ": " + cublasLtGetStatusName(st) + " (" +
              cublasLtGetStatusString(st) + ")"};
}

LaunchResult MakeLaunchError(LaunchCode code, std::string message, const char* file, int line) {
  return {code, Where(file, line) + std::move(message)};
}

}  // namespace archi::kernels::cuda
