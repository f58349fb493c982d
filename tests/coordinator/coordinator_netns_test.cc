// Network faults with real processes: one stage-1 replica of a coordinated 3-stage pipeline runs
// inside a network namespace the test creates (veth pair to the host namespace; every other
// process binds the host end's address, shared memory off so data crosses the pair):
//
//   - partition (the namespace's end of the pair set down) under load: the worker's connections
//     stall without breaking, so the coordinator declares it dead by missed heartbeats (or a
//     neighbour's broken-world report), its work is re-sent to the other replica and the spare
//     replaces it: nothing lost. After the link comes back the worker's old epoch is refused and
//     it registers again as a new idle worker;
//   - slow link (tc netem 50 ms each way) under load: keeps serving, nobody declared dead,
//     nothing lost;
//   - rate-limited link (tc tbf 20 mbit each way): the same.
//
// Namespaces and links are removed by RAII owners, on failure too. Without the privilege to
// create namespaces (CAP_NET_ADMIN), or without netem in the kernel, the tests skip saying why.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/test_pipeline.h"
#include "bench/harness/netns.h"
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
using harness::NetNamespace;


int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class CoordinatorNetnsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    probe_ = new Status(NetNamespace::Probe());
    root_ = new fs::path(fs::temp_directory_path() /
                         ("archi_netns_test_" + std::to_string(getpid())));
    fs::create_directories(*root_);
    ASSERT_TRUE(harness::WriteTestModel((*root_ / "model").string()).ok());
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(*root_, ec);
    delete root_;
    delete probe_;
  }

  void SetUp() override {
    if (!probe_->ok()) {
      GTEST_SKIP() << "cannot create network namespaces here (" << probe_->ToString()
                   << "); run as root or with CAP_NET_ADMIN to test partitions and slow links";
    }
  }

  // 1-2-1 replicas plus one idle spare; `ns` runs one stage-1 replica.
  harness::NamespacedCluster Start(const std::string& name, const NetNamespace& ns) {
    const fs::path dir = *root_ / name;
    fs::create_directories(dir);
    auto plan = harness::WriteTestPlan(dir.string(), name, (*root_ / "model").string());
    EXPECT_TRUE(plan.ok()) << plan.status();
    CoordinatedClusterOptions o;
    o.plan_path = plan.ok() ? *plan : std::string();
    o.work_dir = dir.string();
    o.replicas = {1, 2, 1};
    o.idle = 1;
    o.token = "netns-token";
    o.extra_worker_args = {"--extra-compute-ms", "3"};
    o.start_timeout_ms = 30'000;
    auto c = harness::StartWithNamespacedReplica(o, ns, /*stage=*/1, Deadline::AfterMs(30'000));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : harness::NamespacedCluster{};
  }

  static LoadOptions Load(const CoordinatedCluster& c, double duration_s) {
    return harness::ClosedTestLoad(c.frontend_address(), duration_s);
  }

  static void ExpectNoLoss(const harness::LoadReport& r) {
    EXPECT_EQ(r.summary.lost, 0) << r.summary.ToString();
    EXPECT_EQ(r.summary.ok, r.summary.sent) << r.summary.ToString();
    EXPECT_GT(r.summary.ok, 0);
  }

  // Load across a link changed by `shape` (already applied): nobody is declared dead, the
  // namespaced replica keeps taking traffic, nothing is lost.
  void ExpectServesThroughShapedLink(const std::string& name, NetNamespace& ns) {
    auto nc = Start(name, ns);
    ASSERT_NE(nc.cluster, nullptr);
    CoordinatedCluster& c = *nc.cluster;
    auto s0 = c.GetStatus(Deadline::AfterMs(5000));
    ASSERT_TRUE(s0.ok()) << s0.status();
    const uint64_t before = CoordinatedCluster::FindWorker(*s0, nc.ns_worker)->load().batches_processed();
    auto gen = LoadGenerator::Create(Load(c, 3.0));
    ASSERT_TRUE(gen.ok()) << gen.status();
    auto report = (*gen)->Run();
    ASSERT_TRUE(report.ok()) << report.status();
    ExpectNoLoss(*report);
    // Heartbeats carry the load: wait (bounded) for one after the load.
    Status took = c.WaitFor(
        [&](const pb::CoordinatorStatusResponse& s) {
          const auto* w = CoordinatedCluster::FindWorker(s, nc.ns_worker);
          return w && w->load().batches_processed() > before;
        },
        Deadline::AfterMs(5000), nc.ns_worker + " reporting micro-batches served");
    EXPECT_TRUE(took.ok()) << took;
    auto s = c.GetStatus(Deadline::AfterMs(5000));
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->recoveries_size(), 0) << CoordinatedCluster::StatusText(*s);
    const auto* w = CoordinatedCluster::FindWorker(*s, nc.ns_worker);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->state(), "ready");
    std::printf("%s: %s\n", name.c_str(), report->summary.ToString().c_str());
  }

  static fs::path* root_;
  static Status* probe_;
};

