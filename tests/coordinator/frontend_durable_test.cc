// kill -9 of the frontend (archi-frontend with its embedded coordinator and store) under steady
// load with request ids, restarted on the same port and the same --state-dir (real processes):
//   - every request is answered OK with the right embedding (compared with the whole model run in
//     this process): 0 lost, 0 errors; the requests the killed frontend held were re-dispatched
//     from its admission log (Admin.Status.recovered > 0) and their clients, retrying with the
//     same id after UNAVAILABLE, got those executions' results (EmbedResponse.recovered);
//   - no id runs twice at once: concurrent calls with one id while the pipeline is still down get
//     one execution (the same frontend request id, one answer marked replayed), and the restarted
//     frontend started at most one execution per request it answered;
//   - bad input: an id over 128 bytes, and an id reused with another input, are INVALID_ARGUMENT.
// Bounded: a 7 s load with 30 s request deadlines; the whole test stops by itself in ~40 s.
// Replay rules on a log written here: only the open admissions that fit the plan and whose
// deadline has not passed are re-dispatched; a retry gets the recovered result; an unreadable log
// is a clear start-up error (exit 1), never a crash.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <thread>

#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "bench/harness/process.h"
#include "bench/harness/test_pipeline.h"
#include "proto/inference.grpc.pb.h"
#include "runtime/coordinator/wal.h"
#include "runtime/core/tensor.h"
#include "runtime/executor/wire.h"
#include "runtime/executor/stage_model.h"

namespace archi {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::CoordinatedCluster;
using harness::CoordinatedClusterOptions;
using harness::LoadGenerator;
using harness::LoadOptions;

class FrontendDurableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("archi_frontend_durable_test_" + std::to_string(getpid()));
    fs::create_directories(root_);
    ASSERT_TRUE(harness::WriteTestModel((root_ / "model").string()).ok());
  }
  void TearDown() override {
    std::error_code ec;
    if (getenv("ARCHI_TEST_KEEP") == nullptr) fs::remove_all(root_, ec);
  }

  static std::unique_ptr<pb::Inference::Stub> Stub(const std::string& target) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
    return pb::Inference::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  static grpc::Status Embed(pb::Inference::Stub& stub, const pb::EmbedRequest& req,
                            pb::EmbedResponse* resp, int64_t deadline_ms = 20'000) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    ctx.set_wait_for_ready(true);  // the frontend may still be restarting
    return stub.Embed(&ctx, req, resp);
  }
  static Result<pb::StatusResponse> AdminStatus(const std::string& target) {
    auto stub = pb::Admin::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ctx.set_wait_for_ready(true);
    pb::StatusResponse resp;
    grpc::Status s = stub->Status(&ctx, pb::StatusRequest(), &resp);
    if (!s.ok()) return UnavailableError("Admin.Status: " + s.error_message());
    return resp;
  }

  fs::path root_;
};

