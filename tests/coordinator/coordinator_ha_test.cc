// A highly-available pair of coordinators with real processes: etcd (started by the test; skipped
// without the etcd binary), the rendezvous store outside the coordinators (in the test process,
// as archi-store would be), archi-coordinator A (--state-etcd: it wins the leadership) and B (a
// standby on a fixed address), archi-frontend --no-coordinator and three archi-worker agents
// given both coordinators' addresses, under steady load.
//   - kill -9 of the leader: B takes over when A's lease (2 s) ends, loads the state from etcd and
//     serves; every worker resumes with its epoch, stage and process (no new assignment), nothing
//     admitted is lost.
//   - SIGSTOP of the leader past its lease: B takes over the same way; A, woken (SIGCONT), finds
//     its leadership lost, writes nothing (no worker is declared dead, no member is marked gone,
//     the state B serves is unchanged) and steps down to standby.
// Takeover times are printed (docs/benchmarks.md), never asserted.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/test_pipeline.h"
#include "proto/coordinator.grpc.pb.h"
#include "runtime/executor/node.h"
#include "tests/coordinator/test_etcd.h"
#include "world/store_client.h"
#include "world/store_server.h"

namespace archi {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::CoordinatedCluster;
using harness::CoordinatedClusterOptions;
using harness::LoadGenerator;
using harness::Process;
using testing_etcd::TestEtcd;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits until the ready file says `role`; returns when (unix ms) it was seen, or -1.
int64_t WaitRole(const std::string& ready_file, const std::string& role, Deadline deadline) {
  const std::string want = "\"role\":\"" + role + "\"";
  while (!deadline.Expired()) {
    if (ReadFile(ready_file).find(want) != std::string::npos) return NowMs();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

// `archi --coordinator <addresses> status`: (exit code, output).
std::pair<int, std::string> Cli(const std::string& addresses, const std::string& log) {
  auto p = Process::Spawn({.binary = ARCHI_TEST_CLI_BIN,
                           .args = {"--coordinator", addresses, "--timeout-ms", "3000", "status"},
                           .log_path = log});
  if (!p.ok()) return {-1, p.status().ToString()};
  auto e = (*p)->WaitExit(Deadline::AfterMs(15'000));
  return {e.ok() && !e->signaled ? e->code : -1, ReadFile(log)};
}

grpc::Status AdminStatus(const std::string& address, pb::CoordinatorStatusResponse* resp) {
  auto stub = pb::CoordinatorAdmin::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  return stub->Status(&ctx, {}, resp);
}

class CoordinatorHaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing_etcd::EtcdBinary().empty()) {
      GTEST_SKIP() << "no etcd binary (/usr/bin/etcd; Debian package etcd-server, installed by "
                      "scripts/setup.sh; or set ARCHI_ETCD_BIN)";
    }
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() / ("archi_ha_test_" + std::to_string(getpid()) + "_" + name);
    fs::create_directories(dir_);
    ASSERT_TRUE(harness::WriteTestModel((dir_ / "model").string()).ok());
    auto e = TestEtcd::Start((dir_ / "etcd").string(), Deadline::AfterMs(30'000));
    ASSERT_TRUE(e.ok()) << e.status();
    etcd_ = std::move(*e);
    auto server = StoreServer::Start({});
    ASSERT_TRUE(server.ok()) << server.status();
    store_server_ = std::move(*server);
    auto plan = harness::WriteTestPlan(dir_.string(), "ha", (dir_ / "model").string());
    ASSERT_TRUE(plan.ok()) << plan.status();
    plan_ = *plan;
    standby_address_ = "127.0.0.1:" + std::to_string(testing_etcd::FreePort());
    common_ = {"--store",         store_server_->address(), "--state-etcd",
               etcd_->endpoint(), "--state-lease-s",        "2"};

    CoordinatedClusterOptions o;
    o.coordinator_bin = ARCHI_TEST_COORDINATOR_BIN;
    o.plan_path = plan_;
    o.work_dir = dir_.string();
    o.replicas = {1, 1, 1};
    o.standalone_coordinator = true;
    o.extra_coordinator_args = common_;
    o.more_coordinator_addresses = {standby_address_};
    o.extra_worker_args = {"--extra-compute-ms", "3"};
    auto c = CoordinatedCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    leader_address_ = cluster_->coordinator_address();

    // B: the standby, on the address the workers already know.
    std::vector<std::string> args = {"--plan",         plan_,          "--listen",
                                     standby_address_, "--ready-file", (dir_ / "b.ready").string()};
    args.insert(args.end(), common_.begin(), common_.end());
    auto b = Process::Spawn({.binary = ARCHI_TEST_COORDINATOR_BIN,
                             .args = args,
                             .log_path = (dir_ / "b.log").string()});
    ASSERT_TRUE(b.ok()) << b.status();
    standby_ = std::move(*b);
    ASSERT_GT(WaitRole((dir_ / "b.ready").string(), "standby", Deadline::AfterMs(20'000)), 0)
        << standby_->LogTail();
  }

  void TearDown() override {
    if (cluster_) cluster_->Stop(Millis(3000));
    if (standby_) standby_->Terminate(Millis(2000));
    cluster_.reset();
    standby_.reset();
    etcd_.reset();
    std::error_code ec;
    if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(dir_, ec);
  }

  struct Before {
    uint64_t epoch;
    int stage;
    pid_t pid;
  };
  std::map<std::string, Before> Record() {
    std::map<std::string, Before> out;
    auto s = cluster_->GetStatus(Deadline::AfterMs(5000));
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return out;
    for (const auto& w : s->workers()) {
      out[w.worker_id()] = {w.epoch(), w.stage(), cluster_->process(w.worker_id())->Pid()};
    }
    return out;
  }

  std::unique_ptr<LoadGenerator> StartLoad(double seconds) {
    auto gen =
        LoadGenerator::Create(harness::ClosedTestLoad(cluster_->frontend_address(), seconds));
    EXPECT_TRUE(gen.ok()) << gen.status();
    if (!gen.ok()) return nullptr;
    EXPECT_TRUE((*gen)->Start().ok());
    Status flowing = cluster_->WaitFor(
        [](const pb::CoordinatorStatusResponse& s) {
          for (const auto& w : s.workers()) {
            if (w.load().batches_processed() == 0) return false;
          }
          return s.workers_size() == 3;
        },
        Deadline::AfterMs(15'000), "traffic through every stage");
    EXPECT_TRUE(flowing.ok()) << flowing;
    return std::move(*gen);
  }

  // After B took over: every worker resumed on B with its epoch, stage and process; returns
  // when the last one reconnected (unix ms, from B's events), or -1.
  int64_t ExpectResumedOnB(const std::map<std::string, Before>& before) {
    cluster_->UseCoordinatorAddress(standby_address_);
    Status resumed = cluster_->WaitFor(
        [&](const pb::CoordinatorStatusResponse& s) {
          if (s.workers_size() != 3) return false;
          for (const auto& w : s.workers()) {
            auto b = before.find(w.worker_id());
            if (b == before.end() || w.state() != "ready" || w.epoch() != b->second.epoch ||
                w.stage() != b->second.stage || w.last_heartbeat_ms_ago() > 1000) {
              return false;
            }
          }
          return true;
        },
        Deadline::AfterMs(30'000), "every worker resumed on the new leader");
    EXPECT_TRUE(resumed.ok()) << resumed;
    int64_t last = -1;
    for (const Deadline until = Deadline::AfterMs(30'000);;) {
      auto ev = cluster_->GetEvents(Deadline::AfterMs(5000));
      int n = 0;
      if (ev.ok()) {
        for (const auto& e : ev->events()) {
          if (e.kind() == "reconnected") {
            ++n;
            last = std::max(last, e.unix_ms());
          }
        }
      }
      if (n == 3) break;
      if (until.Expired()) {
        ADD_FAILURE() << n << " of 3 workers reconnected to the new leader";
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (const auto& [id, b] : before) {
      Process* p = cluster_->process(id);
      EXPECT_TRUE(p != nullptr && p->Running()) << id;
      if (p) {
        EXPECT_EQ(p->Pid(), b.pid) << id;
      }
    }
    auto events = cluster_->GetEvents(Deadline::AfterMs(5000));
    EXPECT_TRUE(events.ok());
    if (events.ok()) {
      int restored = 0;
      for (const auto& e : events->events()) {
        EXPECT_NE(e.kind(), "assigned") << e.worker_id() << ": " << e.detail();
        EXPECT_NE(e.kind(), "registered") << e.worker_id() << ": " << e.detail();
        EXPECT_NE(e.kind(), "dead") << e.worker_id() << ": " << e.detail();
        restored += e.kind() == "restored";
      }
      EXPECT_EQ(restored, 1);
    }
    return last;
  }

  // The members are ready in the store with their epochs as incarnations (nobody marked gone).
  void ExpectMembersReady(const std::map<std::string, Before>& before) {
    auto store = StoreClient::Connect(store_server_->address(), Deadline::AfterMs(5000));
    ASSERT_TRUE(store.ok()) << store.status();
    auto list = (*store)->List(executor::MembersPrefix("ha"), Deadline::AfterMs(2000));
    ASSERT_TRUE(list.ok()) << list.status();
    int found = 0;
    for (const auto& [key, value] : *list) {
      auto m = executor::MemberInfo::FromJson(value);
      if (!m.ok()) continue;
      auto b = before.find(m->id);
      if (b == before.end()) continue;
      EXPECT_EQ(m->incarnation, std::to_string(b->second.epoch)) << m->id;
      EXPECT_EQ(m->state, "ready") << m->id;
      ++found;
    }
    EXPECT_EQ(found, 3);
  }

  fs::path dir_;
  std::unique_ptr<TestEtcd> etcd_;
  std::unique_ptr<StoreServer> store_server_;  // outlives the cluster
  std::unique_ptr<CoordinatedCluster> cluster_;
  std::unique_ptr<Process> standby_;
  std::string plan_, leader_address_, standby_address_;
  std::vector<std::string> common_;
};

TEST_F(CoordinatorHaTest, StandbyTakesOverFromAKilledLeaderWithoutLoss) {
  // The standby refuses, naming the leader.
  pb::CoordinatorStatusResponse r;
  grpc::Status refused = AdminStatus(standby_address_, &r);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.error_message().find("standby"), std::string::npos) << refused.error_message();
  EXPECT_NE(refused.error_message().find(leader_address_), std::string::npos)
      << refused.error_message();
  // The CLI given both addresses, the standby first, uses the leader.
  auto [code, out] = Cli(standby_address_ + "," + leader_address_, (dir_ / "cli1.log").string());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("pipeline ha"), std::string::npos) << out;
  const auto before = Record();
  ASSERT_EQ(before.size(), 3u);
  auto gen = StartLoad(8.0);
  ASSERT_NE(gen, nullptr);

  const int64_t killed_ms = NowMs();
  ASSERT_TRUE(cluster_->Kill("coordinator", SIGKILL).ok());
  const int64_t serving_ms =
      WaitRole((dir_ / "b.ready").string(), "leader", Deadline::AfterMs(20'000));
  ASSERT_GT(serving_ms, 0) << standby_->LogTail();
  const int64_t resumed_ms = ExpectResumedOnB(before);
  auto report = gen->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->summary.lost, 0) << report->summary.ToString();
  EXPECT_EQ(report->summary.ok, report->summary.sent) << report->summary.ToString();
  ExpectMembersReady(before);
  auto s = cluster_->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s.ok());
  for (const auto& st : s->stages()) EXPECT_EQ(st.ready_replicas(), 1) << st.stage();
  // The CLI with the dead leader's address first reaches the new leader.
  auto [code2, out2] = Cli(leader_address_ + "," + standby_address_, (dir_ / "cli2.log").string());
  EXPECT_EQ(code2, 0) << out2;
  EXPECT_NE(out2.find("pipeline ha"), std::string::npos) << out2;
  std::printf(
      "takeover after kill -9 of the leader (lease 2 s): standby serving %lld ms after "
      "the kill, all 3 workers resumed %lld ms after the kill; %s\n",
      static_cast<long long>(serving_ms - killed_ms),
      static_cast<long long>(resumed_ms - killed_ms), report->summary.ToString().c_str());
}

TEST_F(CoordinatorHaTest, PausedLeaderIsFencedAndStepsDown) {
  const auto before = Record();
  ASSERT_EQ(before.size(), 3u);
  auto gen = StartLoad(10.0);
  ASSERT_NE(gen, nullptr);
  const int64_t stopped_ms = NowMs();
  ASSERT_TRUE(cluster_->Kill("coordinator", SIGSTOP).ok());
  const int64_t serving_ms =
      WaitRole((dir_ / "b.ready").string(), "leader", Deadline::AfterMs(20'000));
  ASSERT_GT(serving_ms, 0) << standby_->LogTail();
  const int64_t resumed_ms = ExpectResumedOnB(before);
  // Wake the old leader: it must find its leadership lost, change nothing, and stand by.
  const std::string a_ready = dir_.string() + "/coordinator.ready";
  const int64_t continued_ms = NowMs();
  ASSERT_TRUE(cluster_->Kill("coordinator", SIGCONT).ok());
  const int64_t stepped_ms = WaitRole(a_ready, "standby", Deadline::AfterMs(20'000));
  EXPECT_GT(stepped_ms, 0) << cluster_->process("coordinator")->LogTail();
  pb::CoordinatorStatusResponse r;
  grpc::Status refused = AdminStatus(leader_address_, &r);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.error_message().find(standby_address_), std::string::npos)
      << refused.error_message();
  // Give a stale leader time to do harm (heartbeat timeouts are 1 s), then check nothing changed.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto report = gen->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->summary.lost, 0) << report->summary.ToString();
  EXPECT_EQ(report->summary.ok, report->summary.sent) << report->summary.ToString();
  auto s = cluster_->GetStatus(Deadline::AfterMs(5000));
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->workers_size(), 3) << CoordinatedCluster::StatusText(*s);
  for (const auto& w : s->workers()) {
    EXPECT_EQ(w.state(), "ready") << w.worker_id();
    EXPECT_EQ(w.epoch(), before.at(w.worker_id()).epoch) << w.worker_id();
  }
  auto events = cluster_->GetEvents(Deadline::AfterMs(5000));
  ASSERT_TRUE(events.ok());
  for (const auto& e : events->events()) {
    EXPECT_NE(e.kind(), "dead") << e.worker_id() << ": " << e.detail();
  }
  ExpectMembersReady(before);
  const std::string a_log = cluster_->process("coordinator")->LogTail(20'000);
  EXPECT_NE(a_log.find("stepping down to standby"), std::string::npos) << a_log;
  EXPECT_EQ(a_log.find("coordinator: dead"), std::string::npos) << a_log;
  std::printf(
      "takeover after SIGSTOP of the leader (lease 2 s): standby serving %lld ms after the "
      "stop, all 3 workers resumed %lld ms after the stop; the old leader stepped down "
      "%lld ms after SIGCONT; %s\n",
      static_cast<long long>(serving_ms - stopped_ms),
      static_cast<long long>(resumed_ms - stopped_ms),
      static_cast<long long>(stepped_ms - continued_ms), report->summary.ToString().c_str());
}

}  // namespace
}  // namespace archi
