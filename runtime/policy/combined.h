// One planner that combines three of the research policies in one decision (issue 9 item 5):
//
//   configuration  Parcae's choice for the preemptible pool: dp pipelines of depth pp and their
//                  liveput (expected requests/s after the preemptions it foresees), e.g.
//                  PlanLiveput(...).first and its liveput in the first interval;
//   routing        Biran & Kissos' cost / capacity modes over heterogeneous deployment units:
//                  the preemptible pipelines become one unit ("spot": dp instances of
//                  liveput / dp req/s each, so routing never counts on capacity the forecast
//                  says will be preempted) beside the other units (on-demand, CPU workers...);
//   batching       HarmonyBatch's multi-SLO groups (PlanMultiSloBatching): each group has a
//                  rate and an SLO; a group may only be routed to units whose latency plus the
//                  group's batching wait (BatchGroup::unit.timeout_s) fits its SLO.
//
// CombinedPlan: the routing decision is made once for the total demand (mode and hysteresis as
// in DecideRouting); then the groups, tightest SLO first, take the load routing gave each unit,
// only from units that meet their SLO, in proportion to the routed load still free on them;
// what a group cannot place on routed load it takes from eligible units' spare capacity
// (capacity - routed load); the rest is unserved. So a tight group is never sent to a slow unit
// even if routing weights would, and a loose group soaks up the slow/cheap capacity.
//
// Pure; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "runtime/policy/harmony_batch.h"
#include "runtime/policy/hetero_routing.h"
#include "runtime/policy/parcae.h"

namespace archi::policy {

struct CombinedInput {
  // Parcae's configuration decision for the preemptible pool.
  ParallelConfig config;
  double liveput_rps = 0;  // expected req/s of all dp pipelines together (<= their throughput)
  double spot_latency_ms = 0;            // end to end through one pipeline
  double spot_cost_per_inference = 0;
  std::string spot_unit = "spot";
  // The other deployment units (any instances, including 0: a vanished kind).
  std::vector<DeploymentUnit> units;
  // Multi-SLO batching groups, in SLO order (PlanMultiSloBatching(...).groups).
  std::vector<BatchGroup> groups;
  RoutingOptions routing;
  RoutingMemory memory;  // from the last CombinedDecision
  TimeMs now_ms = 0;
};

struct GroupRoute {
  int group = 0;       // index into CombinedInput::groups
  double rate_rps = 0;
  double slo_s = 0;
  std::vector<double> load_rps;  // per unit of CombinedDecision::units
  double served_rps = 0;
  double unserved_rps = 0;
  friend bool operator==(const GroupRoute&, const GroupRoute&) = default;
};

struct CombinedDecision {
  ParallelConfig config;
  std::vector<DeploymentUnit> units;  // the spot unit first, then CombinedInput::units
  RoutingDecision routing;            // over `units` for the total demand
  std::vector<GroupRoute> groups;     // one per input group, in input order
  double demand_rps = 0;
  double served_rps = 0;    // sum over groups, each within its SLO by construction
  double unserved_rps = 0;
  double cost_per_s = 0;    // sum of group loads x the unit's cost per inference
  friend bool operator==(const CombinedDecision&, const CombinedDecision&) = default;
};

// The spot unit for a configuration: dp instances of liveput / dp req/s (none when dp = 0).
DeploymentUnit SpotUnit(const CombinedInput& in);

CombinedDecision CombinedPlan(const CombinedInput& in);

}  // namespace archi::policy
