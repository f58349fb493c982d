// CUDA side of DeviceBuffer. Every CUDA call is checked; errors become kUnavailable Status with
// the CUDA error name (a machine with the toolkit but no driver reports
// "cudaErrorInsufficientDriver", one without a GPU "cudaErrorNoDevice").
#include <cuda_runtime.h>

#include <cstdint>
#include <algorithm>
#include <string>

// Kept free of Archipelago headers (nvcc compiles this file): each function returns an empty
// string on success, else the error text; device_buffer.cc turns it into a Status.
#define ARCHI_CUDA_CHECK(expr)                                                          \
  do {                                                                                  \
    cudaError_t archi_err_ = (expr);                                                    \
    if (archi_err_ != cudaSuccess) {                                                    \
      return std::string("device_buffer.cu:") + std::to_string(__LINE__) + ": " #expr ": " + \
             cudaGetErrorName(archi_err_) + " (" + cudaGetErrorString(archi_err_) + ")"; \
    }                                                                                   \
  } while (0)

namespace archi {
namespace cuda {
namespace {
__global__ void FillKernel(uint8_t* p, uint8_t value, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}
}  // namespace

std::string Malloc(void** ptr, size_t bytes, int device) {
  ARCHI_CUDA_CHECK(cudaSetDevice(device));
  ARCHI_CUDA_CHECK(cudaMalloc(ptr, bytes));
  return {};
}

void Free(void* ptr, int device) {
  if (cudaSetDevice(device) == cudaSuccess) cudaFree(ptr);
}

std::string CopyHostToDevice(void* dst, const void* src, size_t bytes, int device) {
  ARCHI_CUDA_CHECK(cudaSetDevice(device));
  ARCHI_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return {};
}

std::string CopyDeviceToHost(void* dst, const void* src, size_t bytes, int device) {
  ARCHI_CUDA_CHECK(cudaSetDevice(device));
  ARCHI_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return {};
}

std::string Memset(void* ptr, uint8_t value, size_t bytes, int device) {
  ARCHI_CUDA_CHECK(cudaSetDevice(device));
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((bytes + threads - 1) / threads, 4096));
  FillKernel<<<blocks, threads>>>(static_cast<uint8_t*>(ptr), value, bytes);
  ARCHI_CUDA_CHECK(cudaGetLastError());
  ARCHI_CUDA_CHECK(cudaDeviceSynchronize());
  return {};
}

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

}  // namespace cuda
}  // namespace archi
