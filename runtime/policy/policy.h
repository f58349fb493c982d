// Scaling policies: pure functions from (cluster state, metrics, forecast) to a plan.
//
//   ReactivePolicy policy(ReactiveOptions{});
//   Plan plan = policy.Decide(state, metrics, Forecast{});
//   for (const Action& a : plan.actions) std::visit(apply, a.op);   // the caller acts
//   state.memory = plan.memory;                                      // passed back next time
//
// The same policy object runs live in the coordinator (issue 5) and in the trace-driven
// simulator (issue 8); research policies (issue 9) implement the same interface. For that to be
// true a policy must be a pure function of its arguments:
//   - no clocks (the time is ClusterState::now_ms, on whatever clock the caller runs: wall time
//     live, simulated time in the simulator), no randomness that is not seeded from the inputs,
//     no I/O, no globals, no mutable members;
//   - whatever it must remember between decisions (hysteresis timers, the last configuration it
//     chose) lives in PolicyMemory: it is returned in Plan::memory and the caller passes it back
//     in ClusterState::memory on the next call. The coordinator stores it with the rest of its
//     durable state; the simulator keeps it per run.
// Same inputs -> the same Plan, bit for bit (every type here has operator==).
//
// Threading: these are plain values. Policy::Decide is const and touches nothing but its
// arguments, so one Policy object may decide for several callers concurrently.
//
// This layer depends on runtime/core only (DESIGN.md): no executor, world or gRPC types here.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/core/status.h"

