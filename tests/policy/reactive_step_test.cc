// ReactiveOptions::max_adds_per_decision: several adds per stage in one decision, by hand.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/policy/reactive.h"

namespace archi::policy {
namespace {

Worker W(const std::string& id) { return Worker{id, "h-" + id, "cpu", 1.0, 1.0}; }

// One stage with `ready` ready replicas and `idle` idle workers.
ClusterState OneStage(int ready, int idle) {
  ClusterState s;
  s.now_ms = 100'000;
  Stage st;
  st.index = 0;
  st.layer_begin = 0;
  st.layer_end = 4;
  for (int i = 0; i < ready; ++i) st.replicas.push_back({W("r" + std::to_string(i)), ReplicaState::kReady, 0});
  s.stages.push_back(st);
  for (int i = 0; i < idle; ++i) s.idle.push_back(W("i" + std::to_string(i)));
  return s;
}

ClusterMetrics Queue(double depth) {
  ClusterMetrics m;
  StageMetrics sm;
  sm.stage = 0;
  sm.queue_depth = depth;
  sm.utilisation = 1.0;
  m.stages.push_back(sm);
  return m;
}

int Adds(const Plan& p) {
  int n = 0;
  for (const Action& a : p.actions) n += std::holds_alternative<AddReplica>(a.op) ? 1 : 0;
  return n;
}

// Overloaded since t = 0 (memory), past scale-out-after and cooldown.
ClusterState Overloaded(int ready, int idle) {
  ClusterState s = OneStage(ready, idle);
  s.memory.stages[0].over_since_ms = 0;
  return s;
}

TEST(ReactiveMaxAdds, DefaultAddsOne) {
  ReactivePolicy p{ReactiveOptions{}};
  // 1 ready replica, queue 20, threshold 4: 20 / 4 - 1 = 4 replicas would be needed.
  const Plan plan = p.Decide(Overloaded(1, 10), Queue(20), {});
  EXPECT_EQ(Adds(plan), 1);
  EXPECT_TRUE(ValidatePlan(plan, Overloaded(1, 10)).ok());
}

TEST(ReactiveMaxAdds, ScaleOutAddsWhatTheQueueNeedsUpToTheCap) {
  ReactiveOptions o;
  o.max_adds_per_decision = 8;
  ReactivePolicy p{o};
  // ceil(20 / 4 - 1) = 4.
  EXPECT_EQ(Adds(p.Decide(Overloaded(1, 10), Queue(20), {})), 4);
  // ceil(21 / 4 - 2) = ceil(3.25) = 4.
  EXPECT_EQ(Adds(p.Decide(Overloaded(2, 10), Queue(21), {})), 4);
  // Just over the threshold (queue 9 on 2: 4.5 per replica): ceil(9 / 4 - 2) = 1.
  EXPECT_EQ(Adds(p.Decide(Overloaded(2, 10), Queue(9), {})), 1);
  // Capped by the option: 3 of the 4.
  o.max_adds_per_decision = 3;
  EXPECT_EQ(Adds(ReactivePolicy{o}.Decide(Overloaded(1, 10), Queue(20), {})), 3);
  // Capped by max_replicas: 1 active, max 3 -> 2.
  o.max_adds_per_decision = 8;
  o.bounds.max_replicas = 3;
  EXPECT_EQ(Adds(ReactivePolicy{o}.Decide(Overloaded(1, 10), Queue(20), {})), 2);
  // Capped by the idle pool: 2 adds, then an unmet entry.
  o.bounds.max_replicas = 64;
  const Plan short_pool = ReactivePolicy{o}.Decide(Overloaded(1, 2), Queue(20), {});
  EXPECT_EQ(Adds(short_pool), 2);
  ASSERT_EQ(short_pool.unmet.size(), 1u);
  EXPECT_TRUE(ValidatePlan(short_pool, Overloaded(1, 2)).ok());
}

TEST(ReactiveMaxAdds, RepairAddsUpToMinReplicasAtOnce) {
  ReactiveOptions o;
  o.bounds.min_replicas = 3;
  o.max_adds_per_decision = 8;
  const ClusterState s = OneStage(0, 5);
  const Plan plan = ReactivePolicy{o}.Decide(s, {}, {});
  EXPECT_EQ(Adds(plan), 3);
  EXPECT_TRUE(ValidatePlan(plan, s).ok());
  o.max_adds_per_decision = 1;
  EXPECT_EQ(Adds(ReactivePolicy{o}.Decide(s, {}, {})), 1);
}

TEST(ReactiveMaxAdds, Validated) {
  ReactiveOptions o;
  o.max_adds_per_decision = 0;
  EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace archi::policy
