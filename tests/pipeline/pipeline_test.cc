// The pipeline data plane with real processes: archi-frontend + archi-worker processes on
// loopback (bench/harness LocalCluster), a generated 6-layer BERT model (token-id requests).
//
//   - a 3-stage pipeline returns what the same model returns in one process;
//   - kill -9 of a middle-stage replica under load: every admitted request completes;
//   - a replica added under load receives traffic within 1 s of turning ready;
//   - draining a replica under load: no error, no loss, the worker exits 0;
//   - a stage with no replica: requests wait and complete once one appears;
//   - malformed and late requests get INVALID_ARGUMENT / DEADLINE_EXCEEDED with a reason.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "bench/harness/http_get.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "bench/harness/process.h"
#include "bench/harness/ready_file.h"
#include "bench/harness/test_pipeline.h"
#include "proto/inference.grpc.pb.h"
#include "runtime/executor/stage_model.h"
#include "runtime/model/model.h"

namespace archi {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::LoadGenerator;
using harness::LoadInput;
using harness::LoadOptions;
using harness::LocalCluster;
using harness::LocalClusterOptions;

constexpr int kLayers = harness::kTestLayers;
constexpr int kVocab = harness::kTestVocab;
constexpr int kMaxTokens = harness::kTestMaxTokens;

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() /
                         ("archi_pipeline_test_" + std::to_string(getpid())));
    fs::create_directories(*root_);
    ASSERT_TRUE(harness::WriteTestModel((*root_ / "model").string()).ok());
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(*root_, ec);  // keep logs to debug
    delete root_;
  }

  // Writes the plan of pipeline `name` (stages ending at `stages_end`) into its own directory and
  // returns the cluster options for it, with `replicas` workers per stage.
  static LocalClusterOptions PlanCluster(
      const std::string& name, std::vector<int> stages_end, std::vector<int> replicas,
      int max_batch = 8, int64_t extra_compute_ms = 0, int64_t default_timeout_ms = 20'000,
      std::vector<std::pair<std::string, std::string>> env = {}) {
    const fs::path dir = *root_ / name;
    auto plan = harness::WriteTestPlan(dir.string(), name, (*root_ / "model").string(), stages_end,
                                       max_batch, default_timeout_ms);
    EXPECT_TRUE(plan.ok()) << plan.status();
    LocalClusterOptions o;
    o.plan_path = plan.ok() ? *plan : std::string();
    o.work_dir = dir.string();
    o.replicas = std::move(replicas);
    o.env = std::move(env);
    if (extra_compute_ms > 0) {
      o.extra_worker_args = {"--extra-compute-ms", std::to_string(extra_compute_ms)};
    }
    return o;
  }

  // PlanCluster, then starts it (every worker ready). nullptr (and a test failure) otherwise.
  std::unique_ptr<LocalCluster> StartCluster(
      const std::string& name, std::vector<int> stages_end, std::vector<int> replicas,
      int max_batch = 8, int64_t extra_compute_ms = 0, int64_t default_timeout_ms = 20'000,
      std::vector<std::pair<std::string, std::string>> env = {}) {
    LocalClusterOptions o = PlanCluster(name, std::move(stages_end), std::move(replicas), max_batch,
                                        extra_compute_ms, default_timeout_ms, std::move(env));
    auto cluster = LocalCluster::Start(o);
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    if (!cluster.ok()) return nullptr;
    return std::move(*cluster);
  }

  static std::vector<std::vector<int32_t>> Sequences(int n, uint64_t seed) {
    return harness::RandomSequences(n, seed);
  }

  static LoadOptions Load(const LocalCluster& c, double duration_s, int concurrency = 12) {
    return harness::ClosedTestLoad(c.frontend_address(), duration_s, concurrency);
  }

  static pb::StatusResponse AdminStatus(const LocalCluster& c) {
    auto stub = pb::Admin::NewStub(
        grpc::CreateChannel(c.frontend_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::StatusResponse r;
    EXPECT_TRUE(stub->Status(&ctx, pb::StatusRequest{}, &r).ok());
    return r;
  }

  static const pb::MemberStatus* Member(const pb::StatusResponse& r, const std::string& id) {
    for (const auto& m : r.members()) {
      if (m.id() == id) return &m;
    }
    return nullptr;
  }

  // One Embed call with token ids.
  static grpc::Status Embed(const LocalCluster& c, const pb::EmbedRequest& req,
                            pb::EmbedResponse* resp, int64_t timeout_ms = 20'000) {
    auto stub = pb::Inference::NewStub(
        grpc::CreateChannel(c.frontend_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    return stub->Embed(&ctx, req, resp);
  }

  static void ExpectNoLoss(const harness::LoadReport& r) {
    EXPECT_EQ(r.summary.lost, 0) << r.summary.ToString();
    EXPECT_EQ(r.summary.ok, r.summary.sent) << r.summary.ToString();
    EXPECT_GT(r.summary.ok, 0);
  }

  static fs::path* root_;
};

fs::path* PipelineTest::root_ = nullptr;

// Three stages (layers [0,2) [2,4) [4,6)) give the embeddings of the whole model in one process:
// bitwise with micro-batches of one request (same shapes, same kernels), and within 1e-5 when
// requests are batched (padding to the batch's longest row changes the GEMM shapes).
TEST_F(PipelineTest, ThreeStagesMatchOneProcess) {
  auto whole = executor::StageModel::Load((*root_ / "model").string(), {0, kLayers}, 1);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto reference = [&](const std::vector<int32_t>& ids) {
    Tensor t = *Tensor::Empty({1, static_cast<int64_t>(ids.size())}, DType::kI32);
    std::memcpy(t.data(), ids.data(), ids.size() * 4);
    Tensor len = *Tensor::Empty({1}, DType::kI32);
    len.data_as<int32_t>()[0] = static_cast<int32_t>(ids.size());
    auto out = (*whole)->Run(t, len);
    EXPECT_TRUE(out.ok()) << out.status();
    return std::vector<float>(out->data_as<float>(), out->data_as<float>() + 64);
  };
  const auto seqs = Sequences(12, 11);
  {
    auto c = StartCluster("same1", {2, 4, 6}, {1, 1, 1}, /*max_batch=*/1);
    ASSERT_NE(c, nullptr);
    for (const auto& s : seqs) {
      pb::EmbedRequest req;
      req.mutable_ids()->mutable_ids()->Assign(s.begin(), s.end());
      pb::EmbedResponse resp;
      auto st = Embed(*c, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      ASSERT_EQ(resp.embedding_size(), 64);
      EXPECT_EQ(resp.num_tokens(), static_cast<int>(s.size()));
      const auto want = reference(s);
      EXPECT_EQ(std::memcmp(resp.embedding().data(), want.data(), 64 * sizeof(float)), 0)
          << "sequence of " << s.size() << " tokens differs from the one-process result";
    }
  }
  {
    auto c = StartCluster("same8", {2, 4, 6}, {1, 1, 1}, /*max_batch=*/8);
    ASSERT_NE(c, nullptr);
    std::vector<std::thread> threads;
    std::vector<pb::EmbedResponse> resps(seqs.size());
    std::vector<grpc::Status> sts(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      threads.emplace_back([&, i] {
        pb::EmbedRequest req;
        req.mutable_ids()->mutable_ids()->Assign(seqs[i].begin(), seqs[i].end());
        sts[i] = Embed(*c, req, &resps[i]);
      });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < seqs.size(); ++i) {
      ASSERT_TRUE(sts[i].ok()) << sts[i].error_message();
      const auto want = reference(seqs[i]);
      for (int k = 0; k < 64; ++k) EXPECT_NEAR(resps[i].embedding(k), want[k], 1e-5);
    }
  }
}

TEST_F(PipelineTest, KillMiddleReplicaUnderLoadLosesNothing) {
  auto c = StartCluster("kill", {2, 4, 6}, {1, 2, 1}, 8, /*extra_compute_ms=*/3);
  ASSERT_NE(c, nullptr);
  auto gen = LoadGenerator::Create(Load(*c, 4.0));
  ASSERT_TRUE(gen.ok()) << gen.status();
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const std::string victim = "s1-r0";
  ASSERT_TRUE(c->Kill(victim, SIGKILL).ok());
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectNoLoss(*report);
  // The neighbours saw it die and marked it gone; the other replica carried the load.
  EXPECT_TRUE(c->WaitMemberState(victim, "gone", Deadline::AfterMs(10'000)).ok());
  const auto st = AdminStatus(*c);
  EXPECT_EQ(st.pending(), 0u);
  EXPECT_EQ(st.completed(), static_cast<uint64_t>(report->summary.ok));
  // Requests finished after the kill: the survivor served them.
  const double kill_ms = 1500;
  int64_t after = 0;
  for (const auto& r : report->records) after += r.finish_ms > kill_ms + 500 && r.code == 0;
  EXPECT_GT(after, 0);
}

// A hung replica (SIGSTOP) is declared dead by heartbeats, its work is re-sent, and when it wakes
// up (SIGCONT) it finds itself fenced ("gone") and exits with code 3 instead of serving stale work.
TEST_F(PipelineTest, HungReplicaIsBypassedThenFenced) {
  auto c = StartCluster("hung", {2, 4, 6}, {1, 2, 1}, 8, /*extra_compute_ms=*/3, 20'000,
                        {{"ARCHI_HEARTBEAT_TIMEOUT_MS", "800"}, {"ARCHI_MEMBER_LEASE_MS", "2500"}});
  ASSERT_NE(c, nullptr);
  auto gen = LoadGenerator::Create(Load(*c, 5.0));
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const std::string victim = "s1-r0";
  ASSERT_TRUE(c->Kill(victim, SIGSTOP).ok());
  EXPECT_TRUE(c->WaitMemberState(victim, "gone", Deadline::AfterMs(10'000)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(c->Kill(victim, SIGCONT).ok());
  auto* p = c->process(victim);
  ASSERT_NE(p, nullptr);
  auto exit = p->WaitExit(Deadline::AfterMs(10'000));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_FALSE(exit->signaled) << exit->ToString();
  EXPECT_EQ(exit->code, 3) << "a fenced worker exits with code 3";
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok());
  ExpectNoLoss(*report);
  // Its upstream re-sent what the hung replica had not acknowledged. (Counted where the re-send
  // happens: an answered request shows attempts > 1 only when its batch was still inside the
  // replica at SIGSTOP; when the replica had already passed it on, the re-sent copy is a
  // duplicate the frontend drops, so the answers alone cannot show it every time.)
  const auto st = AdminStatus(*c);
  EXPECT_GT(st.resent_batches(), 0u) << "the hung replica's unacknowledged micro-batches were re-sent";
  // The healthy members were never fenced.
  EXPECT_EQ(Member(st, "s0-r0")->state(), "ready");
  EXPECT_EQ(Member(st, "s1-r1")->state(), "ready");
  EXPECT_EQ(Member(st, "s2-r0")->state(), "ready");
}

TEST_F(PipelineTest, AddedReplicaGetsTrafficWithinOneSecond) {
  auto c = StartCluster("add", {2, 4, 6}, {1, 1, 1}, 8, /*extra_compute_ms=*/3);
  ASSERT_NE(c, nullptr);
  auto gen = LoadGenerator::Create(Load(*c, 4.0, 16));
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  auto id = c->AddWorker(1, Deadline::AfterMs(30'000));
  ASSERT_TRUE(id.ok()) << id.status();
  // Wait for its first micro-batch (reported in the registry every ~200 ms).
  const pb::MemberStatus* m = nullptr;
  pb::StatusResponse st;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < until) {
    st = AdminStatus(*c);
    m = Member(st, *id);
    if (m != nullptr && m->first_batch_unix_ms() > 0 && m->ready_unix_ms() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_NE(m, nullptr);
  ASSERT_GT(m->ready_unix_ms(), 0);
  ASSERT_GT(m->first_batch_unix_ms(), 0) << "the new replica never received a micro-batch";
  EXPECT_LE(m->first_batch_unix_ms() - m->ready_unix_ms(), 1000)
      << "ready at " << m->ready_unix_ms() << ", first micro-batch at " << m->first_batch_unix_ms();
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok());
  ExpectNoLoss(*report);
}

TEST_F(PipelineTest, DrainUnderLoadHasNoErrorAndNoLoss) {
  auto c = StartCluster("drain", {2, 4, 6}, {1, 2, 1}, 8, /*extra_compute_ms=*/3);
  ASSERT_NE(c, nullptr);
  auto gen = LoadGenerator::Create(Load(*c, 3.5));
  ASSERT_TRUE(gen.ok());
  ASSERT_TRUE((*gen)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  auto state = c->Drain("s1-r1", Deadline::AfterMs(5000));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, "draining");
  // The drained worker finishes what it holds and exits 0.
  auto* p = c->process("s1-r1");
  ASSERT_NE(p, nullptr);
  auto exit = p->WaitExit(Deadline::AfterMs(15'000));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->ok()) << exit->ToString();
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  ASSERT_TRUE(report.ok());
  ExpectNoLoss(*report);
  // A drained member never counts as a failure: nothing was re-sent because of it.
  EXPECT_EQ(report->summary.resent, 0) << report->summary.ToString();
  EXPECT_EQ(Member(AdminStatus(*c), "s1-r1"), nullptr);
}

// With no replica of stage 1, requests are admitted and wait (bounded by their deadline); a
// replica that appears later serves them.
TEST_F(PipelineTest, RequestsWaitForAStageWithNoReplica) {
  auto c = StartCluster("empty", {3, 6}, {1, 1});
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Drain("s1-r0", Deadline::AfterMs(5000)).ok());
  ASSERT_TRUE(c->WaitMemberState("s1-r0", "gone", Deadline::AfterMs(15'000)).ok());
  std::vector<std::thread> threads;
  std::vector<grpc::Status> sts(6);
  const auto seqs = Sequences(6, 5);
  for (size_t i = 0; i < seqs.size(); ++i) {
    threads.emplace_back([&, i] {
      pb::EmbedRequest req;
      req.mutable_ids()->mutable_ids()->Assign(seqs[i].begin(), seqs[i].end());
      pb::EmbedResponse resp;
      sts[i] = Embed(*c, req, &resp, 30'000);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_EQ(AdminStatus(*c).pending(), seqs.size()) << "requests should be waiting";
  auto id = c->AddWorker(1, Deadline::AfterMs(30'000));
  for (auto& t : threads) t.join();  // before any ASSERT: a joinable thread must not be destroyed
  ASSERT_TRUE(id.ok()) << id.status();
  for (const auto& s : sts) EXPECT_TRUE(s.ok()) << s.error_message();
  // And a request whose deadline passes while waiting gets DEADLINE_EXCEEDED, not silence.
  ASSERT_TRUE(c->Drain(*id, Deadline::AfterMs(5000)).ok());
  ASSERT_TRUE(c->WaitMemberState(*id, "gone", Deadline::AfterMs(15'000)).ok());
  pb::EmbedRequest req;
  req.mutable_ids()->add_ids(1);
  pb::EmbedResponse resp;
  auto st = Embed(*c, req, &resp, 400);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The client's own timer and the frontend's deadline thread fire at about the same instant:
  // wait (bounded) for the frontend to have answered and counted it.
  uint64_t answered = 0;
  for (int i = 0; i < 40 && answered == 0; ++i) {
    answered = AdminStatus(*c).deadline_exceeded();
    if (answered == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(answered, 1u);
  EXPECT_EQ(AdminStatus(*c).pending(), 0u);
}

// A free TCP port on 127.0.0.1 (bound and released: a small race, fine for a test).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// With a standalone store (archi-store), the frontend can die and be replaced: the running
// workers re-register in the new registry, link with the new frontend and serve again, without
// restarting (their worker-to-worker worlds survive).
TEST_F(PipelineTest, WorkersSurviveAFrontendRestart) {
  const fs::path dir = *root_ / "restart";
  fs::create_directories(dir);
  const std::string store_addr = "127.0.0.1:" + std::to_string(FreePort());
  auto store = harness::Process::Spawn({.binary = ARCHI_STORE_BIN,
                                        .args = {"--listen", store_addr},
                                        .log_path = (dir / "store.log").string()});
  ASSERT_TRUE(store.ok()) << store.status();
  // (The frontend's store client waits, bounded, for archi-store to accept connections.)
  LocalClusterOptions o = PlanCluster("restart", {3, 6}, {1, 1});
  o.extra_frontend_args = {"--store", store_addr};
  auto c = LocalCluster::Start(o);
  ASSERT_TRUE(c.ok()) << c.status();
  pb::EmbedRequest req;
  for (int i = 1; i <= 5; ++i) req.mutable_ids()->add_ids(i);
  pb::EmbedResponse first;
  ASSERT_TRUE(Embed(**c, req, &first).ok());

  ASSERT_TRUE((*c)->Kill("frontend", SIGKILL).ok());
  const std::string ready = (dir / "frontend2.ready").string();
  auto fe2 = harness::Process::Spawn(
      {.binary = harness::DefaultFrontendBinary(),
       .args = {"--plan", o.plan_path, "--store", store_addr, "--ready-file", ready},
       .log_path = (dir / "frontend2.log").string()});
  ASSERT_TRUE(fe2.ok()) << fe2.status();
  auto j = harness::WaitReadyFile(ready, Deadline::AfterMs(30'000));
  ASSERT_TRUE(j.ok()) << j.status();
  const std::string addr = (*j)["grpc"].get<std::string>();
  auto stub = pb::Inference::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  grpc::Status st;
  pb::EmbedResponse again;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  do {  // until the workers have re-registered and linked
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    st = stub->Embed(&ctx, req, &again);
  } while (!st.ok() && std::chrono::steady_clock::now() < until);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(std::memcmp(again.embedding().data(), first.embedding().data(), 64 * sizeof(float)), 0);
  // Same worker processes as before the restart.
  for (const std::string id : {"s0-r0", "s1-r0"}) {
    auto* p = (*c)->process(id);
    ASSERT_NE(p, nullptr);
    EXPECT_FALSE(p->WaitExit(Deadline::AfterMs(1)).ok()) << id << " should still be running";
  }
  (*fe2)->Signal(SIGTERM).IgnoreError();
}

using harness::HttpGet;
double Sample(const std::string& text, const std::string& name,
              const std::vector<std::string>& labels) {
  return harness::PrometheusSample(text, name, labels);
}

// Prometheus /metrics of the frontend and of a worker count what happened.
TEST_F(PipelineTest, MetricsCountRequests) {
  const fs::path dir = *root_ / "metrics";
  LocalClusterOptions o = PlanCluster("metrics", {3, 6}, {1, 1});
  o.extra_frontend_args = {"--metrics-listen", "127.0.0.1:0"};
  o.extra_worker_args = {"--metrics-listen", "127.0.0.1:0"};
  auto c = LocalCluster::Start(o);
  ASSERT_TRUE(c.ok()) << c.status();
  pb::EmbedRequest req;
  for (int i = 1; i <= 7; ++i) req.mutable_ids()->add_ids(i);
  for (int i = 0; i < 5; ++i) {
    pb::EmbedResponse resp;
    ASSERT_TRUE(Embed(**c, req, &resp).ok());
  }
  pb::EmbedRequest bad;
  bad.mutable_ids();
  pb::EmbedResponse resp;
  EXPECT_EQ(Embed(**c, bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  auto fe = harness::WaitReadyFile((dir / "frontend.ready").string(), Deadline::AfterMs(1000));
  ASSERT_TRUE(fe.ok()) << fe.status();
  const std::string text = HttpGet((*fe)["metrics"].get<std::string>(), "/metrics");
  ASSERT_NE(text.find("200 OK"), std::string::npos) << text;
  EXPECT_EQ(Sample(text, "archi_frontend_requests_total", {"code=\"OK\""}), 5) << text;
  EXPECT_EQ(Sample(text, "archi_frontend_requests_total", {"code=\"INVALID_ARGUMENT\""}), 1);
  EXPECT_EQ(Sample(text, "archi_frontend_request_seconds_count", {}), 5);
  EXPECT_EQ(Sample(text, "archi_frontend_pending_requests", {}), 0);

  auto w = harness::WaitReadyFile((dir / "s1-r0.ready").string(), Deadline::AfterMs(1000));
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string wt = HttpGet((*w)["metrics"].get<std::string>(), "/metrics");
  EXPECT_EQ(Sample(wt, "archi_worker_batches_total", {"stage=\"1\""}), 5) << wt;
  EXPECT_EQ(Sample(wt, "archi_worker_compute_seconds_count", {}), 5);
}

TEST_F(PipelineTest, MalformedAndLateRequests) {
  auto c = StartCluster("bad", {3, 6}, {1, 1}, 8, /*extra_compute_ms=*/300);
  ASSERT_NE(c, nullptr);
  auto expect_invalid = [&](const pb::EmbedRequest& req, const std::string& reason) {
    pb::EmbedResponse resp;
    auto st = Embed(*c, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << reason;
    EXPECT_NE(st.error_message().find(reason), std::string::npos)
        << "'" << st.error_message() << "' should mention '" << reason << "'";
  };
  pb::EmbedRequest none;
  expect_invalid(none, "neither text nor ids");
  pb::EmbedRequest empty;
  empty.mutable_ids();
  expect_invalid(empty, "empty token id list");
  pb::EmbedRequest too_long;
  for (int i = 0; i < kMaxTokens + 1; ++i) too_long.mutable_ids()->add_ids(1);
  expect_invalid(too_long, "at most 48");
  pb::EmbedRequest out_of_vocab;
  out_of_vocab.mutable_ids()->add_ids(3);
  out_of_vocab.mutable_ids()->add_ids(kVocab);
  expect_invalid(out_of_vocab, "outside the vocabulary");
  pb::EmbedRequest negative;
  negative.mutable_ids()->add_ids(-1);
  expect_invalid(negative, "outside the vocabulary");
  pb::EmbedRequest text;
  text.set_text("hello");
  expect_invalid(text, "no tokenizer");
  pb::EmbedRequest unknown;
  unknown.set_model("nope");
  unknown.mutable_ids()->add_ids(1);
  expect_invalid(unknown, "unknown model 'nope'");

  // Late: each stage takes >= 300 ms, the deadline is 200 ms.
  pb::EmbedRequest ok;
  ok.mutable_ids()->add_ids(5);
  ok.mutable_ids()->add_ids(6);
  pb::EmbedResponse resp;
  auto st = Embed(*c, ok, &resp, 200);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The pipeline is fine afterwards: the late result is dropped, the next request is answered.
  st = Embed(*c, ok, &resp, 20'000);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.embedding_size(), 64);
  const auto s = AdminStatus(*c);
  EXPECT_EQ(s.rejected(), 7u);
  EXPECT_EQ(s.completed(), 1u);
  // The frontend itself answered the late request (not only the client's timer), and its result,
  // which came back later, was dropped as a duplicate.
  EXPECT_EQ(s.deadline_exceeded(), 1u);
  EXPECT_EQ(s.pending(), 0u);
}

}  // namespace
}  // namespace archi
