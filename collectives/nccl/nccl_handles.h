// RAII owners of the NCCL and CUDA handles used by the NCCL backend, and the error macros that
// turn NCCL/CUDA results into Status with a file:line trail. Private to collectives/nccl/: this is
// one of the only headers allowed to include nccl.h and cuda_runtime.h.
//
// Every owner is move-only and never throws. Destructors never block on the network:
//   NcclComm      ncclCommAbort() unless Finalize() succeeded (then ncclCommDestroy has run);
//   CudaStream    cudaStreamDestroy (returns at once; the stream's work drains asynchronously);
//   CudaEvent     cudaEventDestroy;
//   PinnedHost    cudaFreeHost.
// Device memory is owned by archi::DeviceBuffer (runtime/core/device_buffer.h).
// Thread safety: an owner is used by one thread at a time, except NcclComm::Revoke/get, which the
// watchdog calls while another thread may be inside NCCL (as NCCL allows for abort/revoke).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <string>
#include <thread>
#include <utility>

#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi {

// NCCL >= 2.28.7 can revoke a communicator (stop in-flight work without freeing it), which keeps
// the handle usable for ncclCommShrink afterwards.
#define ARCHI_NCCL_HAS_REVOKE (NCCL_VERSION_CODE >= 22807)
// ncclCommShrink: NCCL >= 2.27.
#define ARCHI_NCCL_HAS_SHRINK (NCCL_VERSION_CODE >= 22700)
// ncclCommGrow: NCCL >= 2.29 (absent from 2.28.9, which our machines have): joining ranks always
// get a fresh communicator.
#define ARCHI_NCCL_HAS_GROW (NCCL_VERSION_CODE >= 22900)

inline std::string NcclErrorText(ncclResult_t r) {
  return std::string(ncclGetErrorString(r)) + " (ncclResult " + std::to_string(static_cast<int>(r)) +
         ")";
}

inline Status NcclStatus(ncclResult_t r, const std::string& what) {
  switch (r) {
    case ncclSuccess:
    case ncclInProgress:
      return Status();
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return InvalidArgumentError(what + ": " + NcclErrorText(r));
    default:
      return UnavailableError(what + ": " + NcclErrorText(r));
  }
}

