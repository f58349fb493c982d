// The research algorithms as Policies (research_policies.h) and the plan vocabulary they use
// (SetRoutingWeights, SetBatchingGroups), on cases worked by hand.
#include "runtime/policy/research_policies.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/policy/registry.h"

namespace archi::policy {
namespace {

Worker W(const std::string& id, const std::string& kind, double capacity, double price) {
  return Worker{id, id, kind, capacity, price};
}

ClusterState OneStage(const std::vector<Worker>& ready, TimeMs now) {
  ClusterState s;
  s.now_ms = now;
  Stage st;
  st.index = 0;
  st.layer_begin = 0;
  st.layer_end = 4;
  for (const Worker& w : ready) st.replicas.push_back({w, ReplicaState::kReady, 0});
  s.stages.push_back(st);
  return s;
}

ClusterMetrics Demand(double rps) {
  ClusterMetrics m;
  m.frontend.admitted_rps = rps;
  return m;
}

std::vector<const SetRoutingWeights*> Routes(const Plan& p) {
  std::vector<const SetRoutingWeights*> out;
  for (const Action& a : p.actions) {
    if (const auto* r = std::get_if<SetRoutingWeights>(&a.op)) out.push_back(r);
  }
  return out;
}

const SetBatchingGroups* Groups(const Plan& p) {
  for (const Action& a : p.actions) {
    if (const auto* g = std::get_if<SetBatchingGroups>(&a.op)) return g;
  }
  return nullptr;
}

TEST(PlanVocabulary, ValidatePlanChecksRoutingAndBatching) {
  const ClusterState s = OneStage({W("a", "cpu", 1, 1)}, 0);
  auto plan = [](ActionOp op) {
    Plan p;
    p.actions.push_back({std::move(op), ""});
    return p;
  };
  EXPECT_TRUE(ValidatePlan(plan(SetRoutingWeights{0, {{"cpu", 0.25}, {"gpu", 0.75}}, "cost"}), s).ok());
  EXPECT_TRUE(ValidatePlan(plan(SetRoutingWeights{-1, {}, ""}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetRoutingWeights{1, {{"cpu", 1}}, ""}), s).ok());  // no stage 1
  EXPECT_FALSE(ValidatePlan(plan(SetRoutingWeights{0, {{"cpu", 0.5}, {"gpu", 0.4}}, ""}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetRoutingWeights{0, {{"cpu", 1.5}, {"gpu", -0.5}}, ""}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetRoutingWeights{0, {{"cpu", 0.5}, {"cpu", 0.5}}, ""}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetRoutingWeights{0, {{"", 0.5}, {"default", 0.5}}, ""}), s).ok());
  BatchingGroup g{{"a", "b"}, 500, 8, 120, {}};
  EXPECT_TRUE(ValidatePlan(plan(SetBatchingGroups{{g, BatchingGroup{{"c"}, 900, 1, 0, {}}}}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetBatchingGroups{{g, BatchingGroup{{"b"}, 900, 1, 0, {}}}}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetBatchingGroups{{BatchingGroup{{"c"}, 900, 0, 0, {}}}}), s).ok());
  EXPECT_FALSE(ValidatePlan(plan(SetBatchingGroups{{BatchingGroup{{"c"}, 900, 1, -1, {}}}}), s).ok());
  EXPECT_EQ(ToString({SetRoutingWeights{0, {{"cpu", 0.25}, {"", 0.75}}, "cost"}, "r"}),
            "route s0 cost cpu=0.25 default=0.75 (r)");
  EXPECT_EQ(ToString({SetBatchingGroups{{g}}, ""}), "batch [a,b]x8/120ms");
}

// Two kinds on one stage, reference 10 req/s per capacity 1.0:
//   cheap: 2 x capacity 1 at 3.6/h -> one unit of 20 req/s, 3.6 / 3600 / 10 = 1e-4 per inference
//   fast:  2 x capacity 2 at 36/h  -> 40 req/s, 36 / 3600 / 20 = 5e-4 per inference
// The cheap pool (within 25% of 1e-4) is `cheap` alone.
std::vector<Worker> TwoKinds() {
  return {W("c1", "cheap", 1, 3.6), W("c2", "cheap", 1, 3.6), W("f1", "fast", 2, 36),
          W("f2", "fast", 2, 36)};
}

CostCapacityOptions CcOptions() {
  CostCapacityOptions o;
  o.reference_rps = 10;
  o.demand_smoothing_ms = 0;  // the demand as measured (smoothing: its own test)
  return o;
}

TEST(CostCapacityPolicy, PipelineUnitsByHand) {
  const auto units = PipelineUnits(OneStage(TwoKinds(), 0), 10, {{"fast", 50}});
  ASSERT_EQ(units.size(), 2u);
  EXPECT_EQ(units[0].name, "cheap");
  EXPECT_DOUBLE_EQ(units[0].capacity_rps(), 20);
  EXPECT_NEAR(units[0].cost_per_inference, 1e-4, 1e-15);
  EXPECT_EQ(units[1].name, "fast");
  EXPECT_DOUBLE_EQ(units[1].capacity_rps(), 40);
  EXPECT_NEAR(units[1].cost_per_inference, 5e-4, 1e-15);
  EXPECT_DOUBLE_EQ(units[1].latency_ms, 50);
  // Two stages: a kind's capacity is its smallest stage's, its cost the sum over the stages;
  // a kind missing from a stage has none.
  ClusterState two = OneStage(TwoKinds(), 0);
  Stage s1;
  s1.index = 1;
  s1.layer_begin = 4;
  s1.layer_end = 8;
  s1.replicas.push_back({W("c3", "cheap", 1, 7.2), ReplicaState::kReady, 0});
  s1.replicas.push_back({W("c4", "cheap", 1, 7.2), ReplicaState::kJoining, 0});  // not ready
  two.stages.push_back(s1);
  const auto u2 = PipelineUnits(two, 10, {});
  ASSERT_EQ(u2.size(), 2u);
  EXPECT_DOUBLE_EQ(u2[0].capacity_rps(), 10);                     // min(20, 10)
  EXPECT_NEAR(u2[0].cost_per_inference, 1e-4 + 2e-4, 1e-15);     // 7.2 / 3600 / 10 = 2e-4
  EXPECT_EQ(u2[1].capacity_rps(), 0);                            // fast: none on stage 1
}

TEST(CostCapacityPolicy, CostModeThenCapacityModeThenFailover) {
  CostCapacityPolicy p(CcOptions());
  // 10 req/s: cost-mode weights put everything on cheap (pressure 10/20 = 0.5 < 0.85).
  ClusterState s = OneStage(TwoKinds(), 1000);
  Plan a = p.Decide(s, Demand(10), {});
  ASSERT_TRUE(ValidatePlan(a, s).ok());
  auto r = Routes(a);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->stage, 0);
  EXPECT_EQ(r[0]->mode, "cost");
  EXPECT_EQ(r[0]->weights, (std::vector<KindWeight>{{"cheap", 1.0}}));
  // The same again: nothing changed, no action.
  s.memory = a.memory;
  s.now_ms = 2000;
  Plan b = p.Decide(s, Demand(10), {});
  EXPECT_TRUE(Routes(b).empty());
  // 18 req/s: pressure 0.9 >= 0.85 -> capacity mode, weights ~ capacity 20 : 40.
  s.memory = b.memory;
  s.now_ms = 3000;
  Plan c = p.Decide(s, Demand(18), {});
  r = Routes(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->mode, "capacity");
  ASSERT_EQ(r[0]->weights.size(), 2u);
  EXPECT_NEAR(r[0]->weights[0].weight, 1.0 / 3, 1e-12);
  EXPECT_NEAR(r[0]->weights[1].weight, 2.0 / 3, 1e-12);
  // Back at 10 req/s the mode stays capacity (hysteresis: 60 s of calm needed).
  s.memory = c.memory;
  s.now_ms = 4000;
  Plan d = p.Decide(s, Demand(10), {});
  EXPECT_TRUE(Routes(d).empty());
}

TEST(CostCapacityPolicy, FailoverWhenTheCheapKindVanishes) {
  CostCapacityPolicy p(CcOptions());
  ClusterState s = OneStage(TwoKinds(), 1000);
  Plan a = p.Decide(s, Demand(10), {});
  // The cheap kind is gone: failover to capacity mode over what is left.
  ClusterState g = OneStage({W("f1", "fast", 2, 36), W("f2", "fast", 2, 36)}, 2000);
  g.memory = a.memory;
  Plan b = p.Decide(g, Demand(10), {});
  auto r = Routes(b);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->mode, "capacity");
  EXPECT_EQ(r[0]->weights, (std::vector<KindWeight>{{"fast", 1.0}}));
  EXPECT_NE(b.actions[0].reason.find("failover"), std::string::npos) << b.actions[0].reason;
}

