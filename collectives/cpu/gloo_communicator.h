// GlooCommunicator: the CPU backend of Communicator on Gloo's TCP transport.
//
// Ownership: each communicator owns one Gloo TCP device (its own event-loop thread, so worlds are
// isolated from each other), one connected Gloo context, and its own background threads:
//   - a watchdog (op deadlines; runs CommOptions::on_broken once, without locks held);
//   - per peer used for point to point, a reader that receives that peer's message headers and
//     acknowledgements, waits for payloads, and completes sends and receives;
//   - an acknowledgement reaper (frees acknowledgement buffers once Gloo has sent them);
//   - a collective thread that runs Gloo collectives one at a time in issue order.
// Threads start lazily; none is detached; the destructor aborts and joins them all.
//
// Point to point protocol (slots with high prefixes 0xA1/0xA2, disjoint from Gloo collectives'):
// every message is a 40-byte header (magic, dtype, tag, sequence number, byte count) on the
// per-pair control slot, then the payload on a slot derived from the sequence number. The receiver
// matches the header with a posted Recv (same source and tag, in issue order), checks dtype and
// size and only then posts the payload receive with the announced size (a mismatched payload is
// drained into scratch memory), then acknowledges on the control slot. A Send completes when the
// acknowledgement arrives, so both sides of a mismatch fail with kInvalidArgument.
//
// Breaking: a Gloo exception, an op deadline or Abort() breaks the communicator once: the Gloo
// context is torn down (so Gloo touches no user memory afterwards and a running collective returns
// promptly), pending ops complete with kAborted, later ops fail at once.
// Thread safety: all public methods are thread-safe; Abort/broken/error never block on the network.
// Gloo exceptions never leave this class.
#pragma once

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
#include <unordered_map>
#include <utility>
#include <vector>

#include "collectives/communicator.h"

namespace gloo {
class Context;
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo

namespace archi {

class PendingWork;

class GlooCommunicator final : public Communicator {
 public:
  // Connects all ranks through `store` within options.connect_timeout_ms.
  static Result<std::unique_ptr<Communicator>> Create(int rank, int size,
                                                      std::shared_ptr<Store> store,
                                                      CommOptions options);
  ~GlooCommunicator() override;
  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  BackendKind backend() const override { return BackendKind::kGloo; }

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

  struct WireHeader;  // the point-to-point message header (public for the .cc helpers)

 private:
  struct OpBase;
  struct SendOp;
  struct RecvOp;
  struct CollOp;
  struct AckBuf;
  struct Peer;
  using Buffer = gloo::transport::UnboundBuffer;
  using CollBody = std::function<void(std::chrono::milliseconds gloo_timeout)>;

  GlooCommunicator(int rank, int size, CommOptions options);

  Deadline OpDeadline(const OpOptions& opts, int64_t* timeout_ms) const;
  std::shared_ptr<Work> EnqueueCollective(std::string what, const OpOptions& opts,
                                          CollBody body);

  // All *Locked functions require mu_.
  void RegisterOpLocked(const std::shared_ptr<OpBase>& op);
  bool EraseOpLocked(const OpBase& op);  // true if the op was still pending (caller completes it)
  Status EnsureReaderLocked(int peer);
  Status MatchLocked(int peer, const std::shared_ptr<RecvOp>& op, const WireHeader& h);

  void ReaderLoop(int peer, std::stop_token stop);
  void HandleHeader(int peer, const WireHeader& h);
  void FinishRecv(int peer, const std::shared_ptr<RecvOp>& op);
  void ReaperLoop(std::stop_token stop);
  void CollectiveLoop(std::stop_token stop);
  void WatchdogLoop(std::stop_token stop);

  // Turns the communicator broken (first call wins); see the class comment.
  void Break(Status reason, bool from_destructor = false);
  // Tears down the Gloo context's connections so no Gloo call blocks or touches user memory.
  void KillTransport();

  const int rank_;
  const int size_;
  const CommOptions options_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;

  mutable std::mutex mu_;
  bool broken_ = false;              // guarded by mu_
  Status error_;                     // guarded by mu_
  bool on_broken_pending_ = false;   // guarded by mu_
  uint64_t next_op_id_ = 1;          // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<OpBase>> pending_;    // guarded by mu_
  std::set<std::pair<std::chrono::steady_clock::time_point, uint64_t>> deadlines_;  // mu_
  std::vector<std::unique_ptr<Peer>> peers_;                         // fixed size; fields: mu_
  std::deque<std::shared_ptr<CollOp>> coll_queue_;                   // guarded by mu_
  std::deque<std::shared_ptr<AckBuf>> acks_;                         // guarded by mu_
  std::shared_ptr<AckBuf> reaping_;                                  // guarded by mu_

  std::condition_variable_any watchdog_cv_;
  std::condition_variable_any coll_cv_;
  std::condition_variable_any acks_cv_;
  std::jthread coll_thread_;
  std::jthread reaper_thread_;
  std::jthread watchdog_thread_;
};

}  // namespace archi
