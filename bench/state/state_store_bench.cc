// archi-state-bench: what the coordinator's durable state costs, local write-ahead log
// (--state-dir) against etcd (--state-etcd), measured in the same run (docs/benchmarks.md).
//
//   etcd --data-dir /tmp/e --listen-client-urls http://127.0.0.1:23790
//        --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 &
//   archi-state-bench --etcd 127.0.0.1:23790 --out bench-out/state
//
// Rows:
//   register   Register RPCs to an in-process coordinator behind gRPC, one after another (each
//              answers after its new epoch is durable: WAL fdatasync / etcd Txn), without state
//              as the reference: latency p50 / p99 / mean.
//   commit     StateLog: Append one ~200-byte record + SyncTo it, in a loop: durable commits/s.
//   batch      StateLog: Append 100 records, then one Sync: records/s (the control loop's
//              group commit every 20 ms).
// Prints a markdown table (ratio etcd / WAL) and writes state_store.csv in --out.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "proto/coordinator.grpc.pb.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/etcd_state_log.h"
#include "runtime/coordinator/wal.h"
#include "runtime/core/memory_store.h"
#include "runtime/executor/plan.h"

namespace {

namespace co = archi::coordinator;
namespace fs = std::filesystem;
namespace pb = archi::proto;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Row {
  std::string what, backend;
  double p50 = 0, p99 = 0, mean = 0, per_s = 0;
  int n = 0;
};

Row Summarize(std::string what, std::string backend, std::vector<double> ms, double seconds) {
  Row r{std::move(what), std::move(backend)};
  r.n = static_cast<int>(ms.size());
  if (ms.empty()) return r;
  std::sort(ms.begin(), ms.end());
  r.p50 = ms[ms.size() / 2];
  r.p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  r.mean = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  r.per_s = seconds > 0 ? static_cast<double>(ms.size()) / seconds : 0;
  return r;
}

// Register latency against a coordinator with the given state options.
archi::Result<Row> RegisterRow(const std::string& backend, co::CoordinatorOptions o, int n) {
  o.heartbeat_timeout_ms = 600'000;  // nobody holds a session: keep them alive (no deaths)
  archi::executor::PipelinePlan p;
  p.name = "statebench";
  p.model_dir = "/nonexistent";
  p.stages = {{0, 2}, {2, 4}};
  ARCHI_ASSIGN_OR_RETURN(
      auto coord, co::Coordinator::Create(o, p, std::make_shared<archi::InMemoryStore>(), "x:1"));
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  for (auto* s : coord->services()) b.RegisterService(s);
  auto server = b.BuildAndStart();
  if (!server) return archi::UnavailableError("no server");
  auto stub = pb::Coordinator::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  std::vector<double> ms;
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    pb::RegisterRequest q;
    q.set_worker_id("w" + std::to_string(i));
    q.set_host("h");
    q.set_pid(1);
    pb::RegisterResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const auto a = Clock::now();
    grpc::Status s = stub->Register(&ctx, q, &resp);
    if (!s.ok()) return archi::UnavailableError("register: " + s.error_message());
    ms.push_back(Ms(Clock::now() - a));
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  coord->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return Summarize("register", backend, ms, secs);
}

// commit (Append + SyncTo each) and batch (100 Appends + one Sync) rows for one log.
std::vector<Row> LogRows(const std::string& backend, co::StateLog& log, double seconds) {
  const std::string record(200, 'r');
  std::vector<Row> out;
  std::vector<double> ms;
  auto t0 = Clock::now();
  while (Clock::now() - t0 < std::chrono::duration<double>(seconds)) {
    const auto a = Clock::now();
    auto lsn = log.Append(record);
    if (!lsn.ok() || !log.SyncTo(*lsn).ok()) break;
    ms.push_back(Ms(Clock::now() - a));
  }
  out.push_back(
      Summarize("commit", backend, ms, std::chrono::duration<double>(Clock::now() - t0).count()));
  ms.clear();
  int records = 0;
  t0 = Clock::now();
  while (Clock::now() - t0 < std::chrono::duration<double>(seconds)) {
    const auto a = Clock::now();
    for (int i = 0; i < 100; ++i) (void)log.Append(record);
    if (!log.Sync().ok()) break;
    records += 100;
    ms.push_back(Ms(Clock::now() - a));
  }
  Row r = Summarize("batch of 100", backend, ms,
                    std::chrono::duration<double>(Clock::now() - t0).count());
  r.per_s = static_cast<double>(records) / std::chrono::duration<double>(Clock::now() - t0).count();
  out.push_back(r);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string etcd, out = "bench-out/state", dir;
  int registers = 300;
  double seconds = 3.0;
  CLI::App app{"archi-state-bench: cost of the coordinator's durable state, WAL vs etcd"};
  app.add_option("--etcd", etcd, "etcd endpoint(s) HOST:PORT (required)")->required();
  app.add_option("--out", out, "directory of state_store.csv")->capture_default_str();
  app.add_option("--dir", dir, "directory for the WAL (default: a temp dir, removed)");
  app.add_option("--registers", registers, "Register RPCs per backend")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  app.add_option("--seconds", seconds, "length of each log row")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto fail = [](const archi::Status& s) {
    std::fprintf(stderr, "archi-state-bench: %s\n", s.ToString().c_str());
    return 1;
  };
  const bool own_dir = dir.empty();
  if (own_dir)
    dir = (fs::temp_directory_path() / ("archi_state_bench_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);
  auto made = co::EtcdClient::Create(etcd);
  if (!made.ok()) return fail(made.status());
  std::shared_ptr<co::EtcdClient> client = std::move(*made);
  const std::string prefix = "/archi-state-bench/" + std::to_string(getpid());
  std::atomic<bool> stop{false};
  auto lead = [&](const std::string& sub) -> archi::Result<std::shared_ptr<co::EtcdLeadership>> {
    co::EtcdLeadershipOptions lo;
    lo.prefix = prefix + sub;
    lo.identity = "bench";
    lo.ttl_s = 5;
    ARCHI_ASSIGN_OR_RETURN(auto l, co::EtcdLeadership::Campaign(client, lo, stop, nullptr,
                                                                archi::Deadline::AfterMs(10'000)));
    return std::shared_ptr<co::EtcdLeadership>(std::move(l));
  };

  std::vector<Row> rows;
  // Register latency: none (reference), WAL, etcd.
  {
    co::CoordinatorOptions o;
    auto r = RegisterRow("none", o, registers);
    if (!r.ok()) return fail(r.status());
    rows.push_back(*r);
    o.state_dir = dir + "/register";
    r = RegisterRow("wal", o, registers);
    if (!r.ok()) return fail(r.status());
    rows.push_back(*r);
    auto l = lead("/register");
    if (!l.ok()) return fail(l.status());
    co::CoordinatorOptions e;
    e.state_log = [client,
                   l = *l](co::WalContents* c) -> archi::Result<std::unique_ptr<co::StateLog>> {
      ARCHI_ASSIGN_OR_RETURN(auto log, co::EtcdStateLog::Open(client, l, c));
      return std::unique_ptr<co::StateLog>(std::move(log));
    };
    r = RegisterRow("etcd", e, registers);
    if (!r.ok()) return fail(r.status());
    rows.push_back(*r);
    (*l)->Resign();
  }
  // Raw log writes.
  {
    co::WalContents c;
    auto wal = co::WriteAheadLog::Open(dir + "/log", &c);
    if (!wal.ok()) return fail(wal.status());
    for (auto& r : LogRows("wal", **wal, seconds)) rows.push_back(r);
    auto l = lead("/log");
    if (!l.ok()) return fail(l.status());
    auto log = co::EtcdStateLog::Open(client, *l, &c);
    if (!log.ok()) return fail(log.status());
    for (auto& r : LogRows("etcd", **log, seconds)) rows.push_back(r);
    std::printf("(etcd: %llu Txns for the log rows)\n",
                static_cast<unsigned long long>((*log)->txns()));
    (*l)->Resign();
  }
  // Clean up etcd and the temp dir.
  etcdserverpb::DeleteRangeRequest del;
  del.set_key(prefix + "/");
  del.set_range_end(co::EtcdClient::PrefixEnd(prefix + "/"));
  (void)client->DeleteRange(del, archi::Deadline::AfterMs(5000));
  std::error_code ec;
  if (own_dir) fs::remove_all(dir, ec);

  std::printf(
      "\n| what | backend | n | p50 ms | p99 ms | mean ms | per s | per s vs wal |\n"
      "|---|---|---|---|---|---|---|---|\n");
  fs::create_directories(out);
  std::ofstream csv(out + "/state_store.csv");
  csv << "what,backend,n,p50_ms,p99_ms,mean_ms,per_s\n";
  for (const auto& r : rows) {
    double wal_rate = 0;
    for (const auto& w : rows) {
      if (w.what == r.what && w.backend == "wal") wal_rate = w.per_s;
    }
    std::printf(
        "| %s | %s | %d | %.2f | %.2f | %.2f | %.0f | %s |\n", r.what.c_str(), r.backend.c_str(),
        r.n, r.p50, r.p99, r.mean, r.per_s,
        wal_rate > 0 ? (std::to_string(r.per_s / wal_rate).substr(0, 5) + "x").c_str() : "-");
    csv << r.what << "," << r.backend << "," << r.n << "," << r.p50 << "," << r.p99 << "," << r.mean
        << "," << r.per_s << "\n";
  }
  std::printf("\nwrote %s/state_store.csv\n", out.c_str());
  return 0;
}