fs::path* CoordinatorNetnsTest::root_ = nullptr;
Status* CoordinatorNetnsTest::probe_ = nullptr;

TEST_F(CoordinatorNetnsTest, PartitionedReplicaIsDeclaredDeadByHeartbeatAndItsWorkResent) {
  auto ns = NetNamespace::Create("part");
  ASSERT_TRUE(ns.ok()) << ns.status();
  auto nc = Start("partition", **ns);
  ASSERT_NE(nc.cluster, nullptr);
  CoordinatedCluster& c = *nc.cluster;
  const std::string victim = nc.ns_worker;
  auto s0 = c.GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s0.ok());
  const uint64_t old_epoch = CoordinatedCluster::FindWorker(*s0, victim)->epoch();
  const int timeout_ms = 1000;  // the frontend's default heartbeat timeout

  auto gen = LoadGenerator::Create(Load(c, 4.0));
  ASSERT_TRUE(gen.ok()) << gen.status();
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const int64_t cut_ms = UnixMillis();
  ASSERT_TRUE((*ns)->Partition().ok());

  Status dead = c.WaitFor(
      [&](const pb::CoordinatorStatusResponse& s) {
        for (const auto& r : s.recoveries()) {
          if (r.worker_id() == victim && r.traffic_restored_unix_ms() > 0) return true;
        }
        return false;
      },
      Deadline::AfterMs(15'000), victim + " declared dead and replaced");
  ASSERT_TRUE(dead.ok()) << dead;
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectNoLoss(*report);

  auto s = c.GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s.ok());
  const pb::Recovery* rec = nullptr;
  for (const auto& r : s->recoveries()) {
    if (r.worker_id() == victim) rec = &r;
  }
  ASSERT_NE(rec, nullptr);
  // Nothing broke the connections: the heartbeat timeout (or a neighbour whose world to it
  // timed out, while its heartbeats were stale) decided.
  EXPECT_TRUE(rec->cause().find("no heartbeat") != std::string::npos ||
              rec->cause().find("neighbour") != std::string::npos)
      << rec->cause();
  EXPECT_EQ(rec->stage(), 1);
  EXPECT_FALSE(rec->replacement().empty());
  EXPECT_NE(rec->replacement(), victim);
  EXPECT_EQ(s->stages(1).ready_replicas(), 2) << CoordinatedCluster::StatusText(*s);
  std::printf("partition of %s: detected %lld ms after the cut (heartbeat timeout %d ms, cause: "
              "%s), traffic to %s %lld ms after detection; %s\n",
              victim.c_str(), static_cast<long long>(rec->detected_unix_ms() - cut_ms), timeout_ms,
              rec->cause().c_str(), rec->replacement().c_str(),
              static_cast<long long>(rec->traffic_restored_unix_ms() - rec->detected_unix_ms()),
              report->summary.ToString().c_str());

  // Healed: its old epoch is refused, it comes back as a new idle worker (same process).
  ASSERT_TRUE((*ns)->Heal().ok());
  Status back = c.WaitFor(
      [&](const pb::CoordinatorStatusResponse& st) {
        const auto* w = CoordinatedCluster::FindWorker(st, victim);
        return w && w->state() != "dead" && w->epoch() > old_epoch;
      },
      Deadline::AfterMs(15'000), victim + " registered again after the partition healed");
  EXPECT_TRUE(back.ok()) << back;
  EXPECT_TRUE(c.process(victim)->Running());
}

TEST_F(CoordinatorNetnsTest, SlowLinkKeepsServingWithoutLoss) {
  auto ns = NetNamespace::Create("slow");
  ASSERT_TRUE(ns.ok()) << ns.status();
  Status delay = (*ns)->SetDelay(50);
  if (delay.code() == StatusCode::kUnimplemented) {
    GTEST_SKIP() << "no tc netem in this kernel, the slow link cannot be emulated: "
                 << delay.ToString();
  }
  ASSERT_TRUE(delay.ok()) << delay;
  ExpectServesThroughShapedLink("slow", **ns);
}

TEST_F(CoordinatorNetnsTest, RateLimitedLinkKeepsServingWithoutLoss) {
  auto ns = NetNamespace::Create("rate");
  ASSERT_TRUE(ns.ok()) << ns.status();
  Status rate = (*ns)->SetRate("20mbit");
  ASSERT_TRUE(rate.ok()) << rate;
  ExpectServesThroughShapedLink("rate", **ns);
}

}  // namespace
}  // namespace archi