TEST(CostCapacityPolicy, NoDecisionBeforeAStageHasAReadyReplica) {
  CostCapacityPolicy p(CcOptions());
  // Live start: the stage's replicas are still joining, nothing is ready.
  ClusterState s = OneStage({}, 1000);
  s.stages[0].replicas.push_back({W("c1", "cheap", 1, 7.2), ReplicaState::kJoining, 0});
  Plan a = p.Decide(s, Demand(0), {});
  EXPECT_TRUE(Routes(a).empty());
  // Ready a second later: the first routing is cost mode at low load, not a capacity mode
  // entered on the empty stage and held for leave_after_ms.
  ClusterState t = OneStage(TwoKinds(), 2000);
  t.memory = a.memory;
  Plan b = p.Decide(t, Demand(10), {});
  auto r = Routes(b);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->mode, "cost");
  EXPECT_EQ(r[0]->weights, (std::vector<KindWeight>{{"cheap", 1.0}}));
  // Every replica gone after that: a failover to capacity mode, as before.
  ClusterState u = OneStage({}, 3000);
  u.memory = b.memory;
  Plan c = p.Decide(u, Demand(10), {});
  r = Routes(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->mode, "capacity");
}

TEST(CostCapacityPolicy, SmoothedDemandHoldsOffAOneWindowSpike) {
  CostCapacityOptions o = CcOptions();
  o.demand_smoothing_ms = 30'000;
  CostCapacityPolicy p(o);
  ClusterState s = OneStage(TwoKinds(), 1000);
  Plan a = p.Decide(s, Demand(10), {});  // first: taken as is
  EXPECT_DOUBLE_EQ(a.memory.values.at("cost-capacity/demand"), 10);
  // One second of 18 req/s: 10 + (1 - exp(-1/30)) x 8 = 10.262 req/s, pressure 0.51: still
  // cost mode (unsmoothed it would be 0.9 and switch, as in CostModeThenCapacityModeThenFailover).
  s.memory = a.memory;
  s.now_ms = 2000;
  Plan b = p.Decide(s, Demand(18), {});
  EXPECT_NEAR(b.memory.values.at("cost-capacity/demand"), 10 + (1 - std::exp(-1.0 / 30)) * 8, 1e-9);
  EXPECT_TRUE(Routes(b).empty());
}

