// DeviceBuffer: owned device memory (RAII). On the CPU it is aligned host memory; on CUDA it is
// cudaMalloc'd memory on the given device. Tensors view it with Tensor::View(buf.data(), ...,
// buf.device()). Move-only; the destructor frees (never throws, never blocks on other work).
//
// CUDA support is compiled in when the toolkit is found (ARCHI_HAVE_CUDA); without it, or without
// a usable GPU/driver at run time, CUDA allocations return kUnavailable with the CUDA error text.
// Thread safety: distinct buffers may be used from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace archi {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static Result<DeviceBuffer> Allocate(size_t bytes, Device device);

  void* data() const { return data_; }
  size_t size() const { return size_; }
  Device device() const { return device_; }

  // Copies between this buffer and host memory (synchronously).
  Status CopyFromHost(const void* src, size_t bytes);
  Status CopyToHost(void* dst, size_t bytes) const;
  // Sets every byte to `value` (on the device, by a kernel, for CUDA buffers).
  Status Fill(uint8_t value);

 private:
  void Release();
  void* data_ = nullptr;
  size_t size_ = 0;
  Device device_;
};

// Number of usable CUDA devices (0 without CUDA support, driver or GPU).
int CudaDeviceCount();

}  // namespace archi
