#include "bench/recovery/control_plane_bench.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "bench/harness/process.h"
#include "bench/harness/ready_file.h"
#include "proto/coordinator.grpc.pb.h"
#include "runtime/core/deadline.h"
#include "runtime/model/model.h"
#include "runtime/policy/reactive.h"

#ifndef ARCHI_COORDINATOR_BIN
#define ARCHI_COORDINATOR_BIN ""
#endif

namespace archi::bench {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
constexpr const char* kToken = "control-plane-bench";

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::chrono::system_clock::time_point In(int64_t ms) {
  return std::chrono::system_clock::now() + std::chrono::milliseconds(ms);
}

// utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15).
double CpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(s.substr(close + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::atoll(field.c_str());
    if (i == 15) stime = std::atoll(field.c_str());
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

class Fleet;

// One simulated worker: its Register call and its Session stream. Owned by the Fleet; gRPC
// callbacks run on gRPC's threads; `mu` guards the write state.
class SimWorker final : public grpc::ClientBidiReactor<pb::WorkerMessage, pb::CoordinatorMessage> {
 public:
  SimWorker(Fleet* fleet, int index, std::string id) : fleet_(fleet), index_(index), id_(std::move(id)) {}

  void Register(pb::Coordinator::Stub* stub);
  void Heartbeat();
  // Ends the session (and releases the hold that keeps OnDone back while writes may start).
  void Cancel();

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& s) override;

  const std::string& id() const { return id_; }

 private:
  void StartSession();
  void WriteLocked();

  Fleet* const fleet_;
  const int index_;
  const std::string id_;
  pb::Coordinator::Stub* stub_ = nullptr;
  grpc::ClientContext reg_ctx_;
  pb::RegisterRequest reg_req_;
  pb::RegisterResponse reg_resp_;
  grpc::ClientContext ctx_;
  pb::CoordinatorMessage in_;
  pb::WorkerMessage out_;
  std::mutex mu_;
  bool started_ = false, writing_ = false, pending_ = false, done_ = false, ended_ = false;
  uint64_t epoch_ = 0;
  uint64_t assignment_id_ = 0;
  int64_t last_write_us_ = 0;  // when this worker last started a write
  std::string state_ = "idle";
};

class Fleet {
 public:
  Fleet(const std::string& target, int n, int channels) {
    for (int c = 0; c < channels; ++c) {
      grpc::ChannelArguments args;
      args.SetInt("archi.cpbench_channel", c);  // its own connection
      auto ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
      stubs_.push_back(pb::Coordinator::NewStub(ch));
    }
    for (int i = 0; i < n; ++i) {
      char id[32];
      std::snprintf(id, sizeof(id), "sim%05d", i);
      workers_.push_back(std::make_unique<SimWorker>(this, i, id));
    }
  }
  ~Fleet() { Shutdown(Deadline::AfterMs(10'000)); }

  // Registers every worker, at most `window` registrations outstanding and `rate` a second.
  void RegisterAll(int window, double rate) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < workers_.size(); ++i) {
      std::this_thread::sleep_until(
          t0 + std::chrono::microseconds(static_cast<int64_t>(1e6 * static_cast<double>(i) / rate)));
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return reg_outstanding_ < window; });
        ++reg_outstanding_;
      }
      workers_[i]->Register(stubs_[i % stubs_.size()].get());
    }
  }
  // Heartbeats: worker i at phase (i mod 200) * 5 ms of every second. Runs until stopped.
  void StartHeartbeats(int interval_ms) {
    hb_thread_ = std::jthread([this, interval_ms](std::stop_token st) {
      const int slots = std::max(1, interval_ms / 5);
      int64_t tick = 0;
      const auto t0 = std::chrono::steady_clock::now();
      while (!st.stop_requested()) {
        const int slot = static_cast<int>(tick % slots);
        for (size_t i = static_cast<size_t>(slot); i < workers_.size(); i += static_cast<size_t>(slots)) {
          workers_[i]->Heartbeat();
        }
        ++tick;
        std::this_thread::sleep_until(t0 + std::chrono::milliseconds(5 * tick));
      }
    });
  }
  void Shutdown(Deadline deadline) {
    hb_thread_ = std::jthread();
    for (auto& w : workers_) w->Cancel();
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, std::chrono::steady_clock::now() + deadline.Remaining(),
                   [&] { return sessions_live_ == 0 && reg_outstanding_ == 0; });
  }

  // Callbacks from the workers.
  void OnRegistered(bool ok) {
    std::lock_guard lock(mu_);
    --reg_outstanding_;
    ok ? ++registered_ : ++register_failed_;
    if (ok) ++sessions_live_;
    cv_.notify_all();
  }
  void OnAssigned(int index, int stage) {
    std::lock_guard lock(mu_);
    ++assigned_;
    assigns_.push_back({NowUs(), index, stage});
    cv_.notify_all();
  }
  void OnSessionDone(const grpc::Status& s) {
    std::lock_guard lock(mu_);
    --sessions_live_;
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      ++sessions_failed_;
      if (first_failure_.empty()) first_failure_ = s.error_message();
    }
    cv_.notify_all();
  }
  void CountHeartbeat() { heartbeats_.fetch_add(1, std::memory_order_relaxed); }
  void CountAck() { acks_.fetch_add(1, std::memory_order_relaxed); }
  // The longest time between two writes of one worker: the simulated side's own lateness.
  void NoteGap(int64_t us) {
    int64_t cur = max_gap_us_.load(std::memory_order_relaxed);
    while (us > cur && !max_gap_us_.compare_exchange_weak(cur, us)) {
    }
  }
  std::atomic<int64_t> max_gap_us_{0};

  struct Assign {
    int64_t us;
    int index, stage;
  };
  // Waits until `pred()` (under the lock) or the deadline.
  template <typename Pred>
  bool WaitFor(Pred pred, Deadline deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, std::chrono::steady_clock::now() + deadline.Remaining(),
                          [&] { return pred(); });
  }
  // Guarded by mu_ (read inside WaitFor's predicate or after Snapshot).
  int registered_ = 0, register_failed_ = 0, assigned_ = 0, sessions_live_ = 0,
      sessions_failed_ = 0;
  std::string first_failure_;
  std::vector<Assign> assigns_;
  std::mutex mu_;
  std::atomic<int64_t> heartbeats_{0};
  std::atomic<int64_t> acks_{0};  // HeartbeatAcks received: heartbeats the coordinator handled

 private:
  std::condition_variable cv_;
  int reg_outstanding_ = 0;
  std::vector<std::unique_ptr<pb::Coordinator::Stub>> stubs_;
  std::vector<std::unique_ptr<SimWorker>> workers_;
  std::jthread hb_thread_;
};

