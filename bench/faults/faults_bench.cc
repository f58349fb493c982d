#include "bench/faults/faults_bench.h"

#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "runtime/core/deadline.h"
#include "runtime/core/logging.h"
#include "runtime/core/tensor.h"
#include "world/store_client.h"
#include "world/store_server.h"
#include "world/world_manager.h"

extern char** environ;

namespace archi::bench {
namespace {

constexpr const char* kPrefix = "bench/faults";
constexpr uint32_t kPendingTag = 9;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

WorldOptions MakeWorldOptions(int64_t hb_interval_ms, int64_t hb_timeout_ms) {
  WorldOptions o = WorldOptions::FromEnv();
  if (hb_interval_ms > 0) o.heartbeat_interval_ms = hb_interval_ms;
  if (hb_timeout_ms > 0) o.heartbeat_timeout_ms = hb_timeout_ms;
  return o;
}

// Both ranks Set their key, then wait for both.
Status StoreBarrier(Store& store, const std::string& key, int rank, Deadline d) {
  ARCHI_RETURN_IF_ERROR(store.Set(key + "/" + std::to_string(rank), "1", d));
  return store.Wait({key + "/0", key + "/1"}, d);
}

std::string JoinDoubles(const std::vector<double>& v) {
  std::string out;
  for (double x : v) out += (out.empty() ? "" : ",") + Fmt("%.4f", x);
  return out;
}

std::vector<double> SplitDoubles(const std::string& s) {
  std::vector<double> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(std::strtod(item.c_str(), nullptr));
  }
  return out;
}

// A peer process; killed (SIGKILL) and reaped on destruction unless already reaped.
class PeerProcess {
 public:
  static Result<PeerProcess> Spawn(const std::string& exe, const std::vector<std::string>& args) {
    std::vector<char*> argv;
    std::string arg0 = "archi-bench";
    argv.push_back(arg0.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), environ);
    if (rc != 0) return UnavailableError("posix_spawn " + exe + ": " + std::strerror(rc));
    return PeerProcess(pid);
  }
  PeerProcess(PeerProcess&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  PeerProcess& operator=(PeerProcess&&) = delete;
  ~PeerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Reap(Deadline::AfterMs(5000));
    }
  }
  pid_t pid() const { return pid_; }
  void Signal(int sig) const { ::kill(pid_, sig); }
  // Waits for the process to exit; true with its status, false at the deadline.
  bool Reap(Deadline d, int* status = nullptr) {
    int st = 0;
    for (;;) {
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) {
        pid_ = -1;
        if (status) *status = st;
        return true;
      }
      if (d.Expired()) return false;
      std::this_thread::sleep_for(Millis(2));
    }
  }

 private:
  explicit PeerProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

struct Metric {
  std::string id;      // short name for CSV and plot
  std::string label;   // table row
  double target_ms;    // <= 0: no target
  std::string target_note;
  std::vector<double> ms;
};

class FaultsBench {
 public:
  explicit FaultsBench(FaultsOptions o) : o_(std::move(o)) {}
  int Run();

 private:
  Status Setup();
  std::vector<std::string> PeerArgs(const std::string& mode, const std::string& world,
                                    int cycles) const;
  Status CreateCycles();
  Status KillOrStopTrial(const std::string& name, int sig, bool pending_recv);
  std::optional<Clock::time_point> WaitBroken(const std::string& name, Deadline d);
  Metric& M(const std::string& id) {
    for (auto& m : metrics_) {
      if (m.id == id) return m;
    }
    ARCHI_CHECK(false, "unknown metric {}", id);
  }
  void Report(double total_s);

  FaultsOptions o_;
  std::string exe_;
  std::unique_ptr<StoreServer> server_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<WorldManager> mgr_;
  WorldOptions wopts_;
  std::vector<Metric> metrics_;
  std::map<std::string, std::string> causes_;
  std::string load_start_;  // metric group -> first BROKEN cause seen

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Clock::time_point> broken_seen_;
};

