// NetNamespace: a network namespace joined to the host namespace by a veth pair, for network
// fault injection in tests and benchmarks (a worker process run inside it can be partitioned or
// given a slow link while the rest of the pipeline stays on the host).
//
//   ARCHI_ASSIGN_OR_RETURN(auto ns, NetNamespace::Create("part"));  // kPermissionDenied: no right
//   spawn a worker with ns->ExecPrefix() + {worker, args...}, ARCHI_BIND_HOST=ns->ns_ip();
//   host-side processes bind ns->host_ip() (loopback is not reachable from inside)
//   ns->Partition();  ...  ns->Heal();
//   ns->SetDelay(50);  // tc netem on both ends; kUnimplemented when the kernel has no netem
//
// Addressing: 10.A.B.(4k+1) on the host end and 10.A.B.(4k+2) inside (a /30 per namespace; A, B
// from this process's pid, k a counter), so concurrent runs do not collide. A partition sets the
// inside end down: the host end's address stays local (host processes bound to it keep talking
// to each other) while nothing crosses the pair; established connections stall and new ones fail.
//
// Everything is done with `ip` and `tc` (iproute2), each call bounded by a deadline. Ownership:
// the destructor deletes the veth pair and the namespace (processes still inside keep running
// with their namespace until they exit; kill them first). Not thread-safe: one owner thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bench/harness/coordinated_cluster.h"
#include "runtime/core/status.h"

namespace archi::harness {

class NetNamespace {
 public:
  // Whether this process may create namespaces: tries `ip netns add` on a unique name (and
  // deletes it). OK, or kPermissionDenied / kUnavailable with the reason (missing `ip`, no
  // CAP_NET_ADMIN, no netns support).
  static Status Probe();
  // Creates the namespace (name "archi-<pid>-<k>-<tag>"), the veth pair, addresses, lo up.
  static Result<std::unique_ptr<NetNamespace>> Create(const std::string& tag);
  ~NetNamespace();
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  const std::string& name() const { return name_; }
  const std::string& host_ip() const { return host_ip_; }
  const std::string& ns_ip() const { return ns_ip_; }
  // {"/usr/sbin/ip", "netns", "exec", name}: prepend to a command to run it inside.
  std::vector<std::string> ExecPrefix() const;

  Status Partition();  // the inside end down
  Status Heal();       // the inside end up again
  // Adds `ms` of delay to every packet leaving either end (tc netem; RTT + 2 * ms).
  // kUnimplemented when the kernel lacks sch_netem.
  Status SetDelay(int ms);
  // Limits both ends to `rate` (tc tbf, e.g. "20mbit"; queueing adds delay under load).
  Status SetRate(const std::string& rate);
  Status ClearQdisc();  // removes what SetDelay/SetRate added

 private:
  NetNamespace() = default;
  std::string name_, host_if_, ns_if_, host_ip_, ns_ip_;
  bool created_ns_ = false, created_link_ = false;
};

// Runs `binary args...` (no shell), output captured; kDeadlineExceeded after `timeout_ms`
// (the child is killed), kInternal with the output when it exits non-zero.
Result<std::string> RunCommand(const std::string& binary, const std::vector<std::string>& args,
                               int64_t timeout_ms = 5000);

// ---- a coordinated pipeline with one replica inside a namespace ----

struct NamespacedCluster {
  std::unique_ptr<CoordinatedCluster> cluster;
  std::string ns_worker;  // the worker id that runs inside the namespace
};

// Starts `o` with every process bound to ns.host_ip() (frontend gRPC + store, data plane via
// ARCHI_BIND_HOST, same-host shared memory off so data crosses the veth pair), stage `stage`
// at o.replicas[stage] - 1 host replicas (o.replicas[stage] >= 2) and every other stage at its
// target; then starts one worker inside `ns` and scales `stage` to its target, so the
// coordinator assigns that worker (the only idle one) to it; then starts o.idle idle workers and
// waits until every stage is at its target and they are idle.
Result<NamespacedCluster> StartWithNamespacedReplica(CoordinatedClusterOptions o,
                                                      const NetNamespace& ns, int stage,
                                                      Deadline deadline);

}  // namespace archi::harness