TEST(CostCapacityPolicy, CostOnlyAblationNeverSpreads) {
  CostCapacityOptions o = CcOptions();
  o.cost_only = true;
  CostCapacityPolicy p(o);
  ClusterState s = OneStage(TwoKinds(), 1000);
  Plan a = p.Decide(s, Demand(18), {});
  auto r = Routes(a);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->weights, (std::vector<KindWeight>{{"cheap", 1.0}}));
  s.memory = a.memory;
  s.now_ms = 2000;
  EXPECT_TRUE(Routes(p.Decide(s, Demand(30), {})).empty());  // overloaded, still cheap only
}

// HarmonyBatch's toy model (harmony_batch_test.cc): CPU 0.10/0.15/0.20/0.25 s for batch 1..4 on
// one core; GPU L(b) = 0.01 b + 0.2 s on a whole 1 GB device; 1 per core-s and per GB-s.
HarmonyPolicyOptions ToyHarmony() {
  HarmonyPolicyOptions o;
  HarmonyModel& m = o.model;
  m.cpu.avg = {{0, 1, 0.10}, {0, 1, 0.15}, {0, 1, 0.20}, {0, 1, 0.25}};
  m.cpu.max = m.cpu.avg;
  m.cpu.mem_mb_base = 1024;
  m.gpu.l1 = 0.01;
  m.gpu.l2 = 0.2;
  m.gpu.total_gb = 1;
  o.harmony.prices = HarmonyPrices{1.0, 0.0, 1.0, 0.0};
  o.harmony.cpu_cores_min = 1;
  o.harmony.cpu_cores_max = 1;
  o.harmony.cpu_cores_step = 1;
  o.harmony.gpu_max_batch = 32;
  return o;
}