Status FaultsBench::Setup() {
  exe_ = SelfExe();
  if (exe_.empty()) return InternalError("cannot read /proc/self/exe");
  ARCHI_ASSIGN_OR_RETURN(server_, StoreServer::Start(StoreServerOptions{}));
  store_ = server_->store();
  wopts_ = MakeWorldOptions(o_.hb_interval_ms, o_.hb_timeout_ms);
  mgr_ = std::make_unique<WorldManager>();
  mgr_->AddStateCallback([this](const WorldInfo& info) {
    if (info.state != WorldState::kBroken) return;
    auto now = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_seen_.emplace(info.name, now);
    }
    cv_.notify_all();
  });
  const double hb = static_cast<double>(wopts_.heartbeat_timeout_ms);
  metrics_ = {
      {"create_r0", "world creation, rank 0 (InitializeWorld, 2 ranks, loopback)", 30, "", {}},
      {"create_r1", "world creation, rank 1 (peer process)", 30, "", {}},
      {"remove_ok", "RemoveWorld, healthy world (rank 0)", 0, "", {}},
      {"kill_detect", "SIGKILL idle peer -> BROKEN (state callback)", 100, "", {}},
      {"kill_detect_int", "SIGKILL idle peer -> BROKEN (manager's broken_at)", 100, "", {}},
      {"kill_remove", "SIGKILL idle peer: RemoveWorld of the broken world", 100, "", {}},
      {"killp_op", "SIGKILL, Recv pending -> the Recv fails", 100, "", {}},
      {"killp_detect", "SIGKILL, Recv pending -> BROKEN (state callback)", 100, "", {}},
      {"killp_remove", "SIGKILL, Recv pending: RemoveWorld of the broken world", 100, "", {}},
      {"stop_detect", "SIGSTOP (hung) peer -> BROKEN (state callback)", hb,
       "= heartbeat timeout", {}},
      {"stop_remove", "SIGSTOP peer: RemoveWorld of the broken world", 100, "", {}},
  };
  return Status::Ok();
}

std::vector<std::string> FaultsBench::PeerArgs(const std::string& mode, const std::string& world,
                                               int cycles) const {
  return {"faults-peer",
          "--store", server_->address(),
          "--mode", mode,
          "--world", world,
          "--cycles", std::to_string(cycles),
          "--hb-interval-ms", std::to_string(wopts_.heartbeat_interval_ms),
          "--hb-timeout-ms", std::to_string(wopts_.heartbeat_timeout_ms),
          "--log-level", o_.log_level};
}

std::optional<Clock::time_point> FaultsBench::WaitBroken(const std::string& name, Deadline d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, d.time_point(), [&] { return broken_seen_.count(name) > 0; });
  auto it = broken_seen_.find(name);
  if (it == broken_seen_.end()) return std::nullopt;
  return it->second;
}

