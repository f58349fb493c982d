// mpirun launch of a whole pipeline with a real mpirun on CPU:
//
//   mpirun -np 5 archi-worker --config plan.yaml --replicas 1,2,1 --duration-s D
//
// rank 0 runs the frontend, ranks 1..4 serve stages 0, 1, 1, 2. Under load one stage-1 rank is
// killed with SIGKILL: every request still succeeds, the job carries on (more requests succeed
// afterwards), a worker started later outside MPI joins, and the job ends by itself after D
// seconds with every surviving rank exiting 0. Skips when mpirun or MPI is absent.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "archi/config.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "bench/harness/process.h"
#include "bench/harness/ready_file.h"
#include "proto/inference.grpc.pb.h"
#include "runtime/model/model.h"

namespace archi {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::LoadGenerator;
using harness::LoadInput;
using harness::LoadOptions;
using harness::Process;

constexpr int kVocab = 500;
constexpr int kMaxTokens = 48;
constexpr double kDurationS = 20;

std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const fs::path p = fs::path(dir.empty() ? "." : dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

pb::StatusResponse AdminStatus(const std::string& addr) {
  auto stub = pb::Admin::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  pb::StatusResponse r;
  grpc::Status st = stub->Status(&ctx, pb::StatusRequest{}, &r);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return r;
}

// Waits until `pred(status)` holds; false at the deadline.
template <typename Pred>
bool WaitStatus(const std::string& addr, Pred pred, int64_t timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (pred(AdminStatus(addr))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

const pb::MemberStatus* Member(const pb::StatusResponse& r, const std::string& id) {
  for (const auto& m : r.members()) {
    if (m.id() == id) return &m;
  }
  return nullptr;
}

std::vector<LoadInput> Inputs(int n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> len(1, kMaxTokens);
  std::uniform_int_distribution<int> tok(0, kVocab - 1);
  std::vector<LoadInput> in;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> s(static_cast<size_t>(len(gen)));
    for (auto& t : s) t = tok(gen);
    in.push_back(LoadInput::Ids(std::move(s)));
  }
  return in;
}

harness::LoadReport RunLoad(const std::string& addr, double duration_s,
                            std::function<void()> midway = nullptr) {
  LoadOptions o;
  o.target = addr;
  o.mode = LoadOptions::Mode::kClosed;
  o.concurrency = 8;
  o.inputs = Inputs(64, 3);
  o.duration_s = duration_s;
  o.deadline_ms = 20'000;
  auto gen = LoadGenerator::Create(o);
  EXPECT_TRUE(gen.ok()) << gen.status();
  if (!gen.ok()) return {};
  EXPECT_TRUE((*gen)->Start().ok());
  if (midway) midway();
  auto report = (*gen)->Wait(Deadline::AfterMs(60'000));
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : harness::LoadReport{};
}

void ExpectNoLoss(const harness::LoadReport& r) {
  EXPECT_GT(r.summary.ok, 0);
  EXPECT_EQ(r.summary.lost, 0) << r.summary.ToString();
  EXPECT_EQ(r.summary.ok, r.summary.sent) << r.summary.ToString();
}

TEST(MpiLaunchTest, KillOneRankJobCarriesOnAndEndsByItself) {
  if (!ARCHI_HAVE_MPI) GTEST_SKIP() << "archi-worker was built without MPI (ARCHI_WITH_MPI)";
  const std::string mpirun = FindInPath("mpirun");
  if (mpirun.empty()) GTEST_SKIP() << "mpirun not found in PATH (apt-get install openmpi-bin)";

  const fs::path root =
      fs::temp_directory_path() / ("archi_mpi_launch_test_" + std::to_string(getpid()));
  fs::create_directories(root);
  model::ModelConfig c;
  c.architecture = model::Architecture::kBertEncoder;
  c.vocab_size = kVocab;
  c.hidden_size = 64;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.intermediate_size = 128;
  c.max_positions = 64;
  c.type_vocab_size = 2;
  ASSERT_TRUE(model::WriteRandomModel((root / "model").string(), c, 7).ok());
  {
    std::ofstream plan(root / "plan.yaml");
    plan << "pipeline: mpi\nmodel: " << (root / "model").string()
         << "\nstages:\n  - layers: [0, 2]\n  - layers: [2, 4]\n  - layers: [4, 6]\n"
         << "batching:\n  max_batch: 8\n  max_wait_ms: 2\n  max_tokens: " << kMaxTokens
         << "\nrequest:\n  default_timeout_ms: 20000\n";
  }
  const std::string worker_bin = harness::DefaultWorkerBinary();
  const std::string ready = (root / "frontend.json").string();
  const std::string log = (root / "mpirun.log").string();
  const auto t0 = std::chrono::steady_clock::now();
  auto job =
      Process::Spawn({.binary = mpirun,
                      .args = {"--allow-run-as-root", "--oversubscribe", "--enable-recovery",
                               "--mca", "orte_abort_on_non_zero_status", "0", "-np", "5",
                               worker_bin, "--config", (root / "plan.yaml").string(), "--replicas",
                               "1,2,1", "--duration-s", std::to_string(kDurationS),
                               "--frontend-ready-file", ready, "--extra-compute-ms", "3"},
                      .log_path = log});
  ASSERT_TRUE(job.ok()) << job.status();
  auto info = harness::WaitReadyFile(ready, Deadline::AfterMs(30'000), job->get());
  ASSERT_TRUE(info.ok()) << info.status() << "\n" << harness::ReadFileTail(log, 4000);
  const std::string addr = (*info)["grpc"];
  const std::string store = (*info)["store"];
  EXPECT_EQ((*info)["ranks"], 5);

  // Ranks 1..4 serve stages 0, 1, 1, 2 (--replicas 1,2,1: contiguous blocks).
  const std::vector<std::string> ids = {"s0-rank1", "s1-rank2", "s1-rank3", "s2-rank4"};
  ASSERT_TRUE(WaitStatus(
      addr,
      [&](const pb::StatusResponse& r) {
        for (const auto& id : ids) {
          const auto* m = Member(r, id);
          if (m == nullptr || m->state() != "ready") return false;
        }
        return true;
      },
      20'000))
      << harness::ReadFileTail(log, 4000);
  const int victim_pid = Member(AdminStatus(addr), "s1-rank2")->pid();
  ASSERT_GT(victim_pid, 0);

  // Under load, kill -9 one stage-1 rank: the other replica carries it, nothing is lost.
  auto report = RunLoad(addr, 4.0, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    ASSERT_EQ(::kill(victim_pid, SIGKILL), 0);
  });
  ExpectNoLoss(report);
  EXPECT_TRUE(WaitStatus(
      addr,
      [](const pb::StatusResponse& r) {
        const auto* m = Member(r, "s1-rank2");
        return m == nullptr || m->state() == "gone";
      },
      10'000));

  // The job carries on, and a worker started outside MPI joins the pipeline.
  auto late = Process::Spawn(
      {.binary = worker_bin,
       .args = {"--store", store, "--pipeline", "mpi", "--stage", "1", "--id", "s1-late"},
       .log_path = (root / "late.log").string()});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(WaitStatus(
      addr,
      [](const pb::StatusResponse& r) {
        const auto* m = Member(r, "s1-late");
        return m != nullptr && m->state() == "ready";
      },
      15'000))
      << (*late)->LogTail();
  ExpectNoLoss(RunLoad(addr, 1.5));

  // The job ends by itself at --duration-s: rank 0 drains every worker (the late one too).
  auto exit = (*job)->WaitExit(Deadline::AfterMs(static_cast<int64_t>(kDurationS * 1000) + 60'000));
  ASSERT_TRUE(exit.ok()) << exit.status() << "\n" << harness::ReadFileTail(log, 4000);
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto late_exit = (*late)->WaitExit(Deadline::AfterMs(15'000));
  ASSERT_TRUE(late_exit.ok()) << late_exit.status();
  EXPECT_TRUE(late_exit->ok()) << late_exit->ToString() << "\n" << (*late)->LogTail();

  std::ifstream f(log);
  const std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (int rank : {0, 1, 3, 4}) {
    EXPECT_NE(out.find("archi-worker rank " + std::to_string(rank) + ": exit 0\n"),
              std::string::npos)
        << "rank " << rank << " did not exit 0:\n"
        << harness::ReadFileTail(log, 6000);
  }
  EXPECT_EQ(out.find("archi-worker rank 2: exit"), std::string::npos) << "rank 2 was killed";
  std::printf("mpirun: %s after %.1f s (a rank was killed; the survivors exited 0)\n",
              exit->ToString().c_str(), wall_s);

  std::error_code ec;
  if (getenv("ARCHI_TEST_KEEP") == nullptr && !HasFailure()) fs::remove_all(root, ec);
}

}  // namespace
}  // namespace archi