void SimWorker::Register(pb::Coordinator::Stub* stub) {
  stub_ = stub;
  reg_ctx_.set_deadline(In(30'000));
  reg_ctx_.AddMetadata("authorization", std::string("Bearer ") + kToken);
  reg_req_.set_worker_id(id_);
  reg_req_.set_host("sim-host-" + std::to_string(index_ % 64));
  reg_req_.set_pid(100000 + index_);
  reg_req_.set_capacity(1.0);
  reg_req_.set_kind("sim");
  stub_->async()->Register(&reg_ctx_, &reg_req_, &reg_resp_, [this](grpc::Status s) {
    fleet_->OnRegistered(s.ok());
    if (s.ok()) {
      epoch_ = reg_resp_.epoch();
      StartSession();
    }
  });
}

void SimWorker::StartSession() {
  {
    // Ops queued before StartCall cannot complete yet, so they may be queued under mu_.
    std::lock_guard lock(mu_);
    if (done_) return;  // cancelled while registering
    ctx_.AddMetadata("authorization", std::string("Bearer ") + kToken);
    stub_->async()->Session(&ctx_, this);
    AddHold();  // OnDone waits for RemoveHold in Cancel: no write can race the end of the call
    started_ = true;
    WriteLocked();  // the first message must be a heartbeat
    StartRead(&in_);
  }
  StartCall();
}

void SimWorker::Cancel() {
  bool held;
  {
    std::lock_guard lock(mu_);
    held = started_ && !done_;
    done_ = true;  // no write starts after this
  }
  reg_ctx_.TryCancel();
  if (held) {
    ctx_.TryCancel();
    RemoveHold();
  }
}

void SimWorker::Heartbeat() {
  std::lock_guard lock(mu_);
  if (!started_ || done_ || ended_) return;
  if (writing_) {
    pending_ = true;
    return;
  }
  WriteLocked();
}

void SimWorker::WriteLocked() {
  out_.Clear();
  out_.set_worker_id(id_);
  out_.set_epoch(epoch_);
  auto* hb = out_.mutable_heartbeat();
  hb->set_state(state_);
  hb->set_assignment_id(assignment_id_);
  writing_ = true;
  const int64_t now = NowUs();
  if (last_write_us_ > 0) fleet_->NoteGap(now - last_write_us_);
  last_write_us_ = now;
  fleet_->CountHeartbeat();
  StartWrite(&out_);
}

void SimWorker::OnWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  writing_ = false;
  if (!ok) return;  // the stream ended; Cancel releases the hold
  if (pending_ && !done_) {
    pending_ = false;
    WriteLocked();
  }
}

void SimWorker::OnReadDone(bool ok) {
  if (!ok) {
    std::lock_guard lock(mu_);
    ended_ = true;  // the coordinator ended the session: stop heartbeating
    return;
  }
  if (in_.has_ack()) fleet_->CountAck();
  int assigned_stage = -1;
  {
    std::lock_guard lock(mu_);
    if (in_.has_assign()) {
      assignment_id_ = in_.assign().assignment_id();
      assigned_stage = in_.assign().stage();
      state_ = "ready";  // no weights to load: ready at once
    } else if (in_.has_release()) {
      assignment_id_ = 0;
      state_ = "idle";
    }
    if ((in_.has_assign() || in_.has_release()) && !done_) {
      if (writing_) {
        pending_ = true;
      } else {
        WriteLocked();
      }
    }
  }
  if (assigned_stage >= 0) fleet_->OnAssigned(index_, assigned_stage);
  StartRead(&in_);
}

void SimWorker::OnDone(const grpc::Status& s) { fleet_->OnSessionDone(s); }

class Admin {
 public:
  explicit Admin(const std::string& target)
      : stub_(pb::CoordinatorAdmin::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}
  grpc::Status Status(pb::CoordinatorStatusResponse* r) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10'000));
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    return stub_->Status(&ctx, pb::CoordinatorStatusRequest{}, r);
  }
  grpc::Status Scale(int stage, int replicas) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10'000));
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    pb::ScaleRequest q;
    q.set_stage(stage);
    q.set_replicas(replicas);
    pb::ScaleResponse r;
    return stub_->Scale(&ctx, q, &r);
  }

 private:
  std::unique_ptr<pb::CoordinatorAdmin::Stub> stub_;
};

