// The discrete-event simulator on hand-checked scenarios (exact latencies), preemption with and
// without warning, the policy driving joins, determinism and conservation.
#include "bench/sim/simulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "runtime/policy/availability_forecast.h"
#include "runtime/policy/parcae.h"
#include "runtime/policy/reactive.h"

namespace archi::sim {
namespace {

NodeTrace Trace(std::vector<NodeEvent> events, int64_t end_ms) {
  NodeTrace t;
  t.source = "test";
  t.events = std::move(events);
  t.end_ms = end_ms;
  return t;
}

ArrivalSpec Times(std::vector<double> t) {
  ArrivalSpec a;
  a.times_ms = std::move(t);
  return a;
}

std::vector<double> Every(double first, double step, int n) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(first + step * i);
  return v;
}

SimResult RunSim(SimOptions o, PerfModel m, NodeTrace t, ArrivalSpec a,
                 const policy::Policy& p) {
  auto sim = Simulator::Create(std::move(o), std::move(m), std::move(t), std::move(a), &p);
  EXPECT_TRUE(sim.ok()) << sim.status();
  if (!sim.ok()) return {};
  return (*sim)->Run();
}

void ExpectConserved(const SimResult& r) {
  EXPECT_EQ(r.arrived, r.served + r.timed_out + r.lost())
      << "served " << r.served << " timed_out " << r.timed_out << " lost " << r.lost();
  uint64_t a = 0, s = 0, t = 0, l = 0;
  for (const IntervalRow& row : r.timeline) a += row.arrived, s += row.served, t += row.timed_out, l += row.lost;
  EXPECT_EQ(a, r.arrived);
  EXPECT_EQ(s, r.served);
  EXPECT_EQ(t, r.timed_out);
  EXPECT_EQ(l, r.lost());
}

SimOptions Exact(int stages, int64_t end_ms) {
  SimOptions o;
  o.stages = stages;
  o.end_ms = end_ms;
  o.record_latencies = true;
  return o;
}

const policy::ReactivePolicy kReactive;

TEST(SimulatorTest, OneNodeConstantServiceSpacedArrivals) {
  // Arrivals every 100 ms, 10 ms of service: nobody waits, every latency is 10 ms.
  auto r = RunSim(Exact(1, 10'000), PerfModel::Constant(1, 1, 10, 0),
                  Trace({{0, NodeOp::kAdd, "n1"}}, 0), Times(Every(50, 100, 50)), kReactive);
  EXPECT_EQ(r.arrived, 50u);
  EXPECT_EQ(r.served, 50u);
  ASSERT_EQ(r.latencies.size(), 50u);
  for (double l : r.latencies) EXPECT_DOUBLE_EQ(l, 10.0);
  EXPECT_DOUBLE_EQ(r.end_ms, 4950 + 10);
  ExpectConserved(r);
}

TEST(SimulatorTest, OneNodeQueueBuildsUp) {
  // Arrivals every 5 ms at 0, 5, 10, ..., service 10 ms: request k starts at 10k, so its
  // latency is 10k + 10 - 5k = 5k + 10.
  auto r = RunSim(Exact(1, 10'000), PerfModel::Constant(1, 1, 10, 0),
                  Trace({{0, NodeOp::kAdd, "n1"}}, 0), Times(Every(0, 5, 20)), kReactive);
  ASSERT_EQ(r.latencies.size(), 20u);
  for (int k = 0; k < 20; ++k) EXPECT_DOUBLE_EQ(r.latencies[k], 5.0 * k + 10) << k;
  // Nearest rank of 20: p50 is the 10th (55 ms), p90 the 18th (95), p99 the 20th (105); the
  // histogram reports them within 0.4%.
  EXPECT_NEAR(r.p50_ms, 55, 55 * 0.004);
  EXPECT_NEAR(r.p90_ms, 95, 95 * 0.004);
  EXPECT_NEAR(r.p99_ms, 105, 105 * 0.004);
  EXPECT_DOUBLE_EQ(r.max_ms, 105);
  EXPECT_DOUBLE_EQ(r.mean_ms, 57.5);
  ExpectConserved(r);
}

TEST(SimulatorTest, BatchingServesTheQueueTogether) {
  // Max batch 4, 10 ms per batch whatever its size: arrivals at 0, 1, 2, 3, 4: the first goes
  // alone (0-10), the next four wait and go together (10-20).
  SimOptions o = Exact(1, 1000);
  o.max_batch = 4;
  auto r = RunSim(o, PerfModel::Constant(1, 4, 10, 0), Trace({{0, NodeOp::kAdd, "n1"}}, 0),
                  Times(Every(0, 1, 5)), kReactive);
  ASSERT_EQ(r.latencies.size(), 5u);
  EXPECT_DOUBLE_EQ(r.latencies[0], 10);
  for (int k = 1; k < 5; ++k) EXPECT_DOUBLE_EQ(r.latencies[k], 20.0 - k) << k;
}

TEST(SimulatorTest, TwoStagesWithTransfer) {
  // Two nodes, one per stage (initial fill), 5 ms per stage, 2 ms between: 5 + 2 + 5 = 12 ms.
  auto r = RunSim(Exact(2, 10'000), PerfModel::Constant(2, 1, 5, 2),
                  Trace({{0, NodeOp::kAdd, "a"}, {0, NodeOp::kAdd, "b"}}, 0),
                  Times(Every(1, 50, 20)), kReactive);
  ASSERT_EQ(r.latencies.size(), 20u);
  for (double l : r.latencies) EXPECT_DOUBLE_EQ(l, 12.0);
}

TEST(SimulatorTest, TimeoutAndSlo) {
  // Every 5 ms, 10 ms service, deadline 42 ms: latencies 10, 15, 20, ...; request k finishes
  // at 10k + 10 and is dropped at the head of the queue once 10k > 5k + 42 (k >= 9), and those
  // behind it too once their deadline is past when they reach the head.
  SimOptions o = Exact(1, 1000);
  o.timeout_ms = 42;
  o.slo_ms = 20;
  auto r = RunSim(o, PerfModel::Constant(1, 1, 10, 0), Trace({{0, NodeOp::kAdd, "n1"}}, 0),
                  Times(Every(0, 5, 12)), kReactive);
  // k = 0..6 finish by 5k + 10 <= 40 < 42; k = 7 would finish at 80 > 35 + 42 = 77: counted
  // as timed out at completion; k >= 8 reach the head at 80, 90, ... past 40 + 42 = 82? k = 8
  // starts at 80 <= 82 and ends at 90 > 82: timed out at completion; k = 9 reaches the head at
  // 90 > 45 + 42 = 87: dropped; so are 10 and 11.
  EXPECT_EQ(r.served, 7u);
  EXPECT_EQ(r.timed_out, 5u);
  EXPECT_EQ(r.within_slo, 3u);  // latencies 10, 15, 20
  EXPECT_DOUBLE_EQ(r.slo_attainment, 3.0 / 12.0);
  ExpectConserved(r);
}

// Two nodes, one stage, 100 ms service; requests at 0.5 and 1.0 ms go one to each node.
// Node b is removed at 50 ms.
SimResult PreemptScenario(int64_t warning_ms, bool resend) {
  SimOptions o = Exact(1, 1000);
  o.warning_ms = warning_ms;
  o.resend = resend;
  return RunSim(o, PerfModel::Constant(1, 1, 100, 0),
                Trace({{0, NodeOp::kAdd, "a"}, {0, NodeOp::kAdd, "b"}, {50, NodeOp::kRemove, "b"}}, 50),
                Times({0.5, 1.0}), kReactive);
}

TEST(SimulatorTest, PreemptionWithoutWarningResends) {
  SimResult r = PreemptScenario(0, true);
  EXPECT_EQ(r.served, 2u);
  EXPECT_EQ(r.lost(), 0u);
  EXPECT_EQ(r.resent, 1u);
  EXPECT_EQ(r.reconfigs["preempt"], 1u);
  ASSERT_EQ(r.latencies.size(), 2u);
  std::vector<double> l = r.latencies;
  std::sort(l.begin(), l.end());
  // The survivor finishes its own request (100 ms), then serves the resent one from the start:
  // 200.5 - 1.0 or 201 - 0.5.
  EXPECT_DOUBLE_EQ(l[0], 100);
  EXPECT_TRUE(l[1] == 199.5 || l[1] == 200.5) << l[1];
  ExpectConserved(r);
}

TEST(SimulatorTest, PreemptionWithoutResendLoses) {
  SimResult r = PreemptScenario(0, false);
  EXPECT_EQ(r.served, 1u);
  EXPECT_EQ(r.lost_preempted, 1u);
  ExpectConserved(r);
}

TEST(SimulatorTest, WarningBeforeTrafficMeansNothingToResend) {
  // The notice comes at max(0, 50 - 60) = 0, before any request: b takes no traffic, a serves
  // both back to back (0.5 - 100.5, 100.5 - 200.5).
  SimResult r = PreemptScenario(60, false);
  EXPECT_EQ(r.served, 2u);
  EXPECT_EQ(r.lost(), 0u);
  EXPECT_EQ(r.resent, 0u);
  ASSERT_EQ(r.latencies.size(), 2u);
  EXPECT_DOUBLE_EQ(r.latencies[0], 100);
  EXPECT_DOUBLE_EQ(r.latencies[1], 199.5);
  EXPECT_EQ(r.reconfigs["preempt"], 1u);
}

TEST(SimulatorTest, WarningReroutesTheQueue) {
  // Four requests at 0.5 .. 2.0 ms: each node has one in service and one waiting. b's notice
  // comes at 10 ms (removal at 500): its waiting request moves to a, its request in service
  // finishes at ~101, nothing is left on it at 500, none is lost even without resend.
  SimOptions o = Exact(1, 1000);
  o.warning_ms = 490;
  o.resend = false;
  auto r = RunSim(o, PerfModel::Constant(1, 1, 100, 0),
                  Trace({{0, NodeOp::kAdd, "a"}, {0, NodeOp::kAdd, "b"}, {500, NodeOp::kRemove, "b"}}, 500),
                  Times({0.5, 1.0, 1.5, 2.0}), kReactive);
  EXPECT_EQ(r.served, 4u);
  EXPECT_EQ(r.lost(), 0u);
  EXPECT_EQ(r.rerouted, 1u);
  EXPECT_EQ(r.resent, 0u);
  EXPECT_EQ(r.reconfigs["preempt_notice"], 1u);
  // a serves three requests back to back from ~0.5: the last ends at ~300.5.
  EXPECT_NEAR(r.end_ms, 300.5, 0.6);
  ExpectConserved(r);
}

TEST(SimulatorTest, PolicyAddsAReplicaThatJoinsAfterTheModelledCost) {
  // No initial fill: the node is idle at t = 0 and the reactive policy's repair rule (below
  // min_replicas = 1) adds it at once; it is ready after world creation + weight load, and the
  // request that arrived at 1 s waits for it.
  SimOptions o = Exact(1, 20'000);
  o.initial_fill = false;
  o.costs.world_create_ms = 13;
  o.costs.weight_load_ms = 5000;
  auto r = RunSim(o, PerfModel::Constant(1, 1, 10, 0), Trace({{0, NodeOp::kAdd, "n1"}}, 0),
                  Times({1000}), kReactive);
  EXPECT_EQ(r.reconfigs["add"], 1u);
  EXPECT_EQ(r.reconfigs["ready"], 1u);
  ASSERT_EQ(r.latencies.size(), 1u);
  EXPECT_DOUBLE_EQ(r.latencies[0], 5013 - 1000 + 10);
  bool saw_ready = false;
  for (const ReconfigEvent& e : r.log) {
    if (e.kind == "ready") {
      EXPECT_DOUBLE_EQ(e.t_ms, 5013);
      saw_ready = true;
    }
    if (e.kind == "add") {
      EXPECT_NE(e.reason.find("min_replicas"), std::string::npos) << e.reason;
    }
  }
  EXPECT_TRUE(saw_ready);
}

TEST(SimulatorTest, PolicyScalesOutUnderOverload) {
  // One ready replica and three idle nodes; arrivals at twice what one replica serves: the
  // reactive policy adds replicas (after 5 s of overload, then every cooldown) and the backlog
  // ends; with nothing to add, queues would grow without bound.
  SimOptions o;
  o.stages = 1;
  o.end_ms = 120'000;
  o.initial_fill = false;
  o.timeout_ms = 1e9;
  auto r = RunSim(o, PerfModel::Constant(1, 1, 10, 0),
                  Trace({{0, NodeOp::kAdd, "n1"}, {0, NodeOp::kAdd, "n2"}, {0, NodeOp::kAdd, "n3"},
                         {0, NodeOp::kAdd, "n4"}}, 0),
                  Times(Every(0, 5, 24'000)), kReactive);
  EXPECT_GE(r.reconfigs["add"], 2u);
  EXPECT_EQ(r.served, 24'000u);
  // The last interval of arrivals is served without a backlog: the run ends soon after them.
  EXPECT_LT(r.end_ms, 121'000);
  ExpectConserved(r);
}

// A run with every kind of outcome: preemptions without resend (lost), an admission limit
// (lost), a tight deadline (timed out), noise, Poisson arrivals.
SimResult Busy(uint64_t seed) {
  SimOptions o;
  o.stages = 2;
  o.max_batch = 4;
  o.timeout_ms = 300;
  o.max_in_system = 60;
  o.resend = false;
  o.warning_ms = 0;
  o.service_cv = 0.5;
  o.seed = seed;
  o.interval_ms = 10'000;
  std::vector<NodeEvent> ev;
  for (int i = 0; i < 6; ++i) ev.push_back({0, NodeOp::kAdd, "n" + std::to_string(i)});
  for (int i = 0; i < 3; ++i) ev.push_back({20'000 + 10'000 * i, NodeOp::kRemove, "n" + std::to_string(i)});
  ev.push_back({45'000, NodeOp::kAdd, "n0"});
  ArrivalSpec a;
  a.gap_ms = Distribution::Exponential(1.0 / 4);  // 250 req/s
  return RunSim(o, PerfModel::Constant(2, 4, 20, 1), Trace(ev, 60'000), a, kReactive);
}

TEST(SimulatorTest, ConservationWithEveryOutcome) {
  SimResult r = Busy(3);
  EXPECT_GT(r.served, 0u);
  EXPECT_GT(r.timed_out, 0u);
  EXPECT_GT(r.lost_admission, 0u);
  EXPECT_GT(r.lost_preempted, 0u);
  ExpectConserved(r);
}

// The default engine keeps a deterministic model's service completions in one FIFO per
// distinct duration; the reference path puts every one in the heap. Both pop events in the same
// (time, sequence) order, so every outcome, percentile, timeline row and log line is identical.
void ExpectSameRun(const SimResult& a, const SimResult& b) {
  EXPECT_EQ(a.arrived, b.arrived);
  EXPECT_EQ(a.served, b.served);
  EXPECT_EQ(a.timed_out, b.timed_out);
  EXPECT_EQ(a.lost_admission, b.lost_admission);
  EXPECT_EQ(a.lost_preempted, b.lost_preempted);
  EXPECT_EQ(a.resent, b.resent);
  EXPECT_EQ(a.rerouted, b.rerouted);
  EXPECT_EQ(a.end_ms, b.end_ms);
  EXPECT_EQ(a.events, b.events);
  EXPECT_EQ(a.decisions, b.decisions);
  EXPECT_EQ(a.p50_ms, b.p50_ms);
  EXPECT_EQ(a.p99_ms, b.p99_ms);
  EXPECT_EQ(a.mean_ms, b.mean_ms);
  EXPECT_EQ(a.latencies, b.latencies);
  ASSERT_EQ(a.timeline.size(), b.timeline.size());
  for (size_t i = 0; i < a.timeline.size(); ++i) {
    EXPECT_EQ(a.timeline[i].served, b.timeline[i].served);
    EXPECT_EQ(a.timeline[i].timed_out, b.timeline[i].timed_out);
    EXPECT_EQ(a.timeline[i].p99_ms, b.timeline[i].p99_ms);
    EXPECT_EQ(a.timeline[i].ready, b.timeline[i].ready);
  }
  ASSERT_EQ(a.log.size(), b.log.size());
  for (size_t i = 0; i < a.log.size(); ++i) {
    EXPECT_EQ(a.log[i].t_ms, b.log[i].t_ms);
    EXPECT_EQ(a.log[i].kind, b.log[i].kind);
    EXPECT_EQ(a.log[i].worker, b.log[i].worker);
  }
}

TEST(SimulatorTest, CompletionFifosMatchTheHeapPath) {
  for (int max_batch : {1, 4}) {
    for (bool resend : {true, false}) {
      SimOptions o;
      o.stages = 3;
      o.max_batch = max_batch;
      o.timeout_ms = 400;
      o.max_in_system = 400;
      o.resend = resend;
      o.warning_ms = resend ? 2'000 : 0;
      o.interval_ms = 5'000;
      o.record_latencies = true;
      std::vector<NodeEvent> ev;
      for (int i = 0; i < 7; ++i) ev.push_back({0, NodeOp::kAdd, "n" + std::to_string(i)});
      for (int i = 0; i < 4; ++i) ev.push_back({15'000 + 7'000 * i, NodeOp::kRemove, "n" + std::to_string(i)});
      ev.push_back({30'000, NodeOp::kAdd, "n0"});
      ev.push_back({33'000, NodeOp::kAdd, "x1"});
      ArrivalSpec a;
      // 83 req/s unbatched, 166 batched: near saturation, overloaded after removals.
      a.gap_ms = Distribution::Exponential(max_batch == 1 ? 1.0 / 12 : 1.0 / 6);
      // Different times per stage and batch size (and equal ones): several FIFOs.
      PerfModel m = PerfModel::Constant(3, max_batch, 20, 1);
      for (int b = 1; b <= max_batch; ++b) m.stage_ms[1][b - 1] = 15 + 5 * b;
      SimOptions h = o;
      h.heap_only = true;
      SimResult fast = RunSim(o, m, Trace(ev, 60'000), a, kReactive);
      SimResult ref = RunSim(h, m, Trace(ev, 60'000), a, kReactive);
      SCOPED_TRACE("max_batch " + std::to_string(max_batch) + " resend " + std::to_string(resend));
      EXPECT_GT(fast.timed_out + fast.lost(), 0u);
      EXPECT_GT(fast.served, 1000u);
      ExpectConserved(fast);
      ExpectSameRun(fast, ref);
    }
  }
}

TEST(SimulatorTest, CompletionFifosMatchTheHeapPathWithNodeKinds) {
  // Node kinds with different capacities make a stage's time depend on the node: the engine must
  // not use the per-duration FIFOs then (their order would break), and gives the heap's result.
  SimOptions o;
  o.stages = 2;
  o.timeout_ms = 500;
  o.interval_ms = 5'000;
  o.record_latencies = true;
  o.kinds = {NodeKind{"fast", 2.0, 2.0, 0, 1}, NodeKind{"slow", 1.0, 1.0, 3, 1}};
  std::vector<NodeEvent> ev;
  for (int i = 0; i < 6; ++i) ev.push_back({0, NodeOp::kAdd, "n" + std::to_string(i)});
  ev.push_back({12'000, NodeOp::kRemove, "n1"});
  ArrivalSpec a;
  a.gap_ms = Distribution::Exponential(1.0 / 10);
  SimOptions h = o;
  h.heap_only = true;
  const PerfModel m = PerfModel::Constant(2, 1, 20, 1);
  SimResult fast = RunSim(o, m, Trace(ev, 30'000), a, kReactive);
  SimResult ref = RunSim(h, m, Trace(ev, 30'000), a, kReactive);
  EXPECT_GT(fast.served, 1000u);
  ExpectConserved(fast);
  ExpectSameRun(fast, ref);
}

TEST(SimulatorTest, DeterministicForASeed) {
  SimResult a = Busy(7), b = Busy(7), c = Busy(8);
  EXPECT_EQ(a.arrived, b.arrived);
  EXPECT_EQ(a.served, b.served);
  EXPECT_EQ(a.timed_out, b.timed_out);
  EXPECT_EQ(a.lost(), b.lost());
  EXPECT_EQ(a.end_ms, b.end_ms);
  EXPECT_EQ(a.events, b.events);
  ASSERT_EQ(a.timeline.size(), b.timeline.size());
  for (size_t i = 0; i < a.timeline.size(); ++i) {
    EXPECT_EQ(a.timeline[i].served, b.timeline[i].served);
    EXPECT_EQ(a.timeline[i].p99_ms, b.timeline[i].p99_ms);
  }
  ASSERT_EQ(a.log.size(), b.log.size());
  for (size_t i = 0; i < a.log.size(); ++i) {
    EXPECT_EQ(a.log[i].t_ms, b.log[i].t_ms);
    EXPECT_EQ(a.log[i].worker, b.log[i].worker);
  }
  // Another seed: other arrivals, other outcome.
  EXPECT_TRUE(a.arrived != c.arrived || a.served != c.served || a.end_ms != c.end_ms);
}

TEST(SimulatorTest, FittedServiceModel) {
  // Samples from gamma(shape 8, scale 5): mean 40 ms. The fitted model splits the mean over two
  // stages; with arrivals far apart nobody queues, so the mean latency is the sample mean
  // within its standard error (40 / sqrt(8 n)), and the spread comes back (CV 1/sqrt(8)).
  std::vector<double> samples = Generate(Distribution::Gamma(8, 5), 20'000, 9);
  FitReport rep;
  auto m = PerfModel::FromSamples(samples, 2, 1, &rep);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(rep.best().dist.kind, DistKind::kGamma) << rep.ToMarkdown();
  EXPECT_NEAR(m->StageMs(0, 1), 20, 0.2);
  ASSERT_TRUE(m->noise.has_value());
  EXPECT_NEAR(m->noise->Mean(), 1.0, 1e-12);
  SimOptions o = Exact(1, 0);
  o.stages = 2;
  o.end_ms = 10'000'000;
  auto r = RunSim(o, *m, Trace({{0, NodeOp::kAdd, "a"}, {0, NodeOp::kAdd, "b"}}, 0),
                  Times(Every(0, 1000, 5000)), kReactive);
  ASSERT_EQ(r.latencies.size(), 5000u);
  double mean = 0, var = 0;
  for (double l : r.latencies) mean += l;
  mean /= 5000;
  for (double l : r.latencies) var += (l - mean) * (l - mean);
  var /= 4999;
  // Each latency is the sum of two stage times, each (20 ms) x gamma(8, 1/8): the sum has mean
  // 40 and CV 1/sqrt(16) = 0.25 (SE of the mean 40 * 0.25 / sqrt(5000) = 0.14 ms).
  EXPECT_NEAR(mean, 40, 5 * 0.14);
  EXPECT_NEAR(std::sqrt(var) / mean, 0.25, 0.02);
  // A fitted model and --service-cv together are refused.
  o.service_cv = 0.5;
  EXPECT_FALSE(Simulator::Create(o, *m, NodeTrace{}, Times({1}), &kReactive).ok());
}

// Records the forecast each decision receives (into a vector the test owns), plans nothing.
class RecordingPolicy final : public policy::Policy {
 public:
  explicit RecordingPolicy(std::vector<policy::Forecast>* seen) : seen_(seen) {}
  std::string_view name() const override { return "recording"; }
  policy::Plan Decide(const policy::ClusterState& state, const policy::ClusterMetrics&,
                      const policy::Forecast& f) const override {
    seen_->push_back(f);
    policy::Plan p;
    p.memory = state.memory;
    p.next_evaluation_ms = state.now_ms + 1000;
    return p;
  }

 private:
  std::vector<policy::Forecast>* seen_;
};

// Plans nothing (archi-sim's "static").
class NoActions final : public policy::Policy {
 public:
  std::string_view name() const override { return "static"; }
  policy::Plan Decide(const policy::ClusterState& state, const policy::ClusterMetrics&,
                      const policy::Forecast&) const override {
    policy::Plan p;
    p.memory = state.memory;
    p.next_evaluation_ms = state.now_ms + 1000;
    return p;
  }
};
const NoActions kNoActions;

TEST(SimulatorTest, OverheadOutsideTheStagesOccupiesNoReplica) {
  // 10 ms of service every 10 ms plus 5 ms outside the stages: nobody queues (it would if the
  // 5 ms were service), every latency is 15 ms; with a 14 ms deadline every request times out.
  PerfModel m = PerfModel::Constant(1, 1, 10, 0);
  m.overhead_ms = 5;
  EXPECT_DOUBLE_EQ(m.PipelineMs(1), 15);
  auto r = RunSim(Exact(1, 10'000), m, Trace({{0, NodeOp::kAdd, "n1"}}, 0),
                  Times(Every(0, 10, 100)), kNoActions);
  ASSERT_EQ(r.latencies.size(), 100u);
  for (double l : r.latencies) EXPECT_DOUBLE_EQ(l, 15.0);
  SimOptions o = Exact(1, 10'000);
  o.timeout_ms = 14;
  r = RunSim(o, m, Trace({{0, NodeOp::kAdd, "n1"}}, 0), Times(Every(0, 10, 100)), kNoActions);
  EXPECT_EQ(r.timed_out, 100u);
  ExpectConserved(r);
}

TEST(SimulatorTest, StageTimesModel) {
  // Medians 20 and 30 ms, p99/p50 1 (deterministic), overhead 4 ms.
  auto m = PerfModel::FromStageTimes({20, 30}, 1.0, 4, 2);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->noise.has_value());
  EXPECT_DOUBLE_EQ(m->StageMs(1, 2), 30);
  EXPECT_DOUBLE_EQ(m->PipelineMs(1), 54);
  // p99 twice the median: lognormal with sigma ln 2 / z99 and mean 1; the stage mean is the
  // median * exp(sigma^2 / 2).
  m = PerfModel::FromStageTimes({20}, 2.0, 0, 1);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->noise.has_value());
  const double sigma = std::log(2.0) / 2.3263478740408408;
  EXPECT_NEAR(m->noise->Mean(), 1.0, 1e-12);
  EXPECT_NEAR(m->StageMs(0, 1), 20 * std::exp(0.5 * sigma * sigma), 1e-9);
  EXPECT_FALSE(PerfModel::FromStageTimes({20}, 0.5, 0, 1).ok());
  EXPECT_FALSE(PerfModel::FromStageTimes({0}, 1, 0, 1).ok());
  EXPECT_FALSE(PerfModel::FromStageTimes({20}, 1, -1, 1).ok());
}

TEST(SimulatorTest, CoordinatorReconcileReplacesAtTheNotice) {
  // a serves stage 0, b stage 1; c joins idle at 1 s. b's removal at 10 s is announced at 8 s.
  // Under the coordinator's reconcile loop c is assigned to stage 1 at the notice (ready 113 ms
  // later), b is cordoned (it had no work) and shows as idle until its kill; every request is
  // served. Without it ("static" alone) stage 1 is empty from the notice on and the requests
  // after 8 s time out.
  SimOptions o = Exact(2, 20'000);
  o.warning_ms = 2'000;
  o.timeout_ms = 3'000;
  o.costs.world_create_ms = 13;
  o.costs.weight_load_ms = 100;
  o.interval_ms = 1'000;
  o.coordinator_reconcile = true;
  const NodeTrace t = Trace({{0, NodeOp::kAdd, "a"}, {0, NodeOp::kAdd, "b"}, {1'000, NodeOp::kAdd, "c"},
                             {10'000, NodeOp::kRemove, "b"}}, 20'000);
  const ArrivalSpec a = Times(Every(5, 250, 80));  // until 19.755 s
  auto r = RunSim(o, PerfModel::Constant(2, 1, 10, 0), t, a, kNoActions);
  EXPECT_EQ(r.served, 80u);
  ExpectConserved(r);
  bool added = false, cordoned = false;
  for (const ReconfigEvent& e : r.log) {
    if (e.kind == "add") {
      EXPECT_EQ(e.worker, "c");
      EXPECT_EQ(e.stage, 1);
      EXPECT_DOUBLE_EQ(e.t_ms, 8'000);
      added = true;
    }
    if (e.kind == "ready" && e.worker == "c") EXPECT_DOUBLE_EQ(e.t_ms, 8'113);
    if (e.kind == "drained") {
      EXPECT_EQ(e.worker, "b");
      cordoned = true;
    }
  }
  EXPECT_TRUE(added);
  EXPECT_TRUE(cordoned);
  EXPECT_EQ(r.reconfigs["preempt"], 1u);  // b's kill: it served until its notice
  EXPECT_EQ(r.reconfigs["preempt_idle"], 0u);
  // Row ending at 9 s: a and c ready, b cordoned (idle); at 11 s b is gone.
  ASSERT_GE(r.timeline.size(), 11u);
  EXPECT_EQ(r.timeline[8].ready, 2);
  EXPECT_EQ(r.timeline[8].idle, 1);
  EXPECT_EQ(r.timeline[10].idle, 0);
  EXPECT_EQ(r.timeline[10].nodes, 2);

  o.coordinator_reconcile = false;
  auto s = RunSim(o, PerfModel::Constant(2, 1, 10, 0), t, a, kNoActions);
  EXPECT_EQ(s.reconfigs["add"], 0u);
  EXPECT_GT(s.timed_out, 40u);
  ExpectConserved(s);
}

TEST(SimulatorTest, CoordinatorReconcileBorrowsForAnEmptiedStage) {
  // a, c on stage 0, b on stage 1 (round-robin). b is removed without notice at 5 s and nobody
  // is idle: stage 1 borrows from stage 0 (target 2 -> 1), whose drained replica moves over
  // (ready 113 ms later). d joins at 20 s: stage 0 gets its replica back.
  SimOptions o = Exact(2, 30'000);
  o.warning_ms = 0;
  o.costs.world_create_ms = 13;
  o.costs.weight_load_ms = 100;
  o.coordinator_reconcile = true;
  auto r = RunSim(o, PerfModel::Constant(2, 1, 10, 0),
                  Trace({{0, NodeOp::kAdd, "a"}, {0, NodeOp::kAdd, "b"}, {0, NodeOp::kAdd, "c"},
                         {5'000, NodeOp::kRemove, "b"}, {20'000, NodeOp::kAdd, "d"}}, 30'000),
                  Times(Every(3, 100, 290)), kNoActions);
  ExpectConserved(r);
  EXPECT_EQ(r.served, 290u);
  EXPECT_EQ(r.reconfigs["replan"], 2u);
  EXPECT_EQ(r.reconfigs["drain"], 1u);
  EXPECT_EQ(r.reconfigs["add"], 2u);
  std::vector<std::pair<std::string, int>> adds;
  for (const ReconfigEvent& e : r.log) {
    if (e.kind == "add") adds.push_back({e.worker, e.stage});
  }
  ASSERT_EQ(adds.size(), 2u);
  EXPECT_EQ(adds[1], std::make_pair(std::string("d"), 0));
  EXPECT_EQ(adds[0].second, 1);
  EXPECT_EQ(r.timeline.back().ready, 3);
}

TEST(SimulatorTest, ForecasterSeesUsableNodesPerMinute) {
  // Three nodes; n3's removal at 160 s is announced at 130 s: usable at minutes 0, 1, 2, 3 is
  // 3, 3, 3, 2. The forecaster's output reaches the policy unchanged.
  SimOptions o = Exact(1, 200'000);
  std::vector<double> last_history;
  o.forecaster = [&](const std::vector<double>& h, policy::TimeMs now) {
    last_history = h;
    return policy::AvailabilityForecast(policy::ForecastNaive(h, 2), now, 60'000);
  };
  std::vector<policy::Forecast> seen;
  RecordingPolicy rec(&seen);
  auto r = RunSim(o, PerfModel::Constant(1, 1, 10, 0),
                  Trace({{0, NodeOp::kAdd, "n1"}, {0, NodeOp::kAdd, "n2"}, {0, NodeOp::kAdd, "n3"},
                         {160'000, NodeOp::kRemove, "n3"}}, 160'000),
                  Times(Every(500, 1000, 200)), rec);
  ASSERT_GE(last_history.size(), 4u);
  EXPECT_EQ(std::vector<double>(last_history.begin(), last_history.begin() + 4),
            (std::vector<double>{3, 3, 3, 2}));
  ASSERT_FALSE(seen.empty());
  const policy::Forecast& f = seen.back();
  ASSERT_EQ(f.available_workers.size(), 2u);
  EXPECT_EQ(f.available_workers[0].value, 2);
  EXPECT_EQ(f.available_workers[1].at_ms - f.available_workers[0].at_ms, 60'000);
  EXPECT_EQ(r.served, 200u);
}

TEST(SimulatorTest, ParcaePolicyPlacesIdleNodes) {
  // The same ParcaePolicy the coordinator runs: four idle nodes, two stages, a naive forecast;
  // it adds replicas toward its chosen dp and everything is served.
  SimOptions o;
  o.stages = 2;
  o.end_ms = 300'000;
  o.initial_fill = false;
  o.forecaster = [](const std::vector<double>& h, policy::TimeMs now) {
    return policy::AvailabilityForecast(policy::ForecastNaive(h, 10), now, 60'000);
  };
  policy::ParcaeOptions po;
  po.model.compute_s = 0.02;
  po.model.comm_s = 0.001;
  po.model.min_depth = po.model.max_depth = 2;
  const policy::ParcaePolicy parcae(po);
  ASSERT_TRUE(po.Validate().ok());
  std::vector<NodeEvent> ev;
  for (int i = 0; i < 4; ++i) ev.push_back({0, NodeOp::kAdd, "n" + std::to_string(i)});
  auto r = RunSim(o, PerfModel::Constant(2, 1, 10, 1), Trace(ev, 0), Times(Every(100, 50, 5000)),
                  parcae);
  EXPECT_GE(r.reconfigs["add"], 2u);
  EXPECT_EQ(r.rejected_plans, 0u);
  EXPECT_EQ(r.served, 5000u);
  ExpectConserved(r);
}

TEST(SimulatorTest, RateScheduleArrivals) {
  // 1 req/s in even minutes, 3 req/s in odd ones, over 20 minutes: Poisson counts of 600 and
  // 1,800 (standard deviations 24.5 and 42.4); allow 5 of them. Minute rows come from the
  // timeline (60 s intervals).
  SimOptions o;
  o.stages = 1;
  o.end_ms = 20 * 60'000;
  ArrivalSpec a;
  a.rate_per_minute = {1.0, 3.0};
  auto r = RunSim(o, PerfModel::Constant(1, 1, 1, 0), Trace({{0, NodeOp::kAdd, "n1"}}, 0), a,
                  kReactive);
  ASSERT_GE(r.timeline.size(), 20u);
  uint64_t even = 0, odd = 0;
  for (size_t m = 0; m < 20; ++m) (m % 2 == 0 ? even : odd) += r.timeline[m].arrived;
  EXPECT_NEAR(static_cast<double>(even), 600, 5 * 24.5);
  EXPECT_NEAR(static_cast<double>(odd), 1800, 5 * 42.4);
  ExpectConserved(r);
  ArrivalSpec zero;
  zero.rate_per_minute = {0.0, 0.0};
  EXPECT_FALSE(Simulator::Create(o, PerfModel::Constant(1, 1, 1, 0), NodeTrace{}, zero, &kReactive).ok());
}

TEST(SimulatorTest, ScaleTrace) {
  NodeTrace t = Trace({{0, NodeOp::kAdd, "x"}, {5, NodeOp::kRemove, "x"}}, 5);
  NodeTrace s = ScaleTrace(t, 3);
  ASSERT_EQ(s.events.size(), 6u);
  EXPECT_EQ(s.MaxCount(), 3);
  EXPECT_EQ(s.events[4].node, "x.1");
  EXPECT_EQ(s.events[4].op, NodeOp::kRemove);
}

TEST(SimulatorTest, BadOptions) {
  auto p = PerfModel::Constant(2, 1, 5, 0);
  SimOptions o;
  o.stages = 3;
  EXPECT_FALSE(Simulator::Create(o, p, NodeTrace{}, Times({1}), &kReactive).ok());
  o.stages = 2;
  o.max_batch = 2;
  EXPECT_FALSE(Simulator::Create(o, p, NodeTrace{}, Times({1}), &kReactive).ok());
  o.max_batch = 1;
  EXPECT_FALSE(Simulator::Create(o, p, NodeTrace{}, Times({2, 1}), &kReactive).ok());
  EXPECT_FALSE(Simulator::Create(o, p, NodeTrace{}, ArrivalSpec{}, &kReactive).ok());
  EXPECT_FALSE(Simulator::Create(o, p, NodeTrace{}, Times({1}), nullptr).ok());
  EXPECT_TRUE(Simulator::Create(o, p, NodeTrace{}, Times({1}), &kReactive).ok());
}

}  // namespace
}  // namespace archi::sim
