// The coordinator in-process, driven by hand-written workers over real gRPC on loopback: the
// protocol (register, session, assignment, heartbeat timeout, neighbour reports, fencing of a
// retired epoch), the admin RPCs and their validation, and authentication. No data plane: the
// fake workers never load a model; a registry entry is written by hand where the coordinator
// must mark one gone.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "proto/coordinator.grpc.pb.h"
#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/core/memory_store.h"
#include "runtime/executor/node.h"
#include "runtime/executor/wire.h"
#include "world/store_client.h"
#include "world/store_server.h"

namespace archi::coordinator {
namespace {

namespace pb = archi::proto;
namespace ex = archi::executor;
using namespace std::chrono_literals;

ex::PipelinePlan ThreeStages() {
  ex::PipelinePlan p;
  p.name = "unit";
  p.model_dir = "/nonexistent";
  p.stages = {{0, 2}, {2, 4}, {4, 6}};
  return p;
}

class CoordinatorUnitTest : public ::testing::Test {
 protected:
  void Start(CoordinatorOptions o) {
    o.verify_indexes = true;  // every control-loop pass checks the incremental indexes
    store_ = std::make_shared<InMemoryStore>();
    auto c = Coordinator::Create(o, ThreeStages(), store_, "127.0.0.1:1");
    ASSERT_TRUE(c.ok()) << c.status();
    coord_ = std::move(*c);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    for (auto* s : coord_->services()) b.RegisterService(s);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                  grpc::InsecureChannelCredentials());
    worker_ = pb::Coordinator::NewStub(ch);
    admin_ = pb::CoordinatorAdmin::NewStub(ch);
    token_ = o.token;
  }
  void TearDown() override {
    if (coord_) coord_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }

  void Auth(grpc::ClientContext& ctx, const std::string& token) {
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  }

  grpc::Status Register(const std::string& id, pb::RegisterResponse* resp, uint64_t resume = 0,
                        const std::string* token = nullptr) {
    pb::RegisterRequest r;
    r.set_worker_id(id);
    r.set_host("testhost");
    r.set_pid(1);
    r.set_resume_epoch(resume);
    grpc::ClientContext ctx;
    Auth(ctx, token ? *token : token_);
    return worker_->Register(&ctx, r, resp);
  }

  pb::CoordinatorStatusResponse Status() {
    grpc::ClientContext ctx;
    Auth(ctx, token_);
    pb::CoordinatorStatusResponse r;
    EXPECT_TRUE(admin_->Status(&ctx, {}, &r).ok());
    return r;
  }

  static const pb::WorkerStatus* Find(const pb::CoordinatorStatusResponse& s,
                                      const std::string& id, uint64_t epoch) {
    for (const auto& w : s.workers()) {
      if (w.worker_id() == id && w.epoch() == epoch) return &w;
    }
    return nullptr;
  }

  // A hand-driven worker session: heartbeats on demand, a reader thread collecting messages.
  struct FakeWorker {
    std::string id;
    uint64_t epoch = 0;
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<pb::WorkerMessage, pb::CoordinatorMessage>> stream;
    std::mutex mu;
    std::vector<pb::CoordinatorMessage> received;
    std::jthread reader;
    std::atomic<bool> ended{false};
    grpc::Status final_status;

    bool Heartbeat(const std::string& state, uint64_t assignment = 0,
                   std::vector<std::string> links = {}) {
      pb::WorkerMessage m;
      m.set_worker_id(id);
      m.set_epoch(epoch);
      m.mutable_heartbeat()->set_state(state);
      m.mutable_heartbeat()->set_assignment_id(assignment);
      for (auto& l : links) m.mutable_heartbeat()->add_links(l);
      return stream->Write(m);
    }
    std::optional<pb::Assignment> WaitAssignment(std::chrono::milliseconds within) {
      const auto until = std::chrono::steady_clock::now() + within;
      while (std::chrono::steady_clock::now() < until) {
        {
          std::lock_guard lock(mu);
          for (auto& m : received) {
            if (m.has_assign()) return m.assign();
          }
        }
        std::this_thread::sleep_for(5ms);
      }
      return std::nullopt;
    }
    int Count(pb::CoordinatorMessage::BodyCase c) {
      std::lock_guard lock(mu);
      int n = 0;
      for (auto& m : received) n += m.body_case() == c;
      return n;
    }
    ~FakeWorker() {
      ctx.TryCancel();
      if (reader.joinable()) reader.join();
    }
  };

