// WorldManager: the MultiWorld layer. A process belongs to many named worlds at once; each world
// is an independent communicator with its own ranks, rendezvous keys (under an epoch) and fault
// domain. Worlds are created and removed at run time; a world that breaks (peer died, hung or its
// connection reset) turns BROKEN alone while every other world carries on.
//
// Lifecycle: INITIALIZING -> READY -> BROKEN -> (RemoveWorld) REMOVED. A removed world's name can
// be initialised again at once: every incarnation gets a new epoch and its keys live under
// "archi/world/<name>/e<epoch>/", so stale keys of an old epoch are never read by a new one.
//
// Fault detection (a single watchdog thread serves all worlds of the manager):
//   - any transport error or op deadline on the world's communicator (connection reset: at once);
//   - same-host peers: the peer's process handle (pidfd) becomes readable when it exits (at once);
//   - heartbeats in the world's store every heartbeat_interval_ms; a peer whose counter does not
//     move for heartbeat_timeout_ms is declared hung (SIGSTOP, partition, dead host);
//   - a peer that removed the world or saw it break marks the epoch closed; the other ranks see
//     that on their next heartbeat.
// When a world breaks, its pending and later ops fail with kAborted and a message naming the
// world and the peer.
//
// Threads: every public method is thread-safe. InitializeWorld blocks (up to init_timeout_ms) and
// may run concurrently for different worlds from different threads. State callbacks run on an
// internal event thread, one at a time, in order; they may call any WorldManager method.
// Ownership: the manager owns its worlds' communicators; the caller's Store is shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"
#include "runtime/core/deadline.h"
#include "runtime/core/status.h"
#include "runtime/core/store.h"
#include "runtime/core/tensor.h"

namespace archi {

enum class WorldState : uint8_t { kInitializing = 0, kReady = 1, kBroken = 2, kRemoved = 3 };
std::string_view WorldStateName(WorldState state);

struct WorldOptions {
  BackendKind backend = BackendKind::kGloo;
  // Rendezvous plus transport connection, all ranks.
  int64_t init_timeout_ms = 10'000;
  // Default deadline of each op; an op past it breaks the world.
  int64_t op_timeout_ms = 30'000;
  int64_t heartbeat_interval_ms = 100;
  // A peer whose heartbeat does not advance for this long is declared hung.
  int64_t heartbeat_timeout_ms = 2'000;
  // Address the data plane binds to. Empty: 127.0.0.1.
  std::string hostname;
  // Same-host shared-memory point to point of the CPU backend (CommOptions::shm): kDefault
  // follows ARCHI_SHM, kOff/kOn override it for this world.
  ShmMode shm = ShmMode::kDefault;
  // Accelerator device of this rank for backends that run on one (NCCL: CommOptions::
  // device_index, e.g. the local rank under mpirun). -1: rank modulo the visible devices.
  int device_index = -1;

  // Defaults overridden by ARCHI_WORLD_INIT_TIMEOUT_MS, ARCHI_WORLD_OP_TIMEOUT_MS,
  // ARCHI_HEARTBEAT_INTERVAL_MS, ARCHI_HEARTBEAT_TIMEOUT_MS, ARCHI_BIND_HOST (docs/config.md).
  static WorldOptions FromEnv();
};

struct WorldInfo {
  std::string name;
  int rank = 0;
  int size = 0;
  uint64_t epoch = 0;
  WorldState state = WorldState::kInitializing;
  BackendKind backend = BackendKind::kGloo;
  Status error;             // why it broke (OK otherwise)
  double init_ms = 0;       // wall time InitializeWorld took
  Clock::time_point broken_at{};
};

using WorldCallback = std::function<void(const WorldInfo& info)>;

class WorldManager {
 public:
  WorldManager();
  ~WorldManager();  // removes every world (bounded time, even with dead peers)
  WorldManager(const WorldManager&) = delete;
  WorldManager& operator=(const WorldManager&) = delete;

  // Joins (rank 0: creates) world `name` of `size` ranks, rendezvousing through `store`.
  // Errors: kInvalidArgument (empty/oversized name, rank outside [0,size), size < 1, size
  // disagreement with rank 0), kAlreadyExists (name active in this manager), kUnavailable
  // (store unreachable), kDeadlineExceeded (peers did not all arrive in init_timeout_ms).
  Status InitializeWorld(const std::string& name, int rank, int size, std::shared_ptr<Store> store,
                         WorldOptions options = WorldOptions::FromEnv());

  // Leaves the world: aborts its pending ops, releases its sockets and threads, marks the epoch
  // closed and deletes its keys. Returns within `deadline` even when peers are dead or hung
  // (store clean-up is skipped past the deadline). kNotFound for an unknown name.
  Status RemoveWorld(const std::string& name, Deadline deadline = Deadline::AfterMs(1'000));

  Result<WorldInfo> GetWorld(const std::string& name) const;
  std::vector<WorldInfo> ListWorlds() const;

  // Registers a callback for every state change of every world. Returns an id for removal.
  int AddStateCallback(WorldCallback callback);
  void RemoveStateCallback(int id);

  // Ops addressed by world name (see collectives/communicator.h for their semantics). An unknown
  // world gives kNotFound, a broken one kAborted naming the world and the cause.
  std::shared_ptr<Work> Send(const std::string& world, const Tensor& tensor, int dst,
                             uint32_t tag = 0, OpOptions opts = {});
  std::shared_ptr<Work> Recv(const std::string& world, Tensor& tensor, int src, uint32_t tag = 0,
                             OpOptions opts = {});
  std::shared_ptr<Work> Broadcast(const std::string& world, Tensor& tensor, int root,
                                  OpOptions opts = {});
  std::shared_ptr<Work> AllReduce(const std::string& world, Tensor& tensor,
                                  ReduceOp op = ReduceOp::kSum, OpOptions opts = {});
  std::shared_ptr<Work> AllGather(const std::string& world, const Tensor& input, Tensor& output,
                                  OpOptions opts = {});
  std::shared_ptr<Work> ReduceScatter(const std::string& world, const Tensor& input,
                                      Tensor& output, ReduceOp op = ReduceOp::kSum,
                                      OpOptions opts = {});
  std::shared_ptr<Work> Barrier(const std::string& world, OpOptions opts = {});

  // The world's communicator (shared), for callers that issue many ops on one world.
  Result<std::shared_ptr<Communicator>> GetCommunicator(const std::string& world) const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi
