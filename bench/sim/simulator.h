// The discrete-event simulator of an Archipelago pipeline cluster (docs/simulator.md).
//
//   Simulator sim(options, perf_model, node_trace, arrivals, policy);
//   SimResult r = sim.Run();
//
// Model. The model is split into `stages` pipeline stages; every node (one instance) can host
// one replica of one stage. Nodes join and leave per the node trace: a removal is announced
// `warning_ms` before it happens (the replica stops taking traffic and hands its queue to the
// other replicas of its stage), and at the removal whatever the node still serves is resent to
// another replica (or lost with resend off). Which idle node serves which stage is decided by a
// runtime/policy Policy, called exactly as the live coordinator calls it (docs/policies.md):
// at Plan::next_evaluation_ms and after every batch of membership changes, with the simulated
// clock as now_ms, ClusterMetrics aggregated from the simulated queues over the last window,
// PolicyMemory passed back; AddReplica makes the node a joining replica that is ready after
// world_create_ms + weight_load_ms; DrainReplica stops its traffic and returns the node to the
// idle pool once its queue is empty. A request goes through the stages in order; at each it is
// routed to one ready replica (power of two choices on queue length per capacity), waits in
// FIFO order, and is served in batches of up to max_batch; between stages it spends the model's
// transfer time. A stage with no ready replica holds its requests until one is ready.
//
// Accounting: every arrival ends as exactly one of served, timed_out (its deadline, arrival +
// timeout_ms, passed before it finished: dropped when it reaches the head of a queue, or
// counted at completion) or lost (refused at admission because max_in_system requests were
// inside, or in service on a node removed with resend off). After the last arrival the
// simulation runs until the system is empty or every deadline has passed (what is left then is
// timed out), so arrived == served + timed_out + lost always.
//
// Determinism: all randomness comes from std::mt19937_64 streams seeded from `seed`; no wall
// clock is read. Events with equal times run in the order they were scheduled.
//
// Cost: the hot path allocates nothing per request (a request pool and ring buffers that only
// grow), events live in one binary heap, metrics are aggregated per window.
//
// Thread safety: one Simulator per thread; the Policy must be const-callable (all are).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/sim/fit.h"
#include "bench/sim/perf_model.h"
#include "bench/sim/traces.h"
#include "runtime/policy/policy.h"