namespace archi::policy {

// Milliseconds on the caller's clock. Only differences matter to a policy.
using TimeMs = int64_t;
inline constexpr TimeMs kNoTime = std::numeric_limits<TimeMs>::min();

using WorkerId = std::string;

// ---------------------------------------------------------------------------------------------
// Cluster state

// A worker process as the control plane knows it, whether idle or serving.
struct Worker {
  WorkerId id;
  std::string host;             // machine (replicas on one host share its failure domain)
  std::string kind;             // instance / unit kind ("p3.2xlarge", "cpu-8"); may be empty
  double capacity = 1.0;        // relative throughput; 1.0 = the reference worker
  double price_per_hour = 0.0;  // what keeping it costs (0 = free / unknown)
  friend bool operator==(const Worker&, const Worker&) = default;
};

enum class ReplicaState {
  kJoining,   // assigned, loading weights or linking; takes no traffic yet
  kReady,     // serving
  kDraining,  // finishing its queue, then leaves; takes no new traffic
};
std::string_view ReplicaStateName(ReplicaState s);

struct Replica {
  Worker worker;
  ReplicaState state = ReplicaState::kReady;
  TimeMs state_since_ms = kNoTime;  // when it entered `state` (kNoTime: unknown)
  friend bool operator==(const Replica&, const Replica&) = default;
};

struct Stage {
  int index = 0;  // position in the pipeline, 0 = first
  int layer_begin = 0;
  int layer_end = 0;  // [layer_begin, layer_end)
  std::vector<Replica> replicas;
  friend bool operator==(const Stage&, const Stage&) = default;
};

// Hysteresis timers of one stage (reactive policy; other policies may reuse them).
struct StageMemory {
  TimeMs over_since_ms = kNoTime;   // start of the current unbroken run of overload
  TimeMs under_since_ms = kNoTime;  // start of the current unbroken run of low utilisation
  TimeMs last_action_ms = kNoTime;  // last add or drain the policy planned on this stage
  friend bool operator==(const StageMemory&, const StageMemory&) = default;
};

// What a policy remembers between decisions. Returned in Plan::memory, passed back in
// ClusterState::memory. Empty on the first call (and after a policy change). Small and plain so
// the coordinator can persist it and the simulator can copy it.
struct PolicyMemory {
  std::map<int, StageMemory> stages;     // by Stage::index
  std::map<std::string, double> values;  // free-form, keys "<policy name>/<key>" (issue 9)
  friend bool operator==(const PolicyMemory&, const PolicyMemory&) = default;
};

struct ClusterState {
  TimeMs now_ms = 0;
  std::vector<Stage> stages;  // sorted by index (Validate checks)
  std::vector<Worker> idle;   // registered, serving nothing: the only workers a plan may add
  PolicyMemory memory;        // the previous Plan::memory
  friend bool operator==(const ClusterState&, const ClusterState&) = default;
};

// ---------------------------------------------------------------------------------------------
// Metrics (named apart from archi::executor::Metrics, the Prometheus registry)

struct ReplicaMetrics {
  WorkerId worker;
  double queue_depth = 0;  // micro-batches waiting at this replica
  double utilisation = 0;  // busy fraction of the window, 0..1
  double throughput_rps = 0;
  friend bool operator==(const ReplicaMetrics&, const ReplicaMetrics&) = default;
};

// Over the caller's measurement window (live: the last few seconds; simulator: the same).
struct StageMetrics {
  int stage = 0;           // Stage::index
  double queue_depth = 0;  // micro-batches waiting at the stage, summed over its replicas
  double p50_ms = 0;       // time a micro-batch spends at the stage (queue + compute)
  double p99_ms = 0;
  double throughput_rps = 0;
  double utilisation = 0;                // mean busy fraction of its ready replicas, 0..1
  std::vector<ReplicaMetrics> replicas;  // optional, per replica (used to pick whom to drain)
  friend bool operator==(const StageMetrics&, const StageMetrics&) = default;
};

struct FrontendMetrics {
  double admitted_rps = 0;
  double p99_ms = 0;      // end to end
  double slo_p99_ms = 0;  // the target; 0 = no latency SLO
  friend bool operator==(const FrontendMetrics&, const FrontendMetrics&) = default;
};

// One application (a request class with its own latency SLO) as the frontend sees it: its
// admitted rate over the window and its SLO. Multi-SLO batching (issue 9) groups applications.
struct AppMetrics {
  std::string app;
  double rate_rps = 0;
  double slo_ms = 0;  // 0 = none
  friend bool operator==(const AppMetrics&, const AppMetrics&) = default;
};

struct ClusterMetrics {
  std::vector<StageMetrics> stages;  // a stage without an entry has unknown metrics
  FrontendMetrics frontend;
  std::vector<AppMetrics> apps;  // optional, per application (empty: one anonymous class)
  friend bool operator==(const ClusterMetrics&, const ClusterMetrics&) = default;
};

// ---------------------------------------------------------------------------------------------
// Forecast (empty for reactive policies)

struct ForecastPoint {
  TimeMs at_ms = 0;
  double value = 0;
  friend bool operator==(const ForecastPoint&, const ForecastPoint&) = default;
};

struct Forecast {
  std::vector<ForecastPoint> available_workers;  // predicted usable workers, ascending at_ms
  std::vector<ForecastPoint> arrival_rps;        // predicted admitted request rate
  bool empty() const { return available_workers.empty() && arrival_rps.empty(); }
  friend bool operator==(const Forecast&, const Forecast&) = default;
};

// ---------------------------------------------------------------------------------------------
// Plan

// Assign an idle worker to `stage`: it becomes a joining replica, loads the stage's layers and
// links with its neighbours.
struct AddReplica {
  int stage = 0;
  WorkerId worker;
  friend bool operator==(const AddReplica&, const AddReplica&) = default;
};
// Drain a replica of `stage`: no new traffic, finish what it holds, then leave (never a kill).
struct DrainReplica {
  int stage = 0;
  WorkerId worker;
  friend bool operator==(const DrainReplica&, const DrainReplica&) = default;
};
// Share of a stage's traffic for the replicas of one worker kind (Worker::kind; "" and
// "default" are the same kind). Within a kind the router spreads as before (least loaded).
struct KindWeight {
  std::string kind;
  double weight = 0;  // >= 0; the weights of one SetRoutingWeights sum to 1
  friend bool operator==(const KindWeight&, const KindWeight&) = default;
};
// Route `stage`'s traffic (-1: every stage) over worker kinds by these weights; a kind not
// listed gets none while a listed kind has a ready replica (with none, the router falls back to
// every ready replica rather than hold the request). Empty weights: no preference (the default
// least-loaded routing over all replicas). Replaces the previous weights of that stage.
struct SetRoutingWeights {
  int stage = -1;
  std::vector<KindWeight> weights;
  std::string mode;  // for logs: "cost" / "capacity" (hetero routing)
  friend bool operator==(const SetRoutingWeights&, const SetRoutingWeights&) = default;
};
// One batcher at the frontend: requests of `apps` are batched together, up to `max_batch` per
// micro-batch, the first request waiting at most `timeout_ms` for the batch to fill.
struct BatchingGroup {
  std::vector<std::string> apps;  // AppMetrics::app names
  double slo_ms = 0;              // the tightest member's SLO
  int max_batch = 1;
  double timeout_ms = 0;
  std::vector<KindWeight> route;  // optional: kinds this group's micro-batches go to (combined)
  friend bool operator==(const BatchingGroup&, const BatchingGroup&) = default;
};
// Replace the frontend's batching groups (an application in no group is batched alone with the
// frontend's default batch size). Empty groups: back to the default batcher.
struct SetBatchingGroups {
  std::vector<BatchingGroup> groups;
  friend bool operator==(const SetBatchingGroups&, const SetBatchingGroups&) = default;
};
// std::visit at the call sites fails to compile until a new alternative is handled.
using ActionOp = std::variant<AddReplica, DrainReplica, SetRoutingWeights, SetBatchingGroups>;

struct Action {
  ActionOp op;
  std::string reason;  // for logs and event timelines: which rule fired, with its numbers
  friend bool operator==(const Action&, const Action&) = default;
};

// Something a policy wanted but could not do (no idle worker, at max replicas); for logs and
// for whoever provisions machines.
struct Unmet {
  int stage = 0;
  std::string reason;
  friend bool operator==(const Unmet&, const Unmet&) = default;
};

struct Plan {
  std::vector<Action> actions;  // in order; at most one per stage for the reactive policy
  std::vector<Unmet> unmet;
  TimeMs next_evaluation_ms = 0;  // when the policy wants to be called again (earlier is fine)
  PolicyMemory memory;            // pass back in ClusterState::memory
  friend bool operator==(const Plan&, const Plan&) = default;
};

// ---------------------------------------------------------------------------------------------

class Policy {
 public:
  virtual ~Policy() = default;
  // Stable identifier ("reactive"), used by --policy and as the PolicyMemory::values prefix.
  virtual std::string_view name() const = 0;
  // Pure (see the top of this file). Inputs are assumed to pass Validate(state).
  virtual Plan Decide(const ClusterState& state, const ClusterMetrics& metrics,
                      const Forecast& forecast) const = 0;
};

// Checks a state: stages sorted by unique index with non-empty layer ranges, every worker id
// unique across all replicas and the idle pool. kInvalidArgument naming the first problem.
Status Validate(const ClusterState& state);

// Checks a plan against the state it was decided on, so a caller can refuse a faulty policy's
// plan instead of acting on it: an added worker is in the idle pool and added once, a drained
// worker is a joining or ready replica of that stage and drained once, stages exist; routing
// weights name a stage that exists (or -1), are finite, >= 0, sum to 1 (within 1e-6) and name
// each kind once; batching groups have max_batch >= 1, timeout_ms >= 0, and name each
// application in one group at most.
Status ValidatePlan(const Plan& plan, const ClusterState& state);

// "add s1 w7 (reason)" / "drain s0 w3 (reason)" / "route s-1 cost cpu-8=0.75 cpu-2=0.25" /
// "batch [a,b]x8/120ms [c]x1/0ms".
std::string ToString(const Action& action);

}  // namespace archi::policy
