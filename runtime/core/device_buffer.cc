// Host side of DeviceBuffer and the dispatch to the CUDA implementation (factory file: the only
// place that looks at ARCHI_HAVE_CUDA).
#include "runtime/core/device_buffer.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "archi/config.h"

namespace archi {

#if ARCHI_HAVE_CUDA
namespace cuda {  // cuda/device_buffer.cu: "" on success, else the CUDA error text
std::string Malloc(void** ptr, size_t bytes, int device);
void Free(void* ptr, int device);
std::string CopyHostToDevice(void* dst, const void* src, size_t bytes, int device);
std::string CopyDeviceToHost(void* dst, const void* src, size_t bytes, int device);
std::string Memset(void* ptr, uint8_t value, size_t bytes, int device);
int DeviceCount();
}  // namespace cuda
namespace {
Status FromCuda(std::string error) {
  return error.empty() ? Status::Ok() : UnavailableError(std::move(error));
}
}  // namespace
#else
namespace {
Status NoCuda() { return UnavailableError("CUDA support was not compiled in (ARCHI_HAVE_CUDA=0)"); }
}  // namespace
#endif

DeviceBuffer::~DeviceBuffer() { Release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), device_(o.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    device_ = o.device_;
  }
  return *this;
}

void DeviceBuffer::Release() {
  if (!data_) return;
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
#if ARCHI_HAVE_CUDA
    cuda::Free(data_, device_.index);
#endif
  }
  data_ = nullptr;
  size_ = 0;
}

Result<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes, Device device) {
  DeviceBuffer b;
  b.device_ = device;
  b.size_ = bytes;
  if (bytes == 0) return b;
  if (device.is_cpu()) {
    b.data_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!b.data_) return ResourceExhaustedError("cannot allocate " + std::to_string(bytes) + " host bytes");
    return b;
  }
  if (device.index < 0) return InvalidArgumentError("negative CUDA device index");
#if ARCHI_HAVE_CUDA
  ARCHI_RETURN_IF_ERROR(FromCuda(cuda::Malloc(&b.data_, bytes, device.index)));
  return b;
#else
  return NoCuda();
#endif
}

Status DeviceBuffer::CopyFromHost(const void* src, size_t bytes) {
  if (bytes > size_) return InvalidArgumentError("copy of " + std::to_string(bytes) + " bytes into a buffer of " + std::to_string(size_));
  if (bytes == 0) return Status::Ok();
  if (device_.is_cpu()) {
    std::memcpy(data_, src, bytes);
    return Status::Ok();
  }
#if ARCHI_HAVE_CUDA
  return FromCuda(cuda::CopyHostToDevice(data_, src, bytes, device_.index));
#else
  return NoCuda();
#endif
}

Status DeviceBuffer::CopyToHost(void* dst, size_t bytes) const {
  if (bytes > size_) return InvalidArgumentError("copy of " + std::to_string(bytes) + " bytes from a buffer of " + std::to_string(size_));
  if (bytes == 0) return Status::Ok();
  if (device_.is_cpu()) {
    std::memcpy(dst, data_, bytes);
    return Status::Ok();
  }
#if ARCHI_HAVE_CUDA
  return FromCuda(cuda::CopyDeviceToHost(dst, data_, bytes, device_.index));
#else
  return NoCuda();
#endif
}

Status DeviceBuffer::Fill(uint8_t value) {
  if (size_ == 0) return Status::Ok();
  if (device_.is_cpu()) {
    std::memset(data_, value, size_);
    return Status::Ok();
  }
#if ARCHI_HAVE_CUDA
  return FromCuda(cuda::Memset(data_, value, size_, device_.index));
#else
  return NoCuda();
#endif
}

int CudaDeviceCount() {
#if ARCHI_HAVE_CUDA
  return cuda::DeviceCount();
#else
  return 0;
#endif
}

}  // namespace archi
