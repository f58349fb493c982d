// LoadGenerator against an in-test fake archi.proto.Inference service on 127.0.0.1:0.
// The fake reads each request's text: "ok:N" answers OK after N ms, "de" answers
// DEADLINE_EXCEEDED at once (a proper answer), "hang" never answers (the request is lost).
#include "bench/harness/load_generator.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "proto/inference.grpc.pb.h"
#include "proto/inference.pb.h"

namespace archi::harness {
namespace {

class FakeInference final : public proto::Inference::Service {
 public:
  grpc::Status Embed(grpc::ServerContext* ctx, const proto::EmbedRequest* req,
                     proto::EmbedResponse* resp) override {
    calls_.fetch_add(1);
    const std::string& t = req->text();
    if (req->has_ids()) {
      resp->set_num_tokens(req->ids().ids_size());
      resp->add_embedding(1.0f);
      resp->set_attempts(1);
      return grpc::Status::OK;
    }
    if (t == "de") return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "fake: too late");
    if (t == "down") return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake: down");
    if (t == "flaky-id") {  // UNAVAILABLE the first two times a request_id is seen, then OK
      std::lock_guard<std::mutex> lock(mu_);
      if (++by_id_[req->request_id()] <= 2) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake: try again");
      }
      resp->add_embedding(1.0f);
      return grpc::Status::OK;
    }
    if (t == "flaky") {  // UNAVAILABLE the first time a request (client tag) is seen, then OK
      std::lock_guard<std::mutex> lock(mu_);
      if (seen_.insert(req->client_tag()).second) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake: try again");
      }
      resp->add_embedding(1.0f);
      return grpc::Status::OK;
    }
    if (t == "hang") {
      while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return grpc::Status(grpc::StatusCode::CANCELLED, "fake: cancelled");
    }
    if (t.rfind("ok:", 0) == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(t.substr(3))));
      resp->add_embedding(1.0f);
      resp->set_client_tag(req->client_tag());
      resp->set_attempts(t == "ok:0" ? 2 : 1);
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "fake: unknown input " + t);
  }
  int calls() const { return calls_.load(); }
  std::map<std::string, int> by_id() {
    std::lock_guard<std::mutex> lock(mu_);
    return by_id_;
  }

 private:
  std::atomic<int> calls_{0};
  std::mutex mu_;
  std::set<std::string> seen_;
  std::map<std::string, int> by_id_;  // request_id -> calls
};

class LoadGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }
  LoadOptions Options(std::vector<LoadInput> inputs) {
    LoadOptions o;
    o.target = "127.0.0.1:" + std::to_string(port_);
    o.inputs = std::move(inputs);
    return o;
  }
  FakeInference service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

Result<LoadReport> RunLoad(LoadOptions o) {
  ARCHI_ASSIGN_OR_RETURN(auto g, LoadGenerator::Create(std::move(o)));
  return g->Run();
}

TEST(PercentileTest, NearestRank) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({7}, 99), 7);
}

