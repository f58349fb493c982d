// CombinedPlan: Parcae's configuration + cost/capacity routing + multi-SLO groups, by hand.
#include "runtime/policy/combined.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace archi::policy {
namespace {

BatchGroup Group(double rate, double slo_s, double timeout_s) {
  BatchGroup g;
  g.rate_rps = rate;
  g.slo_s = slo_s;
  g.unit.timeout_s = timeout_s;
  return g;
}

DeploymentUnit Unit(const char* name, int instances, double max_rps, double latency_ms,
                    double cost) {
  DeploymentUnit u;
  u.name = name;
  u.instances = instances;
  u.max_rps = max_rps;
  u.latency_ms = latency_ms;
  u.cost_per_inference = cost;
  return u;
}

// The case worked by hand (docs/policies.md, "One planner that combines them"):
//   spot: Parcae chose 4 pipelines whose liveput is 60 req/s (15 each), 200 ms, cost 1;
//   cpu:  2 x 20 req/s, 1,500 ms, cost 1;  od (on demand): 1 x 50 req/s, 100 ms, cost 4;
//   groups: tight 30 req/s, SLO 0.5 s, batching wait 0.1 s; loose 50 req/s, SLO 3 s, wait 0.5 s.
CombinedInput Case() {
  CombinedInput in;
  in.config = {4, 4};
  in.liveput_rps = 60;
  in.spot_latency_ms = 200;
  in.spot_cost_per_inference = 1;
  in.units = {Unit("cpu", 2, 20, 1500, 1), Unit("od", 1, 50, 100, 4)};
  in.groups = {Group(30, 0.5, 0.1), Group(50, 3.0, 0.5)};
  in.now_ms = 1'000;
  return in;
}

TEST(CombinedPlan, RoutesTightGroupsToFastUnitsAndLooseOnesToTheRest) {
  const CombinedDecision d = CombinedPlan(Case());
  ASSERT_EQ(d.units.size(), 3u);
  EXPECT_EQ(d.units[0].name, "spot");
  EXPECT_EQ(d.units[0].instances, 4);
  EXPECT_DOUBLE_EQ(d.units[0].max_rps, 15.0);
  // Routing, total 80 req/s: cheap pool = spot and cpu (od costs 4 > 1.25); cost-mode weights
  // ~ capacity / cost = 60 : 40 -> loads 48 and 32, pressure 0.8 < 0.85: cost mode.
  EXPECT_EQ(d.routing.mode, RoutingMode::kCost);
  EXPECT_NEAR(d.routing.routes[0].load_rps, 48, 1e-9);
  EXPECT_NEAR(d.routing.routes[1].load_rps, 32, 1e-9);
  EXPECT_NEAR(d.routing.routes[2].load_rps, 0, 1e-9);
  // Tight group (0.5 s): spot (0.2 + 0.1) and od (0.1 + 0.1) qualify, cpu (1.5 + 0.1) does not;
  // it takes 30 of spot's routed 48. Loose group (3 s): everything qualifies; it takes the 18
  // left on spot and cpu's 32.
  EXPECT_NEAR(d.groups[0].load_rps[0], 30, 1e-9);
  EXPECT_NEAR(d.groups[0].load_rps[1], 0, 1e-9);
  EXPECT_NEAR(d.groups[0].load_rps[2], 0, 1e-9);
  EXPECT_NEAR(d.groups[1].load_rps[0], 18, 1e-9);
  EXPECT_NEAR(d.groups[1].load_rps[1], 32, 1e-9);
  EXPECT_NEAR(d.groups[1].load_rps[2], 0, 1e-9);
  EXPECT_NEAR(d.served_rps, 80, 1e-9);
  EXPECT_NEAR(d.unserved_rps, 0, 1e-9);
  EXPECT_NEAR(d.cost_per_s, 80, 1e-9);  // everything at cost 1
  EXPECT_EQ(d, CombinedPlan(Case()));    // deterministic
}

TEST(CombinedPlan, BeatsEachPartAloneOnTheHandCase) {
  const CombinedInput in = Case();
  // Parcae alone (its pipelines only): 60 of 80 req/s. Batching groups alone on the spot
  // pool: the same 60 (one unit kind). Routing alone (no SLO groups: each group split by the
  // routing weights 0.6 / 0.4): 40% of the tight group (12 req/s) lands on cpu, 1.6 s > 0.5 s.
  const double parcae_alone = std::min(80.0, in.liveput_rps);
  const CombinedDecision d = CombinedPlan(in);
  const double routing_alone_within_slo =
      80.0 - in.groups[0].rate_rps * d.routing.routes[1].weight;
  EXPECT_NEAR(parcae_alone, 60, 1e-9);
  EXPECT_NEAR(routing_alone_within_slo, 68, 1e-9);
  EXPECT_NEAR(d.served_rps, 80, 1e-9);  // combined: all 80 within their SLOs
  EXPECT_GT(d.served_rps, routing_alone_within_slo);
  EXPECT_GT(d.served_rps, parcae_alone);
}

TEST(CombinedPlan, FailoverWhenParcaeForeseesThePoolGone) {
  CombinedInput in = Case();
  const CombinedDecision first = CombinedPlan(in);
  in.memory = first.routing.memory;  // spot and cpu served last time
  in.config = {0, 4};                // the forecast says the spot pool is gone
  in.liveput_rps = 0;
  in.now_ms = 61'000;
  const CombinedDecision d = CombinedPlan(in);
  // Failover -> capacity mode over cpu (40) and od (50): loads 80 x 4/9 and 80 x 5/9.
  EXPECT_EQ(d.routing.mode, RoutingMode::kCapacity);
  EXPECT_NEAR(d.routing.routes[1].load_rps, 320.0 / 9, 1e-9);
  EXPECT_NEAR(d.routing.routes[2].load_rps, 400.0 / 9, 1e-9);
  // Tight group: only od qualifies -> 30 of its 44.44. Loose: cpu's 35.56 + od's 14.44 = 50.
  EXPECT_NEAR(d.groups[0].load_rps[2], 30, 1e-9);
  EXPECT_NEAR(d.groups[0].load_rps[1], 0, 1e-9);
  EXPECT_NEAR(d.groups[1].load_rps[1], 320.0 / 9, 1e-9);
  EXPECT_NEAR(d.groups[1].load_rps[2], 400.0 / 9 - 30, 1e-9);
  EXPECT_NEAR(d.served_rps, 80, 1e-9);
  EXPECT_NEAR(d.cost_per_s, 30 * 4 + 320.0 / 9 + (400.0 / 9 - 30) * 4, 1e-9);  // 213.33
}

TEST(CombinedPlan, TightGroupUsesSpareCapacityAndReportsWhatNoUnitCanMeet) {
  CombinedInput in = Case();
  in.groups = {Group(70, 0.5, 0.1), Group(20, 0.15, 0.1)};  // 0.15 s: only od (0.2) fails too
  const CombinedDecision d = CombinedPlan(in);
  // Demand 90: cost mode weights 0.6/0.4 -> spot 54, cpu 36, pressure 0.9 >= 0.85: capacity
  // mode over all three (60, 40, 50 of 150): spot 36, cpu 24, od 30.
  EXPECT_EQ(d.routing.mode, RoutingMode::kCapacity);
  EXPECT_NEAR(d.routing.routes[0].load_rps, 36, 1e-9);
  EXPECT_NEAR(d.routing.routes[2].load_rps, 30, 1e-9);
  // Group 1 (0.15 s) first: no unit has latency + 0.1 s <= 0.15 s: all 20 unserved.
  EXPECT_NEAR(d.groups[1].served_rps, 0, 1e-9);
  EXPECT_NEAR(d.groups[1].unserved_rps, 20, 1e-9);
  // Group 0 (0.5 s): spot and od; routed 36 + 30 = 66, then 4 from their spare (24 + 20), in
  // proportion 24 : 20.
  EXPECT_NEAR(d.groups[0].load_rps[0], 36 + 4.0 * 24 / 44, 1e-9);
  EXPECT_NEAR(d.groups[0].load_rps[2], 30 + 4.0 * 20 / 44, 1e-9);
  EXPECT_NEAR(d.groups[0].load_rps[1], 0, 1e-9);
  EXPECT_NEAR(d.served_rps, 70, 1e-9);
  EXPECT_NEAR(d.unserved_rps, 20, 1e-9);
}

}  // namespace
}  // namespace archi::policy
