#include "runtime/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

namespace archi {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
  }
  return "?";
}

Result<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64, DType::kU8}) {
    if (DTypeName(d) == name) return d;
  }
  return InvalidArgumentError("unknown dtype '" + std::string(name) +
                              "' (expected f32, f16, bf16, i32, i64 or u8)");
}

std::string Device::ToString() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

namespace {
Result<int64_t> CountElements(const std::vector<int64_t>& shape, DType dtype) {
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgumentError("negative dimension " + std::to_string(d) + " in shape");
    empty = empty || d == 0;
  }
  // A zero anywhere makes the tensor empty whatever the order of the other dimensions.
  if (empty) return int64_t{0};
  int64_t n = 1;
  const int64_t limit = std::numeric_limits<int64_t>::max() / static_cast<int64_t>(DTypeSize(dtype));
  for (int64_t d : shape) {
    if (n > limit / d) return InvalidArgumentError("tensor shape overflows int64 bytes");
    n *= d;
  }
  return n;
}
}  // namespace

std::string Tensor::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

Result<Tensor> Tensor::View(void* data, std::vector<int64_t> shape, DType dtype, Device device) {
  ARCHI_ASSIGN_OR_RETURN(int64_t n, CountElements(shape, dtype));
  if (data == nullptr && n != 0) return InvalidArgumentError("null data for a non-empty tensor");
  Tensor t;
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.numel_ = n;
  t.dtype_ = dtype;
  t.device_ = device;
  t.defined_ = true;
  return t;
}

Result<Tensor> Tensor::Empty(std::vector<int64_t> shape, DType dtype) {
  ARCHI_ASSIGN_OR_RETURN(int64_t n, CountElements(shape, dtype));
  size_t bytes = static_cast<size_t>(n) * DTypeSize(dtype);
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  if (rounded && !p) return ResourceExhaustedError("cannot allocate " + std::to_string(bytes) + " bytes");
  Tensor t;
  t.data_ = p;
  t.shape_ = std::move(shape);
  t.numel_ = n;
  t.dtype_ = dtype;
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.defined_ = true;
  return t;
}

Result<Tensor> Tensor::Zeros(std::vector<int64_t> shape, DType dtype) {
  ARCHI_ASSIGN_OR_RETURN(Tensor t, Empty(std::move(shape), dtype));
  if (t.nbytes()) std::memset(t.data(), 0, t.nbytes());
  return t;
}

}  // namespace archi