  std::unique_ptr<FakeWorker> Connect(const std::string& id, uint64_t epoch,
                                      const std::string* token = nullptr) {
    auto w = std::make_unique<FakeWorker>();
    w->id = id;
    w->epoch = epoch;
    if (!(token ? *token : token_).empty()) {
      w->ctx.AddMetadata("authorization", "Bearer " + (token ? *token : token_));
    }
    w->stream = worker_->Session(&w->ctx);
    FakeWorker* raw = w.get();
    w->reader = std::jthread([raw] {
      pb::CoordinatorMessage m;
      while (raw->stream->Read(&m)) {
        std::lock_guard lock(raw->mu);
        raw->received.push_back(m);
      }
      raw->final_status = raw->stream->Finish();
      raw->ended = true;
    });
    return w;
  }

  static bool WaitUntil(const std::function<bool()>& f, std::chrono::milliseconds within) {
    const auto until = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < until) {
      if (f()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return f();
  }

  std::shared_ptr<InMemoryStore> store_;
  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<pb::Coordinator::Stub> worker_;
  std::unique_ptr<pb::CoordinatorAdmin::Stub> admin_;
  std::string token_;
};

TEST_F(CoordinatorUnitTest, AssignsOneIdleWorkerPerStageWithItsWorlds) {
  Start({});
  std::vector<std::unique_ptr<FakeWorker>> ws;
  std::vector<uint64_t> epochs;
  for (int i = 0; i < 4; ++i) {
    pb::RegisterResponse r;
    ASSERT_TRUE(Register("w" + std::to_string(i), &r).ok());
    EXPECT_EQ(r.pipeline(), "unit");
    EXPECT_EQ(r.store_address(), "127.0.0.1:1");
    if (!epochs.empty()) {
      EXPECT_GT(r.epoch(), epochs.back());  // epochs only grow
    }
    epochs.push_back(r.epoch());
    ws.push_back(Connect("w" + std::to_string(i), r.epoch()));
    ASSERT_TRUE(ws.back()->Heartbeat("idle"));
  }
  // Three stages, one replica each: three of the four get an assignment, one stays idle.
  std::map<int, std::string> by_stage;
  int assigned = 0;
  for (auto& w : ws) {
    auto a = w->WaitAssignment(assigned < 3 ? 3000ms : 300ms);
    if (!a) continue;
    ++assigned;
    EXPECT_EQ(a->pipeline(), "unit");
    EXPECT_EQ(a->layer_begin(), 2 * a->stage());
    EXPECT_EQ(a->layer_end(), 2 * a->stage() + 2);
    EXPECT_TRUE(by_stage.emplace(a->stage(), w->id).second) << "stage assigned twice";
    ASSERT_TRUE(w->Heartbeat("ready", a->assignment_id()));
  }
  EXPECT_EQ(assigned, 3);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto s = Status();
        for (const auto& st : s.stages()) {
          if (st.ready_replicas() != 1) return false;
        }
        return true;
      },
      3000ms));
  auto s = Status();
  int idle = 0;
  for (const auto& w : s.workers()) idle += w.state() == "idle";
  EXPECT_EQ(idle, 1);
}

