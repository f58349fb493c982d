// Helpers shared by the backend conformance suites: backend availability (with the skip reason),
// per-backend tensors (host memory for Gloo, device memory for NCCL), and exact test values for
// every dtype.
//
// Rank -> device mapping for NCCL: rank r uses CUDA device r (CommOptions::device_index = r), in
// one process (threads) or one process per rank; NCCL cannot put two ranks of a communicator on one
// GPU, so the NCCL instantiation needs at least as many GPUs as ranks and skips otherwise.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "collectives/communicator.h"
#include "runtime/core/device_buffer.h"

namespace archi::testing {

inline constexpr int kConformanceRanks = 2;

// Empty when `kind` can run `ranks` ranks here, else why not. Calls CudaDeviceCount() for NCCL
// (which initialises CUDA: do not fork afterwards and use CUDA in the child).
inline std::string BackendSkipReason(BackendKind kind, int ranks, int cuda_devices) {
  if (!BackendCompiledIn(kind)) {
    return std::string(BackendName(kind)) + " backend not compiled in (no CUDA toolkit/NCCL)";
  }
  if (kind == BackendKind::kNccl && cuda_devices < ranks) {
    return "NCCL conformance needs one CUDA device per rank (rank r on device r): " +
           std::to_string(ranks) + " ranks, " + std::to_string(cuda_devices) +
           " usable CUDA devices here";
  }
  return {};
}

inline CommOptions OptionsFor(BackendKind kind, int rank, CommOptions base = {}) {
  if (kind == BackendKind::kNccl) base.device_index = rank;
  return base;
}

// One instantiation of a conformance suite: a backend, and for the CPU backend whether point to
// point takes the same-host shared-memory fast path ("gloo_shm") or Gloo's TCP path ("gloo").
struct BackendCase {
  BackendKind kind = BackendKind::kGloo;
  ShmMode shm = ShmMode::kOff;
};

inline CommOptions OptionsFor(const BackendCase& c, int rank, CommOptions base = {}) {
  base.shm = c.shm;
  return OptionsFor(c.kind, rank, std::move(base));
}

inline std::string CaseName(const BackendCase& c) {
  std::string name(BackendName(c.kind));
  if (c.kind == BackendKind::kGloo && c.shm == ShmMode::kOn) name += "_shm";
  return name;
}

inline std::vector<BackendCase> AllBackendCases() {
  return {{BackendKind::kGloo, ShmMode::kOff},
          {BackendKind::kGloo, ShmMode::kOn},
          {BackendKind::kNccl, ShmMode::kOff}};
}

// A tensor in the memory the backend wants: host for Gloo, CUDA device `rank` for NCCL.
class BackendTensor {
 public:
  static std::unique_ptr<BackendTensor> Make(BackendKind kind, int rank, std::vector<int64_t> shape,
                                             DType dtype, std::string* error) {
    auto bt = std::make_unique<BackendTensor>();
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const size_t nbytes = static_cast<size_t>(numel) * DTypeSize(dtype);
    Device device = Device::Cpu();
    void* data = nullptr;
    if (kind == BackendKind::kNccl) {
      device = Device::Cuda(rank);
      auto buf = DeviceBuffer::Allocate(std::max<size_t>(nbytes, 1), device);
      if (!buf.ok()) {
        *error = buf.status().ToString();
        return nullptr;
      }
      bt->device_buf_ = std::move(buf).value();
      data = bt->device_buf_.data();
    } else {
      bt->host_.resize(std::max<size_t>(nbytes, 1));
      data = bt->host_.data();
    }
    auto t = Tensor::View(data, std::move(shape), dtype, device);
    if (!t.ok()) {
      *error = t.status().ToString();
      return nullptr;
    }
    bt->tensor_ = *t;
    bt->nbytes_ = nbytes;
    return bt;
  }

  Tensor& tensor() { return tensor_; }
  size_t nbytes() const { return nbytes_; }

  bool Upload(const std::vector<uint8_t>& bytes) {
    if (bytes.size() != nbytes_) return false;
    if (nbytes_ == 0) return true;
    if (tensor_.device().is_cpu()) {
      std::memcpy(host_.data(), bytes.data(), nbytes_);
      return true;
    }
    return device_buf_.CopyFromHost(bytes.data(), nbytes_).ok();
  }
  std::vector<uint8_t> Download() const {
    std::vector<uint8_t> out(nbytes_);
    if (nbytes_ == 0) return out;
    if (tensor_.device().is_cpu()) {
      std::memcpy(out.data(), host_.data(), nbytes_);
    } else if (!device_buf_.CopyToHost(out.data(), nbytes_).ok()) {
      out.clear();
    }
    return out;
  }

 private:
  std::vector<uint8_t> host_;
  DeviceBuffer device_buf_;
  Tensor tensor_;
  size_t nbytes_ = 0;
};

// Exact encodings of small integers (|v| < 256) in every dtype.
inline uint16_t SmallIntToHalf(int v) {
  if (v == 0) return 0;
  const uint16_t sign = v < 0 ? 0x8000 : 0;
  unsigned a = static_cast<unsigned>(v < 0 ? -v : v);
  int e = 0;
  while ((a >> e) > 1) ++e;
  const unsigned mant = (a << (10 - e)) & 0x3ffu;
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | mant);
}

inline uint16_t SmallIntToBf16(int v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>(bits >> 16);
}

inline std::vector<uint8_t> EncodeInts(const std::vector<int>& values, DType dtype) {
  std::vector<uint8_t> out(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    uint8_t* p = out.data() + i * DTypeSize(dtype);
    const int v = values[i];
    switch (dtype) {
      case DType::kF32: {
        const float f = static_cast<float>(v);
        std::memcpy(p, &f, 4);
        break;
      }
      case DType::kF16: {
        const uint16_t h = SmallIntToHalf(v);
        std::memcpy(p, &h, 2);
        break;
      }
      case DType::kBF16: {
        const uint16_t h = SmallIntToBf16(v);
        std::memcpy(p, &h, 2);
        break;
      }
      case DType::kI32: {
        const int32_t x = v;
        std::memcpy(p, &x, 4);
        break;
      }
      case DType::kI64: {
        const int64_t x = v;
        std::memcpy(p, &x, 8);
        break;
      }
      case DType::kU8:
        *p = static_cast<uint8_t>(v);
        break;
    }
  }
  return out;
}

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return out;
}

}  // namespace archi::testing
