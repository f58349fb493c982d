// CoordinatedCluster: a pipeline planned by its coordinator, served by real processes on this
// host: one archi-frontend (embedded coordinator, rendezvous store, Inference) and archi-worker
// agents (`--coordinator`) that the coordinator assigns to stages. For tests, benchmarks
// (archi-bench recovery) and the demo.
//
//   CoordinatedClusterOptions o;
//   o.plan_path = "plan.yaml";  o.work_dir = "/tmp/run";
//   o.replicas = {1, 2, 1};     // the coordinator's target per stage
//   o.idle = 1;                 // extra workers left in the idle pool (replacements)
//   ARCHI_ASSIGN_OR_RETURN(auto c, CoordinatedCluster::Start(o));
//   c->Kill("w2", SIGKILL);
//   c->WaitFor([](const proto::CoordinatorStatusResponse& s) { ... }, deadline, "what");
//
// Worker ids are "w<n>" in start order; each writes WORK_DIR/w<n>.status (JSON: id, pid, epoch,
// state, stage). Ownership and threads: the cluster owns its processes (killed and reaped on
// destruction at the latest); spawn and destroy it from the same long-lived thread (see
// Process). Every method is thread-safe; blocking ones take a deadline.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/harness/process.h"
#include "proto/coordinator.pb.h"
#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::harness {

struct CoordinatedClusterOptions {
  std::string frontend_bin;  // empty: DefaultFrontendBinary()
  std::string worker_bin;    // empty: DefaultWorkerBinary()
  std::string plan_path;     // YAML plan (required)
  std::string work_dir;      // logs and status files (required; created)
  std::vector<int> replicas;  // target per stage; empty: 1 each
  int idle = 0;               // extra workers for the idle pool
  std::string token;          // shared token (frontend --token, workers --token)
  int worker_threads = 1;
  std::vector<std::string> extra_worker_args;
  std::vector<std::string> extra_frontend_args;
  std::vector<std::pair<std::string, std::string>> env;
  int64_t start_timeout_ms = 60'000;
  // Address the frontend's gRPC server and embedded store listen on (port 0 each). A host-side
  // veth address when a worker runs in a network namespace (archi-bench recovery, netns tests).
  std::string listen_host = "127.0.0.1";
  // Run the coordinator standalone (archi-coordinator: it hosts the store, or uses the one given
  // with "--store" in extra_coordinator_args) instead of embedded in the frontend; the frontend
  // gets --store <that store> --no-coordinator.
  bool standalone_coordinator = false;
  std::string coordinator_bin;  // empty: next to the frontend's build dir
  std::vector<std::string> extra_coordinator_args;  // e.g. {"--state-dir", DIR}
  // More coordinators of the same pipeline (standbys of a highly-available pair started by the
  // caller, archi-coordinator --state-etcd): workers get --coordinator <coordinator>,<these>.
  std::vector<std::string> more_coordinator_addresses;
};

// How one worker process is started beyond the cluster's options: a command prefix (e.g.
// {"/usr/sbin/ip", "netns", "exec", "ns1"}: the worker binary and its arguments follow) and
// environment entries added after CoordinatedClusterOptions::env (they win).
struct WorkerLaunch {
  std::vector<std::string> wrapper;
  std::vector<std::pair<std::string, std::string>> env;
};

class CoordinatedCluster {
 public:
  // Starts the frontend, then sum(replicas) + idle workers, and waits until every stage has its
  // target of ready replicas and the rest are idle. On failure everything started is killed.
  static Result<std::unique_ptr<CoordinatedCluster>> Start(CoordinatedClusterOptions options);
  ~CoordinatedCluster();

  const std::string& frontend_address() const { return grpc_address_; }
  // Where workers and admin clients reach the coordinator (the frontend's address when embedded).
  const std::string& coordinator_address() const { return coordinator_address_; }
  const std::string& store_address() const { return store_address_; }  // standalone only
  const CoordinatedClusterOptions& options() const { return o_; }

  // Starts one more worker (it registers and joins the idle pool, or is assigned at once when a
  // stage lacks a replica); returns its id without waiting.
  Result<std::string> SpawnWorker(const WorkerLaunch& launch = {});
  // Admin Scale: target `replicas` for `stage`.
  Status Scale(int stage, int replicas, Deadline deadline);
  // After the frontend died (kill -9): reaps it and starts a new one on the same gRPC address (a
  // fresh embedded coordinator and store: workers reconnect, are refused their old epochs and
  // register afresh), then waits for its ready file. Does not wait for the workers.
  Status RestartFrontend(Deadline deadline);
  // Standalone coordinator only: after it died (kill -9), reaps it and starts a new one with the
  // same arguments on the same gRPC and store addresses, and waits for its ready file.
  Status RestartCoordinator(Deadline deadline);
  Status Kill(const std::string& id, int sig);  // "frontend", "coordinator" name those
  // Admin calls (GetStatus, WaitFor, Scale, ...) go to `address` from now on (the standby that
  // took over). Not thread-safe with those calls: switch while no other call runs.
  void UseCoordinatorAddress(const std::string& address);
  Process* process(const std::string& id);
  std::vector<std::string> worker_ids() const;

  Result<proto::CoordinatorStatusResponse> GetStatus(Deadline deadline);
  Result<proto::EventsResponse> GetEvents(Deadline deadline, int64_t since_unix_ms = 0);
  // Polls Status every 20 ms until `pred` holds. kDeadlineExceeded naming `what` and the last
  // status otherwise.
  Status WaitFor(const std::function<bool(const proto::CoordinatorStatusResponse&)>& pred,
                 Deadline deadline, const std::string& what);
  // The worker entry (live first, else the newest dead one) or nullptr.
  static const proto::WorkerStatus* FindWorker(const proto::CoordinatorStatusResponse& s,
                                               const std::string& id);
  static std::string StatusText(const proto::CoordinatorStatusResponse& s);

  // SIGTERM to every worker, then the frontend; SIGKILL after `grace`. Idempotent.
  std::vector<std::string> Stop(Millis grace = Millis(5'000));

  class Client;

 private:
  explicit CoordinatedCluster(CoordinatedClusterOptions o);
  Result<std::string> SpawnLocked(const WorkerLaunch& launch = {});
  Status StartFrontendLocked(const std::string& listen, Deadline deadline);
  Status StartCoordinatorLocked(const std::string& listen, const std::string& store_listen,
                                Deadline deadline);

  CoordinatedClusterOptions o_;
  std::string grpc_address_;
  std::string coordinator_address_;
  std::string store_address_;  // the standalone coordinator's store
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Client> client_;
  mutable std::mutex mu_;
  std::unique_ptr<Process> frontend_;
  std::map<std::string, std::unique_ptr<Process>> workers_;
  std::vector<std::string> order_;
  int next_ = 1;
  bool stopped_ = false;
};

}  // namespace archi::harness
