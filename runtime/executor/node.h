// PipelineNode: one member of a pipeline (a stage replica, or the frontend) on the data plane.
//
// Membership. Members register under "archi/pipeline/<name>/members/<id>" in the rendezvous store
// (JSON: id, stage, incarnation, state, pid, counters). The frontend is stage -1: the source of
// stage 0 and the sink of the last stage. Every member polls the registry and creates one pair
// world (size 2, rank 0 = upstream) with each member of its adjacent stages; the world name
// "<pipeline>:<up id>.<up inc>:<down id>.<down inc>" is computed identically by both sides, so no
// one has to tell them. A member is "joining" until it has an upstream and a downstream link, then
// "ready"; "draining" (set by an admin) stops upstreams from routing to it; "gone" marks one that
// left, or that the frontend found dead (its liveness lease expired, or its pid vanished on this
// host): nobody links with it again, and a live member that finds itself "gone" (it was hung, e.g.
// SIGSTOP, and its neighbours have re-sent its work) is fenced and must stop.
//
// Custody (no request lost). A micro-batch is sent downstream under a per-link sequence number
// (hop_seq) and kept, payload included, until the downstream acknowledges it; the downstream
// acknowledges only after its own output was acknowledged further down, and the frontend
// acknowledges a result once it has answered the requests. So every hop holds a copy until the
// result reached the frontend. When a link breaks, the unacknowledged micro-batches on it are
// re-sent (attempt + 1) to another replica of that stage, or wait (bounded by their deadline) until
// one appears; duplicates that result are dropped by request id at the frontend.
//
// Routing: least unacknowledged micro-batches among usable links (round-robin among ties), with at
// most max_inflight_per_link each (backpressure: beyond that, batches queue in the node). When the
// coordinator has published routing weights per worker kind (routing.h: RoutingKey, read with the
// membership poll), the kind is chosen by those weights first (KindPicker), then the least loaded
// link of that kind.
//
// Threads: one reader thread per link, one membership thread, short-lived connect threads. The
// batch handler runs on a reader thread and must not block for long. Every public method is
// thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/deadline.h"
#include "runtime/core/status.h"
#include "runtime/core/store.h"
#include "runtime/executor/routing.h"
#include "runtime/executor/wire.h"
#include "world/world_manager.h"

namespace archi::executor {

struct Link;

// Where a received micro-batch came from: acknowledging it goes back on that link.
struct Origin {
  std::shared_ptr<Link> link;  // null: the node's own batch (the frontend's requests)
  uint64_t hop_seq = 0;
};

struct MemberInfo {
  std::string id;
  int stage = 0;  // -1: frontend
  std::string incarnation;
  std::string state;  // joining | ready | draining | gone
  int pid = 0;
  std::string host;      // gethostname() of the member
  std::string kind;      // worker kind (NodeOptions::kind); routing weights are per kind
  uint64_t batches = 0;  // micro-batches received
  uint64_t resent = 0;   // micro-batches it re-sent after a downstream link broke
  int64_t ready_unix_ms = 0;
  int64_t first_batch_unix_ms = 0;

  std::string ToJson() const;
  static Result<MemberInfo> FromJson(const std::string& json);
};

struct NodeOptions {
  std::string pipeline;
  std::string id;  // [A-Za-z0-9_-]{1,24}
  int stage = 0;   // -1: the frontend
  int num_stages = 1;
  std::string kind;  // written to the registry (MemberInfo::kind); "" = "default"
  int max_inflight_per_link = 4;
  std::shared_ptr<Store> store;
  WorldOptions world = WorldOptions::FromEnv();
  int64_t poll_ms = 50;
  // Liveness lease: every member bumps "alive/<id>.<inc>" every lease_interval_ms; the frontend
  // (stage -1) marks a member gone when its counter has not moved for lease_timeout_ms, or at
  // once when it ran on this host and its pid no longer exists. Env: ARCHI_MEMBER_LEASE_MS.
  int64_t lease_interval_ms = 200;
  // Workers: the plan (JSON) they loaded. If the store's plan changes (a new frontend with another
  // plan under the same name), the member is fenced: its layers no longer fit. Empty: no check.
  std::string plan_json;
  int64_t lease_timeout_ms = 3000;
  // The member incarnation (part of every world name). Empty: a random one. A coordinator passes
  // its fencing epoch here, so a retired epoch can never link again.
  std::string incarnation;
  // Called (on a reader thread, without the node's lock) when a link to a neighbour breaks
  // without a drain: the worker agent reports it to the coordinator. May be empty.
  std::function<void(const std::string& world, const MemberInfo& peer, const Status& why)>
      on_link_broken;
};

struct LinkStats {
  std::string peer_id;
  std::string peer_incarnation;
  int peer_stage = 0;
  bool downstream = false;
  int outstanding = 0;
  uint64_t batches_sent = 0;
  bool closing = false;
};

struct NodeStats {
  uint64_t batches_received = 0;
  uint64_t batches_forwarded = 0;
  uint64_t batches_resent = 0;
  uint64_t links_broken = 0;
  size_t inflight = 0;
  size_t pending = 0;
};

std::string MembersPrefix(const std::string& pipeline);  // "archi/pipeline/<name>/members/"
std::string PlanKey(const std::string& pipeline);        // "archi/pipeline/<name>/plan"
std::string AlivePrefix(const std::string& pipeline);    // "archi/pipeline/<name>/alive/"
Status ValidateMemberId(const std::string& id);

// Sets the registry state of member `id` ("draining" or "gone") by compare-and-set, so a member's
// own counter updates never undo it. `incarnation` non-empty: only that incarnation. kNotFound if
// there is no such member; OK without a change when it is already in that state (or gone).
// Used by the frontend's admin and the coordinator.
Status SetMemberState(Store& store, const std::string& pipeline, const std::string& id,
                      const std::string& incarnation, const std::string& state);

class PipelineNode {
 public:
  using BatchHandler = std::function<void(Batch&& batch, Origin origin)>;

