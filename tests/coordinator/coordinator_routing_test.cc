// Routing weights live (issue 9): archi-frontend --policy cost-capacity with workers of two kinds
// at different prices (archi-worker --kind --price-per-hour), real processes on loopback, a
// one-stage pipeline of the generated 6-layer model.
//
//   - at low load the policy's cost mode routes stage 0 to the cheap kind only: the coordinator
//     publishes the weights in the store, the frontend's node reads them and sends (nearly) every
//     micro-batch to the cheap replica although the other one is idle and healthy;
//   - after `SetPolicy none` the weights are withdrawn and both replicas serve again
//     (least-loaded routing), which is what the cheap share is compared with.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "bench/harness/test_pipeline.h"
#include "proto/coordinator.grpc.pb.h"

namespace archi {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::CoordinatedCluster;

constexpr char kToken[] = "test-token";

// archi-worker with --kind / --price-per-hour from the environment, so that one cluster can
// start workers of two kinds (CoordinatedClusterOptions::env and WorkerLaunch::env).
std::string WriteKindWrapper(const fs::path& dir) {
  const fs::path script = dir / "kind_worker.sh";
  std::ofstream f(script);
  f << "#!/bin/sh\nexec '" << harness::DefaultWorkerBinary()
    << "' \"$@\" --kind \"$TEST_KIND\" --price-per-hour \"$TEST_PRICE\"\n";
  f.close();
  fs::permissions(script, fs::perms::owner_all);
  return script.string();
}

// Micro-batches processed so far per worker kind, from the workers' heartbeats.
std::map<std::string, uint64_t> BatchesByKind(const pb::CoordinatorStatusResponse& s) {
  std::map<std::string, uint64_t> out;
  for (const auto& w : s.workers()) {
    if (w.stage() >= 0 && w.state() == "ready") out[w.kind()] += w.load().batches_processed();
  }
  return out;
}

// Open-loop load at `rate` req/s for `seconds`; the batches each kind processed meanwhile.
std::map<std::string, uint64_t> RunAndCount(CoordinatedCluster& c, double rate, double seconds) {
  auto before = c.GetStatus(Deadline::AfterMs(5000));
  EXPECT_TRUE(before.ok()) << before.status();
  if (!before.ok()) return {};
  harness::LoadOptions lo = harness::ClosedTestLoad(c.frontend_address(), seconds);
  lo.mode = harness::LoadOptions::Mode::kOpen;
  lo.rate_per_s = rate;
  auto gen = harness::LoadGenerator::Create(lo);
  EXPECT_TRUE(gen.ok()) << gen.status();
  if (!gen.ok()) return {};
  EXPECT_TRUE((*gen)->Start().ok());
  auto report = (*gen)->Wait(Deadline::AfterMs(static_cast<int64_t>(seconds * 1000) + 60'000));
  EXPECT_TRUE(report.ok()) << report.status();
  if (report.ok()) {
    EXPECT_EQ(report->summary.lost, 0) << report->summary.ToString();
    EXPECT_EQ(report->summary.ok, report->summary.sent) << report->summary.ToString();
    EXPECT_GT(report->summary.ok, 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // the last heartbeats
  auto after = c.GetStatus(Deadline::AfterMs(5000));
  EXPECT_TRUE(after.ok()) << after.status();
  if (!after.ok()) return {};
  auto a = BatchesByKind(*after);
  auto b = BatchesByKind(*before);
  for (auto& [kind, n] : a) n -= std::min(n, b[kind]);
  return a;
}

Status SetPolicy(const std::string& address, const std::string& name) {
  auto stub = pb::CoordinatorAdmin::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  pb::SetPolicyRequest req;
  req.set_policy(name);
  pb::SetPolicyResponse resp;
  grpc::Status s = stub->SetPolicy(&ctx, req, &resp);
  return s.ok() ? Status::Ok() : Status(StatusCode::kInternal, s.error_message());
}

TEST(CoordinatorRoutingTest, CostCapacitySendsLowLoadToTheCheapKind) {
  const fs::path dir =
      fs::temp_directory_path() / ("archi_routing_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  ASSERT_TRUE(harness::WriteTestModel((dir / "model").string()).ok());
  auto plan = harness::WriteTestPlan(dir.string(), "route", (dir / "model").string(), {6});
  ASSERT_TRUE(plan.ok()) << plan.status();

  harness::CoordinatedClusterOptions o;
  o.plan_path = *plan;
  o.work_dir = dir.string();
  o.replicas = {1};
  o.token = kToken;
  o.worker_bin = WriteKindWrapper(dir);
  o.env = {{"TEST_KIND", "fast"}, {"TEST_PRICE", "3"}};  // w1: the expensive kind
  o.extra_worker_args = {"--extra-compute-ms", "3"};
  // Capacity model: a replica serves 200 req/s, so 20 req/s is low load (cost mode).
  o.extra_frontend_args = {"--policy", "cost-capacity", "--reference-rps", "200",
                           "--min-replicas", "2",  // no scale-in of the idle kind
                           "--heartbeat-timeout-ms", "5000"};  // host stalls under load
  auto started = CoordinatedCluster::Start(o);
  ASSERT_TRUE(started.ok()) << started.status();
  CoordinatedCluster& c = **started;

  ASSERT_TRUE(c.Scale(0, 2, Deadline::AfterMs(5000)).ok());
  harness::WorkerLaunch cheap_launch;
  cheap_launch.env = {{"TEST_KIND", "cheap"}, {"TEST_PRICE", "1"}};
  auto cheap = c.SpawnWorker(cheap_launch);
  ASSERT_TRUE(cheap.ok()) << cheap.status();
  Status two = c.WaitFor(
      [](const pb::CoordinatorStatusResponse& s) { return s.stages(0).ready_replicas() == 2; },
      Deadline::AfterMs(60'000), "two ready replicas of stage 0");
  ASSERT_TRUE(two.ok()) << two;

  // The policy routes stage 0 in cost mode to the cheap kind (an event per weight change). Its
  // first decisions come before any replica is ready: it must not enter capacity mode there
  // (which it would hold for 60 s), so this comes within seconds.
  Status routed = Status(StatusCode::kDeadlineExceeded, "no cost-mode route event with 'cheap'");
  const Deadline until = Deadline::AfterMs(30'000);
  while (!until.Expired()) {
    auto ev = c.GetEvents(Deadline::AfterMs(5000));
    ASSERT_TRUE(ev.ok()) << ev.status();
    for (const auto& e : ev->events()) {
      if (e.kind() == "policy" && e.detail().find("route s0 cost") != std::string::npos &&
          e.detail().find("cheap") != std::string::npos) {
        routed = Status::Ok();
        std::printf("policy event: %s\n", e.detail().c_str());
      }
    }
    if (routed.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (auto ev = c.GetEvents(Deadline::AfterMs(5000)); ev.ok()) {
    for (const auto& e : ev->events()) {
      std::printf("  event %lld %s %s s%d %s\n", static_cast<long long>(e.unix_ms()),
                  e.kind().c_str(), e.worker_id().c_str(), e.stage(), e.detail().c_str());
    }
  }
  ASSERT_TRUE(routed.ok()) << routed;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the nodes poll the store

  auto weighted = RunAndCount(c, 20, 5.0);
  const double total = static_cast<double>(weighted["cheap"] + weighted["fast"]);
  ASSERT_GT(total, 0);
  std::printf("cost-capacity, 20 req/s: cheap %llu, fast %llu micro-batches\n",
              static_cast<unsigned long long>(weighted["cheap"]),
              static_cast<unsigned long long>(weighted["fast"]));
  EXPECT_GE(weighted["cheap"] / total, 0.9);

  // Without the policy the weights are withdrawn: least-loaded routing uses both replicas.
  ASSERT_TRUE(SetPolicy(c.coordinator_address(), "none").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto plain = RunAndCount(c, 20, 5.0);
  const double total2 = static_cast<double>(plain["cheap"] + plain["fast"]);
  ASSERT_GT(total2, 0);
  std::printf("policy none, 20 req/s: cheap %llu, fast %llu micro-batches\n",
              static_cast<unsigned long long>(plain["cheap"]),
              static_cast<unsigned long long>(plain["fast"]));
  EXPECT_GE(plain["fast"] / total2, 0.2);
  EXPECT_GE(plain["cheap"] / total2, 0.2);

  c.Stop();
  std::error_code ec;
  if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace archi

namespace archi {
namespace {

// Two stages, one fast and one cheap replica each: the weights of stage 1 are applied by the
// stage-0 replicas (not the frontend), so every hop routes by kind.
TEST(CoordinatorRoutingTest, EveryHopRoutesByKind) {
  const fs::path dir =
      fs::temp_directory_path() / ("archi_routing_test2_" + std::to_string(getpid()));
  fs::create_directories(dir);
  ASSERT_TRUE(harness::WriteTestModel((dir / "model").string()).ok());
  auto plan = harness::WriteTestPlan(dir.string(), "route2", (dir / "model").string(), {3, 6});
  ASSERT_TRUE(plan.ok()) << plan.status();
  harness::CoordinatedClusterOptions o;
  o.plan_path = *plan;
  o.work_dir = dir.string();
  o.replicas = {1, 1};
  o.token = kToken;
  o.worker_bin = WriteKindWrapper(dir);
  o.env = {{"TEST_KIND", "fast"}, {"TEST_PRICE", "3"}};
  o.extra_worker_args = {"--extra-compute-ms", "3"};
  o.extra_frontend_args = {"--policy", "cost-capacity", "--reference-rps", "200",
                           "--min-replicas", "2", "--heartbeat-timeout-ms", "5000"};
  auto started = CoordinatedCluster::Start(o);
  ASSERT_TRUE(started.ok()) << started.status();
  CoordinatedCluster& c = **started;
  ASSERT_TRUE(c.Scale(0, 2, Deadline::AfterMs(5000)).ok());
  ASSERT_TRUE(c.Scale(1, 2, Deadline::AfterMs(5000)).ok());
  harness::WorkerLaunch cheap;
  cheap.env = {{"TEST_KIND", "cheap"}, {"TEST_PRICE", "1"}};
  ASSERT_TRUE(c.SpawnWorker(cheap).ok());
  ASSERT_TRUE(c.SpawnWorker(cheap).ok());
  // Each stage with one replica of each kind.
  Status mixed = c.WaitFor(
      [](const pb::CoordinatorStatusResponse& s) {
        std::map<std::pair<int, std::string>, int> n;
        for (const auto& w : s.workers()) {
          if (w.state() == "ready") ++n[{w.stage(), w.kind()}];
        }
        return n[{0, "fast"}] == 1 && n[{0, "cheap"}] == 1 && n[{1, "fast"}] == 1 &&
               n[{1, "cheap"}] == 1;
      },
      Deadline::AfterMs(60'000), "a fast and a cheap ready replica on each stage");
  ASSERT_TRUE(mixed.ok()) << mixed;
  bool s0 = false, s1 = false;
  const Deadline until = Deadline::AfterMs(30'000);
  while (!(s0 && s1) && !until.Expired()) {
    auto ev = c.GetEvents(Deadline::AfterMs(5000));
    ASSERT_TRUE(ev.ok()) << ev.status();
    s0 = s1 = false;
    for (const auto& e : ev->events()) {
      if (e.kind() != "policy") continue;
      // The latest route event of each stage decides.
      if (e.detail().starts_with("route s0")) s0 = e.detail().starts_with("route s0 cost cheap=1");
      if (e.detail().starts_with("route s1")) s1 = e.detail().starts_with("route s1 cost cheap=1");
    }
    if (!(s0 && s1)) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_TRUE(s0 && s1) << "stage 0 routed to cheap: " << s0 << ", stage 1: " << s1;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the nodes poll the store

  auto before = c.GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(before.ok()) << before.status();
  harness::LoadOptions lo = harness::ClosedTestLoad(c.frontend_address(), 5.0);
  lo.mode = harness::LoadOptions::Mode::kOpen;
  lo.rate_per_s = 20;
  auto gen = harness::LoadGenerator::Create(lo);
  ASSERT_TRUE(gen.ok()) << gen.status();
  ASSERT_TRUE((*gen)->Start().ok());
  auto report = (*gen)->Wait(Deadline::AfterMs(65'000));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->summary.lost, 0) << report->summary.ToString();
  EXPECT_EQ(report->summary.ok, report->summary.sent) << report->summary.ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  auto after = c.GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(after.ok()) << after.status();
  std::map<std::pair<int, std::string>, uint64_t> n;
  for (const auto& w : after->workers()) {
    if (w.state() == "ready") n[{w.stage(), w.kind()}] += w.load().batches_processed();
  }
  for (const auto& w : before->workers()) {
    if (w.state() == "ready") n[{w.stage(), w.kind()}] -= w.load().batches_processed();
  }
  for (int s = 0; s < 2; ++s) {
    const uint64_t on_cheap = n[{s, "cheap"}], on_fast = n[{s, "fast"}];
    const double total = static_cast<double>(on_cheap + on_fast);
    std::printf("stage %d: cheap %llu, fast %llu micro-batches\n", s,
                static_cast<unsigned long long>(on_cheap),
                static_cast<unsigned long long>(on_fast));
    ASSERT_GT(total, 0);
    EXPECT_GE(on_cheap / total, 0.9) << "stage " << s;
  }
  c.Stop();
  std::error_code ec;
  if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace archi
