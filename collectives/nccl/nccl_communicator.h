// NcclCommunicator: the GPU backend of Communicator on NCCL (private header: only the factory in
// collectives/communicator.cc and this backend include it).
//
// Ownership: each communicator owns one NCCL communicator (NcclComm), one non-blocking CUDA stream
// on its device (every op of this communicator runs on it), pinned/device scratch for message
// headers and the barrier, one CUDA event per in-flight op, and two threads:
//   - the issuer: issues queued ops to NCCL one at a time in issue order (so every rank issues
//     the same NCCL sequence), waiting out ncclInProgress of the non-blocking communicator;
//   - the watchdog: polls ncclCommGetAsyncError, the in-flight ops' CUDA events (completing their
//     Work in stream order) and op deadlines; on an error or a deadline it breaks the communicator.
// Threads are std::jthread; none is detached; the destructor joins both.
//
// Initialisation is non-blocking: rank 0 creates the ncclUniqueId and publishes it (hex) under the
// store key "nccl_unique_id" (the store is already scoped to the world and epoch); the others wait
// for it; then ncclCommInitRankConfig(blocking = 0) is polled until it leaves ncclInProgress, all
// within CommOptions::connect_timeout_ms (at the deadline the half-built communicator is aborted
// and Create returns kDeadlineExceeded).
//
// Device: CommOptions::device_index, or rank modulo the number of visible devices when it is -1.
// Every tensor must be a CUDA tensor on that device (kInvalidArgument otherwise). NCCL cannot put
// two ranks of one communicator on the same GPU.
//
// Point to point (NCCL has no message headers and no tags): every Send/Recv first exchanges a
// 16-byte header (magic, kind, dtype, tag, byte count) with the peer in BOTH directions inside one
// ncclGroupStart/End, copies the peer's header to pinned memory and checks it on the host; both
// sides then reach the same verdict. On a match the payload moves in a second group call; on a
// dtype, size or tag mismatch (or when both sides sent, or both received) no payload moves and both
// ops fail with kInvalidArgument, leaving the communicator healthy.
// Matching rule (differs from Gloo): NCCL matches point-to-point calls per peer pair in issue
// order, so the i-th Send/Recv this rank issues towards peer P is paired with the i-th Send/Recv P
// issues towards this rank. Tags are checked, not used for matching. Two ranks that each Recv
// before they Send to each other deadlock until the op deadline (post the Send first on one side).
// The issuer waits for each header exchange, so an unmatched Send/Recv holds back every later op
// of this communicator until it matches or hits its op deadline.
//
// Breaking: an NCCL async error, a CUDA error, an op deadline, Abort() or ncclCommShrink's peers
// going away break the communicator once. Break() itself only sets state (never calls NCCL, never
// blocks); the watchdog then runs CommOptions::on_broken (without locks held), stops NCCL with
// ncclCommRevoke (NCCL >= 2.28.7; else ncclCommAbort), waits (bounded, 2 s) for the stream's
// in-flight events so NCCL no longer touches user memory, and only then completes the pending ops
// (kDeadlineExceeded for the op whose deadline passed, kAborted for the rest). Later ops fail at
// once with kAborted. ncclCommDestroy/Finalize are never called on a broken communicator.
// Destruction: a healthy communicator with no pending op is finalized (ncclCommFinalize, polled
// with a 5 s deadline, then destroy; at the deadline or on error it is aborted); otherwise it is
// broken and aborted.
// Thread safety: all public methods are thread-safe; Abort/broken/error never block.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/nccl/nccl_handles.h"
#include "runtime/core/device_buffer.h"

namespace archi {

class PendingWork;

class NcclCommunicator final : public Communicator {
 public:
  // Connects all ranks through `store` within options.connect_timeout_ms. kUnavailable when no
  // CUDA device is usable (no driver or no GPU).
  static Result<std::unique_ptr<Communicator>> Create(int rank, int size,
                                                      std::shared_ptr<Store> store,
                                                      CommOptions options);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  BackendKind backend() const override { return BackendKind::kNccl; }
  int device_index() const { return device_; }