TEST_F(CoordinatorUnitTest, MissedHeartbeatsRetireTheEpochAndFenceLaterMessages) {
  CoordinatorOptions o;
  o.replicas = {1, 0, 0};
  o.heartbeat_interval_ms = 50;
  o.heartbeat_timeout_ms = 300;
  Start(o);
  pb::RegisterResponse r;
  ASSERT_TRUE(Register("hung", &r).ok());
  const uint64_t epoch = r.epoch();
  auto w = Connect("hung", epoch);
  ASSERT_TRUE(w->Heartbeat("idle"));
  auto a = w->WaitAssignment(2000ms);
  ASSERT_TRUE(a.has_value());
  // Its registry entry, as its StageWorker would have written it.
  ex::MemberInfo m;
  m.id = "hung";
  m.stage = 0;
  m.incarnation = std::to_string(epoch);
  m.state = "ready";
  ASSERT_TRUE(store_->Set(ex::MembersPrefix("unit") + "hung", m.ToJson(), Deadline::AfterMs(1000))
                  .ok());
  ASSERT_TRUE(w->Heartbeat("ready", a->assignment_id()));
  // Then silence, as a SIGSTOPped process: declared dead after the timeout.
  ASSERT_TRUE(WaitUntil([&] { return w->ended.load(); }, 3000ms));
  EXPECT_EQ(w->final_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << w->final_status.error_message();
  auto s = Status();
  const auto* dead = Find(s, "hung", epoch);
  ASSERT_NE(dead, nullptr);
  EXPECT_EQ(dead->state(), "dead");
  EXPECT_NE(dead->dead_reason().find("no heartbeat"), std::string::npos) << dead->dead_reason();
  ASSERT_EQ(s.recoveries_size(), 1);
  EXPECT_EQ(s.recoveries(0).worker_id(), "hung");
  EXPECT_EQ(s.recoveries(0).stage(), 0);
  EXPECT_GE(s.recoveries(0).detected_unix_ms() - s.recoveries(0).last_heartbeat_unix_ms(), 300);
  // The registry entry is marked gone, so its neighbours drop its worlds.
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto v = store_->Get(ex::MembersPrefix("unit") + "hung", Deadline::AfterMs(100));
        return v.ok() && ex::MemberInfo::FromJson(*v)->state == "gone";
      },
      2000ms));
  // Anything it sends with the retired epoch is refused: resume, and a new session.
  pb::RegisterResponse again;
  auto st = Register("hung", &again, /*resume=*/epoch);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  auto late = Connect("hung", epoch);
  late->Heartbeat("ready", a->assignment_id());
  ASSERT_TRUE(WaitUntil([&] { return late->ended.load(); }, 2000ms));
  EXPECT_EQ(late->final_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(late->Count(pb::CoordinatorMessage::kAssign), 0);
  // Registering afresh gives a new, larger epoch, and the stage is assigned to it again.
  ASSERT_TRUE(Register("hung", &again).ok());
  EXPECT_GT(again.epoch(), epoch);
  auto fresh = Connect("hung", again.epoch());
  ASSERT_TRUE(fresh->Heartbeat("idle"));
  EXPECT_TRUE(fresh->WaitAssignment(2000ms).has_value());
}

