#include "bench/harness/local_cluster.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "bench/harness/ready_file.h"
#include "proto/inference.grpc.pb.h"
#include "proto/inference.pb.h"

#ifndef ARCHI_HARNESS_FRONTEND_BIN
#define ARCHI_HARNESS_FRONTEND_BIN ""
#endif
#ifndef ARCHI_HARNESS_WORKER_BIN
#define ARCHI_HARNESS_WORKER_BIN ""
#endif

namespace archi::harness {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFrontendId = "frontend";

// gRPC deadlines are on the system clock; an infinite Deadline becomes one day.
std::chrono::system_clock::time_point ToSystem(Deadline d) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(d.Remaining());
}

Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  return Status(static_cast<StatusCode>(s.error_code()), what + ": " + s.error_message());
}

// `bin` from CMake when it exists, else BUILD/<rel> for the build tree holding this executable.
std::string FindBinary(const char* from_cmake, const char* rel) {
  if (from_cmake[0] != '\0' && ::access(from_cmake, X_OK) == 0) return from_cmake;
  std::error_code ec;
  fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (int up = 0; up < 4 && !ec && !dir.empty(); ++up, dir = dir.parent_path()) {
    const fs::path candidate = dir / rel;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    if (dir == dir.parent_path()) break;
  }
  return "";
}

}  // namespace

std::string DefaultFrontendBinary() {
  return FindBinary(ARCHI_HARNESS_FRONTEND_BIN, "runtime/frontend/archi-frontend");
}
std::string DefaultWorkerBinary() {
  return FindBinary(ARCHI_HARNESS_WORKER_BIN, "runtime/executor/archi-worker");
}

// ---- ClusterStatus ----