// N cycles of: store barrier, InitializeWorld("create-i") on both ranks, store barrier,
// RemoveWorld on both ranks. Each rank times its own calls; the peer reports its times through
// the store at the end.
Status FaultsBench::CreateCycles() {
  const int n = o_.create_cycles;
  ARCHI_ASSIGN_OR_RETURN(auto peer, PeerProcess::Spawn(exe_, PeerArgs("cycle", "-", n)));
  const std::string base = std::string(kPrefix) + "/cycle";
  for (int i = 0; i < n; ++i) {
    const std::string name = "create-" + std::to_string(i);
    ARCHI_RETURN_IF_ERROR(StoreBarrier(*store_, base + "/" + std::to_string(i) + "/init", 0,
                                       Deadline::AfterMs(15'000)));
    auto t0 = Clock::now();
    ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(name, 0, 2, store_, wopts_));
    M("create_r0").ms.push_back(MsSince(t0));
    ARCHI_RETURN_IF_ERROR(StoreBarrier(*store_, base + "/" + std::to_string(i) + "/remove", 0,
                                       Deadline::AfterMs(15'000)));
    t0 = Clock::now();
    ARCHI_RETURN_IF_ERROR(mgr_->RemoveWorld(name));
    M("remove_ok").ms.push_back(MsSince(t0));
  }
  ARCHI_RETURN_IF_ERROR(store_->Wait({base + "/peer_init_ms"}, Deadline::AfterMs(15'000)));
  ARCHI_ASSIGN_OR_RETURN(std::string peer_ms, store_->Get(base + "/peer_init_ms", Deadline::AfterMs(1000)));
  M("create_r1").ms = SplitDoubles(peer_ms);
  int status = 0;
  if (!peer.Reap(Deadline::AfterMs(10'000), &status)) {
    return DeadlineExceededError("the cycle peer did not exit 10 s after its last cycle");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return InternalError("the cycle peer failed (wait status " + std::to_string(status) + ")");
  }
  return Status::Ok();
}

// One fault trial: a fresh peer joins world `name`; once it reports READY it gets `sig`
// (SIGKILL or SIGSTOP) at a recorded instant; we time BROKEN and RemoveWorld.
Status FaultsBench::KillOrStopTrial(const std::string& name, int sig, bool pending_recv) {
  ARCHI_ASSIGN_OR_RETURN(auto peer, PeerProcess::Spawn(exe_, PeerArgs("hold", name, 0)));
  ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(name, 0, 2, store_, wopts_));
  ARCHI_RETURN_IF_ERROR(store_->Wait({std::string(kPrefix) + "/ready/" + name}, Deadline::AfterMs(10'000)));
  // Let both watchdogs run a few heartbeats so the world is in steady state.
  std::this_thread::sleep_for(Millis(std::min<int64_t>(3 * wopts_.heartbeat_interval_ms, 300)));

  Tensor buf = Tensor::Zeros({1024}, DType::kF32).value();
  std::shared_ptr<Work> recv;
  if (pending_recv) {
    OpOptions oo;
    oo.timeout_ms = 60'000;
    recv = mgr_->Recv(name, buf, 1, kPendingTag, oo);
    std::this_thread::sleep_for(Millis(20));
    if (recv->IsCompleted()) {
      return InternalError("world '" + name + "': a Recv nobody sends to completed: " +
                           recv->Wait(Deadline::Past()).ToString());
    }
  }
  const Deadline detect_by = Deadline::AfterMs(
      sig == SIGSTOP ? wopts_.heartbeat_timeout_ms + 10'000 : 10'000);
  const auto t_sig = Clock::now();
  peer.Signal(sig);
  const std::string group = sig == SIGSTOP ? "stop" : pending_recv ? "killp" : "kill";
  if (pending_recv) {
    Status st = recv->Wait(detect_by);
    const auto t_op = Clock::now();
    if (st.code() == StatusCode::kDeadlineExceeded) {
      return DeadlineExceededError("world '" + name + "': the pending Recv did not fail within 10 s "
                                   "of the peer's SIGKILL");
    }
    if (st.ok()) return InternalError("world '" + name + "': the pending Recv succeeded after SIGKILL");
    M("killp_op").ms.push_back(MsBetween(t_sig, t_op));
    causes_.emplace("killp_op", st.ToString());
  }
  auto t_broken = WaitBroken(name, detect_by);
  if (!t_broken) {
    auto info = mgr_->GetWorld(name);
    return DeadlineExceededError(Fmt("world '%s': not BROKEN %.0f ms after %s of the peer (state %s)",
                                     name.c_str(), MsSince(t_sig), sig == SIGSTOP ? "SIGSTOP" : "SIGKILL",
                                     info.ok() ? std::string(WorldStateName(info->state)).c_str() : "gone"));
  }
  M(group + "_detect").ms.push_back(MsBetween(t_sig, *t_broken));
  auto info = mgr_->GetWorld(name);
  if (info.ok()) {
    causes_.emplace(group, info->error.ToString());
    if (group == "kill") M("kill_detect_int").ms.push_back(MsBetween(t_sig, info->broken_at));
  }
  auto t0 = Clock::now();
  ARCHI_RETURN_IF_ERROR(mgr_->RemoveWorld(name, Deadline::AfterMs(1000)));
  M(group + "_remove").ms.push_back(MsSince(t0));
  if (sig == SIGSTOP) peer.Signal(SIGKILL);
  if (!peer.Reap(Deadline::AfterMs(5000))) {
    return DeadlineExceededError("peer of world '" + name + "' did not exit after the signal");
  }
  return Status::Ok();
}

int FaultsBench::Run() {
  const auto t_start = Clock::now();
  load_start_ = LoadAverage1();
  if (Status st = Setup(); !st.ok()) {
    std::fprintf(stderr, "archi-bench faults: setup: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("[faults] heartbeat every %lld ms, timeout %lld ms; %d create cycles, %d SIGKILL "
              "trials (x2), %d SIGSTOP trials\n",
              static_cast<long long>(wopts_.heartbeat_interval_ms),
              static_cast<long long>(wopts_.heartbeat_timeout_ms), o_.create_cycles,
              o_.kill_trials, o_.stop_trials);
  std::fflush(stdout);
  int failures = 0;
  auto fail = [&](const std::string& what, const Status& st) {
    ++failures;
    std::fprintf(stderr, "archi-bench faults: %s: %s\n", what.c_str(), st.ToString().c_str());
  };
  auto progress = [&](const std::string& what, std::initializer_list<const char*> ids) {
    std::string line = "[faults] " + what + ":";
    for (const char* id : ids) {
      auto s = Summarize(M(id).ms);
      line += Fmt("  %s median %.2f ms max %.2f ms (n=%zu)", id, s.median, s.max, s.n);
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };

  if (Status st = CreateCycles(); !st.ok()) fail("create/remove cycles", st);
  progress("create/remove", {"create_r0", "create_r1", "remove_ok"});
  for (int t = 0; t < o_.kill_trials; ++t) {
    if (Status st = KillOrStopTrial("kill-" + std::to_string(t), SIGKILL, false); !st.ok()) {
      fail("SIGKILL trial " + std::to_string(t), st);
    }
  }
  progress("SIGKILL idle", {"kill_detect", "kill_remove"});
  for (int t = 0; t < o_.kill_trials; ++t) {
    if (Status st = KillOrStopTrial("killp-" + std::to_string(t), SIGKILL, true); !st.ok()) {
      fail("SIGKILL (Recv pending) trial " + std::to_string(t), st);
    }
  }
  progress("SIGKILL, Recv pending", {"killp_op", "killp_detect", "killp_remove"});
  for (int t = 0; t < o_.stop_trials; ++t) {
    if (Status st = KillOrStopTrial("stop-" + std::to_string(t), SIGSTOP, false); !st.ok()) {
      fail("SIGSTOP trial " + std::to_string(t), st);
    }
  }
  progress("SIGSTOP", {"stop_detect", "stop_remove"});
  mgr_.reset();
  Report(MsSince(t_start) / 1000);
  server_.reset();
  if (failures > 0) {
    std::fprintf(stderr, "archi-bench faults: %d trial(s) failed (see above)\n", failures);
    return 1;
  }
  return 0;
}

void FaultsBench::Report(double total_s) {
  MarkdownTable table({"metric", "n", "median ms", "p90 ms", "max ms", "target ms", "median/target"},
                      {false, true, true, true, true, true, true});
  std::string csv = "metric,label,n,median_ms,p90_ms,max_ms,target_ms,median_over_target\n";
  std::string raw = "metric_index,metric,trial,ms\n";
  for (size_t i = 0; i < metrics_.size(); ++i) {
    const Metric& m = metrics_[i];
    auto s = Summarize(m.ms);
    std::string target = m.target_ms > 0 ? Fmt("%.0f", m.target_ms) : "-";
    if (!m.target_note.empty()) target += " (" + m.target_note + ")";
    std::string ratio = m.target_ms > 0 && s.n > 0 ? Fmt("%.3f", s.median / m.target_ms) : "-";
    table.AddRow({m.label, std::to_string(s.n), Fmt("%.2f", s.median), Fmt("%.2f", s.p90),
                  Fmt("%.2f", s.max), target, ratio});
    csv += Fmt("%s,\"%s\",%zu,%.4f,%.4f,%.4f,%.1f,%s\n", m.id.c_str(), m.label.c_str(), s.n,
               s.median, s.p90, s.max, m.target_ms, ratio == "-" ? "" : ratio.c_str());
    for (size_t t = 0; t < m.ms.size(); ++t) {
      raw += Fmt("%zu,%s,%zu,%.4f\n", i + 1, m.id.c_str(), t, m.ms[t]);
    }
  }
  const MachineInfo mi = GetMachineInfo();
  std::string md;
  md += "# archi-bench faults\n\n";
  md += "- date: " + NowUtc() + "\n";
  md += "- machine: " + DescribeMachine(mi) + "\n";
  md += "- load average (1 min) at start / end: " + load_start_ + " / " + LoadAverage1() + "\n";
  md += "- command: `" + JoinArgs(o_.command) + "`\n";
  md += Fmt("- run time: %.1f s; heartbeat every %lld ms, hung-peer timeout %lld ms; the "
            "benchmark process is rank 0 and hosts the store, each trial spawns a fresh peer "
            "process (rank 1)\n",
            total_s, static_cast<long long>(wopts_.heartbeat_interval_ms),
            static_cast<long long>(wopts_.heartbeat_timeout_ms));
  md += "- times run from the instant just before kill(2) to the event on rank 0; p90 is the "
        "nearest-rank percentile\n\n";
  md += table.ToString();
  md += "\nCauses reported (first trial of each kind):\n\n";
  for (const auto& [k, v] : causes_) md += "- " + k + ": `" + v + "`\n";
  std::printf("\n%s", md.c_str());
  std::fflush(stdout);

  const std::string& out = o_.out_dir;
  auto check = [](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "archi-bench faults: %s\n", st.ToString().c_str());
    return st.ok();
  };
  if (!check(MakeDirs(out))) return;
  check(WriteFile(out + "/faults.md", md));
  check(WriteFile(out + "/faults.csv", csv));
  check(WriteFile(out + "/faults_raw.csv", raw));
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  std::string xtics;
  std::string targets;  // inline data: index target
  for (size_t i = 0; i < metrics_.size(); ++i) {
    xtics += Fmt("%s\"%s\" %zu", i ? ", " : "", metrics_[i].id.c_str(), i + 1);
    if (metrics_[i].target_ms > 0) targets += Fmt("%zu,%.1f\n", i + 1, metrics_[i].target_ms);
  }
  std::string gp = Fmt(
      "# Generated by archi-bench faults; regenerate with: gnuplot faults.gp\n"
      "set terminal %s size 1100,640\n"
      "set output 'faults.png'\n"
      "set datafile separator ','\n"
      "set logscale y\n"
      "set grid ytics\n"
      "set key top left\n"
      "set xtics (%s) rotate by -30 noenhanced\n"
      "set xrange [0.5:%zu.5]\n"
      "set ylabel 'ms (every trial)'\n"
      "set title \"archi-bench faults (%s, nproc=%d; heartbeat %lld ms / timeout %lld ms)\" noenhanced\n"
      "$targets << EOD\n%sEOD\n"
      "plot 'faults_raw.csv' every ::1 using ($1 + 0.03*((int($3) %% 10) - 4.5)):4 with points pt 7 ps 0.8 title 'trial', \\\n"
      "     $targets using 1:2 with points pt 2 ps 3 lw 2 lc rgb 'red' title 'target'\n",
      term.c_str(), xtics.c_str(), metrics_.size(), mi.cpu_model.c_str(), mi.nproc,
      static_cast<long long>(wopts_.heartbeat_interval_ms),
      static_cast<long long>(wopts_.heartbeat_timeout_ms), targets.c_str());
  bool png = check(WriteFile(out + "/faults.gp", gp)) && check(RunGnuplot(out + "/faults.gp"));
  std::printf("\n[faults] wrote %s/{faults.md,faults.csv,faults_raw.csv%s}\n", out.c_str(),
              png ? ",faults.png" : "");
  std::fflush(stdout);
}

}  // namespace

int RunFaults(FaultsOptions o) {
  if (o.quick) {
    o.create_cycles = 3;
    o.kill_trials = 2;
    o.stop_trials = 1;
    if (o.hb_timeout_ms <= 0) o.hb_timeout_ms = 400;
  }
  ::signal(SIGPIPE, SIG_IGN);
  if (!SetLogLevel(o.log_level)) {
    std::fprintf(stderr, "archi-bench faults: unknown log level '%s'\n", o.log_level.c_str());
    return 2;
  }
  return FaultsBench(std::move(o)).Run();
}

int RunFaultsPeer(const FaultsPeerOptions& o) {
  // Never outlive the benchmark process.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::signal(SIGPIPE, SIG_IGN);
  SetLogLevel(o.log_level);
  auto client = StoreClient::Connect(o.store, Deadline::AfterMs(10'000));
  if (!client.ok()) {
    std::fprintf(stderr, "faults-peer: %s\n", client.status().ToString().c_str());
    return 1;
  }
  std::shared_ptr<Store> store = *client;
  const WorldOptions wo = MakeWorldOptions(o.hb_interval_ms, o.hb_timeout_ms);
  WorldManager mgr;
  if (o.mode == "hold") {
    Status st = mgr.InitializeWorld(o.world, 1, 2, store, wo);
    if (!st.ok()) {
      std::fprintf(stderr, "faults-peer: %s\n", st.ToString().c_str());
      return 1;
    }
    st = store->Set(std::string(kPrefix) + "/ready/" + o.world, "1", Deadline::AfterMs(5000));
    if (!st.ok()) {
      std::fprintf(stderr, "faults-peer: %s\n", st.ToString().c_str());
      return 1;
    }
    // Idle until killed, or until rank 0 goes away (the world breaks), at most 2 minutes.
    const Deadline give_up = Deadline::AfterMs(120'000);
    while (!give_up.Expired()) {
      auto info = mgr.GetWorld(o.world);
      if (!info.ok() || info->state != WorldState::kReady) break;
      std::this_thread::sleep_for(Millis(20));
    }
    mgr.RemoveWorld(o.world).IgnoreError();
    return 0;
  }
  if (o.mode == "cycle") {
    const std::string base = std::string(kPrefix) + "/cycle";
    std::vector<double> init_ms;
    for (int i = 0; i < o.cycles; ++i) {
      const std::string name = "create-" + std::to_string(i);
      Status st = StoreBarrier(*store, base + "/" + std::to_string(i) + "/init", 1,
                               Deadline::AfterMs(15'000));
      auto t0 = Clock::now();
      if (st.ok()) st = mgr.InitializeWorld(name, 1, 2, store, wo);
      init_ms.push_back(MsSince(t0));
      if (st.ok()) {
        st = StoreBarrier(*store, base + "/" + std::to_string(i) + "/remove", 1,
                          Deadline::AfterMs(15'000));
      }
      if (st.ok()) st = mgr.RemoveWorld(name);
      if (!st.ok()) {
        std::fprintf(stderr, "faults-peer: cycle %d: %s\n", i, st.ToString().c_str());
        return 1;
      }
    }
    Status st = store->Set(base + "/peer_init_ms", JoinDoubles(init_ms), Deadline::AfterMs(5000));
    return st.ok() ? 0 : 1;
  }
  std::fprintf(stderr, "faults-peer: unknown mode '%s'\n", o.mode.c_str());
  return 2;
}

}  // namespace archi::bench
