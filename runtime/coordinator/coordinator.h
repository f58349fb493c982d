// Coordinator: the control plane of one pipeline (proto/coordinator.proto).
//
// Workers register (id, host, capacity, ...) and get a fencing epoch; they then hold one session
// stream: heartbeats and reports up, assignments and world directives down. The coordinator keeps
// a target number of replicas per stage and assigns idle workers to stages until every stage has
// its target; it drains extras. It declares a worker dead when its session breaks (a killed
// process closes its connection: milliseconds), when it misses heartbeats for
// heartbeat_timeout_ms (hung, SIGSTOP, partitioned), or when a neighbour reports a broken world to
// it and its last heartbeat is older than suspect_ms. A dead worker's epoch is retired: its
// registry entry is marked gone (its neighbours drop its worlds and re-send its unacknowledged
// micro-batches, see runtime/executor/node.h), its neighbours are told to remove those worlds at
// once, its session is ended, and anything it sends later with that epoch is refused. A
// replacement comes from the idle pool; when the pool is empty and a stage has no replica left,
// the coordinator re-plans: it moves one replica from the stage with the most.
//
// Every step is an event with a wall-clock timestamp; each failure gets a Recovery record
// (detected, decided, worlds removed, replacement ready, traffic restored).
//
// Scaling: manual (admin Scale/Drain) and automatic through a policy (runtime/policy: a pure
// function of cluster state, metrics and forecast; "reactive" for now), evaluated every
// policy_interval_ms.
//
// The coordinator owns no data-plane state; the rendezvous store it is given holds the member
// registry the data plane links from. Embedded in the frontend process by default (the frontend
// registers services() on its own gRPC server), or standalone (archi-coordinator).
//
// Threads: gRPC callback threads (never block: no store I/O under them) and one control thread
// (timeouts, reconcile, policy, store writes, state-log flushes and snapshots). With a state dir,
// Register waits for the fdatasync of the new epoch (group commit) before answering, outside the
// coordinator's lock. Every public method is thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/core/store.h"
#include "runtime/executor/plan.h"
#include "runtime/policy/policy.h"
#include "runtime/policy/registry.h"
#include "world/store_server.h"

namespace grpc {
class Service;
}
namespace archi::executor {
class Metrics;
}

namespace archi::coordinator {

class StateLog;
struct WalContents;

struct CoordinatorOptions {
  std::string token;  // shared secret; empty: no authentication (a warning is logged)
  int heartbeat_interval_ms = 250;
  int heartbeat_timeout_ms = 1000;  // env ARCHI_HEARTBEAT_TIMEOUT_MS
  // A neighbour's broken-world report declares its peer dead when the peer's last heartbeat is
  // older than this (a healthy peer keeps heartbeating; the reporter may be the broken one).
  int suspect_ms = 400;
  std::vector<int> replicas;  // target replicas per stage; empty: 1 each
  std::string policy = "none";  // "none" or a name of policy::PolicyNames() (registry.h)
  // Options of the policies (every policy made by name: --policy, SetPolicy, a restored state),
  // e.g. cost_capacity.reference_rps (archi-coordinator --reference-rps).
  policy::PolicyOptions policy_options;
  double slo_p99_ms = 0;        // end-to-end p99 target for the policy (0: none)
  int64_t policy_interval_ms = 1000;
  size_t max_events = 10'000;  // oldest dropped beyond this
  size_t max_dead = 256;       // dead workers kept for status
  // Durable state (runtime/coordinator/wal.h, state_journal.h): live workers (spec, epoch, state,
  // stage, assignment, cordon), targets, epoch and assignment counters, policy and its memory,
  // recoveries, kept as a write-ahead log + snapshots in this directory. A coordinator restarted
  // on it treats every loaded worker as alive but unconfirmed for resume_grace_ms: one that
  // reconnects resumes its epoch and assignment unchanged; the silent ones are then declared
  // dead. The state's targets and policy win over `replicas` and `policy`. Empty: nothing
  // survives a restart (every worker's resume is refused; they stop serving and register afresh).
  std::string state_dir;
  // Instead of state_dir: opens another state store and fills what it held (archi-coordinator
  // --state-etcd: an EtcdStateLog, etcd_state_log.h, once this process won the leadership). Once
  // the log's Writable() fails (leadership lost) the coordinator is fenced: it refuses every RPC
  // (UNAVAILABLE), ends the sessions and decides and writes nothing more.
  std::function<Result<std::unique_ptr<StateLog>>(WalContents*)> state_log;
  int resume_grace_ms = 0;          // 0: 3 heartbeat timeouts, at least 15 s
  uint64_t snapshot_every = 10'000;  // log records between snapshots
  // Testing: on every control-loop pass, recompute the incremental indexes (per-stage counts,
  // idle pool, heartbeat deadlines: worker_index.h) from the live workers and abort on a
  // difference. O(workers) per pass; off in the binaries.
  bool verify_indexes = false;
};

// Validates options against a plan (replica list length, ranges). kInvalidArgument naming it.
Status ValidateOptions(const CoordinatorOptions& options, const executor::PipelinePlan& plan);

class Coordinator {
 public:
  // `store` holds the member registry; `store_address` is what workers are told to use.
  static Result<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options,
                                                     executor::PipelinePlan plan,
                                                     std::shared_ptr<Store> store,
                                                     std::string store_address);
  ~Coordinator();  // Shutdown()

  // The gRPC services (Coordinator, CoordinatorAdmin) to register on a server. Valid for the life
  // of this object; the server must be shut down before this object is destroyed.
  std::vector<grpc::Service*> services();

  // The guard of the rendezvous store the coordinator hosts (StoreServer::SetAuthorizer): with a
  // token, members must present the credential of their assignment (Assignment.
  // member_credential) and may write only their own registry entry and lease, and only worlds
  // that pair them with a live (or just dead) member of an adjacent stage or the frontend; a
  // retired epoch is refused. Null without a token. Valid for the life of this object.
  StoreAuthorizer store_authorizer();

  // Registers the coordinator's Prometheus metrics in `metrics` (the frontend's, or
  // archi-coordinator --metrics-listen): workers by state, target/ready replicas per stage,
  // registrations, deaths by cause, recoveries and their time, policy actions and Decide time.
  // `metrics` must outlive this object. Without a call the metrics go nowhere.
  void SetMetrics(executor::Metrics* metrics);

  // Embedded in a frontend: end-to-end metrics for the policy (admitted rate, p99). Optional.
  void SetFrontendMetrics(std::function<policy::FrontendMetrics()> source);

  // Ends every session (workers keep serving and reconnect to the next coordinator) and stops
  // the control thread.
  void Shutdown();

  struct Impl;

 private:
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::coordinator