ClusterMetrics Apps(std::vector<AppMetrics> apps) {
  ClusterMetrics m;
  m.apps = std::move(apps);
  return m;
}

TEST(HarmonyPolicy, MergedGroupsThenHysteresisThenReplan) {
  HarmonyPolicy p(ToyHarmony());
  ClusterState s = OneStage({W("a", "gpu", 1, 1)}, 1000);
  // Three apps at 3 req/s, SLO 1 s: merged onto one GPU group at b = 7 (harmony_batch_test);
  // wait = SLO - L(7) = 1 - 0.27 = 0.73 s.
  Plan a = p.Decide(s, Apps({{"c", 3, 1000}, {"a", 3, 1000}, {"b", 3, 1000}}), {});
  ASSERT_TRUE(ValidatePlan(a, s).ok());
  const SetBatchingGroups* g = Groups(a);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->groups.size(), 1u);
  EXPECT_EQ(g->groups[0].apps, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(g->groups[0].max_batch, 7);
  EXPECT_NEAR(g->groups[0].timeout_ms, 730, 1e-6);
  EXPECT_DOUBLE_EQ(g->groups[0].slo_ms, 1000);
  // Rates within 20%: no re-plan, no action.
  s.memory = a.memory;
  s.now_ms = 2000;
  Plan b = p.Decide(s, Apps({{"a", 3.5, 1000}, {"b", 2.5, 1000}, {"c", 3, 1000}}), {});
  EXPECT_EQ(Groups(b), nullptr);
  // Rates down to 1 req/s: re-plan -> one CPU group, b = 3, wait 1 - 0.2 = 0.8 s.
  s.memory = b.memory;
  s.now_ms = 3000;
  Plan c = p.Decide(s, Apps({{"a", 1, 1000}, {"b", 1, 1000}, {"c", 1, 1000}}), {});
  g = Groups(c);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->groups.size(), 1u);
  EXPECT_EQ(g->groups[0].max_batch, 3);
  EXPECT_NEAR(g->groups[0].timeout_ms, 800, 1e-6);
}

TEST(HarmonyPolicy, PerAppBaselineBatchesEachAlone) {
  HarmonyPolicyOptions o = ToyHarmony();
  o.per_app = true;
  HarmonyPolicy p(o);
  ClusterState s = OneStage({W("a", "gpu", 1, 1)}, 1000);
  // Alone at 3 req/s, SLO 1 s: CPU b = 3 (0.0667 per request; the GPU's b = 3 costs 0.0767),
  // wait 0.8 s. An app with a 0.12 s SLO: CPU b = 1, wait 0.02 s.
  Plan a = p.Decide(s, Apps({{"a", 3, 1000}, {"b", 3, 1000}, {"t", 1, 120}}), {});
  const SetBatchingGroups* g = Groups(a);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->groups.size(), 3u);
  EXPECT_EQ(g->groups[0].apps, (std::vector<std::string>{"t"}));  // SLO order
  EXPECT_EQ(g->groups[0].max_batch, 1);
  EXPECT_NEAR(g->groups[0].timeout_ms, 20, 1e-6);
  EXPECT_EQ(g->groups[1].apps, (std::vector<std::string>{"a"}));
  EXPECT_EQ(g->groups[1].max_batch, 3);
  EXPECT_NEAR(g->groups[1].timeout_ms, 800, 1e-6);
  // The merging policy instead puts a and b together (CPU b = 4 at 6 req/s: 0.0625 < 0.0667,
  // and the GPU's b = 5 at 0.05 cheaper still): fewer, larger batches.
  HarmonyPolicy merged(ToyHarmony());
  const Plan mp = merged.Decide(s, Apps({{"a", 3, 1000}, {"b", 3, 1000}, {"t", 1, 120}}), {});
  const SetBatchingGroups* m = Groups(mp);
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->groups.size(), 2u);
  EXPECT_EQ(m->groups[1].apps, (std::vector<std::string>{"a", "b"}));
  EXPECT_GT(m->groups[1].max_batch, 3);
}

