// Cost and capacity modes over heterogeneous deployment units (Biran & Kissos, 2025).
//
// A deployment unit is one (model, hardware, runtime) combination with measured max throughput,
// latency and cost per inference, and a number of instances available now. DecideRouting splits
// the demand over the units:
//
//   eligible    instances > 0, max_rps > 0, and latency within the SLO (when one is set)
//   cheap pool  eligible units with cost_per_inference <= (1 + cheap_pool_margin) x the cheapest
//   cost mode   weights over the cheap pool only, w_i ~ capacity_i / cost_i (inversely to cost,
//               scaled by how much the unit can take); the cheapest carries the most
//   capacity    weights over every eligible unit, w_i ~ capacity_i: every unit equally loaded
//   pressure    the busiest cheap unit's utilisation if cost-mode weights were used
//               (demand x w_i / capacity_i)
//
// Switching, with hysteresis (RoutingMemory carries the mode and a timer):
//   cost -> capacity      as soon as pressure >= enter_capacity_at (the cheap pool is running
//                         out), or on failover: a unit that carried traffic in the last decision
//                         is gone (no instances, or no longer listed);
//   capacity -> cost      only after pressure < leave_capacity_below at every decision for
//                         leave_after_ms (one decision at or above it restarts the wait).
// With enter > leave, demand hovering around either threshold cannot flip the mode back and
// forth.
//
// Routing weights are not an ActionOp yet: the frontend (live) or the simulator applies
// RoutingDecision::routes directly; docs/policies.md says how they become one.
//
// Pure functions; thread-safe.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/policy/policy.h"

namespace archi::policy {

struct DeploymentUnit {
  std::string name;  // unique, e.g. "llama3-8b/inf2/neuronx"
  std::string model;
  std::string hardware;
  std::string runtime;
  int instances = 0;      // available now; 0 = the kind has disappeared
  double max_rps = 0;     // measured max throughput of one instance
  double latency_ms = 0;  // measured latency at that throughput
  double cost_per_inference = 0;
  double capacity_rps() const { return instances > 0 ? instances * max_rps : 0.0; }
  friend bool operator==(const DeploymentUnit&, const DeploymentUnit&) = default;
};

enum class RoutingMode { kCost, kCapacity };
std::string_view RoutingModeName(RoutingMode m);

struct RoutingOptions {
  double cheap_pool_margin = 0.25;
  double enter_capacity_at = 0.85;
  double leave_capacity_below = 0.65;
  TimeMs leave_after_ms = 60'000;
  double latency_slo_ms = 0;  // 0 = no latency filter
  // kInvalidArgument unless 0 < leave < enter <= 1, margin >= 0, leave_after_ms >= 0.
  Status Validate() const;
  friend bool operator==(const RoutingOptions&, const RoutingOptions&) = default;
};

// What the router remembers between decisions (start: cost mode, nothing serving).
struct RoutingMemory {
  RoutingMode mode = RoutingMode::kCost;
  TimeMs calm_since_ms = kNoTime;    // start of the current run of pressure < leave (capacity)
  std::vector<std::string> serving;  // units with weight > 0 in the last decision, sorted
  friend bool operator==(const RoutingMemory&, const RoutingMemory&) = default;
};

struct UnitRoute {
  std::string unit;
  double weight = 0;       // share of the demand, sums to 1 over the routes when any is > 0
  double load_rps = 0;     // demand x weight (capped at the unit's capacity in `served`)
  double utilisation = 0;  // load / capacity
  friend bool operator==(const UnitRoute&, const UnitRoute&) = default;
};

struct RoutingDecision {
  RoutingMode mode = RoutingMode::kCost;
  std::vector<UnitRoute> routes;  // one per input unit, in input order
  double pressure = 0;            // see the top of this file
  double served_rps = 0;          // min(demand, capacity of the units given traffic)
  double unserved_rps = 0;        // the rest (more demand than the eligible units can take)
  double cost_per_s = 0;          // sum over units of served load x cost per inference
  std::vector<std::string> lost;  // failover: units that served last time and are gone now
  std::string reason;
  RoutingMemory memory;  // pass back next time
  friend bool operator==(const RoutingDecision&, const RoutingDecision&) = default;
};

RoutingDecision DecideRouting(const std::vector<DeploymentUnit>& units, double demand_rps,
                              TimeMs now_ms, const RoutingMemory& previous,
                              const RoutingOptions& options);

// Deployment units from workers (live: CPU workers of different thread counts and declared
// prices): one unit per Worker::kind, in order of first appearance; instances = workers of that
// kind; max_rps = their mean capacity x reference_rps (capacity 1.0 = the reference worker);
// cost_per_inference = mean price_per_hour / 3600 / max_rps; latency_ms as given per kind
// (0 when absent). Workers with an empty kind form the unit "default".
std::vector<DeploymentUnit> UnitsFromWorkers(const std::vector<Worker>& workers,
                                             double reference_rps,
                                             const std::map<std::string, double>& latency_ms = {});

// RoutingMemory inside PolicyMemory::values under "<prefix>/mode", "<prefix>/calm_since_ms",
// "<prefix>/serving/<unit>", so a Policy that routes can keep it with the rest of its memory.
void StoreRoutingMemory(const RoutingMemory& m, std::string_view prefix, PolicyMemory* out);
RoutingMemory LoadRoutingMemory(const PolicyMemory& in, std::string_view prefix);

}  // namespace archi::policy