TEST_F(CoordinatorUnitTest, NeighbourReportDeclaresASilentPeerDeadButNotAHealthyOne) {
  CoordinatorOptions o;
  o.replicas = {1, 1, 0};
  o.heartbeat_interval_ms = 100;
  o.heartbeat_timeout_ms = 5000;  // long: only the report can explain a fast declaration
  o.suspect_ms = 200;
  Start(o);
  pb::RegisterResponse ra, rb;
  ASSERT_TRUE(Register("a", &ra).ok());
  ASSERT_TRUE(Register("b", &rb).ok());
  auto a = Connect("a", ra.epoch());
  auto b = Connect("b", rb.epoch());
  ASSERT_TRUE(a->Heartbeat("idle"));
  ASSERT_TRUE(b->Heartbeat("idle"));
  auto aa = a->WaitAssignment(2000ms);
  auto ab = b->WaitAssignment(2000ms);
  ASSERT_TRUE(aa && ab);
  ASSERT_NE(aa->stage(), ab->stage());
  auto report = [&](FakeWorker& from, const std::string& peer, uint64_t peer_epoch) {
    pb::WorkerMessage m;
    m.set_worker_id(from.id);
    m.set_epoch(from.epoch);
    m.mutable_broken()->set_peer_id(peer);
    m.mutable_broken()->set_peer_epoch(std::to_string(peer_epoch));
    m.mutable_broken()->set_reason("test");
    return from.stream->Write(m);
  };
  // b heartbeats: a's report alone does not kill it.
  ASSERT_TRUE(b->Heartbeat("ready", ab->assignment_id()));
  ASSERT_TRUE(report(*a, "b", rb.epoch()));
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(Find(Status(), "b", rb.epoch())->state(), "ready");
  // b falls silent past suspect_ms: the next report declares it dead, long before the timeout.
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(a->Heartbeat("ready", aa->assignment_id()));
  ASSERT_TRUE(report(*a, "b", rb.epoch()));
  ASSERT_TRUE(WaitUntil([&] { return b->ended.load(); }, 1000ms));
  const auto s = Status();
  EXPECT_EQ(Find(s, "b", rb.epoch())->state(), "dead");
  EXPECT_NE(Find(s, "b", rb.epoch())->dead_reason().find("neighbour a"), std::string::npos);
  // a, its neighbour, was told to remove the world to b.
  ASSERT_TRUE(WaitUntil([&] { return a->Count(pb::CoordinatorMessage::kWorlds) > 0; }, 1000ms));
  std::lock_guard lock(a->mu);
  for (const auto& m : a->received) {
    if (!m.has_worlds()) continue;
    ASSERT_EQ(m.worlds().remove_size(), 1);
    EXPECT_EQ(m.worlds().remove(0).peer_id(), "b");
    EXPECT_EQ(m.worlds().remove(0).peer_epoch(), std::to_string(rb.epoch()));
    EXPECT_NE(m.worlds().remove(0).name().find("b." + std::to_string(rb.epoch())),
              std::string::npos);
  }
}

