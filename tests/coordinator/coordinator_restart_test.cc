// A coordinator restarted on its state dir (CoordinatorOptions::state_dir), in-process with
// hand-driven workers over real gRPC: the restored workers resume their epochs and assignments
// unchanged (no new assignment is sent), targets survive, a worker that does not come back within
// the grace is declared dead and replaced from the pool, and epochs are never handed out twice.
// The "crash" is a copy of the state dir taken while the first coordinator still runs: exactly
// the files a kill -9 would leave (every change is written before the coordinator's lock is
// released). Without a state dir a restarted coordinator refuses every resume.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "proto/coordinator.grpc.pb.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/wal.h"
#include "runtime/core/memory_store.h"
#include "runtime/executor/plan.h"

namespace archi::coordinator {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
namespace ex = archi::executor;
using namespace std::chrono_literals;

// One coordinator behind its own gRPC server.
struct Running {
  std::unique_ptr<Coordinator> coord;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
  ~Running() {
    if (coord) coord->Shutdown();
    if (server) server->Shutdown(std::chrono::system_clock::now() + 1s);
  }
};

Result<std::unique_ptr<Running>> StartCoordinator(CoordinatorOptions o) {
  o.verify_indexes = true;  // every control-loop pass checks the incremental indexes
  ex::PipelinePlan p;
  p.name = "restart";
  p.model_dir = "/nonexistent";
  p.stages = {{0, 2}, {2, 4}, {4, 6}};
  auto r = std::make_unique<Running>();
  ARCHI_ASSIGN_OR_RETURN(r->coord,
                         Coordinator::Create(o, p, std::make_shared<InMemoryStore>(), "127.0.0.1:1"));
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  for (auto* s : r->coord->services()) b.RegisterService(s);
  r->server = b.BuildAndStart();
  if (!r->server) return UnavailableError("no server");
  r->channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
  return r;
}

// A hand-driven worker: register (or resume), one session, heartbeats on demand.
struct Worker {
  std::string id;
  uint64_t epoch = 0;
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientReaderWriter<pb::WorkerMessage, pb::CoordinatorMessage>> stream;
  std::mutex mu;
  std::vector<pb::CoordinatorMessage> received;
  std::jthread reader;

  grpc::Status Register(Running& c, uint64_t resume, bool* resumed = nullptr) {
    pb::RegisterRequest q;
    q.set_worker_id(id);
    q.set_host("h");
    q.set_pid(1);
    q.set_resume_epoch(resume);
    pb::RegisterResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    auto s = pb::Coordinator::NewStub(c.channel)->Register(&ctx, q, &r);
    if (s.ok()) epoch = r.epoch();
    if (resumed) *resumed = r.resumed();
    return s;
  }
  void Connect(Running& c) {
    Close();
    {
      std::lock_guard lock(mu);
      received.clear();
    }
    ctx = std::make_unique<grpc::ClientContext>();
    stream = pb::Coordinator::NewStub(c.channel)->Session(ctx.get());
    reader = std::jthread([this] {
      pb::CoordinatorMessage m;
      while (stream->Read(&m)) {
        std::lock_guard lock(mu);
        received.push_back(m);
      }
    });
  }
  bool Heartbeat(const std::string& state, uint64_t assignment) {
    pb::WorkerMessage m;
    m.set_worker_id(id);
    m.set_epoch(epoch);
    m.mutable_heartbeat()->set_state(state);
    m.mutable_heartbeat()->set_assignment_id(assignment);
    return stream->Write(m);
  }
  std::vector<pb::Assignment> Assignments() {
    std::lock_guard lock(mu);
    std::vector<pb::Assignment> out;
    for (const auto& m : received) {
      if (m.has_assign()) out.push_back(m.assign());
    }
    return out;
  }
  void Close() {
    if (ctx) ctx->TryCancel();
    if (reader.joinable()) reader.join();
    stream.reset();
    ctx.reset();
  }
  ~Worker() { Close(); }
};

pb::CoordinatorStatusResponse GetStatus(Running& c) {
  pb::CoordinatorStatusResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  EXPECT_TRUE(pb::CoordinatorAdmin::NewStub(c.channel)->Status(&ctx, {}, &r).ok());
  return r;
}

const pb::WorkerStatus* Find(const pb::CoordinatorStatusResponse& s, const std::string& id) {
  for (const auto& w : s.workers()) {
    if (w.worker_id() == id && w.state() != "dead") return &w;
  }
  return nullptr;
}

template <typename F>
bool WaitUntil(F f, std::chrono::milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return f();
}

class CoordinatorRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("archi_restart_test_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  CoordinatorOptions Options(const std::string& state_dir) {
    CoordinatorOptions o;
    o.heartbeat_interval_ms = 50;
    o.heartbeat_timeout_ms = 2000;  // generous: a loaded machine must not time anyone out
    o.resume_grace_ms = 1500;
    o.replicas = {1, 1, 1};
    o.state_dir = state_dir;
    return o;
  }

