// Issue 9 in the simulator: node kinds (speed, price, usage cost), routing by kind weights,
// frontend batching groups per application, a kind that vanishes; hand-checked latencies.
#include <gtest/gtest.h>

#include <algorithm>

#include "bench/sim/simulator.h"
#include "runtime/policy/policy.h"

namespace archi::sim {
namespace {

// Emits the given actions at its first decision, nothing after.
class OncePolicy final : public policy::Policy {
 public:
  explicit OncePolicy(std::vector<policy::ActionOp> ops) : ops_(std::move(ops)) {}
  std::string_view name() const override { return "once"; }
  policy::Plan Decide(const policy::ClusterState& s, const policy::ClusterMetrics&,
                      const policy::Forecast&) const override {
    policy::Plan p;
    p.memory = s.memory;
    p.next_evaluation_ms = s.now_ms + 1000;
    if (!s.memory.values.contains("once")) {
      for (const auto& op : ops_) p.actions.push_back({op, "test"});
      p.memory.values["once"] = 1;
    }
    return p;
  }

 private:
  std::vector<policy::ActionOp> ops_;
};

SimOptions TwoKinds() {
  SimOptions o;
  o.stages = 1;
  o.max_batch = 1;
  o.end_ms = 2000;
  o.warning_ms = 0;
  o.record_latencies = true;
  o.kinds = {NodeKind{"slow", 3.6, 0.5, 0, 1}, NodeKind{"fast", 36, 1.0, 0, 1}};
  o.node_kind_of = {{"s", "slow"}, {"f", "fast"}};
  return o;
}

NodeTrace SlowAndFast() {
  NodeTrace t;
  t.source = "test";
  t.events = {{0, NodeOp::kAdd, "s"}, {0, NodeOp::kAdd, "f"}};
  t.end_ms = 2000;
  return t;
}

ArrivalSpec Every100(int n) {
  ArrivalSpec a;
  for (int i = 0; i < n; ++i) a.times_ms.push_back(100.0 * (i + 1));
  return a;
}

SimResult RunOnce(SimOptions o, NodeTrace t, ArrivalSpec a, const policy::Policy& p, int max_batch = 1) {
  auto sim = Simulator::Create(std::move(o), PerfModel::Constant(1, max_batch, 10, 0), std::move(t),
                               std::move(a), &p);
  EXPECT_TRUE(sim.ok()) << sim.status();
  return sim.ok() ? (*sim)->Run() : SimResult{};
}

TEST(SimResearch, RoutingWeightsPickTheKindAndUsageCostFollowsItsPrice) {
  // All to fast: 10 ms each, 10 x 10 ms x 36 / 3.6e6 = 0.001.
  OncePolicy to_fast({policy::SetRoutingWeights{-1, {{"fast", 1.0}}, "cost"}});
  SimResult f = RunOnce(TwoKinds(), SlowAndFast(), Every100(10), to_fast);
  ASSERT_EQ(f.served, 10u);
  for (double l : f.latencies) EXPECT_DOUBLE_EQ(l, 10);
  EXPECT_NEAR(f.usage_cost, 0.001, 1e-12);
  // All to slow (capacity 0.5): 20 ms each, 10 x 20 ms x 3.6 / 3.6e6 = 0.0002.
  OncePolicy to_slow({policy::SetRoutingWeights{0, {{"slow", 1.0}}, "cost"}});
  SimResult s = RunOnce(TwoKinds(), SlowAndFast(), Every100(10), to_slow);
  for (double l : s.latencies) EXPECT_DOUBLE_EQ(l, 20);
  EXPECT_NEAR(s.usage_cost, 0.0002, 1e-12);
  // Node cost is the kinds' prices while present: (3.6 + 36) per hour for two nodes.
  EXPECT_NEAR(s.cost, s.node_hours / 2 * 39.6, 1e-9);
  EXPECT_EQ(s.reconfigs["route"], 1u);
}

TEST(SimResearch, BatchingGroupWaitsForItsBatchOrItsTimeout) {
  SimOptions o = TwoKinds();
  o.kinds = {};
  o.node_kind_of = {};
  o.max_batch = 8;
  o.apps = {AppSpec{"x", 1, 1000}};
  NodeTrace t;
  t.source = "test";
  t.events = {{0, NodeOp::kAdd, "n"}};
  t.end_ms = 2000;
  ArrivalSpec a;
  for (int i = 0; i < 9; ++i) a.times_ms.push_back(5 + 10.0 * i);  // 5, 15, ..., 85
  OncePolicy groups({policy::SetBatchingGroups{{policy::BatchingGroup{{"x"}, 1000, 4, 100, {}}}}});
  SimResult r = RunOnce(o, t, a, groups, 8);
  ASSERT_EQ(r.served, 9u);
  // 5..35 go at 35 as one batch (10 ms): 40, 30, 20, 10; 45..75 at 75: the same; 85 waits for
  // the 100 ms timeout (185) and is served alone: 110.
  std::vector<double> l = r.latencies;
  std::sort(l.begin(), l.end());
  EXPECT_EQ(l, (std::vector<double>{10, 10, 20, 20, 30, 30, 40, 40, 110}));
  ASSERT_EQ(r.apps.size(), 1u);
  EXPECT_EQ(r.apps[0].batches, 3u);
  EXPECT_EQ(r.apps[0].batched, 9u);
  EXPECT_EQ(r.apps[0].within_slo, 9u);
  // Without groups the replica takes what is queued: every request alone (10 ms service, 10 ms
  // apart), latency 10.
  OncePolicy none({});
  SimResult g = RunOnce(o, t, a, none, 8);
  for (double v : g.latencies) EXPECT_DOUBLE_EQ(v, 10);
  EXPECT_EQ(g.apps[0].batches, 9u);
}

TEST(SimResearch, AppSloIsPerApplication) {
  SimOptions o = TwoKinds();
  o.kinds = {};
  o.node_kind_of = {};
  o.apps = {AppSpec{"tight", 1, 5}};  // 10 ms service > 5 ms SLO: never within
  NodeTrace t;
  t.source = "test";
  t.events = {{0, NodeOp::kAdd, "n"}};
  t.end_ms = 2000;
  OncePolicy none({});
  SimResult r = RunOnce(o, t, Every100(4), none);
  EXPECT_EQ(r.served, 4u);
  EXPECT_EQ(r.within_slo, 0u);
  EXPECT_EQ(r.apps[0].within_slo, 0u);
}

TEST(SimResearch, VanishedKindLeavesAndDoesNotRejoin) {
  SimOptions o = TwoKinds();
  o.vanish_kind = "slow";
  o.vanish_at_ms = 500;
  NodeTrace t = SlowAndFast();
  t.events.push_back({800, NodeOp::kAdd, "s2"});
  o.node_kind_of["s2"] = "slow";
  OncePolicy none({});
  SimResult r = RunOnce(o, t, Every100(10), none);
  EXPECT_EQ(r.served, 10u);
  EXPECT_EQ(r.reconfigs["preempt"] + r.reconfigs["preempt_idle"], 1u);  // s at 500
  EXPECT_EQ(r.reconfigs["join"], 2u);                                    // s and f; s2 never
  // After 500 only the fast node serves: every latency from then on is 10 ms.
  for (size_t i = 5; i < r.latencies.size(); ++i) EXPECT_DOUBLE_EQ(r.latencies[i], 10);
}

}  // namespace
}  // namespace archi::sim
