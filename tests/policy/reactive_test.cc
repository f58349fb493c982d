// ReactivePolicy on hand-checked cases. Each test drives Decide the way the coordinator and the
// simulator do: a clock the test owns, Plan::memory fed back into ClusterState::memory, and the
// plan's actions applied to the state (add -> joining replica, drain -> draining replica).
#include "runtime/policy/reactive.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace archi::policy {
namespace {

Worker MakeWorker(const std::string& id, const std::string& host, double price = 1.0) {
  return Worker{id, host, "cpu", 1.0, price};
}

// Stages 0..n-1 with `replicas` ready replicas each (worker "s<i>r<j>" on host "h-s<i>r<j>"), and
// `idle` idle workers "i<k>" on host "hi<k>" priced 1.0.
ClusterState MakeState(int stages, int replicas, int idle) {
  ClusterState s;
  for (int i = 0; i < stages; ++i) {
    Stage st;
    st.index = i;
    st.layer_begin = 2 * i;
    st.layer_end = 2 * i + 2;
    for (int j = 0; j < replicas; ++j) {
      const std::string id = "s" + std::to_string(i) + "r" + std::to_string(j);
      st.replicas.push_back(Replica{MakeWorker(id, "h-" + id), ReplicaState::kReady, 0});
    }
    s.stages.push_back(std::move(st));
  }
  for (int k = 0; k < idle; ++k) {
    s.idle.push_back(MakeWorker("i" + std::to_string(k), "hi" + std::to_string(k)));
  }
  return s;
}

StageMetrics Load(int stage, double queue, double p99_ms, double util) {
  StageMetrics m;
  m.stage = stage;
  m.queue_depth = queue;
  m.p50_ms = p99_ms / 2;
  m.p99_ms = p99_ms;
  m.throughput_rps = 100;
  m.utilisation = util;
  return m;
}

// What the caller does with a plan: adds join, drains drain, memory comes back next time.
void Apply(const Plan& plan, ClusterState& s) {
  for (const Action& a : plan.actions) {
    if (const auto* add = std::get_if<AddReplica>(&a.op)) {
      auto it = std::find_if(s.idle.begin(), s.idle.end(),
                             [&](const Worker& w) { return w.id == add->worker; });
      ASSERT_NE(it, s.idle.end()) << ToString(a);
      s.stages[add->stage].replicas.push_back(Replica{*it, ReplicaState::kJoining, s.now_ms});
      s.idle.erase(it);
    } else {
      const auto& drain = std::get<DrainReplica>(a.op);
      for (Replica& r : s.stages[drain.stage].replicas) {
        if (r.worker.id == drain.worker) r.state = ReplicaState::kDraining;
      }
    }
  }
  s.memory = plan.memory;
}

void MarkReady(ClusterState& s) {
  for (Stage& st : s.stages) {
    for (Replica& r : st.replicas) {
      if (r.state == ReplicaState::kJoining) r.state = ReplicaState::kReady;
    }
  }
}

ReactiveOptions TestOptions() {
  ReactiveOptions o;
  o.max_queue_per_replica = 4;
  o.scale_out_after_ms = 5'000;
  o.scale_in_below = 0.3;
  o.scale_in_after_ms = 20'000;
  o.cooldown_ms = 30'000;
  o.bounds = {1, 8};
  o.evaluation_interval_ms = 1'000;
  return o;
}

TEST(ReactivePolicy, DefaultOptionsValidate) {
  EXPECT_TRUE(ReactiveOptions{}.Validate().ok());
  ReactiveOptions bad;
  bad.bounds = {3, 2};
  EXPECT_EQ(bad.Validate().code(), StatusCode::kInvalidArgument);
  bad = {};
  bad.cooldown_ms = -1;
  EXPECT_EQ(bad.Validate().code(), StatusCode::kInvalidArgument);
}

TEST(ReactivePolicy, ScalesOutOnlyAfterSustainedOverload) {
  ReactivePolicy policy(TestOptions());
  ClusterState s = MakeState(2, 2, 3);
  ASSERT_TRUE(Validate(s).ok());

  // A single spike (queue 20 on 2 replicas = 10 per replica > 4) for one decision: nothing.
  ClusterMetrics spike{{Load(0, 20, 50, 0.9), Load(1, 0, 10, 0.5)}, {}};
  ClusterMetrics calm{{Load(0, 2, 20, 0.5), Load(1, 0, 10, 0.5)}, {}};
  s.now_ms = 1'000;
  Plan p = policy.Decide(s, spike, {});
  EXPECT_TRUE(p.actions.empty());
  EXPECT_EQ(p.memory.stages.at(0).over_since_ms, 1'000);
  EXPECT_EQ(p.next_evaluation_ms, 2'000);
  Apply(p, s);
  s.now_ms = 2'000;
  p = policy.Decide(s, calm, {});
  EXPECT_TRUE(p.actions.empty());
  EXPECT_EQ(p.memory.stages.at(0).over_since_ms, kNoTime);  // the run was broken
  Apply(p, s);

  // Sustained: overloaded at 3 s .. 8 s; the action comes at 8 s (5 s after it began).
  for (TimeMs t = 3'000; t < 8'000; t += 1'000) {
    s.now_ms = t;
    p = policy.Decide(s, spike, {});
    EXPECT_TRUE(p.actions.empty()) << "t=" << t;
    Apply(p, s);
  }
  s.now_ms = 8'000;
  p = policy.Decide(s, spike, {});
  ASSERT_EQ(p.actions.size(), 1u);
  const auto& add = std::get<AddReplica>(p.actions[0].op);
  EXPECT_EQ(add.stage, 0);
  EXPECT_EQ(add.worker, "i0");  // all idle on free hosts at the same price: lowest id
  EXPECT_NE(p.actions[0].reason.find("queue 10.0 per replica > 4.0"), std::string::npos)
      << p.actions[0].reason;
  EXPECT_TRUE(ValidatePlan(p, s).ok());
  EXPECT_EQ(p.memory.stages.at(0).last_action_ms, 8'000);
  EXPECT_EQ(p.memory.stages.at(0).over_since_ms, kNoTime);
}

TEST(ReactivePolicy, P99OverSloBudgetIsOverload) {
  ReactiveOptions o = TestOptions();
  o.scale_out_after_ms = 0;  // act on the first overloaded decision
  ReactivePolicy policy(o);
  ClusterState s = MakeState(2, 1, 1);
  // SLO 100 ms over 2 stages: 50 ms each. Stage 1 at 60 ms is over, stage 0 at 40 ms is not.
  ClusterMetrics m{{Load(0, 0, 40, 0.5), Load(1, 0, 60, 0.5)}, {}};
  m.frontend.slo_p99_ms = 100;
  Plan p = policy.Decide(s, m, {});
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(std::get<AddReplica>(p.actions[0].op).stage, 1);
  EXPECT_NE(p.actions[0].reason.find("p99 60.0 ms > 50.0 ms"), std::string::npos);
}

TEST(ReactivePolicy, NoFlappingUnderOscillatingLoad) {
  ReactivePolicy policy(TestOptions());
  ClusterState s = MakeState(1, 2, 4);
  ClusterMetrics hot{{Load(0, 40, 50, 0.95)}, {}};
  ClusterMetrics cold{{Load(0, 0, 5, 0.05)}, {}};

  // Load flips every 3 s (shorter than scale_out_after_ms): never a sustained run either way.
  int actions = 0;
  for (TimeMs t = 0; t < 300'000; t += 1'000) {
    s.now_ms = t;
    Plan p = policy.Decide(s, (t / 3'000) % 2 == 0 ? hot : cold, {});
    actions += static_cast<int>(p.actions.size());
    Apply(p, s);
    MarkReady(s);
  }
  EXPECT_EQ(actions, 0);

  // Long phases (60 s hot, 60 s cold): every action is at least cooldown_ms after the previous
  // one, and an add is never undone before the cooldown.
  std::vector<TimeMs> times;
  for (TimeMs t = 300'000; t < 900'000; t += 1'000) {
    s.now_ms = t;
    Plan p = policy.Decide(s, ((t - 300'000) / 60'000) % 2 == 0 ? hot : cold, {});
    ASSERT_LE(p.actions.size(), 1u);
    if (!p.actions.empty()) times.push_back(t);
    Apply(p, s);
    MarkReady(s);
  }
  ASSERT_GE(times.size(), 2u);  // it does react to sustained phases
  for (size_t i = 1; i < times.size(); ++i) {
    EXPECT_GE(times[i] - times[i - 1], 30'000) << "actions at " << times[i - 1] << ", " << times[i];
  }
}

TEST(ReactivePolicy, CooldownAndJoiningHoldBackASecondScaleOut) {
  ReactiveOptions o = TestOptions();
  o.scale_out_after_ms = 0;
  ReactivePolicy policy(o);
  ClusterState s = MakeState(1, 1, 3);
  ClusterMetrics hot{{Load(0, 40, 50, 0.95)}, {}};
  s.now_ms = 0;
  Plan p = policy.Decide(s, hot, {});
  ASSERT_EQ(p.actions.size(), 1u);
  Apply(p, s);
  // Still joining after the cooldown: no second add.
  s.now_ms = 40'000;
  p = policy.Decide(s, hot, {});
  EXPECT_TRUE(p.actions.empty());
  Apply(p, s);
  MarkReady(s);
  // Ready and past the cooldown: adds again.
  s.now_ms = 41'000;
  p = policy.Decide(s, hot, {});
  EXPECT_EQ(p.actions.size(), 1u);
}

TEST(ReactivePolicy, ScaleInDrainsLeastLoadedNeverBelowMin) {
  ReactiveOptions o = TestOptions();
  o.bounds = {2, 8};
  ReactivePolicy policy(o);
  ClusterState s = MakeState(1, 4, 0);
  StageMetrics m = Load(0, 0, 5, 0.1);
  m.replicas = {
      {"s0r0", 0, 0.15, 10}, {"s0r1", 0, 0.05, 10}, {"s0r2", 1, 0.12, 10}, {"s0r3", 0, 0.08, 10}};
  ClusterMetrics cold{{m}, {}};

  std::vector<std::string> drained;
  std::vector<TimeMs> when;
  for (TimeMs t = 0; t <= 300'000; t += 1'000) {
    s.now_ms = t;
    Plan p = policy.Decide(s, cold, {});
    for (const Action& a : p.actions) {
      drained.push_back(std::get<DrainReplica>(a.op).worker);
      when.push_back(t);
    }
    EXPECT_TRUE(ValidatePlan(p, s).ok());
    Apply(p, s);
  }
  // 4 replicas, min 2: exactly two drains, least utilisation first (r1 0.05, then r3 0.08).
  ASSERT_EQ(drained, (std::vector<std::string>{"s0r1", "s0r3"}));
  EXPECT_EQ(when[0], 20'000);           // idle from t=0, scale_in_after_ms = 20 s
  EXPECT_EQ(when[1], 20'000 + 30'000);  // cooldown 30 s >= a fresh 20 s idle run
  int active = 0;
  for (const Replica& r : s.stages[0].replicas) active += r.state != ReplicaState::kDraining;
  EXPECT_EQ(active, 2);
}

TEST(ReactivePolicy, NoAddWithoutAnIdleWorker) {
  ReactiveOptions o = TestOptions();
  o.scale_out_after_ms = 0;
  ReactivePolicy policy(o);
  ClusterState s = MakeState(2, 1, 0);
  ClusterMetrics hot{{Load(0, 40, 50, 0.95), Load(1, 40, 50, 0.95)}, {}};
  Plan p = policy.Decide(s, hot, {});
  EXPECT_TRUE(p.actions.empty());
  ASSERT_EQ(p.unmet.size(), 2u);
  EXPECT_NE(p.unmet[0].reason.find("no idle worker"), std::string::npos);
  // One idle worker, two overloaded stages: it goes to one stage only (the first), once.
  s.idle.push_back(MakeWorker("w", "hw"));
  p = policy.Decide(s, hot, {});
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(std::get<AddReplica>(p.actions[0].op), (AddReplica{0, "w"}));
  ASSERT_EQ(p.unmet.size(), 1u);
  EXPECT_EQ(p.unmet[0].stage, 1);
  EXPECT_TRUE(ValidatePlan(p, s).ok());
}

TEST(ReactivePolicy, PrefersAFreeHostThenTheCheapest) {
  ReactiveOptions o = TestOptions();
  o.scale_out_after_ms = 0;
  ReactivePolicy policy(o);
  ClusterState s = MakeState(1, 1, 0);       // replica s0r0 on host h-s0r0
  s.idle = {MakeWorker("a", "h-s0r0", 0.1),  // cheapest, but its host already serves
            MakeWorker("b", "free1", 3.0), MakeWorker("c", "free2", 2.0)};
  ClusterMetrics hot{{Load(0, 40, 50, 0.95)}, {}};
  Plan p = policy.Decide(s, hot, {});
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(std::get<AddReplica>(p.actions[0].op).worker, "c");
  // With every host busy the cheapest wins.
  s.idle = {MakeWorker("b", "h-s0r0", 3.0), MakeWorker("a", "h-s0r0", 0.1)};
  p = policy.Decide(s, hot, {});
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(std::get<AddReplica>(p.actions[0].op).worker, "a");
}

TEST(ReactivePolicy, RespectsMaxReplicasAndRepairsBelowMin) {
  ReactiveOptions o = TestOptions();
  o.scale_out_after_ms = 0;
  o.stage_bounds[0] = {1, 2};
  o.stage_bounds[1] = {2, 4};
  ReactivePolicy policy(o);
  ClusterState s = MakeState(2, 2, 4);
  s.stages[1].replicas[1].state = ReplicaState::kDraining;  // stage 1: 1 active < min 2
  ClusterMetrics hot{{Load(0, 40, 50, 0.95), Load(1, 0, 5, 0.5)}, {}};
  s.memory.stages[1].last_action_ms = 0;  // repair ignores the cooldown
  s.now_ms = 1'000;
  Plan p = policy.Decide(s, hot, {});
  ASSERT_EQ(p.actions.size(), 1u);
  EXPECT_EQ(std::get<AddReplica>(p.actions[0].op).stage, 1);
  EXPECT_NE(p.actions[0].reason.find("min_replicas"), std::string::npos);
  ASSERT_EQ(p.unmet.size(), 1u);  // stage 0 is at its max of 2
  EXPECT_NE(p.unmet[0].reason.find("at max_replicas 2"), std::string::npos);

  // Above max (the bound was lowered): one drain per decision, down to it.
  o.stage_bounds[0] = {1, 1};
  ReactivePolicy lowered(o);
  p = lowered.Decide(s, hot, {});
  ASSERT_EQ(p.actions.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<DrainReplica>(p.actions[0].op));
}

TEST(ReactivePolicy, StageWithoutMetricsKeepsNoTimers) {
  ReactivePolicy policy(TestOptions());
  ClusterState s = MakeState(2, 2, 2);
  s.memory.stages[1].over_since_ms = 0;
  s.now_ms = 60'000;
  Plan p = policy.Decide(s, ClusterMetrics{{Load(0, 0, 5, 0.5)}, {}}, {});
  EXPECT_TRUE(p.actions.empty());
  EXPECT_EQ(p.memory.stages.at(1), StageMemory{});
}

TEST(ReactivePolicy, Deterministic) {
  ReactiveOptions o = TestOptions();
  o.scale_out_after_ms = 0;
  o.scale_in_after_ms = 0;
  o.cooldown_ms = 0;
  ReactivePolicy policy(o);
  ClusterState s = MakeState(4, 3, 10);
  ClusterMetrics m{
      {Load(0, 40, 50, 0.95), Load(1, 0, 5, 0.05), Load(2, 40, 50, 0.95), Load(3, 1, 5, 0.5)}, {}};
  m.stages[1].replicas = {{"s1r2", 0, 0.01, 1}};
  s.now_ms = 7'000;
  const Plan a = policy.Decide(s, m, {});
  const Plan b = policy.Decide(s, m, {});
  const Plan c = ReactivePolicy(o).Decide(ClusterState(s), ClusterMetrics(m), Forecast{});
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  ASSERT_EQ(a.actions.size(), 3u);
  EXPECT_EQ(a.actions[0].op, ActionOp(AddReplica{0, "i0"}));
  EXPECT_EQ(a.actions[1].op, ActionOp(DrainReplica{1, "s1r0"}));  // r0, r1 unreported: load 0
  EXPECT_EQ(a.actions[2].op, ActionOp(AddReplica{2, "i1"}));
}

TEST(PolicyValidate, RejectsInconsistentStatesAndPlans) {
  ClusterState s = MakeState(2, 1, 1);
  EXPECT_TRUE(Validate(s).ok());
  ClusterState dup = s;
  dup.idle.push_back(dup.stages[0].replicas[0].worker);
  EXPECT_EQ(Validate(dup).code(), StatusCode::kInvalidArgument);
  ClusterState unsorted = s;
  std::swap(unsorted.stages[0], unsorted.stages[1]);
  EXPECT_EQ(Validate(unsorted).code(), StatusCode::kInvalidArgument);

  Plan p;
  p.actions = {Action{AddReplica{0, "s1r0"}, ""}};  // not idle
  EXPECT_EQ(ValidatePlan(p, s).code(), StatusCode::kInvalidArgument);
  p.actions = {Action{DrainReplica{1, "s0r0"}, ""}};  // replica of another stage
  EXPECT_EQ(ValidatePlan(p, s).code(), StatusCode::kInvalidArgument);
  p.actions = {Action{AddReplica{0, "i0"}, ""}, Action{AddReplica{1, "i0"}, ""}};  // twice
  EXPECT_EQ(ValidatePlan(p, s).code(), StatusCode::kInvalidArgument);
  p.actions = {Action{AddReplica{5, "i0"}, ""}};  // no such stage
  EXPECT_EQ(ValidatePlan(p, s).code(), StatusCode::kInvalidArgument);
  p.actions = {Action{AddReplica{1, "i0"}, ""}, Action{DrainReplica{0, "s0r0"}, ""}};
  EXPECT_TRUE(ValidatePlan(p, s).ok());
}

// 10,000 workers across 8 stages (1,000 replicas each, 2,000 idle): correctness at that size,
// and the decision time printed (a timing is never pass/fail here).
TEST(ReactivePolicy, TenThousandWorkers) {
  ReactiveOptions o = TestOptions();
  o.bounds = {1, 2'000};
  o.scale_out_after_ms = 0;
  o.scale_in_after_ms = 0;
  o.cooldown_ms = 0;
  ReactivePolicy policy(o);
  ClusterState s = MakeState(8, 1'000, 2'000);
  // Idle workers 0..1999 on hosts that already serve, except the priciest free ones.
  for (int k = 0; k < 2'000; ++k) {
    Worker& w = s.idle[k];
    w.price_per_hour = 1.0 + (k % 7);
    if (k % 100 != 99) w.host = "h-s" + std::to_string(k % 8) + "r" + std::to_string(k % 1'000);
  }
  ASSERT_TRUE(Validate(s).ok());
  ClusterMetrics m;
  for (int i = 0; i < 8; ++i) {
    const bool hot = i % 2 == 0;
    StageMetrics sm = Load(i, hot ? 10'000 : 0, hot ? 80 : 5, hot ? 0.95 : 0.1);
    for (int j = 0; j < 1'000; ++j) {
      sm.replicas.push_back({"s" + std::to_string(i) + "r" + std::to_string(j), 0,
                             0.05 + 0.0001 * ((j * 7919) % 1'000), 10});
    }
    m.stages.push_back(std::move(sm));
  }
  m.frontend.slo_p99_ms = 200;
  s.now_ms = 1'000'000;

  constexpr int kRounds = 20;
  Plan plan;
  std::vector<double> ms;
  for (int i = 0; i < kRounds; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Plan p = policy.Decide(s, m, {});
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (i == 0) plan = std::move(p);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("[ decision ] 10,000 workers, 8 stages: median %.3f ms, max %.3f ms (%d runs)\n",
              ms[kRounds / 2], ms.back(), kRounds);

  ASSERT_TRUE(ValidatePlan(plan, s).ok());
  ASSERT_EQ(plan.actions.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    const Action& a = plan.actions[i];
    if (i % 2 == 0) {
      const auto& add = std::get<AddReplica>(a.op);
      EXPECT_EQ(add.stage, i);
      // Free hosts first (k % 100 == 99), then price (1 + k % 7), then id as a string.
      const int k = std::stoi(add.worker.substr(1));
      EXPECT_EQ(k % 100, 99) << add.worker;
    } else {
      const auto& drain = std::get<DrainReplica>(a.op);
      EXPECT_EQ(drain.stage, i);
      // Least utilisation: (j * 7919) % 1000 == 0 -> j = 0.
      EXPECT_EQ(drain.worker, "s" + std::to_string(i) + "r0");
    }
  }
  // Free hosts at price 1: k = 399, 1099, 1799; at price 2: 99, 799, 1499. By id string order.
  EXPECT_EQ(std::get<AddReplica>(plan.actions[0].op).worker, "i1099");
  EXPECT_EQ(std::get<AddReplica>(plan.actions[2].op).worker, "i1799");
  EXPECT_EQ(std::get<AddReplica>(plan.actions[4].op).worker, "i399");
  EXPECT_EQ(std::get<AddReplica>(plan.actions[6].op).worker, "i1499");
}

}  // namespace
}  // namespace archi::policy
