#include "bench/harness/coordinated_cluster.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include "bench/harness/local_cluster.h"
#include "bench/harness/ready_file.h"
#include "proto/coordinator.grpc.pb.h"

namespace archi::harness {

namespace fs = std::filesystem;

namespace {
std::chrono::system_clock::time_point ToSystem(Deadline d) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(d.Remaining());
}
Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  return Status(static_cast<StatusCode>(s.error_code()), what + ": " + s.error_message());
}
}  // namespace

class CoordinatedCluster::Client {
 public:
  Client(const std::string& target, std::string token) : token_(std::move(token)) {
    // Reconnect quickly to a frontend restarted on the same address (RestartFrontend).
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
    stub_ = proto::CoordinatorAdmin::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  template <typename Req, typename Resp, typename Call>
  Status Do(Call call, const Req& req, Resp* resp, Deadline deadline, const std::string& what) {
    grpc::ClientContext ctx;
    ctx.set_deadline(ToSystem(deadline));
    if (!token_.empty()) ctx.AddMetadata("authorization", "Bearer " + token_);
    return FromGrpc((stub_.get()->*call)(&ctx, req, resp), what);
  }
  std::unique_ptr<proto::CoordinatorAdmin::Stub> stub_;
  std::string token_;
};

CoordinatedCluster::CoordinatedCluster(CoordinatedClusterOptions o) : o_(std::move(o)) {}

void CoordinatedCluster::UseCoordinatorAddress(const std::string& address) {
  std::lock_guard lock(mu_);
  coordinator_address_ = address;
  client_ = std::make_unique<Client>(address, o_.token);
}
CoordinatedCluster::~CoordinatedCluster() { Stop(Millis(2'000)); }

Result<std::unique_ptr<CoordinatedCluster>> CoordinatedCluster::Start(
    CoordinatedClusterOptions o) {
  if (o.plan_path.empty() || o.work_dir.empty()) {
    return InvalidArgumentError("CoordinatedCluster: plan_path and work_dir are required");
  }
  if (o.frontend_bin.empty()) o.frontend_bin = DefaultFrontendBinary();
  if (o.worker_bin.empty()) o.worker_bin = DefaultWorkerBinary();
  if (o.frontend_bin.empty() || o.worker_bin.empty()) {
    return NotFoundError("CoordinatedCluster: archi-frontend or archi-worker binary not found");
  }
  std::error_code ec;
  fs::create_directories(o.work_dir, ec);
  const Deadline deadline = Deadline::AfterMs(o.start_timeout_ms);
  std::unique_ptr<CoordinatedCluster> c(new CoordinatedCluster(o));
  {
    std::lock_guard lock(c->mu_);
    if (o.standalone_coordinator) {
      ARCHI_RETURN_IF_ERROR(
          c->StartCoordinatorLocked(o.listen_host + ":0", o.listen_host + ":0", deadline));
      c->o_.extra_frontend_args.insert(c->o_.extra_frontend_args.begin(),
                                       {"--store", c->store_address_, "--no-coordinator"});
    }
    ARCHI_RETURN_IF_ERROR(c->StartFrontendLocked(o.listen_host + ":0", deadline));
    if (!o.standalone_coordinator) c->coordinator_address_ = c->grpc_address_;
  }
  c->client_ = std::make_unique<Client>(c->coordinator_address_, o.token);
  ARCHI_ASSIGN_OR_RETURN(auto st0, c->GetStatus(deadline));
  int total = 0;
  std::vector<int> target;
  for (const auto& s : st0.stages()) {
    target.push_back(s.target_replicas());
    total += s.target_replicas();
  }
  {
    std::lock_guard lock(c->mu_);
    for (int i = 0; i < total + o.idle; ++i) ARCHI_RETURN_IF_ERROR(c->SpawnLocked().status());
  }
  const int idle = o.idle;
  Status waited = c->WaitFor(
      [&](const proto::CoordinatorStatusResponse& s) {
        for (const auto& st : s.stages()) {
          if (st.ready_replicas() < st.target_replicas()) return false;
        }
        int n_idle = 0;
        for (const auto& w : s.workers()) n_idle += w.state() == "idle";
        return n_idle >= idle;
      },
      deadline, "every stage at its target of ready replicas");
  if (!waited.ok()) {
    std::string logs;
    for (const auto& id : c->worker_ids()) {
      logs += "\n--- " + id + ".log ---\n" + ReadFileTail(o.work_dir + "/" + id + ".log", 1500);
    }
    return Status(waited.code(), std::string(waited.message()) + logs);
  }
  return c;
}

Status CoordinatedCluster::StartFrontendLocked(const std::string& listen, Deadline deadline) {
  std::error_code ec;
  const std::string ready = o_.work_dir + "/frontend.ready";
  fs::remove(ready, ec);
  std::vector<std::string> args = {"--plan",         o_.plan_path,
                                   "--listen",       listen,
                                   "--store-listen", o_.listen_host + ":0",
                                   "--ready-file",   ready};
  if (!o_.replicas.empty()) {
    std::string r;
    for (size_t i = 0; i < o_.replicas.size(); ++i) {
      r += (i ? "," : "") + std::to_string(o_.replicas[i]);
    }
    args.insert(args.end(), {"--replicas", r});
  }
  if (!o_.token.empty()) args.insert(args.end(), {"--token", o_.token});
  args.insert(args.end(), o_.extra_frontend_args.begin(), o_.extra_frontend_args.end());
  ARCHI_ASSIGN_OR_RETURN(frontend_, Process::Spawn({.binary = o_.frontend_bin,
                                                    .args = args,
                                                    .env = o_.env,
                                                    .log_path = o_.work_dir + "/frontend.log"}));
  ARCHI_ASSIGN_OR_RETURN(auto j, WaitReadyFile(ready, deadline, frontend_.get()));
  grpc_address_ = j.at("grpc").get<std::string>();
  return Status::Ok();
}

Status CoordinatedCluster::RestartFrontend(Deadline deadline) {
  std::lock_guard lock(mu_);
  if (stopped_) return FailedPreconditionError("cluster stopped");
  if (frontend_) {
    auto exited = frontend_->WaitExit(Deadline::AfterMs(
        std::min<int64_t>(2000, std::max<int64_t>(1, deadline.RemainingMs().count()))));
    if (!exited.ok()) return FailedPreconditionError("the frontend is still running");
    frontend_.reset();
  }
  const std::string want = grpc_address_;
  // The old listening socket is gone with the process; retry briefly in case the port is not
  // free yet.
  while (true) {
    Status s = StartFrontendLocked(want, deadline);
    if (s.ok() && grpc_address_ == want) return Status::Ok();
    if (s.ok()) return InternalError("restarted frontend listens on " + grpc_address_ +
                                     ", not " + want);
    if (deadline.Expired()) return s;
    if (frontend_) frontend_->Terminate(Millis(500));
    frontend_.reset();
    grpc_address_ = want;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Status CoordinatedCluster::Scale(int stage, int replicas, Deadline deadline) {
  proto::ScaleRequest q;
  q.set_stage(stage);
  q.set_replicas(replicas);
  proto::ScaleResponse r;
  return client_->Do(&proto::CoordinatorAdmin::Stub::Scale, q, &r, deadline,
                     "CoordinatorAdmin.Scale");
}

Status CoordinatedCluster::StartCoordinatorLocked(const std::string& listen,
                                                  const std::string& store_listen,
                                                  Deadline deadline) {
  if (o_.coordinator_bin.empty()) {
    o_.coordinator_bin = (fs::path(o_.frontend_bin).parent_path().parent_path() / "coordinator" /
                          "archi-coordinator")
                             .string();
  }
  std::error_code ec;
  const std::string ready = o_.work_dir + "/coordinator.ready";
  fs::remove(ready, ec);
  std::vector<std::string> args = {"--plan",         o_.plan_path, "--listen",     listen,
                                   "--store-listen", store_listen, "--ready-file", ready};
  if (!o_.replicas.empty()) {
    std::string r;
    for (size_t i = 0; i < o_.replicas.size(); ++i) {
      r += (i ? "," : "") + std::to_string(o_.replicas[i]);
    }
    args.insert(args.end(), {"--replicas", r});
  }
  if (!o_.token.empty()) args.insert(args.end(), {"--token", o_.token});
  args.insert(args.end(), o_.extra_coordinator_args.begin(), o_.extra_coordinator_args.end());
  ARCHI_ASSIGN_OR_RETURN(coordinator_,
                         Process::Spawn({.binary = o_.coordinator_bin,
                                         .args = args,
                                         .env = o_.env,
                                         .log_path = o_.work_dir + "/coordinator.log"}));
  ARCHI_ASSIGN_OR_RETURN(auto j, WaitReadyFile(ready, deadline, coordinator_.get()));
  coordinator_address_ = j.at("grpc").get<std::string>();
  store_address_ = j.at("store").get<std::string>();
  return Status::Ok();
}

Status CoordinatedCluster::RestartCoordinator(Deadline deadline) {
  std::lock_guard lock(mu_);
  if (stopped_) return FailedPreconditionError("cluster stopped");
  if (!o_.standalone_coordinator) return FailedPreconditionError("no standalone coordinator");
  if (coordinator_) {
    auto exited = coordinator_->WaitExit(Deadline::AfterMs(
        std::min<int64_t>(2000, std::max<int64_t>(1, deadline.RemainingMs().count()))));
    if (!exited.ok()) return FailedPreconditionError("the coordinator is still running");
    coordinator_.reset();
  }
  const std::string grpc = coordinator_address_, store = store_address_;
  while (true) {  // the old sockets went with the process; retry briefly if a port is not free
    Status s = StartCoordinatorLocked(grpc, store, deadline);
    if (s.ok()) return Status::Ok();
    if (deadline.Expired()) return s;
    if (coordinator_) coordinator_->Terminate(Millis(500));
    coordinator_.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<std::string> CoordinatedCluster::SpawnLocked(const WorkerLaunch& launch) {
  if (stopped_) return FailedPreconditionError("cluster stopped");
  const std::string id = "w" + std::to_string(next_++);
  std::string coordinators = coordinator_address_;
  for (const auto& a : o_.more_coordinator_addresses) coordinators += "," + a;
  std::vector<std::string> args = {"--coordinator", coordinators, "--id", id,
                                   "--status-file", o_.work_dir + "/" + id + ".status",
                                   "--threads", std::to_string(o_.worker_threads)};
  if (!o_.token.empty()) args.insert(args.end(), {"--token", o_.token});
  args.insert(args.end(), o_.extra_worker_args.begin(), o_.extra_worker_args.end());
  std::string binary = o_.worker_bin;
  if (!launch.wrapper.empty()) {
    std::vector<std::string> wrapped(launch.wrapper.begin() + 1, launch.wrapper.end());
    wrapped.push_back(o_.worker_bin);
    wrapped.insert(wrapped.end(), args.begin(), args.end());
    binary = launch.wrapper.front();
    args = std::move(wrapped);
  }
  auto env = o_.env;
  env.insert(env.end(), launch.env.begin(), launch.env.end());
  ARCHI_ASSIGN_OR_RETURN(auto p, Process::Spawn({.binary = binary,
                                                 .args = args,
                                                 .env = env,
                                                 .log_path = o_.work_dir + "/" + id + ".log"}));
  workers_[id] = std::move(p);
  order_.push_back(id);
  return id;
}

Result<std::string> CoordinatedCluster::SpawnWorker(const WorkerLaunch& launch) {
  std::lock_guard lock(mu_);
  return SpawnLocked(launch);
}

Status CoordinatedCluster::Kill(const std::string& id, int sig) {
  Process* p = process(id);
  if (!p) return NotFoundError("no process '" + id + "'");
  return p->Signal(sig);
}

Process* CoordinatedCluster::process(const std::string& id) {
  std::lock_guard lock(mu_);
  if (id == "frontend") return frontend_.get();
  if (id == "coordinator") return coordinator_.get();
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : it->second.get();
}

std::vector<std::string> CoordinatedCluster::worker_ids() const {
  std::lock_guard lock(mu_);
  return order_;
}

Result<proto::CoordinatorStatusResponse> CoordinatedCluster::GetStatus(Deadline deadline) {
  proto::CoordinatorStatusResponse r;
  ARCHI_RETURN_IF_ERROR(client_->Do(&proto::CoordinatorAdmin::Stub::Status,
                                    proto::CoordinatorStatusRequest{}, &r,
                                    Deadline::AfterMs(std::min<int64_t>(
                                        5000, std::max<int64_t>(1, deadline.RemainingMs().count()))),
                                    "CoordinatorAdmin.Status"));
  return r;
}

Result<proto::EventsResponse> CoordinatedCluster::GetEvents(Deadline deadline,
                                                            int64_t since_unix_ms) {
  proto::EventsRequest q;
  q.set_since_unix_ms(since_unix_ms);
  q.set_limit(100'000);
  proto::EventsResponse r;
  ARCHI_RETURN_IF_ERROR(client_->Do(&proto::CoordinatorAdmin::Stub::Events, q, &r, deadline,
                                    "CoordinatorAdmin.Events"));
  return r;
}

Status CoordinatedCluster::WaitFor(
    const std::function<bool(const proto::CoordinatorStatusResponse&)>& pred, Deadline deadline,
    const std::string& what) {
  std::string last = "(no status)";
  while (true) {
    auto s = GetStatus(deadline);
    if (s.ok()) {
      if (pred(*s)) return Status::Ok();
      last = StatusText(*s);
    } else {
      last = s.status().ToString();
    }
    if (deadline.Expired()) {
      return DeadlineExceededError("waiting for " + what + "; last status:\n" + last);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

const proto::WorkerStatus* CoordinatedCluster::FindWorker(const proto::CoordinatorStatusResponse& s,
                                                          const std::string& id) {
  const proto::WorkerStatus* found = nullptr;
  for (const auto& w : s.workers()) {
    if (w.worker_id() != id) continue;
    if (w.state() != "dead") return &w;
    if (!found || w.epoch() > found->epoch()) found = &w;
  }
  return found;
}

std::string CoordinatedCluster::StatusText(const proto::CoordinatorStatusResponse& s) {
  std::ostringstream out;
  out << "pipeline " << s.pipeline() << " policy " << s.policy() << "\n";
  for (const auto& st : s.stages()) {
    out << "  stage " << st.stage() << ": target " << st.target_replicas() << ", ready "
        << st.ready_replicas() << "\n";
  }
  for (const auto& w : s.workers()) {
    out << "  " << w.worker_id() << " epoch " << w.epoch() << " " << w.state() << " stage "
        << w.stage() << " hb " << w.last_heartbeat_ms_ago() << " ms ago, batches "
        << w.load().batches_processed() << (w.dead_reason().empty() ? "" : ", dead: ")
        << w.dead_reason() << "\n";
  }
  return out.str();
}

std::vector<std::string> CoordinatedCluster::Stop(Millis grace) {
  std::map<std::string, std::unique_ptr<Process>> workers;
  std::unique_ptr<Process> frontend, coordinator;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return {};
    stopped_ = true;
    workers.swap(workers_);
    frontend.swap(frontend_);
    coordinator.swap(coordinator_);
  }
  std::vector<std::string> out;
  for (auto& [id, p] : workers) p->Signal(SIGTERM).IgnoreError();
  for (auto& [id, p] : workers) out.push_back(id + ": " + p->Terminate(grace).ToString());
  if (frontend) out.push_back("frontend: " + frontend->Terminate(grace).ToString());
  if (coordinator) out.push_back("coordinator: " + coordinator->Terminate(grace).ToString());
  return out;
}

}  // namespace archi::harness