namespace archi::sim {

struct ReconfigCosts {
  // Creating the new replica's worlds with its neighbours (concurrently): archi-bench faults
  // measured InitializeWorld at a median of 12-13 ms on loopback (docs/benchmarks.md).
  double world_create_ms = 13;
  // Loading one stage's weights onto a new replica. No measurement of ours at model scale yet:
  // 5 s stands for a few GB per stage at ~2 GB/s; set it from your own storage.
  double weight_load_ms = 5000;
  // A full re-partition (every replica reloads): charged when a policy plans one; the current
  // Plan has no such action (issue 9), so it is reported but never used yet.
  double repartition_ms = 60000;
};

// A kind of node (issue 9): its price, its speed relative to the performance model (a stage
// takes StageMs / capacity + extra_ms) and its share of the trace's nodes (a node gets the kind
// at position FNV-1a(node id) mod (sum of shares) of the shares laid end to end: shares 3,1 ->
// 0,0,0,1; a hash rather than the order of appearance, which would line kinds up with the
// round-robin stage placement).
struct NodeKind {
  std::string name;
  double price_per_hour = 1.0;
  double capacity = 1.0;
  double extra_ms = 0;
  int share = 1;
};

// An application (a request class with its own SLO): each arrival belongs to one, drawn with
// probability share / (sum of shares) from its own random stream (arrival times are unchanged).
struct AppSpec {
  std::string name;
  double share = 1;
  double slo_ms = 0;  // 0: SimOptions::slo_ms
};

struct SimOptions {
  int stages = 4;
  int max_batch = 1;
  double timeout_ms = 60'000;     // deadline after arrival
  double slo_ms = 0;              // latency SLO for attainment (0: the timeout); also the
                                  // frontend SLO the policy sees
  int64_t warning_ms = 30'000;    // preemption notice
  bool resend = true;             // resend what a removed node was serving
  size_t max_in_system = 10'000'000;  // admission limit; arrivals beyond it are lost
  int64_t interval_ms = 60'000;   // timeline rows (the policy's metrics window is the time since
                                  // its previous decision)
  double price_per_hour = 1.0;    // per node held (present in the trace), idle or not
  std::string instance_kind;      // Worker::kind
  bool initial_fill = true;       // nodes present at t=0 start as ready replicas, round-robin
                                  // over the stages (the deployment's first plan)
  double service_cv = 0;          // per-batch service time noise: gamma with mean 1 and this CV
                                  // (not with a fitted model, which has its own)
  ReconfigCosts costs;
  uint64_t seed = 1;
  int64_t end_ms = -1;            // last arrival time; -1: the node trace's end
  bool record_latencies = false;  // keep every served latency (tests)
  // Every service completion through the event heap (the reference path; tests compare it to
  // the default, which keeps a deterministic model's completions in per-duration FIFOs).
  bool heap_only = false;
  // Model archi-coordinator's own reconcile loop on top of the policy, as the live system runs
  // it (simulator.cc, "the live coordinator's reconcile loop"): per-stage targets kept from the
  // idle pool (a preempted or noticed replica is replaced at once), an emptied stage borrowing a
  // replica, and a replica under notice released and cordoned once its work is done (it shows
  // as idle). With the "static" policy this is the live coordinator's --policy none.
  bool coordinator_reconcile = false;
  // Availability forecaster for proactive policies (docs/policies.md: forecasters run outside
  // the policy): called before each decision with the usable nodes (present and not under a
  // preemption notice) at every whole minute so far; its Forecast goes to Decide. Empty: every
  // decision gets Forecast{} (the reactive policy reads none).
  std::function<policy::Forecast(const std::vector<double>& per_minute, policy::TimeMs now_ms)>
      forecaster;
  // Called about every 2^20 events with (simulated now, end); for progress output.
  std::function<void(double, double)> progress;
  // Heterogeneous nodes and applications (issue 9). Empty kinds: one kind, instance_kind at
  // price_per_hour, capacity 1. With kinds, cost = the sum over nodes of their price while
  // present, and SetRoutingWeights routes over kinds. vanish_kind: every node of that kind is
  // removed at vanish_at_ms (after a notice of warning_ms) and none of that kind joins after.
  // Empty apps: one anonymous class. With apps, SetBatchingGroups batches at the frontend: a
  // group's requests wait (at most its timeout after the first) until max_batch have come,
  // then go as one micro-batch; a replica batches only requests of one group (up to its
  // max_batch). The policy sees ClusterMetrics::apps (each app's arrival rate over the last
  // complete 30 s bucket, and its SLO).
  std::vector<NodeKind> kinds;
  std::map<std::string, std::string> node_kind_of;  // node id -> kind name (instead of the hash)
  std::string vanish_kind;
  int64_t vanish_at_ms = -1;
  std::vector<AppSpec> apps;
};

// Where requests come from: explicit times (a trace, already scaled), gaps drawn from a
// distribution, or a Poisson process whose rate follows a per-minute schedule (repeated), up to
// max_requests (0 = until end_ms).
struct ArrivalSpec {
  std::vector<double> times_ms;             // ascending
  std::optional<Distribution> gap_ms;       // used when times_ms is empty
  std::vector<double> rate_per_minute;      // req/s in minute m % size; used when both are empty
  size_t max_requests = 0;
  double start_ms = 0;                      // first arrival no earlier than this
};

struct IntervalRow {
  double t_ms = 0;                    // end of the interval
  uint64_t arrived = 0, served = 0, timed_out = 0, lost = 0;
  uint64_t within_slo = 0;
  double p50_ms = 0, p99_ms = 0;      // of the interval's served requests (histogram, ~1%)
  int nodes = 0, ready = 0, joining = 0, draining = 0, idle = 0;
  uint64_t in_system = 0;
  double cost = 0;                    // cumulative
};

struct ReconfigEvent {
  double t_ms = 0;
  std::string kind;  // add, ready, drain, drained, preempt_notice, preempt, preempt_idle, join
  int stage = -1;
  std::string worker;
  std::string reason;
};

struct SimResult {
  uint64_t arrived = 0, served = 0, timed_out = 0, lost_admission = 0, lost_preempted = 0;
  uint64_t resent = 0, rerouted = 0, within_slo = 0;
  uint64_t lost() const { return lost_admission + lost_preempted; }
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0, mean_ms = 0;
  double slo_ms = 0;
  double slo_attainment = 0;     // within_slo / arrived
  double node_hours = 0, cost = 0;
  double end_ms = 0;             // when the last request left
  uint64_t decisions = 0, unmet = 0, rejected_plans = 0, events = 0;
  std::map<std::string, uint64_t> reconfigs;  // by ReconfigEvent::kind
  std::vector<IntervalRow> timeline;
  std::vector<ReconfigEvent> log;
  std::vector<double> latencies;  // when record_latencies
  // Issue 9: busy time x the price of the node that served (what a pay-per-use platform would
  // charge; HarmonyBatch's cost model), and per application.
  double usage_cost = 0;
  struct App {
    std::string name;
    double slo_ms = 0;
    uint64_t arrived = 0, served = 0, within_slo = 0;
    uint64_t batches = 0, batched = 0;  // micro-batches served at the first stage, their requests
  };
  std::vector<App> apps;
};

// Each node of `trace` becomes `k` nodes ("<id>.<i>", i < k) with the same events: a trace of
// 32 nodes scaled by 313 peaks at 10,016.
NodeTrace ScaleTrace(const NodeTrace& trace, int k);

class Simulator {
 public:
  // Checks the options against the model (stages, batch sizes); kInvalidArgument otherwise.
  static Result<std::unique_ptr<Simulator>> Create(SimOptions options, PerfModel model,
                                                   NodeTrace trace, ArrivalSpec arrivals,
                                                   const policy::Policy* policy);
  ~Simulator();
  SimResult Run();

 private:
  struct Impl;
  explicit Simulator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::sim
