// LaunchResult: what every host launcher in kernels/cuda/*.cuh returns. Kept free of Archipelago's
// status.h so that .cu files (compiled by nvcc) never include it; cuda_ops.cc turns a LaunchResult
// into an archi::Status with the same code and message. The message carries the file:line of the
// failing CUDA/cuBLAS call, the call itself and the library's error name and text.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace archi::kernels::cuda {

enum class LaunchCode : uint8_t {
  kOk,
  kUnavailable,      // no usable GPU/driver, out of memory, no kernel image for this GPU
  kInternal,         // any other CUDA/cuBLAS error (a bug, or a broken context)
  kOutOfRange,       // a device-side data check failed (e.g. an embedding id)
  kInvalidArgument,  // a shape this implementation does not support
};

struct LaunchResult {
  LaunchCode code = LaunchCode::kOk;
  std::string message;
  bool ok() const { return code == LaunchCode::kOk; }
  static LaunchResult Ok() { return {}; }
};

// Classifies and formats a failed call (`expr` is its source text).
LaunchResult FromCudaError(cudaError_t err, const char* expr, const char* file, int line);
LaunchResult FromCublasStatus(cublasStatus_t st, const char* expr, const char* file, int line);
LaunchResult MakeLaunchError(LaunchCode code, std::string message, const char* file, int line);

}  // namespace archi::kernels::cuda

// Return a LaunchResult from the enclosing function if a CUDA runtime / cuBLAS(Lt) call fails.
#define ARCHI_CU_RETURN_IF_ERROR(expr)                                                        \
  do {                                                                                        \
    const cudaError_t archi_cu_err_ = (expr);                                                 \
    if (archi_cu_err_ != cudaSuccess) {                                                       \
      return ::archi::kernels::cuda::FromCudaError(archi_cu_err_, #expr, __FILE__, __LINE__); \
    }                                                                                         \
  } while (0)

#define ARCHI_CUBLAS_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                   \
    const cublasStatus_t archi_cublas_st_ = (expr);                                      \
    if (archi_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                     \
      return ::archi::kernels::cuda::FromCublasStatus(archi_cublas_st_, #expr, __FILE__, \
                                                      __LINE__);                         \
    }                                                                                    \
  } while (0)

// After a <<<...>>> launch: launch-configuration errors (and sticky errors from earlier work).
#define ARCHI_CU_RETURN_IF_LAUNCH_FAILED() ARCHI_CU_RETURN_IF_ERROR(cudaGetLastError())

// Propagates a failed LaunchResult.
#define ARCHI_LAUNCH_RETURN_IF_ERROR(expr)                         \
  do {                                                             \
    ::archi::kernels::cuda::LaunchResult archi_launch_r_ = (expr); \
    if (!archi_launch_r_.ok()) return archi_launch_r_;             \
  } while (0)