TEST(LoadGeneratorCreateTest, RejectsBadOptions) {
  LoadOptions o;
  o.target = "127.0.0.1:1";
  EXPECT_EQ(LoadGenerator::Create(o).status().code(), StatusCode::kInvalidArgument);  // no input
  o.inputs = {LoadInput::Text("x")};
  EXPECT_EQ(LoadGenerator::Create(o).status().code(), StatusCode::kInvalidArgument);  // no limit
  o.max_requests = 1;
  o.concurrency = 0;
  EXPECT_EQ(LoadGenerator::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.concurrency = 1;
  EXPECT_TRUE(LoadGenerator::Create(o).ok());
}

TEST_F(LoadGeneratorTest, ClosedLoopCountsAndPercentiles) {
  LoadOptions o = Options({LoadInput::Text("ok:20"), LoadInput::Text("ok:2"),
                           LoadInput::Text("ok:2"), LoadInput::Text("ok:2")});
  o.concurrency = 4;
  o.max_requests = 200;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  const LoadSummary& s = r->summary;
  EXPECT_EQ(s.sent, 200);
  EXPECT_EQ(s.ok, 200);
  EXPECT_EQ(s.lost, 0);
  EXPECT_EQ(s.by_code.at("OK"), 200);
  EXPECT_EQ(service_.calls(), 200);
  // 3 of 4 requests take ~2 ms, 1 of 4 ~20 ms: the median is short, p90 and p99 long.
  EXPECT_GE(s.p50_ms, 2.0);
  EXPECT_LT(s.p50_ms, 20.0);
  EXPECT_GE(s.p90_ms, 20.0);
  EXPECT_GE(s.p99_ms, 20.0);
  EXPECT_LE(s.p50_ms, s.p90_ms);
  EXPECT_LE(s.p90_ms, s.p99_ms);
  EXPECT_LE(s.p99_ms, s.max_ms);
  EXPECT_GT(s.throughput, 0);
  // Every record is complete; the timeline counts every OK answer once.
  ASSERT_EQ(r->records.size(), 200u);
  int64_t binned = 0;
  for (int64_t n : r->Timeline(100)) binned += n;
  EXPECT_EQ(binned, 200);
  for (const RequestRecord& rec : r->records) {
    EXPECT_EQ(rec.code, 0);
    EXPECT_EQ(rec.attempts, 1);
    EXPECT_GE(rec.finish_ms, rec.send_ms);
  }
  const std::string csv = r->RecordsCsv();
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 201);
  EXPECT_NE(r->TimelineCsv().find("bin_start_s,ok,errors,ok_per_s"), std::string::npos);
}

TEST_F(LoadGeneratorTest, ClosedLoopKeepsConcurrency) {
  // 8 outstanding requests of 50 ms each: 40 requests take ~5 rounds, i.e. ~250 ms, not 2 s.
  LoadOptions o = Options({LoadInput::Text("ok:50")});
  o.concurrency = 8;
  o.max_requests = 40;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.ok, 40);
  EXPECT_LT(r->summary.wall_s, 1.5);
}

TEST_F(LoadGeneratorTest, ServerDeadlineExceededIsAnAnswerNotALoss) {
  LoadOptions o = Options({LoadInput::Text("ok:1"), LoadInput::Text("de")});
  o.concurrency = 2;
  o.max_requests = 100;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.ok, 50);
  EXPECT_EQ(r->summary.deadline_exceeded, 50);
  EXPECT_EQ(r->summary.by_code.at("DEADLINE_EXCEEDED"), 50);
  EXPECT_EQ(r->summary.lost, 0);
  int64_t errors = 0;
  for (int64_t n : r->ErrorTimeline(100)) errors += n;
  EXPECT_EQ(errors, 50);
}

TEST_F(LoadGeneratorTest, UnansweredRequestsAreLost) {
  LoadOptions o = Options({LoadInput::Text("hang"), LoadInput::Text("ok:1")});
  o.concurrency = 2;
  o.max_requests = 6;
  o.deadline_ms = 200;
  o.grace_ms = 100;
  const auto t0 = Clock::now();
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.ok, 3);
  EXPECT_EQ(r->summary.lost, 3);
  EXPECT_EQ(r->summary.by_code.at("LOST"), 3);
  EXPECT_EQ(r->summary.deadline_exceeded, 0);
  EXPECT_LT(MsSince(t0), 5'000);
}

TEST_F(LoadGeneratorTest, TokenIdsAndServerAttempts) {
  LoadOptions o = Options({LoadInput::Ids({101, 7, 102}), LoadInput::Text("ok:0")});
  o.max_requests = 10;
  o.concurrency = 1;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.ok, 10);
  EXPECT_EQ(r->summary.resent, 5);  // "ok:0" answers attempts = 2
}

TEST_F(LoadGeneratorTest, RetriesUnavailableWithinTheDeadline) {
  LoadOptions o = Options({LoadInput::Text("flaky")});
  o.max_requests = 20;
  o.concurrency = 4;
  o.max_attempts = 1;
  auto once = RunLoad(o);
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(once->summary.by_code.at("UNAVAILABLE"), 20);  // a proper answer, not lost
  EXPECT_EQ(once->summary.lost, 0);
  o.max_attempts = 2;
  auto twice = RunLoad(o);  // the fake has seen tags 0..19 already: use new ones
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_EQ(twice->summary.ok, 20);
  for (const RequestRecord& r : twice->records) EXPECT_EQ(r.attempts, 1);
  o.max_requests = 40;  // tags 20..39 are new: each needs a second attempt
  auto more = RunLoad(o);
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_EQ(more->summary.ok, 40);
  EXPECT_EQ(more->summary.resent, 20);
}

