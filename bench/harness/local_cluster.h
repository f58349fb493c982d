// LocalCluster: a pipeline served by real processes on this host: one archi-frontend (rendezvous
// store + Inference/Admin gRPC) and archi-worker processes per stage, for tests, benchmarks and
// the demo.
//
//   LocalClusterOptions o;
//   o.plan_path = "plan.yaml";         // runtime/executor/plan.h
//   o.work_dir = "/tmp/run";           // logs (NAME.log) and ready files (NAME.ready)
//   o.replicas = {1, 2, 1};            // workers per stage
//   ARCHI_ASSIGN_OR_RETURN(auto cluster, LocalCluster::Start(o));
//   ... LoadGenerator on cluster->frontend_address() ...
//   cluster->Kill("s1-r0", SIGKILL);
//   ARCHI_ASSIGN_OR_RETURN(std::string id, cluster->AddWorker(1));
//
// Worker ids are "s<stage>-r<n>" (n counts the workers ever started for that stage).
// Ownership and threads: the cluster owns its processes (killed and reaped on destruction at the
// latest). Every method is thread-safe; the blocking ones take a deadline (or use
// `start_timeout_ms`). The Admin client is a gRPC channel held by the cluster.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "bench/harness/process.h"
#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::harness {

struct LocalClusterOptions {
  std::string frontend_bin;  // empty: DefaultFrontendBinary()
  std::string worker_bin;    // empty: DefaultWorkerBinary()
  std::string plan_path;     // YAML plan (required)
  std::string work_dir;      // created if needed (required)
  // Workers per stage; missing entries (or an empty vector) mean 1.
  std::vector<int> replicas;
  int worker_threads = 1;    // archi-worker --threads
  int frontend_threads = 0;  // > 0: archi-frontend --threads
  std::vector<std::string> extra_worker_args;
  std::vector<std::string> extra_frontend_args;
  std::vector<std::pair<std::string, std::string>> env;  // for every process (ARCHI_LOG_LEVEL...)
  int64_t start_timeout_ms = 60'000;  // frontend ready, each worker ready, Start as a whole
};

// One member as Admin.Status reports it.
struct MemberInfo {
  std::string id;
  int stage = -1;     // -1: the frontend
  std::string state;  // joining | ready | draining | gone
  std::string incarnation;
  uint64_t batches_routed = 0;
  int outstanding = 0;
};

struct ClusterStatus {
  std::string pipeline;
  int num_stages = 0;
  std::vector<MemberInfo> members;
  uint64_t admitted = 0, completed = 0, failed = 0, deadline_exceeded = 0, rejected = 0;
  uint64_t duplicates_dropped = 0, resent_batches = 0, pending = 0;
  const MemberInfo* Find(const std::string& id) const;
  int CountReady(int stage) const;  // members of `stage` in state ready
  std::string ToString() const;     // multi-line
};

// Binaries the build made (CMake passes their paths when the targets exist), else found next to
// the running executable's build tree (BUILD/runtime/frontend/archi-frontend). "" when neither.
std::string DefaultFrontendBinary();
std::string DefaultWorkerBinary();

class LocalCluster {
 public:
  // Starts the frontend, waits for its ready file, reads the number of stages from
  // Admin.Status, starts the workers (all at once) and waits until Admin.Status lists every one
  // of them as ready. On failure everything started is killed; the error names the process and
  // quotes its log.
  static Result<std::unique_ptr<LocalCluster>> Start(LocalClusterOptions options);
  ~LocalCluster();  // Stop(2 s grace)

  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  const std::string& frontend_address() const { return grpc_address_; }  // HOST:PORT
  const std::string& store_address() const { return store_address_; }
  const std::string& pipeline() const { return pipeline_; }
  int num_stages() const { return num_stages_; }
  const LocalClusterOptions& options() const { return o_; }

  // Starts one more worker for `stage`, waits for its ready file and for Admin.Status to show it
  // ready; returns its id.
  Result<std::string> AddWorker(int stage, Deadline deadline);
  Result<std::string> AddWorker(int stage) { return AddWorker(stage, DefaultDeadline()); }
  // Starts a worker and returns its id at once (no waiting).
  Result<std::string> SpawnWorker(int stage);

  // Sends `sig` to a worker ("frontend" names the frontend).
  Status Kill(const std::string& id, int sig);
  // Admin.Drain; returns the state the frontend reports.
  Result<std::string> Drain(const std::string& id, Deadline deadline);
  // Polls Admin.Status until member `id` is in `state` ("gone" also matches a member no longer
  // listed). kDeadlineExceeded with the last status otherwise.
  Status WaitMemberState(const std::string& id, const std::string& state, Deadline deadline);
  Result<ClusterStatus> GetStatus(Deadline deadline);
  Result<ClusterStatus> GetStatus() { return GetStatus(Deadline::AfterMs(5'000)); }

  // The process of a worker (or "frontend"); nullptr when unknown. Owned by the cluster.
  Process* process(const std::string& id);
  // Ids of the workers started so far (killed ones included), in start order.
  std::vector<std::string> worker_ids() const;
  int worker_stage(const std::string& id) const;

  // SIGTERM to every worker, then to the frontend; waits up to `grace` for each, SIGKILLs the
  // rest. Returns "id: exit ..." per process, for reports. Idempotent.
  std::vector<std::string> Stop(Millis grace = Millis(5'000));

  class AdminClient;

 private:
  explicit LocalCluster(LocalClusterOptions o);
  Deadline DefaultDeadline() const { return Deadline::AfterMs(o_.start_timeout_ms); }
  Result<Process*> SpawnLocked(const std::string& id, int stage);
  Status WaitWorkersReady(const std::vector<std::string>& ids, Deadline deadline);

  LocalClusterOptions o_;
  std::string grpc_address_, store_address_, pipeline_;
  int num_stages_ = 0;
  std::unique_ptr<AdminClient> admin_;

  mutable std::mutex mu_;
  std::unique_ptr<Process> frontend_;                        // guarded by mu_
  std::map<std::string, std::unique_ptr<Process>> workers_;  // guarded by mu_
  std::vector<std::pair<std::string, int>> order_;           // (id, stage), guarded by mu_
  std::map<int, int> next_replica_;                          // guarded by mu_
  bool stopped_ = false;                                     // guarded by mu_
};

}  // namespace archi::harness