  // Five workers: a stage each for three, stage 0 scaled to 2 (a fourth), one idle.
  void Populate(Running& c, std::map<std::string, std::unique_ptr<Worker>>& ws) {
    for (const std::string id : {"a", "b", "c", "d", "e"}) {
      auto w = std::make_unique<Worker>();
      w->id = id;
      ASSERT_TRUE(w->Register(c, 0).ok());
      w->Connect(c);
      ASSERT_TRUE(w->Heartbeat("idle", 0));
      ws[id] = std::move(w);
    }
    {
      pb::ScaleRequest q;
      q.set_stage(0);
      q.set_replicas(2);
      pb::ScaleResponse r;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 5s);
      ASSERT_TRUE(pb::CoordinatorAdmin::NewStub(c.channel)->Scale(&ctx, q, &r).ok());
    }
    // Every assigned worker reports ready with its assignment.
    ASSERT_TRUE(WaitUntil(
        [&] {
          int assigned = 0;
          for (auto& [id, w] : ws) {
            auto a = w->Assignments();
            if (a.empty()) continue;
            ++assigned;
            w->Heartbeat("ready", a.back().assignment_id());
          }
          if (assigned != 4) return false;
          auto s = GetStatus(c);
          int ready = 0;
          for (const auto& st : s.stages()) ready += st.ready_replicas();
          return ready == 4;
        },
        10s));
  }

  fs::path root_;
};

