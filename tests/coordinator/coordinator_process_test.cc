// The coordinator with real processes on loopback: archi-frontend (embedded coordinator) and
// archi-worker agents (`--coordinator`) that it assigns to stages; a generated 6-layer model.
//
//   - kill -9 of a stage replica under load: detected from its broken session, replaced from the
//     idle pool, the survivors drop its worlds, traffic reaches the replacement, nothing lost;
//   - SIGSTOP of a replica under load: declared dead by missed heartbeats, its work re-sent;
//     after SIGCONT its old epoch is refused and it comes back as a new idle worker;
//   - admin scale out and in under load: no error, no loss.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/http_get.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/test_pipeline.h"
#include "bench/harness/ready_file.h"
#include "proto/coordinator.grpc.pb.h"
#include "runtime/model/model.h"

namespace archi {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::CoordinatedCluster;
using harness::CoordinatedClusterOptions;
using harness::LoadGenerator;
using harness::LoadInput;
using harness::LoadOptions;


class CoordinatorProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() /
                         ("archi_coordinator_test_" + std::to_string(getpid())));
    fs::create_directories(*root_);
    ASSERT_TRUE(harness::WriteTestModel((*root_ / "model").string()).ok());
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(*root_, ec);
    delete root_;
  }

  std::unique_ptr<CoordinatedCluster> StartCluster(const std::string& name,
                                                   std::vector<int> replicas, int idle,
                                                   int64_t extra_compute_ms = 3,
                                                   std::vector<std::string> frontend_args = {}) {
    const fs::path dir = *root_ / name;
    fs::create_directories(dir);
    auto plan = harness::WriteTestPlan(dir.string(), name, (*root_ / "model").string());
    EXPECT_TRUE(plan.ok()) << plan.status();
    CoordinatedClusterOptions o;
    o.plan_path = plan.ok() ? *plan : std::string();
    o.work_dir = dir.string();
    o.replicas = std::move(replicas);
    o.idle = idle;
    o.token = "test-token";
    o.extra_worker_args = {"--extra-compute-ms", std::to_string(extra_compute_ms)};
    o.extra_frontend_args = std::move(frontend_args);
    auto c = CoordinatedCluster::Start(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  static LoadOptions Load(const CoordinatedCluster& c, double duration_s) {
    return harness::ClosedTestLoad(c.frontend_address(), duration_s);
  }

  static void ExpectNoLoss(const harness::LoadReport& r) {
    EXPECT_EQ(r.summary.lost, 0) << r.summary.ToString();
    EXPECT_EQ(r.summary.ok, r.summary.sent) << r.summary.ToString();
    EXPECT_GT(r.summary.ok, 0);
  }

  // A ready worker of `stage` (the first by id).
  static std::string ReadyOf(const pb::CoordinatorStatusResponse& s, int stage) {
    for (const auto& w : s.workers()) {
      if (w.stage() == stage && w.state() == "ready") return w.worker_id();
    }
    return "";
  }
  static std::string IdleOne(const pb::CoordinatorStatusResponse& s) {
    for (const auto& w : s.workers()) {
      if (w.state() == "idle") return w.worker_id();
    }
    return "";
  }

  static fs::path* root_;
};

fs::path* CoordinatorProcessTest::root_ = nullptr;

TEST_F(CoordinatorProcessTest, KilledReplicaIsReplacedFromTheIdlePoolWithoutLoss) {
  auto c = StartCluster("kill", {1, 2, 1}, /*idle=*/1, 3, {"--metrics-listen", "127.0.0.1:0"});
  ASSERT_NE(c, nullptr);
  auto s0 = c->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s0.ok()) << s0.status();
  const std::string victim = ReadyOf(*s0, 1);
  const std::string spare = IdleOne(*s0);
  ASSERT_FALSE(victim.empty());
  ASSERT_FALSE(spare.empty());
  const uint64_t victim_epoch = CoordinatedCluster::FindWorker(*s0, victim)->epoch();

  auto gen = LoadGenerator::Create(Load(*c, 5.0));
  ASSERT_TRUE(gen.ok()) << gen.status();
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(c->Kill(victim, SIGKILL).ok());

  // Detected (its session broke), replaced by the spare, worlds removed, traffic restored.
  const std::string tag = victim + "." + std::to_string(victim_epoch);
  Status repaired = c->WaitFor(
      [&](const pb::CoordinatorStatusResponse& s) {
        if (s.recoveries_size() != 1) return false;
        const auto& r = s.recoveries(0);
        return r.traffic_restored_unix_ms() > 0 && r.worlds_removed_unix_ms() > 0;
      },
      Deadline::AfterMs(20'000), "the recovery of " + victim);
  ASSERT_TRUE(repaired.ok()) << repaired;
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectNoLoss(*report);

  auto s = c->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s.ok());
  const auto& r = s->recoveries(0);
  EXPECT_EQ(r.worker_id(), victim);
  EXPECT_EQ(r.stage(), 1);
  EXPECT_NE(r.cause().find("session broken"), std::string::npos) << r.cause();
  EXPECT_EQ(r.replacement(), spare);
  EXPECT_GE(r.decided_unix_ms(), r.detected_unix_ms());
  EXPECT_GE(r.replacement_ready_unix_ms(), r.decided_unix_ms());
  EXPECT_GE(r.traffic_restored_unix_ms(), r.replacement_ready_unix_ms());
  std::printf("kill -9 of %s: decided +%lld ms, worlds removed +%lld ms, replacement ready +%lld "
              "ms, traffic +%lld ms after detection\n",
              victim.c_str(),
              static_cast<long long>(r.decided_unix_ms() - r.detected_unix_ms()),
              static_cast<long long>(r.worlds_removed_unix_ms() - r.detected_unix_ms()),
              static_cast<long long>(r.replacement_ready_unix_ms() - r.detected_unix_ms()),
              static_cast<long long>(r.traffic_restored_unix_ms() - r.detected_unix_ms()));
  for (const auto& w : s->workers()) {
    if (w.state() == "dead") continue;
    for (const auto& l : w.links()) EXPECT_NE(l, tag) << w.worker_id() << " still links the dead";
  }
  EXPECT_EQ(s->stages(1).ready_replicas(), 2);
  // The coordinator's Prometheus metrics (served by the frontend) counted it.
  auto ready = harness::WaitReadyFile(c->options().work_dir + "/frontend.ready",
                                      Deadline::AfterMs(1000));
  ASSERT_TRUE(ready.ok()) << ready.status();
  const std::string text = harness::HttpGet((*ready)["metrics"].get<std::string>(), "/metrics");
  const std::string pl = "pipeline=\"kill\"";
  EXPECT_EQ(harness::PrometheusSample(text, "archi_coordinator_workers_dead_total",
                                      {pl, "cause=\"session\""}),
            1)
      << text;
  EXPECT_EQ(harness::PrometheusSample(text, "archi_coordinator_recoveries_total", {pl}), 1);
  EXPECT_EQ(harness::PrometheusSample(text, "archi_coordinator_stage_ready_replicas",
                                      {pl, "stage=\"1\""}),
            2);
  EXPECT_EQ(harness::PrometheusSample(text, "archi_coordinator_registrations_total", {pl}), 5);
}

TEST_F(CoordinatorProcessTest, HungReplicaIsFencedAndComesBackAsANewIdleWorker) {
  auto c = StartCluster("hung", {1, 2, 1}, /*idle=*/0);
  ASSERT_NE(c, nullptr);
  auto s0 = c->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s0.ok());
  const std::string victim = ReadyOf(*s0, 1);
  ASSERT_FALSE(victim.empty());
  const uint64_t old_epoch = CoordinatedCluster::FindWorker(*s0, victim)->epoch();

  auto gen = LoadGenerator::Create(Load(*c, 5.0));
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_TRUE(c->Kill(victim, SIGSTOP).ok());
  Status dead = c->WaitFor(
      [&](const pb::CoordinatorStatusResponse& s) {
        for (const auto& r : s.recoveries()) {
          if (r.worker_id() == victim) return true;
        }
        return false;
      },
      Deadline::AfterMs(10'000), victim + " declared dead");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(c->Kill(victim, SIGCONT).ok());
  ASSERT_TRUE(dead.ok()) << dead;
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectNoLoss(*report);

  // It woke, found its epoch retired, stopped serving and registered afresh (same process).
  Status back = c->WaitFor(
      [&](const pb::CoordinatorStatusResponse& s) {
        const auto* w = CoordinatedCluster::FindWorker(s, victim);
        return w && w->state() != "dead" && w->epoch() > old_epoch;
      },
      Deadline::AfterMs(15'000), victim + " registered again");
  ASSERT_TRUE(back.ok()) << back;
  EXPECT_TRUE(c->process(victim)->Running());
  auto s = c->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s.ok());
  const pb::Recovery* rec = nullptr;
  for (const auto& r : s->recoveries()) {
    if (r.worker_id() == victim) rec = &r;
  }
  ASSERT_NE(rec, nullptr) << CoordinatedCluster::StatusText(*s);
  EXPECT_NE(rec->cause().find("no heartbeat"), std::string::npos) << rec->cause();
  // The stage had no spare: the stage was refilled by a worker that registered afterwards (the
  // woken one, unless a slow machine made another miss its heartbeats too).
  EXPECT_FALSE(rec->replacement().empty());
  // The retired epoch is refused.
  auto stub = pb::Coordinator::NewStub(
      grpc::CreateChannel(c->frontend_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer test-token");
  pb::RegisterRequest q;
  q.set_worker_id(victim);
  q.set_resume_epoch(old_epoch);
  pb::RegisterResponse resp;
  EXPECT_EQ(stub->Register(&ctx, q, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(CoordinatorProcessTest, AdminScaleOutAndInUnderLoadLosesNothing) {
  auto c = StartCluster("scale", {1, 1, 1}, /*idle=*/2);
  ASSERT_NE(c, nullptr);
  auto gen = LoadGenerator::Create(Load(*c, 5.0));
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE((*gen)->Start().ok());
  auto admin = pb::CoordinatorAdmin::NewStub(
      grpc::CreateChannel(c->frontend_address(), grpc::InsecureChannelCredentials()));
  auto scale = [&](int stage, int n) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer test-token");
    pb::ScaleRequest q;
    q.set_stage(stage);
    q.set_replicas(n);
    pb::ScaleResponse r;
    return admin->Scale(&ctx, q, &r);
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  ASSERT_TRUE(scale(1, 3).ok());
  Status out = c->WaitFor(
      [](const pb::CoordinatorStatusResponse& s) {
        int traffic = 0;
        for (const auto& w : s.workers()) {
          traffic += w.stage() == 1 && w.state() == "ready" && w.load().batches_processed() > 0;
        }
        return s.stages(1).ready_replicas() == 3 && traffic == 3;
      },
      Deadline::AfterMs(15'000), "stage 1 at 3 ready replicas, all with traffic");
  ASSERT_TRUE(out.ok()) << out;
  ASSERT_TRUE(scale(1, 1).ok());
  Status in = c->WaitFor(
      [](const pb::CoordinatorStatusResponse& s) {
        int idle = 0;
        for (const auto& w : s.workers()) idle += w.state() == "idle";
        return s.stages(1).ready_replicas() == 1 && idle == 2;
      },
      Deadline::AfterMs(15'000), "stage 1 back to 1 replica, two idle");
  ASSERT_TRUE(in.ok()) << in;
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectNoLoss(*report);
  EXPECT_EQ(report->summary.by_code.count("UNAVAILABLE"), 0u);
  // The released workers drained: nobody was declared dead.
  auto s = c->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->recoveries_size(), 0) << CoordinatedCluster::StatusText(*s);
}

}  // namespace
}  // namespace archi