TEST_F(LoadGeneratorTest, RetriesCarryTheSameRequestIdWithBackoff) {
  LoadOptions o = Options({LoadInput::Text("flaky-id")});
  o.max_requests = 12;
  o.concurrency = 4;
  o.max_attempts = 5;
  o.retry_backoff_ms = 40;
  o.max_retry_backoff_ms = 60;
  o.request_id_prefix = "lg-";
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.ok, 12) << r->summary.ToString();
  EXPECT_EQ(r->summary.retried, 12);
  const auto by_id = service_.by_id();
  ASSERT_EQ(by_id.size(), 12u);  // one id per request, the same on each of its attempts
  for (int i = 0; i < 12; ++i) {
    auto it = by_id.find("lg-" + std::to_string(i));
    ASSERT_NE(it, by_id.end()) << i;
    EXPECT_EQ(it->second, 3) << i;
  }
  for (const RequestRecord& q : r->records) {
    EXPECT_EQ(q.attempts, 3);
    // Two backoffs of at least 0.75 x 40 and 0.75 x 60 ms (a lower bound the generator must keep).
    EXPECT_GE(q.latency_ms(), 0.75 * 40 + 0.75 * 60 - 1) << q.index;
  }
}

TEST_F(LoadGeneratorTest, RetriesStopAtTheDeadline) {
  LoadOptions o = Options({LoadInput::Text("down")});
  o.max_requests = 4;
  o.concurrency = 2;
  o.max_attempts = 1000;
  o.retry_backoff_ms = 20;
  o.max_retry_backoff_ms = 50;
  o.deadline_ms = 300;
  o.request_id_prefix = "d-";
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.by_code.at("UNAVAILABLE"), 4) << r->summary.ToString();
  EXPECT_EQ(r->summary.lost, 0);
  for (const RequestRecord& q : r->records) {
    EXPECT_GT(q.attempts, 1);
    EXPECT_LT(q.attempts, 300 / 15);  // backoff >= 15 ms between attempts within 300 ms
  }
}

TEST_F(LoadGeneratorTest, OpenLoopConstantRate) {
  LoadOptions o = Options({LoadInput::Text("ok:1")});
  o.mode = LoadOptions::Mode::kOpen;
  o.poisson = false;
  o.rate_per_s = 200;
  o.duration_s = 0.5;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->summary.sent, 90);
  EXPECT_LE(r->summary.sent, 102);
  EXPECT_EQ(r->summary.ok, r->summary.sent);
}

TEST_F(LoadGeneratorTest, OpenLoopPoissonAndStop) {
  LoadOptions o = Options({LoadInput::Text("ok:1")});
  o.mode = LoadOptions::Mode::kOpen;
  o.rate_per_s = 500;
  o.duration_s = 60;
  auto g = LoadGenerator::Create(o);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE((*g)->Start().ok());
  EXPECT_EQ((*g)->Start().code(), StatusCode::kFailedPrecondition);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ((*g)->Wait(Deadline::AfterMs(10)).status().code(), StatusCode::kDeadlineExceeded);
  (*g)->Stop();
  auto r = (*g)->Wait(Deadline::AfterMs(10'000));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->summary.sent, 50);
  EXPECT_LT(r->summary.sent, 400);
  EXPECT_EQ(r->summary.ok, r->summary.sent);
  const auto p = (*g)->GetProgress();
  EXPECT_EQ(p.sent, r->summary.sent);
  EXPECT_EQ(p.outstanding, 0);
}

TEST_F(LoadGeneratorTest, NoServerGivesUnavailableNotLoss) {
  LoadOptions o;
  o.target = "127.0.0.1:1";  // nothing listens there
  o.inputs = {LoadInput::Text("ok:1")};
  o.max_requests = 5;
  o.concurrency = 1;
  o.deadline_ms = 2'000;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.ok, 0);
  EXPECT_EQ(r->summary.by_code.at("UNAVAILABLE"), 5);
  EXPECT_EQ(r->summary.lost, 0);
}

}  // namespace
}  // namespace archi::harness