TEST_F(CoordinatorRestartTest, RestoredWorkersResumeTheirEpochsAndAssignmentsUnchanged) {
  const fs::path live_dir = root_ / "state";
  const fs::path crash_dir = root_ / "crashed";
  auto first = StartCoordinator(Options(live_dir.string()));
  ASSERT_TRUE(first.ok()) << first.status();
  std::map<std::string, std::unique_ptr<Worker>> ws;
  Populate(**first, ws);
  const auto before = GetStatus(**first);
  std::map<std::string, std::pair<uint64_t, int>> was;  // id -> epoch, stage
  std::map<std::string, uint64_t> assignment;
  std::string idle, silent;
  for (auto& [id, w] : ws) {
    const auto* st = Find(before, id);
    ASSERT_NE(st, nullptr) << id;
    was[id] = {st->epoch(), st->stage()};
    auto a = w->Assignments();
    assignment[id] = a.empty() ? 0 : a.back().assignment_id();
    if (st->stage() < 0) idle = id;
    if (st->stage() == 2) silent = id;  // this one will not come back
  }
  ASSERT_FALSE(idle.empty());
  ASSERT_FALSE(silent.empty());
  // "Crash": copy the files while the coordinator runs (the LOCK's flock does not travel with a
  // copy). Every assignment was appended under the lock that made it; a "ready" a heartbeat
  // brought may not be (the resumed heartbeats below bring it again).
  fs::copy(live_dir, crash_dir, fs::copy_options::recursive);
  for (auto& [id, w] : ws) w->Close();
  first->reset();

  auto second = StartCoordinator(Options(crash_dir.string()));
  ASSERT_TRUE(second.ok()) << second.status();
  Running& c = **second;
  // Before anyone reconnects: every worker is listed with its epoch and stage, targets restored
  // (stage 0 was scaled to 2 before the crash; the options say 1).
  auto restored = GetStatus(c);
  EXPECT_EQ(restored.stages(0).target_replicas(), 2);
  for (const auto& [id, es] : was) {
    const auto* st = Find(restored, id);
    ASSERT_NE(st, nullptr) << id << "\n" << restored.DebugString();
    EXPECT_EQ(st->epoch(), es.first) << id;
    EXPECT_EQ(st->stage(), es.second) << id;
  }
  // All but `silent` resume: same epoch, then a session whose first heartbeat carries the same
  // assignment. No new assignment is sent (no reload).
  for (auto& [id, w] : ws) {
    if (id == silent) continue;
    bool resumed = false;
    auto s = w->Register(c, was[id].first, &resumed);
    ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
    EXPECT_TRUE(resumed) << id;
    EXPECT_EQ(w->epoch, was[id].first) << id;
    w->Connect(c);
    ASSERT_TRUE(w->Heartbeat(id == idle ? "idle" : "ready", assignment[id]));
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto s = GetStatus(c);
        return s.stages(0).ready_replicas() == 2 && s.stages(1).ready_replicas() == 1;
      },
      5s));
  // The silent one is declared dead once its grace is over; the idle one replaces it.
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (auto& [id, w] : ws) {
          if (id != silent) w->Heartbeat(id == idle ? "idle" : "ready", assignment[id]);
        }
        return !ws[idle]->Assignments().empty();
      },
      10s));
  auto after = GetStatus(c);
  ASSERT_EQ(Find(after, silent), nullptr) << after.DebugString();
  bool recovery = false;
  for (const auto& r : after.recoveries()) {
    if (r.worker_id() == silent) {
      recovery = true;
      EXPECT_NE(r.cause().find("did not reconnect"), std::string::npos) << r.cause();
      EXPECT_EQ(r.replacement(), idle);
    }
  }
  EXPECT_TRUE(recovery) << after.DebugString();
  EXPECT_EQ(ws[idle]->Assignments().back().stage(), 2);
  for (auto& [id, w] : ws) {
    if (id == silent || id == idle) continue;
    EXPECT_TRUE(w->Assignments().empty()) << id << " was sent an assignment again";
    const auto* st = Find(after, id);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->state(), "ready") << id;
    EXPECT_EQ(st->epoch(), was[id].first) << id;
  }
  // A new registration never reuses an epoch the first coordinator handed out.
  Worker f;
  f.id = "f";
  ASSERT_TRUE(f.Register(c, 0).ok());
  for (const auto& [id, es] : was) EXPECT_GT(f.epoch, es.first);
}

TEST_F(CoordinatorRestartTest, AWorkerThatLostItsAssignmentGetsItAgain) {
  const fs::path dir = root_ / "state";
  std::map<std::string, std::unique_ptr<Worker>> ws;
  uint64_t epoch = 0, aid = 0;
  {
    auto first = StartCoordinator(Options(dir.string()));
    ASSERT_TRUE(first.ok()) << first.status();
    Populate(**first, ws);
    auto a = ws["a"]->Assignments();
    ASSERT_FALSE(a.empty());
    aid = a.back().assignment_id();
    epoch = ws["a"]->epoch;
  }  // a clean shutdown (before the sessions close) keeps the workers too
  for (auto& [id, w] : ws) w->Close();
  auto second = StartCoordinator(Options(dir.string()));
  ASSERT_TRUE(second.ok()) << second.status();
  bool resumed = false;
  ASSERT_TRUE(ws["a"]->Register(**second, epoch, &resumed).ok());
  EXPECT_TRUE(resumed);
  ws["a"]->Connect(**second);
  ASSERT_TRUE(ws["a"]->Heartbeat("idle", 0));  // it never received the assignment
  ASSERT_TRUE(WaitUntil([&] { return !ws["a"]->Assignments().empty(); }, 5s));
  EXPECT_EQ(ws["a"]->Assignments().back().assignment_id(), aid);
}