TEST_F(FrontendDurableTest, KillNineOfTheFrontendLosesNoAdmittedRequest) {
  const fs::path dir = root_ / "fe";
  auto plan = harness::WriteTestPlan(dir.string(), "fe", (root_ / "model").string());
  ASSERT_TRUE(plan.ok()) << plan.status();
  CoordinatedClusterOptions o;
  o.plan_path = *plan;
  o.work_dir = dir.string();
  o.replicas = {1, 1, 1};
  o.extra_frontend_args = {"--state-dir", (dir / "state").string()};
  // A slow pipeline: a dozen requests are inside the frontend when it is killed.
  o.extra_worker_args = {"--extra-compute-ms", "15"};
  auto c = CoordinatedCluster::Start(o);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string target = (*c)->frontend_address();

  LoadOptions l = harness::ClosedTestLoad(target, /*duration_s=*/7.0, /*concurrency=*/12);
  l.request_id_prefix = "load-";
  l.max_attempts = 1000;  // bounded by the deadline
  l.retry_backoff_ms = 50;
  l.max_retry_backoff_ms = 500;
  l.deadline_ms = 30'000;
  l.max_reconnect_backoff_ms = 250;
  l.keep_embeddings = true;
  auto gen = LoadGenerator::Create(l);
  ASSERT_TRUE(gen.ok()) << gen.status();
  ASSERT_TRUE((*gen)->Start().ok());
  for (const Deadline d = Deadline::AfterMs(20'000); (*gen)->GetProgress().ok < 40;) {
    ASSERT_FALSE(d.Expired()) << "no traffic before the kill";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto before = AdminStatus(target);
  ASSERT_TRUE(before.ok()) << before.status();

  const auto at_kill = (*gen)->GetProgress();
  ASSERT_TRUE((*c)->Kill("frontend", SIGKILL).ok());
  const double kill_ms = (*gen)->GetProgress().elapsed_ms;
  Status restarted = (*c)->RestartFrontend(Deadline::AfterMs(30'000));
  ASSERT_TRUE(restarted.ok()) << restarted;

  // While the workers re-register, two concurrent calls with one id: one execution.
  const auto probe_in = harness::RandomSequences(2, 99);
  pb::EmbedRequest probe;
  probe.set_request_id("probe-1");
  probe.mutable_ids()->mutable_ids()->Assign(probe_in[0].begin(), probe_in[0].end());
  pb::EmbedResponse pr[3];
  grpc::Status ps[3];
  {
    auto stub = Stub(target);
    std::thread t0([&] { ps[0] = Embed(*stub, probe, &pr[0]); });
    std::thread t1([&] { ps[1] = Embed(*stub, probe, &pr[1]); });
    t0.join();
    t1.join();
    ps[2] = Embed(*stub, probe, &pr[2]);  // after the answer: the kept result
    pb::EmbedRequest other = probe;
    other.mutable_ids()->mutable_ids()->Assign(probe_in[1].begin(), probe_in[1].end());
    pb::EmbedResponse r;
    grpc::Status reused = Embed(*stub, other, &r);
    EXPECT_EQ(reused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << reused.error_message();
    pb::EmbedRequest long_id = probe;
    long_id.set_request_id(std::string(129, 'x'));
    grpc::Status too_long = Embed(*stub, long_id, &r);
    EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << too_long.error_message();
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ps[i].ok()) << i << ": " << ps[i].error_message();
  EXPECT_EQ(pr[0].request_id(), pr[1].request_id()) << "one id ran twice at once";
  EXPECT_EQ(pr[0].request_id(), pr[2].request_id()) << "a retry after the answer ran again";
  EXPECT_EQ(pr[0].replayed() + pr[1].replayed(), 1) << "exactly one call started the execution";
  EXPECT_TRUE(pr[2].replayed());

  auto report = (*gen)->Wait(Deadline::AfterMs(90'000));
  ASSERT_TRUE(report.ok()) << report.status();
  const auto& sum = report->summary;
  EXPECT_EQ(sum.lost, 0) << sum.ToString();
  EXPECT_EQ(sum.ok, sum.sent) << sum.ToString();
  EXPECT_GT(sum.retried, 0) << "nothing was in flight at the kill: " << sum.ToString();

  // Every answer is the embedding of its input (the whole model in this process).
  auto whole = executor::StageModel::Load((root_ / "model").string(), {0, harness::kTestLayers}, 1);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto reference = [&](const std::vector<int32_t>& ids) {
    Tensor t = *Tensor::Empty({1, static_cast<int64_t>(ids.size())}, DType::kI32);
    std::memcpy(t.data(), ids.data(), ids.size() * 4);
    Tensor len = *Tensor::Empty({1}, DType::kI32);
    len.data_as<int32_t>()[0] = static_cast<int32_t>(ids.size());
    auto out = (*whole)->Run(t, len);
    EXPECT_TRUE(out.ok()) << out.status();
    return std::vector<float>(out->data_as<float>(), out->data_as<float>() + harness::kTestHidden);
  };
  std::vector<std::vector<float>> want;
  for (const auto& in : l.inputs) want.push_back(reference(in.ids));
  int64_t wrong = 0, answered_by_new = 0, recovered_answers = 0;
  for (const auto& r : report->records) {
    if (r.code != 0) continue;
    if (r.finish_ms > kill_ms) ++answered_by_new;
    recovered_answers += r.recovered;
    const auto& w = want[static_cast<size_t>(r.input)];
    bool same = r.embedding.size() == w.size();
    for (size_t k = 0; same && k < w.size(); ++k) same = std::fabs(r.embedding[k] - w[k]) <= 1e-5;
    if (!same) {
      ++wrong;
      ADD_FAILURE() << "request " << r.index << " (input " << r.input << ", attempts "
                    << r.attempts << ") got a wrong embedding";
      if (wrong > 5) break;
    }
  }
  {
    const auto& w = reference(probe_in[0]);
    for (int k = 0; k < harness::kTestHidden; ++k) EXPECT_NEAR(pr[0].embedding(k), w[k], 1e-5);
  }

  auto after = AdminStatus(target);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GT(after->recovered(), 0u) << "the admission log re-dispatched nothing";
  EXPECT_GT(recovered_answers, 0) << "no client got the result of a recovered execution";
  EXPECT_GE(after->retries_attached() + after->retries_kept(), 1u);
  // At most one execution per request the new frontend answered (+ the probe's one).
  EXPECT_LE(after->executions(), static_cast<uint64_t>(answered_by_new) + 1)
      << "executions " << after->executions() << ", answered after the kill " << answered_by_new;
  std::printf("frontend kill -9 with %lld outstanding: %s; new frontend: %llu recovered, %llu "
              "executions, %llu retries attached, %llu from kept results\n",
              static_cast<long long>(at_kill.outstanding), sum.ToString().c_str(),
              static_cast<unsigned long long>(after->recovered()),
              static_cast<unsigned long long>(after->executions()),
              static_cast<unsigned long long>(after->retries_attached()),
              static_cast<unsigned long long>(after->retries_kept()));
}

// Writes an admission log by hand: what a killed frontend could leave.
void WriteLog(const std::string& dir, const std::vector<std::string>& records) {
  coordinator::WalContents c;
  auto log = coordinator::WriteAheadLog::Open(dir + "/admission", &c);
  ASSERT_TRUE(log.ok()) << log.status();
  for (const auto& r : records) ASSERT_TRUE((*log)->Append(r).ok());
  ASSERT_TRUE((*log)->Sync().ok());
}

std::string Admitted(const std::string& id, const std::vector<int32_t>& ids, int64_t deadline) {
  pb::AdmissionRecord rec;
  auto* a = rec.add_admitted();
  a->set_request_id(id);
  a->mutable_ids()->Assign(ids.begin(), ids.end());
  // The fingerprint the frontend computes for an EmbedRequest with these ids and no model name:
  // FNV-1a 64 of the model name, the input case (int) and the ids' bytes (docs/coordinator.md).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= static_cast<const unsigned char*>(data)[i];
      h *= 1099511628211ull;
    }
  };
  const int input_case = static_cast<int>(pb::EmbedRequest::kIds);
  mix(&input_case, sizeof(input_case));
  mix(ids.data(), ids.size() * sizeof(int32_t));
  a->set_fingerprint(h);
  a->set_deadline_unix_ms(deadline);
  return rec.SerializeAsString();
}

TEST_F(FrontendDurableTest, ReplaysOnlyOpenAdmissionsThatFitAndRefusesAnUnreadableLog) {
  const fs::path dir = root_ / "replay";
  auto plan = harness::WriteTestPlan(dir.string(), "replay", (root_ / "model").string());
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::string state = (dir / "state").string();
  const int64_t now = executor::UnixMillis();
  const std::vector<int32_t> in = {101, 7, 42, 9, 102};
  pb::AdmissionRecord done;
  done.add_done("answered");
  WriteLog(state, {Admitted("open", in, now + 60'000), Admitted("expired", in, now - 1),
                   Admitted("answered", in, now + 60'000), done.SerializeAsString(),
                   Admitted("outside-vocab", {1, harness::kTestVocab + 5, 2}, now + 60'000),
                   Admitted("too-long", std::vector<int32_t>(harness::kTestMaxTokens + 1, 3),
                            now + 60'000)});
  {
    CoordinatedClusterOptions o;
    o.plan_path = *plan;
    o.work_dir = dir.string();
    o.replicas = {1, 1, 1};
    o.extra_frontend_args = {"--state-dir", state};
    auto c = CoordinatedCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string target = (*c)->frontend_address();
    // Only "open" is re-dispatched; it runs without a caller and its result is kept.
    for (const Deadline d = Deadline::AfterMs(30'000);;) {
      auto st = AdminStatus(target);
      ASSERT_TRUE(st.ok()) << st.status();
      if (st->recovered() == 1 && st->kept_results() == 1) break;
      ASSERT_FALSE(d.Expired()) << "recovered " << st->recovered() << ", kept "
                                << st->kept_results();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // The client's retry gets it: no second execution.
    auto stub = Stub(target);
    pb::EmbedRequest req;
    req.set_request_id("open");
    req.mutable_ids()->mutable_ids()->Assign(in.begin(), in.end());
    pb::EmbedResponse resp;
    grpc::Status s = Embed(*stub, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(resp.recovered());
    EXPECT_TRUE(resp.replayed());
    auto whole =
        executor::StageModel::Load((root_ / "model").string(), {0, harness::kTestLayers}, 1);
    ASSERT_TRUE(whole.ok()) << whole.status();
    Tensor t = *Tensor::Empty({1, static_cast<int64_t>(in.size())}, DType::kI32);
    std::memcpy(t.data(), in.data(), in.size() * 4);
    Tensor len = *Tensor::Empty({1}, DType::kI32);
    len.data_as<int32_t>()[0] = static_cast<int32_t>(in.size());
    auto want = (*whole)->Run(t, len);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(resp.embedding_size(), harness::kTestHidden);
    for (int k = 0; k < harness::kTestHidden; ++k) {
      EXPECT_NEAR(resp.embedding(k), want->data_as<float>()[k], 1e-5);
    }
    auto st = AdminStatus(target);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->recovered(), 1u);
    EXPECT_EQ(st->executions(), 1u);
    EXPECT_EQ(st->retries_kept(), 1u);
  }
  // An unreadable record (valid checksum, not an AdmissionRecord): exit 1 with the reason.
  const std::string bad_state = (dir / "bad_state").string();
  WriteLog(bad_state, {std::string("\xff\xff\xff\xff\x0f", 5)});
  auto p = harness::Process::Spawn({.binary = harness::DefaultFrontendBinary(),
                                    .args = {"--plan", *plan, "--state-dir", bad_state},
                                    .log_path = (dir / "bad_frontend.log").string()});
  ASSERT_TRUE(p.ok()) << p.status();
  auto exited = (*p)->WaitExit(Deadline::AfterMs(30'000));
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_FALSE(exited->signaled) << exited->ToString();
  EXPECT_EQ(exited->code, 1) << exited->ToString();
  EXPECT_NE((*p)->LogTail().find("admission log"), std::string::npos) << (*p)->LogTail();
}

}  // namespace
}  // namespace archi