  std::shared_ptr<Work> Send(const Tensor& tensor, int dst, uint32_t tag,
                             OpOptions opts = {}) override;
  std::shared_ptr<Work> Recv(Tensor& tensor, int src, uint32_t tag, OpOptions opts = {}) override;
  std::shared_ptr<Work> Broadcast(Tensor& tensor, int root, OpOptions opts = {}) override;
  std::shared_ptr<Work> AllReduce(Tensor& tensor, ReduceOp op, OpOptions opts = {}) override;
  std::shared_ptr<Work> AllGather(const Tensor& input, Tensor& output,
                                  OpOptions opts = {}) override;
  std::shared_ptr<Work> ReduceScatter(const Tensor& input, Tensor& output, ReduceOp op,
                                      OpOptions opts = {}) override;
  std::shared_ptr<Work> Barrier(OpOptions opts = {}) override;

  void Abort(const Status& reason) override;
  bool broken() const override;
  Status error() const override;

  // Builds a new communicator of the ranks not in `exclude_ranks` with ncclCommShrink (NCCL >=
  // 2.27; kUnimplemented before). Collective over the survivors: each must call it with the same
  // list. The new rank is this rank's position among the survivors. Works on a healthy
  // communicator with no pending op, or on a broken one whose NCCL communicator was revoked
  // (NCCL >= 2.28.7); kFailedPrecondition otherwise (after ncclCommAbort nothing is left to
  // shrink: create a fresh communicator instead, as joining ranks always must: ncclCommGrow only
  // exists from NCCL 2.29). Blocks at most options.connect_timeout_ms.
  Result<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude_ranks,
                                               CommOptions options);

 private:
  struct Op;

  NcclCommunicator(int rank, int size, int device, CommOptions options);
  // Creates the stream, scratch buffers and threads around an initialised comm_.
  Status Start();

  Deadline OpDeadline(const OpOptions& opts, int64_t* timeout_ms) const;
  std::shared_ptr<Work> Enqueue(std::shared_ptr<Op> op);
  Status CheckTensor(const Tensor& t, std::string_view what) const;

  void IssuerLoop(std::stop_token stop);
  Status IssueP2P(Op& op);
  // Waits until the non-blocking communicator leaves ncclInProgress; kAborted once broken.
  Status WaitNcclIdle(const char* what);
  // Waits for `event` on the host (polling); kAborted once broken.
  Status WaitEvent(cudaEvent_t event, const char* what);

  void WatchdogLoop(std::stop_token stop);
  // Stops NCCL (revoke or abort) and waits, bounded, for the in-flight events.
  void Quiesce();

  // Turns the communicator broken (first call wins). Never calls NCCL; never blocks.
  void Break(Status reason, bool from_destructor = false);

  const int rank_;
  const int size_;
  const int device_;
  const CommOptions options_;
  NcclComm comm_;
  CudaStream stream_;
  PinnedHost hdr_host_;      // 2 x 16 bytes: [0] this rank's header, [16] the peer's header
  DeviceBuffer hdr_dev_;     // same layout on the device
  DeviceBuffer barrier_dev_;  // one int32 for Barrier
  CudaEvent hdr_event_;      // issuer only
  bool revoked_ = false;     // watchdog only until the threads are joined

  std::atomic<bool> broken_flag_{false};  // mirrors broken_ for lock-free polling loops
  mutable std::mutex mu_;
  bool broken_ = false;             // guarded by mu_
  Status error_;                    // guarded by mu_
  bool from_destructor_ = false;    // guarded by mu_
  bool quiesced_ = false;           // guarded by mu_
  uint64_t next_op_id_ = 1;         // guarded by mu_
  std::map<uint64_t, std::shared_ptr<Op>> pending_;  // guarded by mu_ (queued, issuing, in flight)
  std::set<std::pair<Clock::time_point, uint64_t>> deadlines_;  // guarded by mu_
  std::deque<std::shared_ptr<Op>> queue_;     // guarded by mu_: waiting for the issuer
  std::deque<std::shared_ptr<Op>> inflight_;  // guarded by mu_: issued, event recorded

  std::condition_variable_any issue_cv_;
  std::condition_variable_any watch_cv_;
  std::jthread issuer_thread_;
  std::jthread watchdog_thread_;
};

}  // namespace archi