TEST_F(CoordinatorRestartTest, StateSurvivesPeriodicSnapshotsAndLogTruncation) {
  const fs::path dir = root_ / "state";
  CoordinatorOptions o = Options(dir.string());
  o.snapshot_every = 3;  // a snapshot every few changes: most of the state comes from snapshots
  std::map<std::string, std::unique_ptr<Worker>> ws;
  pb::CoordinatorStatusResponse before;
  {
    auto first = StartCoordinator(o);
    ASSERT_TRUE(first.ok()) << first.status();
    Populate(**first, ws);
    before = GetStatus(**first);
    // The control thread takes them (every <= 20 ms): wait until one covers the population.
    auto snapshot_lsn = [&]() -> uint64_t {
      std::ifstream in(dir / "snapshot", std::ios::binary);
      char h[16] = {};
      if (!in.read(h, sizeof(h))) return 0;
      uint64_t v = 0;
      for (int i = 15; i >= 8; --i) v = (v << 8) | static_cast<unsigned char>(h[i]);
      return v;
    };
    ASSERT_TRUE(WaitUntil([&] { return snapshot_lsn() > 3; }, 10s));
  }
  for (auto& [id, w] : ws) w->Close();
  // Snapshots were taken while it ran (the one at start covers nothing) and cut the log: the
  // segments they cover are gone, one segment follows the last snapshot.
  int segments = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    segments += e.path().filename().string().starts_with("wal-");
  }
  EXPECT_EQ(segments, 1);
  {
    WalContents c;
    auto wal = WriteAheadLog::Open(dir.string(), &c);
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_GT(c.snapshot_lsn, 3u);
  }
  auto second = StartCoordinator(o);
  ASSERT_TRUE(second.ok()) << second.status();
  auto after = GetStatus(**second);
  EXPECT_EQ(after.stages(0).target_replicas(), 2);
  ASSERT_EQ(after.workers_size(), before.workers_size()) << after.DebugString();
  for (const auto& w : before.workers()) {
    const auto* a = Find(after, w.worker_id());
    ASSERT_NE(a, nullptr) << w.worker_id();
    EXPECT_EQ(a->epoch(), w.epoch()) << w.worker_id();
    EXPECT_EQ(a->stage(), w.stage()) << w.worker_id();
    EXPECT_EQ(a->state(), w.state()) << w.worker_id();
  }
}

TEST_F(CoordinatorRestartTest, WithoutAStateDirEveryResumeIsRefused) {
  std::map<std::string, std::unique_ptr<Worker>> ws;
  uint64_t epoch = 0;
  {
    auto first = StartCoordinator(Options(""));
    ASSERT_TRUE(first.ok()) << first.status();
    Populate(**first, ws);
    epoch = ws["a"]->epoch;
  }
  for (auto& [id, w] : ws) w->Close();
  auto second = StartCoordinator(Options(""));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(GetStatus(**second).workers().empty());
  auto s = ws["a"]->Register(**second, epoch);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
}

TEST_F(CoordinatorRestartTest, StateOfAnotherPipelineShapeIsRefusedAtStart) {
  const fs::path dir = root_ / "state";
  {
    auto first = StartCoordinator(Options(dir.string()));
    ASSERT_TRUE(first.ok()) << first.status();
  }
  CoordinatorOptions o = Options(dir.string());
  o.replicas = {1, 1};
  ex::PipelinePlan p;
  p.name = "restart";
  p.model_dir = "/nonexistent";
  p.stages = {{0, 3}, {3, 6}};
  auto c = Coordinator::Create(o, p, std::make_shared<InMemoryStore>(), "127.0.0.1:1");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find(dir.string()), std::string::npos) << c.status();
}

}  // namespace
}  // namespace archi::coordinator
