// Communicator: one group of ranks (a world's data plane) with non-blocking operations.
//
// Every operation returns immediately with a Work. Work::Wait(deadline) blocks until the op
// finishes or the deadline passes; a Wait that hits its deadline returns kDeadlineExceeded and
// leaves the op pending (Wait again, or Abort the communicator). Independently of Wait, every op
// has an op deadline (CommOptions::op_timeout unless OpOptions gives one): an op still pending at
// its op deadline fails with kDeadlineExceeded and the communicator turns broken, because the
// underlying transports (Gloo, NCCL) cannot resume after a timed-out op.
//
// Once broken (peer died, connection reset, op deadline, Abort), every pending op completes with
// kAborted and every later op fails at once with kAborted; the message names the peer when known.
// A broken communicator cannot be repaired: the world is rebuilt with a new communicator.
//
// Memory: the tensors passed to an op must stay alive and untouched until its Work has completed
// (IsCompleted() true or Wait returned something other than kDeadlineExceeded).
//
// Ordering and threads: ops may be issued from any thread, but collectives must be issued in the
// same order on every rank. Point-to-point ops to the same peer with the same tag are matched in
// issue order. Abort(), broken(), and error() are safe from any thread at any time and never block
// on the network.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/deadline.h"
#include "runtime/core/status.h"
#include "runtime/core/store.h"
#include "runtime/core/tensor.h"

namespace archi {

enum class ReduceOp : uint8_t { kSum, kProd, kMin, kMax };
std::string_view ReduceOpName(ReduceOp op);  // "sum", "prod", "min", "max"
bool IsValidReduceOp(ReduceOp op);
// Name of a dtype as carried in a backend's wire header (a raw byte that may be corrupt):
// "f32", ..., or "dtype#N" for a value outside DType.
std::string WireDTypeName(uint8_t dtype);

class Work {
 public:
  virtual ~Work() = default;
  virtual bool IsCompleted() const = 0;
  // Blocks until the op completes or `deadline` passes (then kDeadlineExceeded, op still pending).
  virtual Status Wait(Deadline deadline) = 0;
};

// A Work that is already finished (used for ops that fail validation before being issued).
std::shared_ptr<Work> CompletedWork(Status status);

struct OpOptions {
  int64_t timeout_ms = -1;  // <0: use CommOptions::op_timeout_ms
};

enum class BackendKind : uint8_t { kGloo = 0, kNccl = 1 };

// Same-host fast path of the CPU backend's point to point (shared-memory rings, see
// docs/fastpath.md). A pair of ranks uses it when both ends enable it and run on one host
// (same kernel boot, pid and mount namespace); Gloo still carries collectives and cross-host pairs.
enum class ShmMode : uint8_t {
  kDefault = 0,  // ARCHI_SHM (0/1) when set, else the built-in default (docs/config.md)
  kOff = 1,
  kOn = 2,
};
std::string_view BackendName(BackendKind kind);
Result<BackendKind> ParseBackend(std::string_view name);

struct CommOptions {
  // Time allowed for connecting all ranks (rendezvous through the store and the transport).
  int64_t connect_timeout_ms = 10'000;
  // Default deadline of each op; a pending op past it breaks the communicator.
  int64_t op_timeout_ms = 30'000;
  // Interface address the transport binds to (Gloo TCP). Empty: 127.0.0.1.
  std::string hostname;
  // Accelerator device index for backends that run on one (NCCL: the CUDA device of this rank's
  // stream and tensors). -1: rank modulo the number of visible devices. Ignored by Gloo.
  int device_index = -1;
  // Prefix of every error message and log line of this communicator, e.g. "world 'w0' e3 rank 0/2"
  // (the world manager sets it so errors name the world). Empty: "comm rank R/S".
  std::string label;
  // Same-host shared-memory point to point for the CPU backend (ignored by NCCL).
  ShmMode shm = ShmMode::kDefault;
  // Called once (from an internal thread) when the communicator turns broken, with the reason.
  // Must not block; must not destroy the communicator.
  std::function<void(const Status&)> on_broken;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual BackendKind backend() const = 0;

  // Point to point. `tag` separates independent streams between the same pair (0 .. 2^20).
  // The receiver's tensor must have the sender's dtype and byte size, else both fail with
  // kInvalidArgument (the mismatch is detected from a small header sent with every message).
  virtual std::shared_ptr<Work> Send(const Tensor& tensor, int dst, uint32_t tag,
                                     OpOptions opts = {}) = 0;
  virtual std::shared_ptr<Work> Recv(Tensor& tensor, int src, uint32_t tag,
                                     OpOptions opts = {}) = 0;

  // Collectives, in place where the shape allows.
  virtual std::shared_ptr<Work> Broadcast(Tensor& tensor, int root, OpOptions opts = {}) = 0;
  virtual std::shared_ptr<Work> AllReduce(Tensor& tensor, ReduceOp op, OpOptions opts = {}) = 0;
  // `output` holds size() * input.numel() elements, rank i's input at offset i * input.numel().
  virtual std::shared_ptr<Work> AllGather(const Tensor& input, Tensor& output,
                                          OpOptions opts = {}) = 0;
  // `input` holds size() * output.numel() elements; rank i receives the reduction of block i.
  virtual std::shared_ptr<Work> ReduceScatter(const Tensor& input, Tensor& output, ReduceOp op,
                                              OpOptions opts = {}) = 0;
  virtual std::shared_ptr<Work> Barrier(OpOptions opts = {}) = 0;

  // Breaks the communicator: pending ops complete with kAborted (carrying `reason`), later ops
  // fail at once. Never blocks on the network; safe from any thread, idempotent.
  virtual void Abort(const Status& reason) = 0;
  virtual bool broken() const = 0;
  // The reason it broke (OK while healthy).
  virtual Status error() const = 0;
};

// True when `kind` is compiled into this build (Gloo always; NCCL when the toolkit was found).
// A compiled-in backend may still fail at run time (NCCL without a GPU: kUnavailable).
bool BackendCompiledIn(BackendKind kind);

// Creates a communicator of `kind` for (rank, size), rendezvousing through `store` (which should
// already be scoped to this group, e.g. a PrefixStore). Blocks until connected or
// options.connect_timeout_ms passes. kUnimplemented when the backend is not compiled in.
Result<std::unique_ptr<Communicator>> CreateCommunicator(BackendKind kind, int rank, int size,
                                                         std::shared_ptr<Store> store,
                                                         CommOptions options);

}  // namespace archi
