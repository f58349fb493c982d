// P2PTransport: the few point-to-point calls the p2p benchmark procedure needs, so that one
// procedure (bench/p2p/p2p_bench.cc) drives every variant: a world of the WorldManager and Open
// MPI. Both implementations do the least possible around the underlying call (no copies, no
// allocation per call once their request vectors have grown).
//
// Every call blocks until the operation(s) completed or failed; world ops wait at most
// `wait_timeout_ms`. Threads: one thread per transport (the benchmark's main thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "world/world_manager.h"

namespace archi::bench {

class P2PTransport {
 public:
  virtual ~P2PTransport() = default;
  virtual std::string name() const = 0;

  // One message, blocking until complete.
  virtual Status Send(const Tensor& t, int peer, uint32_t tag) = 0;
  virtual Status Recv(Tensor& t, int peer, uint32_t tag) = 0;
  // Posts `count` sends of `t` (receives into bufs[0..count)) at once, then waits for all.
  virtual Status SendBatch(const Tensor& t, int count, int peer, uint32_t tag) = 0;
  virtual Status RecvBatch(std::vector<Tensor>& bufs, int count, int peer, uint32_t tag) = 0;
  // Both directions at once: posts `count` receives from `peer` into bufs[0..count) and `count`
  // sends of `t` to `peer`, then waits for all (the bidirectional variant).
  virtual Status Exchange(const Tensor& t, std::vector<Tensor>& bufs, int count, int peer,
                          uint32_t tag) = 0;
  // A pipeline stage: posts `count` receives from `from` into bufs[0..count); as each completes
  // (in order) sends that buffer on to `to`; then waits for the sends (the chain variant).
  virtual Status Forward(std::vector<Tensor>& bufs, int count, int from, int to,
                         uint32_t tag) = 0;
};

// Ops addressed by world name through WorldManager::Send/Recv (the API an application uses), so
// the name lookup a multi-world process pays is part of what is measured.
// Ownership: borrows `manager`, which must outlive the transport.
class WorldTransport final : public P2PTransport {
 public:
  WorldTransport(WorldManager& manager, std::string world, int64_t wait_timeout_ms);
  std::string name() const override { return "world '" + world_ + "'"; }
  Status Send(const Tensor& t, int peer, uint32_t tag) override;
  Status Recv(Tensor& t, int peer, uint32_t tag) override;
  Status SendBatch(const Tensor& t, int count, int peer, uint32_t tag) override;
  Status RecvBatch(std::vector<Tensor>& bufs, int count, int peer, uint32_t tag) override;
  Status Exchange(const Tensor& t, std::vector<Tensor>& bufs, int count, int peer,
                  uint32_t tag) override;
  Status Forward(std::vector<Tensor>& bufs, int count, int from, int to, uint32_t tag) override;

 private:
  Status WaitAll();
  WorldManager& manager_;
  std::string world_;
  int64_t wait_timeout_ms_;
  std::vector<std::shared_ptr<Work>> works_;
  std::vector<std::shared_ptr<Work>> recv_works_;
};

}  // namespace archi::bench