// Median Decide time of the reactive policy with `n` replicas over `stages` stages, every stage
// overloaded (deep queues, the scale-out timer long expired) so that it plans scale-outs.
double DecideMs(int n, int stages, int idle, int reps, size_t* actions) {
  policy::ReactiveOptions ro;
  ro.bounds.max_replicas = 100'000;
  policy::ReactivePolicy p(ro);
  policy::ClusterState state;
  state.now_ms = 1'000'000;
  policy::ClusterMetrics metrics;
  int k = 0;
  for (int s = 0; s < stages; ++s) {
    policy::Stage st;
    st.index = s;
    st.layer_begin = s;
    st.layer_end = s + 1;
    policy::StageMetrics sm;
    sm.stage = s;
    const int per = (n - idle) / stages + (s < (n - idle) % stages ? 1 : 0);
    for (int r = 0; r < per; ++r, ++k) {
      policy::Replica rep;
      rep.worker.id = "sim" + std::to_string(k);
      rep.worker.host = "sim-host-" + std::to_string(k % 64);
      rep.state = policy::ReplicaState::kReady;
      rep.state_since_ms = 0;
      st.replicas.push_back(rep);
      sm.replicas.push_back({.worker = rep.worker.id, .queue_depth = 10, .utilisation = 0.95,
                             .throughput_rps = 10});
    }
    sm.queue_depth = 10.0 * per;
    sm.utilisation = 0.95;
    sm.p99_ms = 100;
    state.stages.push_back(std::move(st));
    metrics.stages.push_back(std::move(sm));
    state.memory.stages[s].over_since_ms = 0;
  }
  for (int i = 0; i < idle; ++i, ++k) {
    policy::Worker w;
    w.id = "sim" + std::to_string(k);
    state.idle.push_back(w);
  }
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const int64_t t = NowUs();
    policy::Plan plan = p.Decide(state, metrics, policy::Forecast{});
    ms.push_back(static_cast<double>(NowUs() - t) / 1000);
    *actions = plan.actions.size();
  }
  return Median(ms);
}