  PipelineNode(NodeOptions options, BatchHandler on_batch);
  ~PipelineNode();  // Stop()
  PipelineNode(const PipelineNode&) = delete;
  PipelineNode& operator=(const PipelineNode&) = delete;

  // Registers (state "joining"; kAlreadyExists if a live member has this id) and starts linking.
  Status Start();
  // Removes every world, deletes the registration. Bounded by the world deadlines.
  void Stop();

  // Sends `batch` to a replica of the next stage, keeping custody until it is acknowledged; then
  // acknowledges `origin`. Never blocks on the network.
  void Forward(Batch&& batch, Origin origin);
  // Acknowledges a micro-batch to its upstream without forwarding anything (dropped as expired,
  // or the frontend has answered its requests).
  void Ack(const Origin& origin);

  // Breaks every link with member `id` of `incarnation` at once (its unacknowledged micro-batches
  // are re-sent elsewhere) and never links with it again: the coordinator declared it dead.
  void DropPeer(const std::string& id, const std::string& incarnation, const std::string& why);

  // Marks this member draining in the registry (upstreams then stop routing to it).
  Status BeginDrain();
  bool draining() const { return draining_.load(); }
  // Draining, every upstream link has said kClose (or is gone), nothing in flight or pending.
  bool Drained() const;
  // A neighbour marked this member gone: it must stop (its batches are being re-sent elsewhere).
  bool fenced() const { return fenced_.load(); }

  NodeStats stats() const;
  std::vector<LinkStats> links() const;
  // This member's registry state as last written or read (joining | ready | draining | gone).
  std::string state() const;
  const NodeOptions& options() const { return options_; }
  const std::string& incarnation() const { return incarnation_; }

 private:
  struct InFlight;
  struct Peer;
  void MembershipLoop(std::stop_token st);
  void Connect(MemberInfo peer, bool downstream);
  void ReaderLoop(std::shared_ptr<Link> link);
  void OnAck(const std::shared_ptr<Link>& link, uint64_t hop_seq);
  void OnLinkBroken(const std::shared_ptr<Link>& link, const Status& why);
  // Sends `e` or, when no link may take it now, queues it in pending_ (at the back, or at the
  // front with `front`). True when sent.
  bool DispatchLocked(InFlight&& e, bool front = false);
  void ReadRoutingWeights();
  void FlushPendingLocked();
  void SendBatchLocked(Link& link, InFlight& e);
  void SendControlLocked(Link& link, MsgKind kind, uint64_t hop_seq);
  void ExpirePendingLocked();
  Status WriteSelf(const std::string& state);
  void MarkGone(const MemberInfo& peer, const std::string& why);
  void KeepRegistry(const std::map<std::string, MemberInfo>& members);
  int UpstreamStage() const;
  int DownstreamStage() const;
  std::string WorldName(const std::string& up_id, const std::string& up_inc,
                        const std::string& down_id, const std::string& down_inc) const;

  NodeOptions options_;
  BatchHandler on_batch_;
  std::string incarnation_;
  std::string self_key_;
  std::unique_ptr<WorldManager> worlds_;

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Link>> links_;  // usable links (world ready, reader running)
  std::vector<std::shared_ptr<Link>> dead_;   // broken or closed: reader to join, world to remove
  std::vector<std::string> connecting_;       // world names being initialised
  std::vector<std::string> failed_;           // "id.inc" of peers never to link again
  std::vector<std::unique_ptr<InFlight>> pending_;          // waiting for a link with credit
  std::map<uint64_t, std::unique_ptr<InFlight>> inflight_;  // by hop_seq
  uint64_t next_hop_seq_ = 1;
  size_t rr_ = 0;
  KindPicker picker_;                 // weights for the downstream stage
  std::string routing_raw_;           // the routing key's value as last read
  int64_t last_routing_read_ms_ = 0;  // membership thread only
  NodeStats stats_;
  std::string self_raw_;  // our registry value as last written or read
  MemberInfo self_;
  int64_t last_stats_write_ms_ = 0;
  uint64_t written_batches_ = 0;
  int64_t last_lease_ms_ = 0;
  int64_t last_plan_check_ms_ = 0;
  bool registry_warned_ = false;  // membership thread only
  // Keeper (frontend): per member "id.inc", the last alive counter seen and when it moved.
  std::map<std::string, std::pair<std::string, int64_t>> leases_;

  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> fenced_{false};
  struct ConnectTask {
    std::shared_ptr<std::atomic<bool>> done;
    std::jthread thread;
  };
  std::vector<ConnectTask> connect_threads_;  // guarded by mu_
  std::jthread membership_thread_;
};

}  // namespace archi::executor