const MemberInfo* ClusterStatus::Find(const std::string& id) const {
  for (const MemberInfo& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

int ClusterStatus::CountReady(int stage) const {
  int n = 0;
  for (const MemberInfo& m : members) n += m.stage == stage && m.state == "ready";
  return n;
}

std::string ClusterStatus::ToString() const {
  std::ostringstream out;
  out << "pipeline " << pipeline << " (" << num_stages << " stages): admitted " << admitted
      << ", completed " << completed << ", failed " << failed << ", deadline_exceeded "
      << deadline_exceeded << ", rejected " << rejected << ", pending " << pending
      << ", resent_batches " << resent_batches << ", duplicates_dropped " << duplicates_dropped
      << "\n";
  for (const MemberInfo& m : members) {
    out << "  " << m.id << " stage " << m.stage << " " << m.state << " routed " << m.batches_routed
        << " outstanding " << m.outstanding << "\n";
  }
  return out.str();
}

// ---- AdminClient ----

class LocalCluster::AdminClient {
 public:
  explicit AdminClient(const std::string& target) {
    stub_ = proto::Admin::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  }

  Result<ClusterStatus> GetStatus(Deadline deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(ToSystem(deadline));
    proto::StatusRequest req;
    proto::StatusResponse resp;
    ARCHI_RETURN_IF_ERROR(FromGrpc(stub_->Status(&ctx, req, &resp), "Admin.Status"));
    ClusterStatus s;
    s.pipeline = resp.pipeline();
    s.num_stages = resp.num_stages();
    for (const auto& m : resp.members()) {
      s.members.push_back(MemberInfo{m.id(), m.stage(), m.state(), m.incarnation(),
                                     m.batches_routed(), m.outstanding()});
    }
    s.admitted = resp.admitted();
    s.completed = resp.completed();
    s.failed = resp.failed();
    s.deadline_exceeded = resp.deadline_exceeded();
    s.rejected = resp.rejected();
    s.duplicates_dropped = resp.duplicates_dropped();
    s.resent_batches = resp.resent_batches();
    s.pending = resp.pending();
    return s;
  }

  Result<std::string> Drain(const std::string& id, Deadline deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(ToSystem(deadline));
    proto::DrainRequest req;
    req.set_worker_id(id);
    proto::DrainResponse resp;
    ARCHI_RETURN_IF_ERROR(FromGrpc(stub_->Drain(&ctx, req, &resp), "Admin.Drain " + id));
    return resp.state();
  }

 private:
  std::unique_ptr<proto::Admin::Stub> stub_;
};

// ---- LocalCluster ----

LocalCluster::LocalCluster(LocalClusterOptions o) : o_(std::move(o)) {}

LocalCluster::~LocalCluster() { Stop(Millis(2'000)); }

Result<std::unique_ptr<LocalCluster>> LocalCluster::Start(LocalClusterOptions o) {
  if (o.frontend_bin.empty()) o.frontend_bin = DefaultFrontendBinary();
  if (o.worker_bin.empty()) o.worker_bin = DefaultWorkerBinary();
  if (o.frontend_bin.empty() || o.worker_bin.empty()) {
    return NotFoundError(
        "LocalCluster: archi-frontend / archi-worker not found (build them, or set "
        "LocalClusterOptions::frontend_bin/worker_bin)");
  }
  if (o.plan_path.empty() || o.work_dir.empty()) {
    return InvalidArgumentError("LocalCluster: plan_path and work_dir are required");
  }
  std::error_code ec;
  fs::create_directories(o.work_dir, ec);
  if (ec) return InvalidArgumentError("LocalCluster: mkdir " + o.work_dir + ": " + ec.message());
  const Deadline deadline = Deadline::AfterMs(o.start_timeout_ms);

  std::unique_ptr<LocalCluster> c(new LocalCluster(std::move(o)));
  const LocalClusterOptions& opt = c->o_;
  const std::string ready = opt.work_dir + "/frontend.ready";
  fs::remove(ready, ec);
  std::vector<std::string> args = {"--plan",         opt.plan_path, "--listen",     "127.0.0.1:0",
                                   "--store-listen", "127.0.0.1:0", "--ready-file", ready};
  if (opt.frontend_threads > 0) {
    args.push_back("--threads");
    args.push_back(std::to_string(opt.frontend_threads));
  }
  args.insert(args.end(), opt.extra_frontend_args.begin(), opt.extra_frontend_args.end());
  ARCHI_ASSIGN_OR_RETURN(auto fe, Process::Spawn({.binary = opt.frontend_bin,
                                                  .args = args,
                                                  .env = opt.env,
                                                  .log_path = opt.work_dir + "/frontend.log"}));
  ARCHI_ASSIGN_OR_RETURN(nlohmann::json j, WaitReadyFile(ready, deadline, fe.get()));
  if (!j.contains("grpc") || !j["grpc"].is_string() || !j.contains("store") ||
      !j["store"].is_string()) {
    return InternalError("LocalCluster: frontend ready file lacks grpc/store: " + j.dump());
  }
  c->grpc_address_ = j["grpc"].get<std::string>();
  c->store_address_ = j["store"].get<std::string>();
  c->pipeline_ = j.value("pipeline", std::string());
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    c->frontend_ = std::move(fe);
  }
  c->admin_ = std::make_unique<AdminClient>(c->grpc_address_);

  // The number of stages (and the pipeline name when the ready file lacks it).
  Result<ClusterStatus> st = UnavailableError("no status yet");
  while (!(st = c->admin_->GetStatus(Deadline::Min(deadline, Deadline::AfterMs(2'000)))).ok()) {
    if (deadline.Expired()) return st.status().WithContext("LocalCluster: frontend Admin.Status");
    std::this_thread::sleep_for(Millis(20));
  }
  c->num_stages_ = st->num_stages;
  if (c->pipeline_.empty()) c->pipeline_ = st->pipeline;
  if (c->num_stages_ < 1) {
    return InternalError("LocalCluster: frontend reports " + std::to_string(c->num_stages_) +
                         " stages");
  }

  std::vector<std::string> ids;
  for (int s = 0; s < c->num_stages_; ++s) {
    const int n =
        static_cast<size_t>(s) < opt.replicas.size() ? opt.replicas[static_cast<size_t>(s)] : 1;
    for (int r = 0; r < n; ++r) {
      ARCHI_ASSIGN_OR_RETURN(std::string id, c->SpawnWorker(s));
      ids.push_back(id);
    }
  }
  ARCHI_RETURN_IF_ERROR(c->WaitWorkersReady(ids, deadline));
  return c;
}

Result<Process*> LocalCluster::SpawnLocked(const std::string& id, int stage) {
  const std::string ready = o_.work_dir + "/" + id + ".ready";
  std::error_code ec;
  fs::remove(ready, ec);
  std::vector<std::string> args = {"--store",      store_address_,
                                   "--pipeline",   pipeline_,
                                   "--stage",      std::to_string(stage),
                                   "--id",         id,
                                   "--threads",    std::to_string(o_.worker_threads),
                                   "--ready-file", ready};
  args.insert(args.end(), o_.extra_worker_args.begin(), o_.extra_worker_args.end());
  ARCHI_ASSIGN_OR_RETURN(auto p, Process::Spawn({.binary = o_.worker_bin,
                                                 .args = args,
                                                 .env = o_.env,
                                                 .log_path = o_.work_dir + "/" + id + ".log"}));
  Process* raw = p.get();
  workers_[id] = std::move(p);
  order_.emplace_back(id, stage);
  return raw;
}

Result<std::string> LocalCluster::SpawnWorker(int stage) {
  if (stage < 0 || stage >= num_stages_) {
    return InvalidArgumentError("LocalCluster: no stage " + std::to_string(stage));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return FailedPreconditionError("LocalCluster stopped");
  const std::string id =
      "s" + std::to_string(stage) + "-r" + std::to_string(next_replica_[stage]++);
  ARCHI_RETURN_IF_ERROR(SpawnLocked(id, stage));
  return id;
}

Status LocalCluster::WaitWorkersReady(const std::vector<std::string>& ids, Deadline deadline) {
  for (const std::string& id : ids) {
    Process* p = process(id);
    if (p == nullptr) return NotFoundError("LocalCluster: no worker " + id);
    auto j = WaitReadyFile(o_.work_dir + "/" + id + ".ready", deadline, p);
    if (!j.ok()) return j.status().WithContext("worker " + id);
  }
  std::string last;
  for (;;) {
    auto st = admin_->GetStatus(Deadline::Min(deadline, Deadline::AfterMs(2'000)));
    if (st.ok()) {
      std::vector<std::string> missing;
      for (const std::string& id : ids) {
        const MemberInfo* m = st->Find(id);
        if (m == nullptr || m->state != "ready") missing.push_back(id);
      }
      if (missing.empty()) return Status::Ok();
      last = st->ToString();
    } else {
      last = st.status().ToString();
    }
    for (const std::string& id : ids) {
      Process* p = process(id);
      if (auto e = p->TryWait()) {
        return UnavailableError("worker " + id + " ended with " + e->ToString() +
                                " before it was ready; log tail:\n" + p->LogTail(3000));
      }
    }
    if (deadline.Expired()) {
      return DeadlineExceededError("LocalCluster: workers not ready in Admin.Status; last:\n" +
                                   last);
    }
    std::this_thread::sleep_for(Millis(20));
  }
}

Result<std::string> LocalCluster::AddWorker(int stage, Deadline deadline) {
  ARCHI_ASSIGN_OR_RETURN(std::string id, SpawnWorker(stage));
  ARCHI_RETURN_IF_ERROR(WaitWorkersReady({id}, deadline));
  return id;
}

Process* LocalCluster::process(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (id == kFrontendId) return frontend_.get();
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : it->second.get();
}

std::vector<std::string> LocalCluster::worker_ids() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, stage] : order_) ids.push_back(id);
  return ids;
}

int LocalCluster::worker_stage(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [i, stage] : order_) {
    if (i == id) return stage;
  }
  return -1;
}

Status LocalCluster::Kill(const std::string& id, int sig) {
  Process* p = process(id);
  if (p == nullptr) return NotFoundError("LocalCluster: no process " + id);
  return p->Signal(sig);
}

Result<std::string> LocalCluster::Drain(const std::string& id, Deadline deadline) {
  return admin_->Drain(id, deadline);
}

Result<ClusterStatus> LocalCluster::GetStatus(Deadline deadline) {
  return admin_->GetStatus(deadline);
}

Status LocalCluster::WaitMemberState(const std::string& id, const std::string& state,
                                     Deadline deadline) {
  std::string last;
  for (;;) {
    auto st = admin_->GetStatus(Deadline::Min(deadline, Deadline::AfterMs(2'000)));
    if (st.ok()) {
      const MemberInfo* m = st->Find(id);
      if ((m != nullptr && m->state == state) || (m == nullptr && state == "gone")) {
        return Status::Ok();
      }
      last = st->ToString();
    } else {
      last = st.status().ToString();
    }
    if (deadline.Expired()) {
      return DeadlineExceededError("LocalCluster: " + id + " not " + state +
                                   " at the deadline; last status:\n" + last);
    }
    std::this_thread::sleep_for(Millis(20));
  }
}

std::vector<std::string> LocalCluster::Stop(Millis grace) {
  std::vector<std::string> out;
  std::vector<std::pair<std::string, Process*>> procs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return out;
    stopped_ = true;
    for (const auto& [id, stage] : order_) procs.emplace_back(id, workers_[id].get());
  }
  // Workers first (all signalled at once, then waited for), then the frontend.
  for (auto& [id, p] : procs) p->Signal(SIGTERM).IgnoreError();
  const Deadline d = Deadline::After(grace);
  for (auto& [id, p] : procs) {
    auto e = p->WaitExit(d);
    if (!e.ok()) {
      p->Signal(SIGKILL).IgnoreError();
      e = p->WaitExit(Deadline::AfterMs(5'000));
      out.push_back(id + ": did not exit within the grace after SIGTERM, SIGKILLed");
    } else {
      out.push_back(id + ": " + e->ToString());
    }
  }
  Process* fe = process(kFrontendId);
  if (fe != nullptr)
    out.push_back(std::string(kFrontendId) + ": " + fe->Terminate(grace).ToString());
  return out;
}

}  // namespace archi::harness