inline Status CudaStatus(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status();
  return UnavailableError(what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

#define ARCHI_NCCL_STRINGIZE_(x) #x
#define ARCHI_NCCL_STRINGIZE(x) ARCHI_NCCL_STRINGIZE_(x)
#define ARCHI_NCCL_WHERE __FILE__ ":" ARCHI_NCCL_STRINGIZE(__LINE__)

// Returns from the enclosing function (returning Status or Result) on a CUDA error.
#define ARCHI_CUDA_CHECK(expr)                                                            \
  do {                                                                                    \
    const cudaError_t archi_cuda_err_ = (expr);                                           \
    if (archi_cuda_err_ != cudaSuccess) {                                                 \
      return ::archi::CudaStatus(archi_cuda_err_, ARCHI_NCCL_WHERE ": " #expr);           \
    }                                                                                     \
  } while (0)

// Returns on an NCCL error; ncclInProgress is a state, not an error (non-blocking mode).
#define ARCHI_NCCL_CHECK(expr)                                                            \
  do {                                                                                    \
    const ncclResult_t archi_nccl_res_ = (expr);                                          \
    if (archi_nccl_res_ != ncclSuccess && archi_nccl_res_ != ncclInProgress) {            \
      return ::archi::NcclStatus(archi_nccl_res_, ARCHI_NCCL_WHERE ": " #expr);           \
    }                                                                                     \
  } while (0)

class NcclComm {
 public:
  NcclComm() = default;
  explicit NcclComm(ncclComm_t comm) : comm_(comm) {}
  ~NcclComm() { Abort(); }
  NcclComm(NcclComm&& o) noexcept : comm_(std::exchange(o.comm_, nullptr)) {}
  NcclComm& operator=(NcclComm&& o) noexcept {
    if (this != &o) {
      Abort();
      comm_ = std::exchange(o.comm_, nullptr);
    }
    return *this;
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  ncclComm_t get() const { return comm_; }
  explicit operator bool() const { return comm_ != nullptr; }

  // Frees the communicator and aborts its in-flight work. Does not wait for peers.
  void Abort() {
    if (comm_ != nullptr) (void)ncclCommAbort(std::exchange(comm_, nullptr));
  }

  // Flushes issued work and frees the communicator, waiting at most until `deadline` for the
  // (non-blocking) finalize; on any error or at the deadline it aborts instead. Only for a healthy
  // communicator: finalize waits for every peer.
  Status Finalize(Deadline deadline) {
    if (comm_ == nullptr) return Status();
    ncclResult_t r = ncclCommFinalize(comm_);
    while (r == ncclSuccess || r == ncclInProgress) {
      ncclResult_t state = ncclSuccess;
      r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) break;
      if (state != ncclInProgress) {
        r = state;
        break;
      }
      if (deadline.Expired()) {
        Abort();
        return DeadlineExceededError("ncclCommFinalize: deadline passed, communicator aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (r != ncclSuccess) {
      Abort();
      return NcclStatus(r, "ncclCommFinalize");
    }
    (void)ncclCommDestroy(std::exchange(comm_, nullptr));
    return Status();
  }

 private:
  ncclComm_t comm_ = nullptr;
};

class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream() { Reset(); }
  CudaStream(CudaStream&& o) noexcept
      : stream_(std::exchange(o.stream_, nullptr)), device_(o.device_) {}
  CudaStream& operator=(CudaStream&& o) noexcept {
    if (this != &o) {
      Reset();
      stream_ = std::exchange(o.stream_, nullptr);
      device_ = o.device_;
    }
    return *this;
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  static Result<CudaStream> Create(int device) {
    ARCHI_CUDA_CHECK(cudaSetDevice(device));
    CudaStream s;
    s.device_ = device;
    ARCHI_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream_, cudaStreamNonBlocking));
    return s;
  }
  cudaStream_t get() const { return stream_; }

 private:
  void Reset() {
    if (stream_ != nullptr && cudaSetDevice(device_) == cudaSuccess) {
      (void)cudaStreamDestroy(stream_);
    }
    stream_ = nullptr;
  }
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
};

class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent() { Reset(); }
  CudaEvent(CudaEvent&& o) noexcept : event_(std::exchange(o.event_, nullptr)), device_(o.device_) {}
  CudaEvent& operator=(CudaEvent&& o) noexcept {
    if (this != &o) {
      Reset();
      event_ = std::exchange(o.event_, nullptr);
      device_ = o.device_;
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  static Result<CudaEvent> Create(int device) {
    ARCHI_CUDA_CHECK(cudaSetDevice(device));
    CudaEvent e;
    e.device_ = device;
    ARCHI_CUDA_CHECK(cudaEventCreateWithFlags(&e.event_, cudaEventDisableTiming));
    return e;
  }
  cudaEvent_t get() const { return event_; }

 private:
  void Reset() {
    if (event_ != nullptr && cudaSetDevice(device_) == cudaSuccess) (void)cudaEventDestroy(event_);
    event_ = nullptr;
  }
  cudaEvent_t event_ = nullptr;
  int device_ = 0;
};

// Page-locked host memory (needed for truly asynchronous device-to-host copies).
class PinnedHost {
 public:
  PinnedHost() = default;
  ~PinnedHost() { Reset(); }
  PinnedHost(PinnedHost&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)) {}
  PinnedHost& operator=(PinnedHost&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
    }
    return *this;
  }
  PinnedHost(const PinnedHost&) = delete;
  PinnedHost& operator=(const PinnedHost&) = delete;

  static Result<PinnedHost> Allocate(size_t bytes) {
    PinnedHost h;
    ARCHI_CUDA_CHECK(cudaMallocHost(&h.ptr_, bytes));
    return h;
  }
  void* get() const { return ptr_; }

 private:
  void Reset() {
    if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
    ptr_ = nullptr;
  }
  void* ptr_ = nullptr;
};

}  // namespace archi
