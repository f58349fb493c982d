// Biran & Kissos cost/capacity routing over heterogeneous units: switch points, hysteresis
// without flapping, failover when a unit kind disappears, on hand-checked cases.
#include "runtime/policy/hetero_routing.h"

#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

namespace archi::policy {
namespace {

DeploymentUnit Unit(const std::string& name, int instances, double max_rps, double cost,
                    double latency_ms = 50) {
  return DeploymentUnit{name, "m", name, "rt", instances, max_rps, latency_ms, cost};
}

double WeightOf(const RoutingDecision& d, const std::string& unit) {
  for (const UnitRoute& r : d.routes) {
    if (r.unit == unit) return r.weight;
  }
  ADD_FAILURE() << "no route for " << unit;
  return -1;
}

double WeightSum(const RoutingDecision& d) {
  double s = 0;
  for (const UnitRoute& r : d.routes) s += r.weight;
  return s;
}

// cheap: 2 x 50 req/s at 1.0 per inference; dear: 1 x 100 req/s at 3.0.
std::vector<DeploymentUnit> TwoKinds() {
  return {Unit("cheap", 2, 50, 1.0), Unit("dear", 1, 100, 3.0)};
}

TEST(HeteroRouting, CostModeSendsEverythingToTheCheapPool) {
  const RoutingDecision d = DecideRouting(TwoKinds(), 50, 0, {}, {});
  EXPECT_EQ(d.mode, RoutingMode::kCost);
  EXPECT_DOUBLE_EQ(WeightOf(d, "cheap"), 1.0);
  EXPECT_DOUBLE_EQ(WeightOf(d, "dear"), 0.0);
  EXPECT_DOUBLE_EQ(d.pressure, 0.5);  // 50 of 100 req/s
  EXPECT_DOUBLE_EQ(d.cost_per_s, 50.0);
  EXPECT_EQ(d.memory.serving, (std::vector<std::string>{"cheap"}));
}

TEST(HeteroRouting, CostWeightsInverseToCostWithinTheMargin) {
  // a: 100 req/s at 1.0; b: 60 req/s at 1.2 (within 25% of the cheapest); c: 3.0 (outside).
  // w ~ capacity / cost: 100 : 50 -> 2/3, 1/3. Loads at 60 req/s: a 40 (0.4), b 20 (0.333).
  const std::vector<DeploymentUnit> u = {Unit("a", 1, 100, 1.0), Unit("b", 1, 60, 1.2),
                                         Unit("c", 1, 100, 3.0)};
  const RoutingDecision d = DecideRouting(u, 60, 0, {}, {});
  EXPECT_EQ(d.mode, RoutingMode::kCost);
  EXPECT_NEAR(WeightOf(d, "a"), 2.0 / 3, 1e-12);
  EXPECT_NEAR(WeightOf(d, "b"), 1.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(WeightOf(d, "c"), 0);
  EXPECT_NEAR(d.pressure, 0.4, 1e-12);
  EXPECT_NEAR(d.cost_per_s, 40 * 1.0 + 20 * 1.2, 1e-9);
}

TEST(HeteroRouting, SwitchPointAndCapacityWeights) {
  // Cheap pool capacity 100: 84 req/s -> 0.84 < 0.85 stays in cost mode; 85 -> switch.
  RoutingDecision d = DecideRouting(TwoKinds(), 84, 0, {}, {});
  EXPECT_EQ(d.mode, RoutingMode::kCost);
  d = DecideRouting(TwoKinds(), 85, 1000, d.memory, {});
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
  // Capacity mode: weights ~ capacity (100 : 100), both units at 85 / 200 = 0.425.
  EXPECT_DOUBLE_EQ(WeightOf(d, "cheap"), 0.5);
  EXPECT_DOUBLE_EQ(WeightOf(d, "dear"), 0.5);
  EXPECT_DOUBLE_EQ(d.routes[0].utilisation, 0.425);
  EXPECT_DOUBLE_EQ(d.routes[1].utilisation, 0.425);
  EXPECT_DOUBLE_EQ(d.unserved_rps, 0);
  EXPECT_DOUBLE_EQ(d.cost_per_s, 42.5 * 1.0 + 42.5 * 3.0);
}

TEST(HeteroRouting, HysteresisReturnsToCostOnlyAfterSustainedCalm) {
  RoutingOptions o;  // enter 0.85, leave 0.65 for 60 s
  RoutingDecision d = DecideRouting(TwoKinds(), 90, 0, {}, o);
  ASSERT_EQ(d.mode, RoutingMode::kCapacity);
  d = DecideRouting(TwoKinds(), 70, 10'000, d.memory, o);  // 0.70 >= 0.65: stay
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
  EXPECT_EQ(d.memory.calm_since_ms, kNoTime);
  d = DecideRouting(TwoKinds(), 60, 20'000, d.memory, o);  // calm run starts at 20 s
  EXPECT_EQ(d.memory.calm_since_ms, 20'000);
  d = DecideRouting(TwoKinds(), 60, 70'000, d.memory, o);  // 50 s of calm: not yet
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
  d = DecideRouting(TwoKinds(), 66, 75'000, d.memory, o);  // one decision at 0.66 breaks the run
  EXPECT_EQ(d.memory.calm_since_ms, kNoTime);
  d = DecideRouting(TwoKinds(), 60, 80'000, d.memory, o);  // new run from 80 s
  d = DecideRouting(TwoKinds(), 60, 139'999, d.memory, o);
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
  d = DecideRouting(TwoKinds(), 60, 140'000, d.memory, o);  // 60 s of calm: back to cost
  EXPECT_EQ(d.mode, RoutingMode::kCost);
  EXPECT_DOUBLE_EQ(WeightOf(d, "cheap"), 1.0);
}

TEST(HeteroRouting, NoFlappingAroundEitherThreshold) {
  RoutingOptions o;
  RoutingMemory mem;
  int switches = 0;
  RoutingMode last = RoutingMode::kCost;
  // Demand alternates 84 / 86 (around enter) for 5 minutes, then 64 / 66 (around leave) for 5
  // minutes, one decision per second.
  for (int t = 0; t < 600; ++t) {
    const bool odd = t % 2 == 1;
    const double demand = t < 300 ? (odd ? 86 : 84) : (odd ? 66 : 64);
    const RoutingDecision d = DecideRouting(TwoKinds(), demand, t * 1000, mem, o);
    if (d.mode != last) ++switches;
    last = d.mode;
    mem = d.memory;
  }
  // One switch to capacity at the first 86; around 0.65 the calm run never lasts 60 s (every
  // other decision is at 0.66), so it never switches back.
  EXPECT_EQ(switches, 1);
  EXPECT_EQ(last, RoutingMode::kCapacity);
}

TEST(HeteroRouting, FailoverWhenAUnitKindDisappears) {
  RoutingOptions o;
  std::vector<DeploymentUnit> units = {Unit("inf2", 4, 25, 1.0), Unit("l4", 2, 40, 1.1),
                                       Unit("a10g", 2, 60, 2.5)};
  // Cost mode over inf2 + l4 (within 25%): 30 req/s.
  RoutingDecision d = DecideRouting(units, 30, 0, {}, o);
  ASSERT_EQ(d.mode, RoutingMode::kCost);
  EXPECT_EQ(d.memory.serving, (std::vector<std::string>{"inf2", "l4"}));
  // inf2 is preempted (0 instances): failover to capacity mode at once, no traffic to inf2.
  units[0].instances = 0;
  d = DecideRouting(units, 30, 1000, d.memory, o);
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
  EXPECT_EQ(d.lost, (std::vector<std::string>{"inf2"}));
  EXPECT_NE(d.reason.find("failover"), std::string::npos) << d.reason;
  EXPECT_DOUBLE_EQ(WeightOf(d, "inf2"), 0);
  EXPECT_NEAR(WeightSum(d), 1.0, 1e-12);
  EXPECT_NEAR(WeightOf(d, "l4"), 80.0 / 200, 1e-12);  // capacities l4 80, a10g 120
  EXPECT_DOUBLE_EQ(d.unserved_rps, 0);
  // Still gone next time: no new failover, the calm run starts (l4 alone would be at 30/80).
  d = DecideRouting(units, 30, 2000, d.memory, o);
  EXPECT_TRUE(d.lost.empty());
  EXPECT_EQ(d.memory.calm_since_ms, 2000);
  // A unit that vanishes from the list altogether counts the same.
  std::vector<DeploymentUnit> only_l4 = {units[1]};
  RoutingDecision d2 = DecideRouting(only_l4, 30, 3000, d.memory, o);
  EXPECT_EQ(d2.lost, (std::vector<std::string>{"a10g"}));
  EXPECT_DOUBLE_EQ(WeightOf(d2, "l4"), 1.0);
  // After 60 s of calm, cost mode over what is left: l4 is now the cheapest.
  for (TimeMs t = 4000; t <= 63'000; t += 1000) d = DecideRouting(units, 30, t, d.memory, o);
  EXPECT_EQ(d.mode, RoutingMode::kCost);
  EXPECT_DOUBLE_EQ(WeightOf(d, "l4"), 1.0);
}

TEST(HeteroRouting, OverloadReportsUnservedAndNoUnitsAtAll) {
  RoutingDecision d = DecideRouting(TwoKinds(), 250, 0, {}, {});
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
  EXPECT_DOUBLE_EQ(d.served_rps, 200);
  EXPECT_DOUBLE_EQ(d.unserved_rps, 50);
  d = DecideRouting({}, 10, 0, {}, {});
  EXPECT_TRUE(d.routes.empty());
  EXPECT_DOUBLE_EQ(d.unserved_rps, 10);
  EXPECT_EQ(d.mode, RoutingMode::kCapacity);
}

TEST(HeteroRouting, LatencySloExcludesSlowUnits) {
  RoutingOptions o;
  o.latency_slo_ms = 100;
  const std::vector<DeploymentUnit> u = {Unit("slow-cheap", 1, 100, 0.5, 300),
                                         Unit("fast", 1, 100, 2.0, 40)};
  const RoutingDecision d = DecideRouting(u, 20, 0, {}, o);
  EXPECT_DOUBLE_EQ(WeightOf(d, "slow-cheap"), 0);
  EXPECT_DOUBLE_EQ(WeightOf(d, "fast"), 1.0);
}

TEST(HeteroRouting, MemoryRoundTripsThroughPolicyMemory) {
  RoutingMemory m{RoutingMode::kCapacity, 12'345, {"a10g", "l4"}};
  PolicyMemory pm;
  pm.values["other/key"] = 7;
  pm.values["route/serving/stale"] = 1;
  StoreRoutingMemory(m, "route", &pm);
  EXPECT_EQ(LoadRoutingMemory(pm, "route"), m);  // "stale" was dropped
  EXPECT_EQ(pm.values.at("other/key"), 7);
  EXPECT_EQ(LoadRoutingMemory(PolicyMemory{}, "route"), RoutingMemory{});
  RoutingMemory none;  // kNoTime survives the trip through double
  StoreRoutingMemory(none, "route", &pm);
  EXPECT_EQ(LoadRoutingMemory(pm, "route"), none);
}

TEST(HeteroRouting, UnitsFromCpuWorkers) {
  // Two cpu-8 workers (capacity 2, $0.36/h) and one cpu-2 (capacity 0.5, $0.18/h); the reference
  // worker serves 10 req/s. cpu-8: 2 instances x 20 req/s, 0.36 / 3600 / 20 = 5e-6 per inference;
  // cpu-2: 1 x 5 req/s, 0.18 / 3600 / 5 = 1e-5. Cost mode at 10 req/s: all on cpu-8.
  const std::vector<Worker> w = {Worker{"a", "h1", "cpu-8", 2.0, 0.36},
                                 Worker{"b", "h2", "cpu-2", 0.5, 0.18},
                                 Worker{"c", "h3", "cpu-8", 2.0, 0.36}};
  const std::vector<DeploymentUnit> u = UnitsFromWorkers(w, 10, {{"cpu-2", 80}});
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[0].name, "cpu-8");
  EXPECT_EQ(u[0].instances, 2);
  EXPECT_DOUBLE_EQ(u[0].max_rps, 20);
  EXPECT_NEAR(u[0].cost_per_inference, 5e-6, 1e-15);
  EXPECT_DOUBLE_EQ(u[0].latency_ms, 0);
  EXPECT_EQ(u[1].name, "cpu-2");
  EXPECT_NEAR(u[1].cost_per_inference, 1e-5, 1e-15);
  EXPECT_DOUBLE_EQ(u[1].latency_ms, 80);
  const RoutingDecision d = DecideRouting(u, 10, 0, {}, {});
  EXPECT_DOUBLE_EQ(WeightOf(d, "cpu-8"), 1.0);
}

TEST(HeteroRouting, OptionsValidate) {
  EXPECT_TRUE(RoutingOptions{}.Validate().ok());
  RoutingOptions o;
  o.leave_capacity_below = 0.9;  // above enter
  EXPECT_FALSE(o.Validate().ok());
  o = RoutingOptions{};
  o.enter_capacity_at = 1.5;
  EXPECT_FALSE(o.Validate().ok());
}

}  // namespace
}  // namespace archi::policy
