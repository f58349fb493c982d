// Tensor: a typed, shaped view of a byte buffer on the host or on a CUDA device.
//
// Ownership: a Tensor either views memory it does not own (Tensor::View; the caller keeps the
// memory alive for as long as the view and every operation using it) or shares ownership of a
// Buffer it allocated (Tensor::Empty / Tensor::Zeros on the host). Copying a Tensor copies the
// view and shares the buffer; it never copies the bytes.
// Thread safety: a Tensor is a value; concurrent reads are fine, writes to the bytes need the
// caller's synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace archi {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI32 = 3, kI64 = 4, kU8 = 5 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);
Result<DType> ParseDType(std::string_view name);

enum class DeviceType : uint8_t { kCpu = 0, kCuda = 1 };

struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;
  static Device Cpu() { return {DeviceType::kCpu, 0}; }
  static Device Cuda(int index) { return {DeviceType::kCuda, index}; }
  bool is_cpu() const { return type == DeviceType::kCpu; }
  std::string ToString() const;
  friend bool operator==(const Device& a, const Device& b) {
    return a.type == b.type && a.index == b.index;
  }
};

class Tensor {
 public:
  Tensor() = default;

  // A non-owning view. Fails on a negative dimension, a null pointer with non-zero size, or a
  // byte count that overflows.
  static Result<Tensor> View(void* data, std::vector<int64_t> shape, DType dtype,
                             Device device = Device::Cpu());
  // Allocates host memory (64-byte aligned). Contents are uninitialised for Empty.
  static Result<Tensor> Empty(std::vector<int64_t> shape, DType dtype);
  static Result<Tensor> Zeros(std::vector<int64_t> shape, DType dtype);

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  Device device() const { return device_; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * DTypeSize(dtype_); }
  // False only for a default-constructed Tensor (a zero-size View or Empty is defined).
  bool defined() const { return defined_; }
  std::string ShapeString() const;

 private:
  void* data_ = nullptr;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::kF32;
  Device device_;
  std::shared_ptr<void> owner_;
  bool defined_ = false;
};

}  // namespace archi
