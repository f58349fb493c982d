// Parcae liveput planning: migration costs, liveput under Monte Carlo preemptions, the dynamic
// program (against exhaustive search over its own tables) and the "parcae" Policy's plans.
#include "runtime/policy/parcae.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace archi::policy {
namespace {

// compute 1 s, comm 0.02 s: PipelineRps(pp) = 1 / (1/pp + 0.02).
ParcaeOptions Opts() {
  ParcaeOptions o;
  o.model = PipelineModel{1.0, 0.02, 1, 4};
  o.migration = MigrationCosts{2, 15, 60};
  o.interval_ms = 60'000;
  o.horizon = 10;
  o.scenarios = 64;
  return o;
}

double Rps(int pp) { return 1.0 / (1.0 / pp + 0.02); }

TEST(Parcae, MigrationCostByKind) {
  const ParcaeOptions o = Opts();
  EXPECT_DOUBLE_EQ(MigrationCost({2, 2}, {2, 2}, o), 0);
  EXPECT_DOUBLE_EQ(MigrationCost({2, 2}, {0, 0}, o), 0);
  // Two more pipelines: each new instance loads one stage, 15 s of two pipelines' throughput.
  EXPECT_DOUBLE_EQ(MigrationCost({1, 2}, {3, 2}, o), 2 * Rps(2) * 15);
  // Fewer pipelines: worlds rebuilt, 2 s of the new throughput.
  EXPECT_DOUBLE_EQ(MigrationCost({3, 2}, {1, 2}, o), 1 * Rps(2) * 2);
  // Another depth: full re-partition, 60 s of the new throughput.
  EXPECT_DOUBLE_EQ(MigrationCost({2, 2}, {1, 4}, o), Rps(4) * 60);
  // From nothing: load every instance.
  EXPECT_DOUBLE_EQ(MigrationCost({0, 0}, {2, 4}, o), 2 * Rps(4) * 15);
}

TEST(Parcae, LiveputWithoutPreemptionIsThroughput) {
  const ParcaeOptions o = Opts();
  const std::vector<double> l = LiveputOf({{2, 2}, {1, 4}, {3, 2}}, 4, 0.0, 1, o);
  EXPECT_DOUBLE_EQ(l[0], 2 * Rps(2));
  EXPECT_DOUBLE_EQ(l[1], Rps(4));
  EXPECT_DOUBLE_EQ(l[2], 0);  // 6 instances > 4 available
}

TEST(Parcae, LiveputUnderOnePreemptionByHand) {
  ParcaeOptions o = Opts();
  o.scenarios = 4000;
  // 4 instances, 1 preempted. (2,2) uses all 4: one stage of one pipeline always goes, the other
  // pipeline is untouched, no spare: exactly 1 pipeline -> Rps(2), in every scenario.
  // (1,4): the only pipeline always loses a stage: 0.
  // (1,2): half the time a spare goes (Rps(2)); half the time a used one, and a spare loads the
  // lost stage (the pipeline serves 45 of 60 s): E = Rps(2) x (0.5 + 0.5 x 0.75) = 0.875 Rps(2).
  const std::vector<double> l = LiveputOf({{2, 2}, {1, 4}, {1, 2}}, 4, 1.0, 7, o);
  EXPECT_NEAR(l[0], Rps(2), 1e-9);
  EXPECT_DOUBLE_EQ(l[1], 0);
  EXPECT_NEAR(l[2], 0.875 * Rps(2), 0.01 * Rps(2));  // Monte Carlo: sd ~0.002 Rps(2)
  // Half an instance expected: one preemption with probability 0.5. (2,2): 0.5 x 2 + 0.5 x 1.
  const std::vector<double> h = LiveputOf({{2, 2}}, 4, 0.5, 7, o);
  EXPECT_NEAR(h[0], 1.5 * Rps(2), 0.03 * Rps(2));
  // Rebuilding worlds: 6 instances as (3,2), 2 preempted both from stage 0 of different
  // pipelines (or any two) -> survivors regroup; the minimum is what the rebuild keeps. Check
  // the bound: never more than the throughput, never less than with every hit a lost pipeline.
  const std::vector<double> r = LiveputOf({{3, 2}}, 6, 2.0, 3, o);
  EXPECT_LE(r[0], 3 * Rps(2));
  EXPECT_GE(r[0], 1 * Rps(2));
}

TEST(Parcae, LiveputIsDeterministicAndSeeded) {
  ParcaeOptions o = Opts();
  const std::vector<ParallelConfig> c = {{1, 2}, {2, 2}, {3, 3}};
  EXPECT_EQ(LiveputOf(c, 12, 2.5, 5, o), LiveputOf(c, 12, 2.5, 5, o));
  ParcaeOptions o2 = o;
  o2.seed = 99;
  EXPECT_NE(LiveputOf(c, 12, 2.5, 5, o), LiveputOf(c, 12, 2.5, 5, o2));
}

// Exhaustive search over the DP's own tables: every path of candidates, same value function.
double BestPathValue(const LiveputPlan& p, const ParallelConfig& current, const ParcaeOptions& o) {
  const double interval_s = o.interval_ms / 1000.0;
  double best = -1e300;
  std::function<void(size_t, ParallelConfig, double)> walk = [&](size_t k, ParallelConfig prev,
                                                                 double v) {
    if (k == p.intervals.size()) {
      best = std::max(best, v);
      return;
    }
    const LiveputInterval& iv = p.intervals[k];
    for (size_t j = 0; j < iv.candidates.size(); ++j) {
      walk(k + 1, iv.candidates[j],
           v + iv.liveput[j] * interval_s - MigrationCost(prev, iv.candidates[j], o));
    }
  };
  walk(0, current, 0);
  return best;
}

TEST(Parcae, DynamicProgramMatchesExhaustiveSearch) {
  ParcaeOptions o = Opts();
  o.horizon = 4;
  o.model.max_depth = 3;
  const std::vector<std::vector<double>> forecasts = {
      {6, 6, 3, 3, 5}, {6, 7, 7, 2, 2}, {4, 4, 4, 4, 4}, {5, 2.5, 6, 6, 1}};
  for (const auto& f : forecasts) {
    for (const ParallelConfig cur :
         {ParallelConfig{1, 2}, ParallelConfig{0, 0}, ParallelConfig{2, 3}}) {
      if (cur.instances() > f[0]) continue;
      const LiveputPlan p = PlanLiveput(cur, f, o);
      EXPECT_NEAR(p.value, BestPathValue(p, cur, o), 1e-9);
      // The path the plan reports has that value, and every step fits its interval.
      double v = 0;
      ParallelConfig prev = cur;
      for (size_t k = 0; k < p.path.size(); ++k) {
        EXPECT_LE(p.path[k].instances(), p.intervals[k].available);
        const auto& c = p.intervals[k].candidates;
        const size_t j = std::find(c.begin(), c.end(), p.path[k]) - c.begin();
        ASSERT_LT(j, c.size());
        v += p.intervals[k].liveput[j] * 60 - MigrationCost(prev, p.path[k], o);
        prev = p.path[k];
      }
      EXPECT_NEAR(v, p.value, 1e-9);
      EXPECT_EQ(p.first, p.path[0]);
    }
  }
}

TEST(Parcae, GrowsWhenItPaysAndNotWhenMigrationCostsTooMuch) {
  ParcaeOptions o = Opts();
  // (1,2) on 4 steady instances: (2,2) costs 15 s of one pipeline once, then adds a pipeline
  // for 10 minutes: grow.
  EXPECT_EQ(PlanLiveput({1, 2}, {4}, o, 2).first, (ParallelConfig{2, 2}));
  // Loading a stage would take longer than the horizon (1,000 s x Rps > 600 s x Rps): stay.
  o.migration.move_stage_s = 1000;
  EXPECT_EQ(PlanLiveput({1, 2}, {4}, o, 2).first, (ParallelConfig{1, 2}));
}

TEST(Parcae, PicksTheDepthWithTheMostThroughput) {
  ParcaeOptions o = Opts();
  o.model.min_depth = 2;
  // 8 instances from scratch: (4,2) = 4 / 0.52 = 7.69 req/s, (2,4) = 2 / 0.27 = 7.41, (2,3) =
  // 2 / 0.3533 = 5.66; starting costs are 15 s of each one's own throughput: (4,2).
  const LiveputPlan p = PlanLiveput({0, 0}, {8}, o);
  EXPECT_EQ(p.first, (ParallelConfig{4, 2}));
}

TEST(Parcae, HeldAndFreePlansMatchSeparatePlanning) {
  ParcaeOptions o = Opts();
  o.model.max_depth = 3;
  const std::vector<double> f = {9, 9, 7, 7, 8, 3, 3, 3, 6, 6, 6};
  const ParallelConfig cur{2, 2};
  const HeldAndFreePlans both = PlanLiveputHeldAndFree(cur, f, o);
  EXPECT_EQ(both.held, PlanLiveput(cur, f, o, 2));
  EXPECT_EQ(both.free, PlanLiveput(cur, f, o));
}

// ---------------------------------------------------------------------------------------------
// The Policy.

ClusterState MakeState(const std::vector<int>& replicas_per_stage, int idle) {
  ClusterState s;
  s.now_ms = 1'000'000;
  for (size_t i = 0; i < replicas_per_stage.size(); ++i) {
    Stage st;
    st.index = static_cast<int>(i);
    st.layer_begin = 4 * static_cast<int>(i);
    st.layer_end = st.layer_begin + 4;
    for (int j = 0; j < replicas_per_stage[i]; ++j) {
      const std::string id = "s" + std::to_string(i) + "r" + std::to_string(j);
      st.replicas.push_back(
          Replica{Worker{id, "h-" + id, "p3", 1.0, 1.0 + j}, ReplicaState::kReady, 0});
    }
    s.stages.push_back(std::move(st));
  }
  for (int k = 0; k < idle; ++k) {
    const std::string id = "i" + std::to_string(k);
    s.idle.push_back(Worker{id, "hi" + std::to_string(k), "p3", 1.0, 1.0});
  }
  return s;
}

int CountAdds(const Plan& p, int stage) {
  int n = 0;
  for (const Action& a : p.actions) {
    if (const auto* add = std::get_if<AddReplica>(&a.op)) n += add->stage == stage;
  }
  return n;
}

TEST(ParcaePolicy, GrowsEveryStageFromIdleWorkers) {
  ParcaeOptions o = Opts();
  o.model.max_depth = 2;
  o.model.min_depth = 2;
  const ParcaePolicy policy(o);
  const ClusterState s = MakeState({1, 1}, 4);
  const Plan p = policy.Decide(s, {}, Forecast{});  // no forecast: 6 workers stay
  EXPECT_TRUE(ValidatePlan(p, s).ok()) << ValidatePlan(p, s).ToString();
  EXPECT_EQ(CountAdds(p, 0), 2);
  EXPECT_EQ(CountAdds(p, 1), 2);
  EXPECT_EQ(p.memory.values.at("parcae/dp"), 3);
  EXPECT_EQ(p.memory.values.at("parcae/pp"), 2);
  EXPECT_EQ(p.next_evaluation_ms, s.now_ms + 60'000);
  EXPECT_EQ(p, policy.Decide(s, {}, Forecast{}));  // deterministic
}

TEST(ParcaePolicy, ForecastDropMakesGrowthNotWorthIt) {
  // Loading a stage takes 70 s. With 6 workers staying, (3,2) pays for itself many times over.
  // With the forecast saying only 2 are left from the next minute on (4 of 6 preempted in this
  // one), the new pipelines would serve at most part of one minute and cost 2 x 70 s of a
  // pipeline to load: stay at (1,2).
  ParcaeOptions o = Opts();
  o.model.min_depth = o.model.max_depth = 2;
  o.migration.move_stage_s = 70;
  const ParcaePolicy policy(o);
  const ClusterState s = MakeState({1, 1}, 4);
  EXPECT_EQ(CountAdds(policy.Decide(s, {}, Forecast{}), 0), 2);
  Forecast drop;
  drop.available_workers = {{s.now_ms + 60'000, 2}, {s.now_ms + 600'000, 2}};
  const Plan p = policy.Decide(s, {}, drop);
  EXPECT_TRUE(p.actions.empty()) << ToString(p.actions[0]);
  EXPECT_EQ(p.memory.values.at("parcae/dp"), 1);
}

TEST(ParcaePolicy, AddsPreferAFreeHostThenTheCheapest) {
  // Two stages need one replica each. Idle: c1 and c2 share host hx (price 1 and 1.5), e on hy
  // (price 2). Stage 0 gets c1 (cheapest, free host); then hx is busy, so stage 1 gets e on the
  // free host hy rather than the cheaper c2.
  ParcaeOptions o = Opts();
  o.model.min_depth = o.model.max_depth = 2;
  const ParcaePolicy policy(o);
  ClusterState s = MakeState({1, 1}, 0);
  s.idle = {Worker{"c2", "hx", "p3", 1.0, 1.5}, Worker{"e", "hy", "p3", 1.0, 2.0},
            Worker{"c1", "hx", "p3", 1.0, 1.0}};
  s.memory.values["parcae/dp"] = 2;  // (2,2) was chosen long ago: no hold in the way
  s.memory.values["parcae/since_ms"] = 0;
  const Plan p = policy.Decide(s, {}, Forecast{});
  // 5 workers: target (2,2): one add per stage.
  ASSERT_EQ(p.actions.size(), 2u);
  EXPECT_EQ(p.actions[0].op, (ActionOp{AddReplica{0, "c1"}}));
  EXPECT_EQ(p.actions[1].op, (ActionOp{AddReplica{1, "e"}}));
}

TEST(ParcaePolicy, DrainsExcessReplicasToTheIdlePool) {
  // Stage 1 lost a replica: 3 workers, depth 2 -> 1 pipeline. Stage 0's extra replica is drained
  // (the most expensive: s0r1 at price 2) and becomes a spare for either stage.
  ParcaeOptions o = Opts();
  o.model.min_depth = o.model.max_depth = 2;
  const ParcaePolicy policy(o);
  const ClusterState s = MakeState({2, 1}, 0);
  const Plan p = policy.Decide(s, {}, Forecast{});
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(p.actions[0].op, (ActionOp{DrainReplica{0, "s0r1"}}));
  EXPECT_TRUE(ValidatePlan(p, s).ok());
}

TEST(ParcaePolicy, ReportsMissingIdleWorkersAsUnmet) {
  ParcaeOptions o = Opts();
  o.model.min_depth = o.model.max_depth = 2;
  const ParcaePolicy policy(o);
  // 3 workers now: a forecast of 8 later changes nothing in the first interval ((1,2) fits).
  ClusterState s = MakeState({1, 1}, 1);
  Forecast more;
  more.available_workers = {{s.now_ms + 60'000, 8}};
  EXPECT_TRUE(policy.Decide(s, {}, more).actions.empty());
  // Stage 0 holds 3 replicas, stage 1 one, nobody idle: 4 workers -> target (2,2). Stage 1 needs
  // a replica and there is no idle worker (unmet); stage 0's extra one is drained (s0r2, the
  // most expensive), so the next decision can add it to stage 1.
  s = MakeState({3, 1}, 0);
  const Plan p = policy.Decide(s, {}, Forecast{});
  EXPECT_EQ(p.memory.values.at("parcae/dp"), 2);
  ASSERT_EQ(p.unmet.size(), 1u);
  EXPECT_EQ(p.unmet[0].stage, 1);
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(p.actions[0].op, (ActionOp{DrainReplica{0, "s0r2"}}));
  EXPECT_TRUE(ValidatePlan(p, s).ok());
  // Apply it: s0r2 drains and registers idle; now stage 1 gets it.
  s.stages[0].replicas.pop_back();
  s.idle.push_back(Worker{"s0r2", "h-s0r2", "p3", 1.0, 3.0});
  s.memory = p.memory;
  const Plan q = policy.Decide(s, {}, Forecast{});
  ASSERT_EQ(q.actions.size(), 1u);
  EXPECT_EQ(q.actions[0].op, (ActionOp{AddReplica{1, "s0r2"}}));
  EXPECT_TRUE(q.unmet.empty());
}

TEST(ParcaePolicy, HoldsItsTargetForMinHold) {
  ParcaeOptions o = Opts();
  o.model.min_depth = o.model.max_depth = 2;
  const ParcaePolicy policy(o);
  ClusterState s = MakeState({1, 1}, 4);
  s.memory.values["parcae/dp"] = 1;
  s.memory.values["parcae/since_ms"] = static_cast<double>(s.now_ms - 10'000);
  Plan p = policy.Decide(s, {}, Forecast{});
  EXPECT_TRUE(p.actions.empty());  // chose (1,2) 10 s ago: held
  EXPECT_EQ(p.memory.values.at("parcae/dp"), 1);
  s.memory.values["parcae/since_ms"] = static_cast<double>(s.now_ms - 40'000);
  p = policy.Decide(s, {}, Forecast{});
  EXPECT_EQ(CountAdds(p, 0), 2);
  EXPECT_EQ(p.memory.values.at("parcae/since_ms"), s.now_ms);
}

TEST(ParcaePolicy, SuggestsRepartitionWhenAnotherDepthIsMuchBetter) {
  // 4 stages x 1 replica, comm 0.5 s per batch: (1,4) serves 1 / (0.25 + 0.5) = 1.33 req/s,
  // (4,1) 4 / 1.5 = 2.67. Re-partitioning costs 60 s x 2.67, gains 1.33 x 600: suggested.
  ParcaeOptions o = Opts();
  o.model = PipelineModel{1.0, 0.5, 1, 4};
  const ParcaePolicy policy(o);
  const ClusterState s = MakeState({1, 1, 1, 1}, 0);
  const Plan p = policy.Decide(s, {}, Forecast{});
  EXPECT_TRUE(p.actions.empty());
  ASSERT_EQ(p.unmet.size(), 1u);
  EXPECT_NE(p.unmet[0].reason.find("re-partition to 4 x 1"), std::string::npos)
      << p.unmet[0].reason;
  EXPECT_EQ(p.memory.values.at("parcae/best_pp"), 1);
}

}  // namespace
}  // namespace archi::policy