TEST_F(CoordinatorUnitTest, ScaleAndDrainMoveWorkersBetweenStagesAndPool) {
  CoordinatorOptions o;
  o.replicas = {1, 0, 0};
  Start(o);
  std::vector<std::unique_ptr<FakeWorker>> ws;
  for (int i = 0; i < 3; ++i) {
    pb::RegisterResponse r;
    ASSERT_TRUE(Register("w" + std::to_string(i), &r).ok());
    ws.push_back(Connect("w" + std::to_string(i), r.epoch()));
    ASSERT_TRUE(ws.back()->Heartbeat("idle"));
  }
  auto count_assigned = [&] {
    int n = 0;
    for (auto& w : ws) n += w->Count(pb::CoordinatorMessage::kAssign);
    return n;
  };
  ASSERT_TRUE(WaitUntil([&] { return count_assigned() == 1; }, 2000ms));
  grpc::ClientContext c1;
  Auth(c1, token_);
  pb::ScaleRequest sr;
  sr.set_stage(2);
  sr.set_replicas(2);
  pb::ScaleResponse sresp;
  ASSERT_TRUE(admin_->Scale(&c1, sr, &sresp).ok());
  EXPECT_EQ(sresp.previous(), 0);
  ASSERT_TRUE(WaitUntil([&] { return count_assigned() == 3; }, 2000ms));
  // Drain one of stage 2's: it is released and never assigned again.
  std::string victim;
  for (auto& w : ws) {
    auto a = w->WaitAssignment(10ms);
    if (a && a->stage() == 2) victim = w->id;
  }
  ASSERT_FALSE(victim.empty());
  grpc::ClientContext c2;
  Auth(c2, token_);
  pb::DrainWorkerRequest dr;
  dr.set_worker_id(victim);
  pb::DrainWorkerResponse dresp;
  ASSERT_TRUE(admin_->Drain(&c2, dr, &dresp).ok());
  EXPECT_EQ(dresp.state(), "draining");
  FakeWorker* v = nullptr;
  for (auto& w : ws) {
    if (w->id == victim) v = w.get();
  }
  ASSERT_TRUE(WaitUntil([&] { return v->Count(pb::CoordinatorMessage::kRelease) == 1; }, 2000ms));
  ASSERT_TRUE(v->Heartbeat("idle", 0));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(v->Count(pb::CoordinatorMessage::kAssign), 1);  // cordoned: no new assignment
  // Bad admin input changes nothing.
  grpc::ClientContext c3;
  Auth(c3, token_);
  sr.set_stage(3);
  EXPECT_EQ(admin_->Scale(&c3, sr, &sresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext c4;
  Auth(c4, token_);
  sr.set_stage(0);
  sr.set_replicas(-1);
  EXPECT_EQ(admin_->Scale(&c4, sr, &sresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext c5;
  Auth(c5, token_);
  dr.set_worker_id("nobody");
  EXPECT_EQ(admin_->Drain(&c5, dr, &dresp).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c6;
  Auth(c6, token_);
  pb::SetPolicyRequest pr;
  pr.set_policy("magic");
  pb::SetPolicyResponse presp;
  EXPECT_EQ(admin_->SetPolicy(&c6, pr, &presp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const auto s = Status();
  EXPECT_EQ(s.policy(), "none");
  EXPECT_EQ(s.stages(0).target_replicas(), 1);
  EXPECT_EQ(s.stages(2).target_replicas(), 2);
}

TEST_F(CoordinatorUnitTest, EmptiedStageBorrowsAReplicaUntilAnIdleWorkerArrives) {
  CoordinatorOptions o;
  o.replicas = {1, 2, 0};
  Start(o);
  std::map<std::string, std::unique_ptr<FakeWorker>> ws;
  for (const std::string id : {"a", "b", "c"}) {
    pb::RegisterResponse r;
    ASSERT_TRUE(Register(id, &r).ok());
    ws[id] = Connect(id, r.epoch());
    ASSERT_TRUE(ws[id]->Heartbeat("idle"));
  }
  std::map<int, std::vector<std::string>> at;
  for (auto& [id, w] : ws) {
    auto a = w->WaitAssignment(2000ms);
    ASSERT_TRUE(a.has_value()) << id;
    at[a->stage()].push_back(id);
    ASSERT_TRUE(w->Heartbeat("ready", a->assignment_id()));
  }
  ASSERT_EQ(at[0].size(), 1u);
  ASSERT_EQ(at[1].size(), 2u);
  // Stage 0's only replica dies (its session closes): nobody is idle, so stage 1 lends one.
  ws[at[0][0]].reset();
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const auto& id : at[1]) {
          if (ws[id]->Count(pb::CoordinatorMessage::kRelease) == 1) return true;
        }
        return false;
      },
      3000ms));
  std::string moved;
  for (const auto& id : at[1]) {
    if (ws[id]->Count(pb::CoordinatorMessage::kRelease) == 1) moved = id;
  }
  ASSERT_TRUE(ws[moved]->Heartbeat("idle", 0));  // drained, back in the pool
  ASSERT_TRUE(WaitUntil([&] { return ws[moved]->Count(pb::CoordinatorMessage::kAssign) == 2; },
                        3000ms));
  {
    std::lock_guard lock(ws[moved]->mu);
    const pb::CoordinatorMessage* last = nullptr;
    for (const auto& m : ws[moved]->received) {
      if (m.has_assign()) last = &m;
    }
    EXPECT_EQ(last->assign().stage(), 0);
  }
  auto s = Status();
  EXPECT_EQ(s.stages(1).target_replicas(), 1);
  ASSERT_EQ(s.recoveries_size(), 1);
  EXPECT_EQ(s.recoveries(0).replacement(), "");  // re-planned, not replaced from the pool
  EXPECT_GT(s.recoveries(0).decided_unix_ms(), 0);
  // A new worker arrives: stage 1 gets its replica back.
  pb::RegisterResponse r;
  ASSERT_TRUE(Register("d", &r).ok());
  auto d = Connect("d", r.epoch());
  ASSERT_TRUE(d->Heartbeat("idle"));
  auto a = d->WaitAssignment(2000ms);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->stage(), 1);
  EXPECT_EQ(Status().stages(1).target_replicas(), 2);
}

TEST_F(CoordinatorUnitTest, StoreAdmitsOnlyLiveMembersToTheirOwnKeysAndWorlds) {
  CoordinatorOptions o;
  o.token = "tok";
  o.replicas = {1, 1, 0};
  o.heartbeat_interval_ms = 50;
  o.heartbeat_timeout_ms = 400;
  Start(o);
  auto srv = StoreServer::Start({});
  ASSERT_TRUE(srv.ok()) << srv.status();
  ASSERT_NE(coord_->store_authorizer(), nullptr);
  (*srv)->SetAuthorizer(coord_->store_authorizer());
  pb::RegisterResponse ra, rb;
  ASSERT_TRUE(Register("a", &ra).ok());
  ASSERT_TRUE(Register("b", &rb).ok());
  auto a = Connect("a", ra.epoch());
  auto b = Connect("b", rb.epoch());
  ASSERT_TRUE(a->Heartbeat("idle"));
  ASSERT_TRUE(b->Heartbeat("idle"));
  auto aa = a->WaitAssignment(2000ms);
  auto ab = b->WaitAssignment(2000ms);
  ASSERT_TRUE(aa && ab);
  ASSERT_FALSE(aa->member_credential().empty());
  const std::string ta = "a." + std::to_string(ra.epoch()), tb = "b." + std::to_string(rb.epoch());
  const auto d = [] { return Deadline::AfterMs(2000); };
  auto mine = StoreClient::Connect((*srv)->address(), d(), aa->member_credential());
  auto anon = StoreClient::Connect((*srv)->address(), d());
  auto forged = StoreClient::Connect((*srv)->address(), d(), ta + ":" + std::string(64, '0'));
  ASSERT_TRUE(mine.ok() && anon.ok() && forged.ok());
  const std::string P = "archi/pipeline/unit/";
  EXPECT_EQ((*anon)->Set(P + "members/a", "x", d()).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ((*anon)->List("archi/", d()).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE((*anon)->Set("elsewhere/key", "x", d()).ok());  // not the pipeline's: unguarded
  EXPECT_EQ((*forged)->Set(P + "members/a", "x", d()).code(), StatusCode::kPermissionDenied);
  // The pipeline's own frontend (its store elsewhere) presents the token-derived credential.
  auto fe = StoreClient::Connect((*srv)->address(), d(), FrontendStoreCredential("tok", "unit"));
  auto fake_fe = StoreClient::Connect((*srv)->address(), d(), FrontendStoreCredential("nope", "unit"));
  ASSERT_TRUE(fe.ok() && fake_fe.ok());
  EXPECT_TRUE((*fe)->Set(P + "members/frontend", "x", d()).ok());
  EXPECT_EQ((*fake_fe)->Set(P + "members/frontend", "x", d()).code(),
            StatusCode::kPermissionDenied);
  // Its own registry entry and lease; reading the registry; nobody else's entry.
  EXPECT_TRUE((*mine)->Set(P + "members/a", "x", d()).ok());
  EXPECT_TRUE((*mine)->Add(P + "alive/" + ta, 1, d()).ok());
  EXPECT_TRUE((*mine)->List(P + "members/", d()).ok());
  EXPECT_EQ((*mine)->Set(P + "members/b", "x", d()).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ((*mine)->DeletePrefix(P, d()).status().code(), StatusCode::kPermissionDenied);
  // Worlds: only the one pairing it with its live neighbour, in stage order.
  const bool a_up = aa->stage() < ab->stage();
  const std::string up = a_up ? ta : tb, down = a_up ? tb : ta;
  EXPECT_TRUE((*mine)->Add("archi/world/unit:" + up + ":" + down + "/epoch", 1, d()).ok());
  EXPECT_EQ((*mine)->Add("archi/world/unit:" + down + ":" + up + "/epoch", 1, d()).status().code(),
            StatusCode::kPermissionDenied);  // not adjacent in that direction
  EXPECT_EQ((*mine)->Add("archi/world/unit:" + ta + ":zz.123/epoch", 1, d()).status().code(),
            StatusCode::kPermissionDenied);  // a peer nobody assigned
  EXPECT_EQ((*mine)->Add("archi/world/unit:" + tb + ":frontend.1/epoch", 1, d()).status().code(),
            StatusCode::kPermissionDenied);  // a world it is not in
  // a falls silent (b keeps heartbeating): its epoch is retired and its credential refused.
  for (int i = 0; i < 20 && !a->ended; ++i) {
    b->Heartbeat("ready", ab->assignment_id());
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(WaitUntil([&] { return a->ended.load(); }, 2000ms));
  EXPECT_EQ((*mine)->Set(P + "members/a", "y", d()).code(), StatusCode::kPermissionDenied);
}

TEST_F(CoordinatorUnitTest, UnauthenticatedOrMalformedClientsChangeNothing) {
  CoordinatorOptions o;
  o.token = "s3cret";
  Start(o);
  const std::string none, wrong = "guess";
  pb::RegisterResponse r;
  EXPECT_EQ(Register("w1", &r, 0, &none).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Register("w1", &r, 0, &wrong).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Status().workers_size(), 0);
  {
    grpc::ClientContext ctx;
    Auth(ctx, wrong);
    pb::ScaleRequest sr;
    sr.set_stage(0);
    sr.set_replicas(5);
    pb::ScaleResponse resp;
    EXPECT_EQ(admin_->Scale(&ctx, sr, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Status().stages(0).target_replicas(), 1);
  }
  {
    grpc::ClientContext ctx;
    Auth(ctx, none);
    pb::CoordinatorStatusResponse resp;
    EXPECT_EQ(admin_->Status(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // A session without the token ends at once.
  auto s = Connect("w1", 1, &wrong);
  s->Heartbeat("idle");
  ASSERT_TRUE(WaitUntil([&] { return s->ended.load(); }, 2000ms));
  EXPECT_EQ(s->final_status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Malformed registrations.
  for (const std::string& bad : {std::string(""), std::string("has space"), std::string(30, 'x'),
                                std::string("frontend")}) {
    EXPECT_EQ(Register(bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  {
    pb::RegisterRequest q;
    q.set_worker_id("w2");
    q.set_capacity(-1);
    grpc::ClientContext ctx;
    Auth(ctx, token_);
    EXPECT_EQ(worker_->Register(&ctx, q, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Status().workers_size(), 0);
  // A session that names an epoch never issued, or starts with something else than a heartbeat.
  ASSERT_TRUE(Register("w3", &r).ok());
  auto bogus = Connect("w3", r.epoch() + 7);
  bogus->Heartbeat("idle");
  ASSERT_TRUE(WaitUntil([&] { return bogus->ended.load(); }, 2000ms));
  EXPECT_EQ(bogus->final_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  auto wrong_first = Connect("w3", r.epoch());
  pb::WorkerMessage m;
  m.set_worker_id("w3");
  m.set_epoch(r.epoch());
  m.mutable_broken()->set_peer_id("x");
  wrong_first->stream->Write(m);
  ASSERT_TRUE(WaitUntil([&] { return wrong_first->ended.load(); }, 2000ms));
  EXPECT_EQ(wrong_first->final_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // The same id cannot register twice while the first is alive.
  auto live = Connect("w3", r.epoch());
  ASSERT_TRUE(live->Heartbeat("idle"));
  ASSERT_TRUE(WaitUntil([&] { return Find(Status(), "w3", r.epoch()) != nullptr; }, 1000ms));
  std::this_thread::sleep_for(50ms);
  pb::RegisterResponse r2;
  EXPECT_EQ(Register("w3", &r2).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

// Every policy of runtime/policy/registry.h is selectable live: at start and through SetPolicy.
TEST_F(CoordinatorUnitTest, EveryRegisteredPolicyIsSelectableLive) {
  CoordinatorOptions bad;
  bad.policy = "magic";
  EXPECT_EQ(ValidateOptions(bad, ThreeStages()).code(), StatusCode::kInvalidArgument);
  for (const char* n : {"none", "reactive", "parcae"}) {
    CoordinatorOptions ok;
    ok.policy = n;
    EXPECT_TRUE(ValidateOptions(ok, ThreeStages()).ok()) << n;
  }
  CoordinatorOptions o;
  o.policy = "parcae";
  Start(o);
  EXPECT_EQ(Status().policy(), "parcae");
  auto set = [&](const std::string& name, pb::SetPolicyResponse* resp) {
    grpc::ClientContext c;
    Auth(c, token_);
    pb::SetPolicyRequest pr;
    pr.set_policy(name);
    return admin_->SetPolicy(&c, pr, resp);
  };
  pb::SetPolicyResponse r1;
  ASSERT_TRUE(set("reactive", &r1).ok());
  EXPECT_EQ(r1.previous(), "parcae");
  EXPECT_EQ(Status().policy(), "reactive");
  pb::SetPolicyResponse r2;
  ASSERT_TRUE(set("parcae", &r2).ok());
  EXPECT_EQ(r2.previous(), "reactive");
  EXPECT_EQ(Status().policy(), "parcae");
  pb::SetPolicyResponse r3;
  const grpc::Status unknown = set("Parcae", &r3);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(unknown.error_message().find("none | " + policy::PolicyNamesJoined()),
            std::string::npos)
      << unknown.error_message();
  EXPECT_EQ(Status().policy(), "parcae");  // unchanged
  pb::SetPolicyResponse r4;
  ASSERT_TRUE(set("none", &r4).ok());
  EXPECT_EQ(r4.previous(), "parcae");
  EXPECT_EQ(Status().policy(), "none");
}

// Parcae live: with its (naive) availability forecast from the registered workers it places the
// idle workers so that every stage has a replica.
TEST_F(CoordinatorUnitTest, ParcaePlacesIdleWorkersOnEveryStage) {
  CoordinatorOptions o;
  o.replicas = {0, 0, 0};
  o.policy = "parcae";
  o.policy_interval_ms = 50;
  Start(o);
  std::vector<std::unique_ptr<FakeWorker>> ws;
  for (const std::string id : {"a", "b", "c"}) {
    pb::RegisterResponse r;
    ASSERT_TRUE(Register(id, &r).ok());
    ws.push_back(Connect(id, r.epoch()));
    ASSERT_TRUE(ws.back()->Heartbeat("idle"));
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        int assigned = 0;
        for (auto& w : ws) assigned += w->Count(pb::CoordinatorMessage::kAssign) > 0 ? 1 : 0;
        return assigned == 3;
      },
      5000ms));
  std::set<int> stages;
  const auto st = Status();
  for (const auto& w : st.workers()) stages.insert(w.stage());
  EXPECT_EQ(stages, (std::set<int>{0, 1, 2}));
}

}  // namespace
}  // namespace archi::coordinator