// CombinedPolicy on the combined_test case, from workers: one stage, reference 10 req/s,
//   spot: 6 x capacity 1, 36,000/h -> 60 req/s at 1 per inference, 200 ms
//   cpu:  4 x capacity 1, 36,000/h -> 40 req/s at 1 per inference, 400 ms
//   od:   1 x capacity 5, 720,000/h -> 50 req/s at 4 per inference, 100 ms
// Apps per application (toy HarmonyBatch model): tight 30 req/s SLO 0.5 s -> GPU b = 7, wait
// 0.5 - 0.27 = 0.23 s; loose 50 req/s SLO 3 s -> GPU b = 32, wait 3 - 0.52 = 2.48 s.
// Routing 80 req/s: cheap pool spot + cpu, weights 60 : 40 (loads 48, 32), pressure 0.8: cost.
// tight fits spot (0.2 + 0.23) and od, not cpu (0.63 > 0.5): 30 of spot's 48.
// loose fits cpu (0.4 + 2.48 <= 3), spot, od: the 18 left on spot and cpu's 32.
TEST(CombinedPolicy, GroupsRoutedToKindsThatMeetTheirSlo) {
  std::vector<Worker> ws;
  for (int i = 0; i < 6; ++i) ws.push_back(W("s" + std::to_string(i), "spot", 1, 36000));
  for (int i = 0; i < 4; ++i) ws.push_back(W("c" + std::to_string(i), "cpu", 1, 36000));
  ws.push_back(W("o0", "od", 5, 720000));
  CombinedPolicyOptions o;
  o.routing.reference_rps = 10;
  o.routing.latency_ms = {{"spot", 200}, {"cpu", 400}, {"od", 100}};
  o.batching = ToyHarmony();
  o.batching.per_app = true;
  CombinedPolicy p(o);
  ClusterState s = OneStage(ws, 1000);
  ClusterMetrics m = Apps({{"tight", 30, 500}, {"loose", 50, 3000}});
  m.frontend.admitted_rps = 80;
  const Plan a = p.Decide(s, m, {});
  ASSERT_TRUE(ValidatePlan(a, s).ok()) << ValidatePlan(a, s).ToString();
  auto r = Routes(a);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->stage, -1);
  EXPECT_EQ(r[0]->mode, "cost");
  ASSERT_EQ(r[0]->weights.size(), 2u);
  EXPECT_EQ(r[0]->weights[0].kind, "cpu");
  EXPECT_NEAR(r[0]->weights[0].weight, 0.4, 1e-12);
  EXPECT_EQ(r[0]->weights[1].kind, "spot");
  EXPECT_NEAR(r[0]->weights[1].weight, 0.6, 1e-12);
  const SetBatchingGroups* g = Groups(a);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->groups.size(), 2u);
  EXPECT_EQ(g->groups[0].apps, (std::vector<std::string>{"tight"}));
  EXPECT_EQ(g->groups[0].max_batch, 7);
  EXPECT_NEAR(g->groups[0].timeout_ms, 230, 1e-6);
  EXPECT_EQ(g->groups[0].route, (std::vector<KindWeight>{{"spot", 1.0}}));
  EXPECT_EQ(g->groups[1].apps, (std::vector<std::string>{"loose"}));
  EXPECT_EQ(g->groups[1].max_batch, 32);
  EXPECT_NEAR(g->groups[1].timeout_ms, 2480, 1e-6);
  ASSERT_EQ(g->groups[1].route.size(), 2u);
  EXPECT_EQ(g->groups[1].route[0].kind, "cpu");
  EXPECT_NEAR(g->groups[1].route[0].weight, 32.0 / 50, 1e-12);
  EXPECT_NEAR(g->groups[1].route[1].weight, 18.0 / 50, 1e-12);
  // Same inputs, same plan; and nothing new to say the next time.
  EXPECT_EQ(p.Decide(s, m, {}), a);
  ClusterState s2 = s;
  s2.memory = a.memory;
  s2.now_ms = 2000;
  const Plan b = p.Decide(s2, m, {});
  EXPECT_TRUE(Routes(b).empty());
  EXPECT_EQ(Groups(b), nullptr);
}

TEST(ResearchPolicies, RegisteredByName) {
  PolicyOptions o;
  o.harmony = ToyHarmony();
  o.combined.batching = ToyHarmony();
  for (const char* n : {"cost-capacity", "harmony", "combined"}) {
    auto p = MakePolicy(n, o);
    ASSERT_TRUE(p.ok()) << n << ": " << p.status().ToString();
    EXPECT_EQ((*p)->name(), n);
  }
}

}  // namespace
}  // namespace archi::policy