struct Row {
  int n = 0, stages = 0, targets = 0;
  double register_s = 0, assigned_s = 0, all_ready_s = 0;
  double cores = 0, self_cores = 0, window_s = 0;
  double hb_per_s = 0, ack_per_s = 0;
  double max_gap_ms = 0;  // longest gap between two heartbeats of one simulated worker
  int live = 0;  // workers not dead at the end of the window
  Summary status_ms;
  size_t status_bytes = 0;
  Summary scale_ms;
  double decide_ms = 0;
  size_t decide_actions = 0;
  int sessions_failed = 0, register_failed = 0, dead = 0;
  std::string note;
};

Result<Row> RunOne(const ControlPlaneOptions& o, int n, const std::string& dir) {
  Row row;
  row.n = n;
  int idle;
  if (o.assign_all) {
    idle = std::min(o.idle, std::max(0, n - 3));
    row.targets = n - idle;
    row.stages = std::max(3, (row.targets + 249) / 250);
  } else {
    row.stages = 3;
    row.targets = std::min(n - 1, 3 * o.replicas_per_stage);
    idle = n - row.targets;
  }
  ARCHI_RETURN_IF_ERROR(MakeDirs(dir));
  model::ModelConfig c;
  c.architecture = model::Architecture::kBertEncoder;
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.num_layers = row.stages;
  c.num_heads = 1;
  c.num_kv_heads = 1;
  c.intermediate_size = 8;
  c.max_positions = 8;
  c.type_vocab_size = 1;
  ARCHI_RETURN_IF_ERROR(model::WriteRandomModel(dir + "/model", c, 1));
  std::string plan = "pipeline: cp" + std::to_string(n) + "\nmodel: " + dir + "/model\nstages:\n";
  std::string replicas;
  for (int s = 0; s < row.stages; ++s) {
    plan += Fmt("  - layers: [%d, %d]\n", s, s + 1);
    const int per = row.targets / row.stages + (s < row.targets % row.stages ? 1 : 0);
    replicas += (s ? "," : "") + std::to_string(per);
  }
  ARCHI_RETURN_IF_ERROR(WriteFile(dir + "/plan.yaml", plan));
  std::string bin = o.coordinator_bin.empty() ? ARCHI_COORDINATOR_BIN : o.coordinator_bin;
  if (bin.empty() && !harness::DefaultFrontendBinary().empty()) {
    // The build tree's runtime/coordinator next to runtime/frontend.
    const fs::path p = fs::path(harness::DefaultFrontendBinary()).parent_path().parent_path() /
                       "coordinator" / "archi-coordinator";
    if (fs::exists(p)) bin = p.string();
  }
  if (bin.empty()) return NotFoundError("archi-coordinator not found; pass --coordinator-bin");
  const std::string ready = dir + "/coordinator.ready";
  ARCHI_ASSIGN_OR_RETURN(
      auto coord,
      harness::Process::Spawn(
          {.binary = bin,
           .args = {"--plan", dir + "/plan.yaml", "--listen", "127.0.0.1:0", "--store-listen",
                    "127.0.0.1:0", "--replicas", replicas, "--token", kToken,
                    "--heartbeat-interval-ms", std::to_string(o.heartbeat_interval_ms),
                    "--heartbeat-timeout-ms", std::to_string(o.heartbeat_timeout_ms),
                    "--ready-file", ready},
           .env = {{"ARCHI_LOG_LEVEL", o.log_level}},
           .log_path = dir + "/coordinator.log"}));
  ARCHI_ASSIGN_OR_RETURN(auto j, harness::WaitReadyFile(ready, Deadline::AfterMs(30'000),
                                                        coord.get()));
  const std::string target = j.at("grpc").get<std::string>();
  const pid_t cpid = coord->Pid();
  std::printf("[control-plane] N=%d: archi-coordinator pid %d at %s, %d stages, targets %s, "
              "%d idle\n",
              n, static_cast<int>(cpid), target.c_str(), row.stages, replicas.c_str(), idle);
  std::fflush(stdout);

  Admin admin(target);
  auto fleet = std::make_unique<Fleet>(target, n, o.channels);
  const auto t0 = Clock::now();
  fleet->StartHeartbeats(o.heartbeat_interval_ms);
  fleet->RegisterAll(256, o.register_rate);
  const int targets = row.targets;
  if (!fleet->WaitFor([&] { return fleet->registered_ + fleet->register_failed_ >= n; },
                      Deadline::AfterMs(120'000))) {
    return DeadlineExceededError("registration of " + std::to_string(n) + " workers");
  }
  row.register_s = MsSince(t0) / 1000;
  std::printf("[control-plane] N=%d: %d registered in %.2f s (%d refused)\n", n,
              fleet->registered_, row.register_s, fleet->register_failed_);
  std::fflush(stdout);
  if (!fleet->WaitFor([&] { return fleet->assigned_ >= targets; }, Deadline::AfterMs(120'000))) {
    std::lock_guard lock(fleet->mu_);
    row.note = Fmt("only %d of %d assignments arrived", fleet->assigned_, targets);
  }
  row.assigned_s = MsSince(t0) / 1000;
  std::printf("[control-plane] N=%d: %d assignments in %.2f s\n", n, fleet->assigned_,
              row.assigned_s);
  std::fflush(stdout);
  // Every stage ready in Status.
  const Deadline ready_by = Deadline::AfterMs(60'000);
  while (true) {
    pb::CoordinatorStatusResponse st;
    grpc::Status s = admin.Status(&st);
    bool all = s.ok();
    if (s.ok()) {
      for (const auto& sg : st.stages()) all = all && sg.ready_replicas() >= sg.target_replicas();
    }
    if (all) break;
    if (ready_by.Expired()) {
      row.note += " not every stage ready in Status within 60 s;";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  row.all_ready_s = MsSince(t0) / 1000;
  std::printf("[control-plane] N=%d: every stage at its target of ready replicas at %.2f s\n", n,
              row.all_ready_s);
  std::fflush(stdout);

  // Steady window: heartbeats only (plus one Status a second).
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  const double cpu0 = CpuSeconds(cpid), self0 = CpuSeconds(getpid());
  const int64_t hb0 = fleet->heartbeats_.load(), ack0 = fleet->acks_.load();
  const auto w0 = Clock::now();
  std::vector<double> status_ms;
  while (MsSince(w0) < o.window_s * 1000) {
    pb::CoordinatorStatusResponse st;
    const auto q = Clock::now();
    grpc::Status s = admin.Status(&st);
    if (s.ok()) {
      status_ms.push_back(MsSince(q));
      row.status_bytes = st.ByteSizeLong();
    }
    std::this_thread::sleep_until(w0 + std::chrono::milliseconds(
                                           1000 * static_cast<int64_t>(status_ms.size() + 1)));
    if (!s.ok()) break;
  }
  row.window_s = MsSince(w0) / 1000;
  row.cores = (CpuSeconds(cpid) - cpu0) / row.window_s;
  row.self_cores = (CpuSeconds(getpid()) - self0) / row.window_s;
  row.hb_per_s = static_cast<double>(fleet->heartbeats_.load() - hb0) / row.window_s;
  row.ack_per_s = static_cast<double>(fleet->acks_.load() - ack0) / row.window_s;
  {
    pb::CoordinatorStatusResponse st;
    if (admin.Status(&st).ok()) {
      for (const auto& w : st.workers()) row.live += w.state() != "dead";
    }
  }
  row.status_ms = Summarize(status_ms);
  std::printf("[control-plane] N=%d: coordinator %.3f cores over %.1f s (%.0f heartbeats/s sent, "
              "%.0f acknowledged; %d workers live); Status median %.1f ms (%zu bytes); this "
              "process %.2f cores\n",
              n, row.cores, row.window_s, row.hb_per_s, row.ack_per_s, row.live,
              row.status_ms.median, row.status_bytes, row.self_cores);
  std::fflush(stdout);

  // Scale trials: stage 0 one replica up at a time; the assignment reaches an idle worker.
  pb::CoordinatorStatusResponse st0;
  if (admin.Status(&st0).ok() && st0.stages_size() > 0) {
    int cur = st0.stages(0).target_replicas();
    std::vector<double> scale_ms;
    for (int t = 0; t < o.scale_trials && t < idle; ++t) {
      size_t before;
      {
        std::lock_guard lock(fleet->mu_);
        before = fleet->assigns_.size();
      }
      const int64_t q = NowUs();
      grpc::Status s = admin.Scale(0, ++cur);
      if (!s.ok()) {
        row.note += " Scale: " + s.error_message() + ";";
        break;
      }
      int64_t got = -1;
      fleet->WaitFor(
          [&] {
            for (size_t i = before; i < fleet->assigns_.size(); ++i) {
              if (fleet->assigns_[i].stage == 0) {
                got = fleet->assigns_[i].us;
                return true;
              }
            }
            return false;
          },
          Deadline::AfterMs(10'000));
      if (got < 0) {
        row.note += " a Scale got no assignment within 10 s;";
        break;
      }
      scale_ms.push_back(static_cast<double>(got - q) / 1000);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    row.scale_ms = Summarize(scale_ms);
    std::printf("[control-plane] N=%d: Scale -> assignment at a worker: median %.1f ms, max "
                "%.1f ms (%zu trials)\n",
                n, row.scale_ms.median, row.scale_ms.max, row.scale_ms.n);
  }
  pb::CoordinatorStatusResponse fin;
  if (admin.Status(&fin).ok()) {
    for (const auto& w : fin.workers()) row.dead += w.state() == "dead";
  }
  row.max_gap_ms = static_cast<double>(fleet->max_gap_us_.load()) / 1000;
  row.decide_ms = DecideMs(n, row.stages, idle, 20, &row.decide_actions);
  std::printf("[control-plane] N=%d: reactive Decide median %.3f ms (%zu actions planned)\n", n,
              row.decide_ms, row.decide_actions);
  fleet->Shutdown(Deadline::AfterMs(10'000));
  {
    std::lock_guard lock(fleet->mu_);
    row.sessions_failed = fleet->sessions_failed_;
    row.register_failed = fleet->register_failed_;
    if (!fleet->first_failure_.empty()) row.note += " first session error: " + fleet->first_failure_;
  }
  fleet.reset();
  coord->Terminate(Millis(3000));
  return row;
}

}  // namespace

int RunControlPlane(ControlPlaneOptions o) {
  ::signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/archi-cp-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("archi-bench control-plane: mkdtemp");
    return 1;
  }
  const std::string run_dir = tmpl;
  auto fail = [&](const Status& s) {
    std::fprintf(stderr, "archi-bench control-plane: %s\n(logs kept in %s)\n",
                 s.ToString().c_str(), run_dir.c_str());
    return 1;
  };
  if (Status s = MakeDirs(o.out_dir); !s.ok()) return fail(s);
  const auto t0 = Clock::now();
  const std::string load_before = LoadAverage1();
  std::vector<Row> rows;
  for (int n : o.workers) {
    auto r = RunOne(o, n, run_dir + "/n" + std::to_string(n));
    if (!r.ok()) return fail(r.status());
    rows.push_back(*r);
  }
  MarkdownTable t({"workers", "stages x replicas", "all registered s", "all assigned s", "all ready (Status) s",
                   "heartbeats/s acked (live workers)", "coordinator cores", "Status p50 / max ms (bytes)",
                   "Scale -> assignment p50 / max ms", "reactive Decide ms", "dead / failed sessions"},
                  {true, true, true, true, true, true, true, true, true, true, true});
  std::string csv =
      "workers,stages,assigned_target,register_s,assigned_s,all_ready_s,heartbeats_per_s,"
      "acks_per_s,live,coordinator_cores,"
      "bench_process_cores,window_s,status_p50_ms,status_max_ms,status_bytes,scale_p50_ms,"
      "scale_max_ms,scale_n,decide_ms,decide_actions,dead,sessions_failed,max_hb_gap_ms\n";
  std::string notes;
  for (const auto& r : rows) {
    t.AddRow({std::to_string(r.n), Fmt("%d x %d", r.stages, (r.targets + r.stages - 1) / r.stages),
              Fmt("%.2f", r.register_s),
              Fmt("%.2f", r.assigned_s), Fmt("%.2f", r.all_ready_s),
              Fmt("%.0f (%d)", r.ack_per_s, r.live),
              Fmt("%.3f", r.cores),
              Fmt("%.1f / %.1f (%zu)", r.status_ms.median, r.status_ms.max, r.status_bytes),
              Fmt("%.1f / %.1f", r.scale_ms.median, r.scale_ms.max), Fmt("%.3f", r.decide_ms),
              Fmt("%d / %d", r.dead, r.sessions_failed)});
    csv += Fmt("%d,%d,%d,%.3f,%.3f,%.3f,%.1f,%.1f,%d,%.4f,%.4f,%.2f,%.2f,%.2f,%zu,%.2f,%.2f,%zu,%.4f,%zu,%d,%d,%.0f\n",
               r.n, r.stages, r.targets, r.register_s, r.assigned_s, r.all_ready_s, r.hb_per_s,
               r.ack_per_s, r.live, r.cores,
               r.self_cores, r.window_s, r.status_ms.median, r.status_ms.max, r.status_bytes,
               r.scale_ms.median, r.scale_ms.max, r.scale_ms.n, r.decide_ms, r.decide_actions,
               r.dead, r.sessions_failed, r.max_gap_ms);
    if (!r.note.empty()) notes += Fmt("- N=%d:%s\n", r.n, r.note.c_str());
    notes += Fmt("- N=%d: this benchmark process (the simulated workers) used %.2f cores in the "
                 "same window; the longest gap between two heartbeats sent by one simulated worker "
                 "over the whole run: %.0f ms\n",
                 r.n, r.self_cores, r.max_gap_ms);
  }
  std::string md = "## archi-bench control-plane\n\n";
  md += Fmt("Generated by `%s` on %s (%.0f s).\n\n", JoinArgs(o.command).c_str(),
            NowUtc().c_str(), MsSince(t0) / 1000);
  md += t.ToString() + "\n" + notes;
  md += o.assign_all
            ? Fmt("- plan: max(3, ceil((N - %d) / 250)) stages filled with all but %d workers "
                  "(--assign-all; each replica links with every replica of the neighbouring "
                  "stages)\n",
                  o.idle, o.idle)
            : Fmt("- plan: 3 stages x %d replicas; every other worker registered, idle and "
                  "heartbeating\n",
                  o.replicas_per_stage);
  md += Fmt("- archi-coordinator as a child process, heartbeat interval %d ms, timeout %d ms; "
            "simulated workers in this process over %d gRPC channels, registering at %.0f/s; "
            "coordinator cores = "
            "(utime + stime) / wall over a %.0f s steady window that starts 2 s after every "
            "stage was ready (one Status call a second in it); Scale -> assignment: admin "
            "Scale(stage 0, +1) until the Assignment reached a simulated idle worker; Decide: "
            "ReactivePolicy::Decide in this process at the same N (every stage overloaded)\n",
            o.heartbeat_interval_ms, o.heartbeat_timeout_ms, o.channels, o.register_rate,
            o.window_s);
  md += Fmt("- machine: %s; load average %s at the start, %s at the end\n",
            DescribeMachine(GetMachineInfo()).c_str(), load_before.c_str(),
            LoadAverage1().c_str());
  std::printf("\n%s", md.c_str());
  if (Status s = WriteFile(o.out_dir + "/control_plane.md", md); !s.ok()) return fail(s);
  if (Status s = WriteFile(o.out_dir + "/control_plane.csv", csv); !s.ok()) return fail(s);
  std::printf("\n[control-plane] wrote %s/control_plane.{md,csv}\n", o.out_dir.c_str());
  if (!o.keep_logs) {
    std::error_code ec;
    fs::remove_all(run_dir, ec);
  } else {
    std::printf("[control-plane] logs: %s\n", run_dir.c_str());
  }
  return 0;
}

}  // namespace archi::bench
