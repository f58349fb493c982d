#include "bench/harness/netns.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>

#include "bench/harness/process.h"
#include "runtime/core/deadline.h"

namespace archi::harness {

namespace {

std::atomic<int> g_counter{0};

std::string IpBinary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}
std::string TcBinary() {
  for (const char* p : {"/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc", "/bin/tc"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

Status Ip(const std::vector<std::string>& args) { return RunCommand(IpBinary(), args).status(); }

}  // namespace

Result<std::string> RunCommand(const std::string& binary, const std::vector<std::string>& args,
                               int64_t timeout_ms) {
  if (binary.empty()) return UnavailableError("command not found");
  char tmpl[] = "/tmp/archi-cmd-XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) return InternalError("mkstemp failed");
  close(fd);
  const std::string log = tmpl;
  std::string cmd = binary;
  for (const auto& a : args) cmd += " " + a;
  auto p = Process::Spawn({.binary = binary, .args = args, .log_path = log});
  if (!p.ok()) {
    unlink(log.c_str());
    return p.status();
  }
  auto e = (*p)->WaitExit(Deadline::AfterMs(timeout_ms));
  if (!e.ok()) {
    (*p)->Terminate(Millis(100));
    unlink(log.c_str());
    return DeadlineExceededError(cmd + ": no exit within " + std::to_string(timeout_ms) + " ms");
  }
  std::string out = ReadFileTail(log, 16'000);
  unlink(log.c_str());
  if (!e->ok()) return InternalError(cmd + ": " + e->ToString() + ": " + out);
  return out;
}

Status NetNamespace::Probe() {
  if (IpBinary().empty()) return UnavailableError("`ip` (iproute2) is not installed");
  const std::string name =
      "archi-probe-" + std::to_string(getpid()) + "-" + std::to_string(g_counter++);
  auto r = RunCommand(IpBinary(), {"netns", "add", name});
  if (!r.ok()) {
    return PermissionDeniedError("`ip netns add` failed (needs CAP_NET_ADMIN and netns support): " +
                                 std::string(r.status().message()));
  }
  RunCommand(IpBinary(), {"netns", "del", name}).status().IgnoreError();
  return Status::Ok();
}

Result<std::unique_ptr<NetNamespace>> NetNamespace::Create(const std::string& tag) {
  ARCHI_RETURN_IF_ERROR(Probe());
  const int k = g_counter++;
  const int pid = static_cast<int>(getpid());
  std::unique_ptr<NetNamespace> ns(new NetNamespace());
  ns->name_ = "archi-" + std::to_string(pid) + "-" + std::to_string(k) + "-" + tag;
  // Interface names are at most 15 characters.
  const std::string base = "av" + std::to_string(pid % 1'000'000) + "x" + std::to_string(k % 100);
  ns->host_if_ = base + "h";
  ns->ns_if_ = base + "n";
  const int a = 64 + (pid / 256) % 128, b = pid % 256, c = (k % 63) * 4;
  const std::string net = "10." + std::to_string(a) + "." + std::to_string(b) + ".";
  ns->host_ip_ = net + std::to_string(c + 1);
  ns->ns_ip_ = net + std::to_string(c + 2);
  ARCHI_RETURN_IF_ERROR(Ip({"netns", "add", ns->name_}));
  ns->created_ns_ = true;
  ARCHI_RETURN_IF_ERROR(
      Ip({"link", "add", ns->host_if_, "type", "veth", "peer", "name", ns->ns_if_}));
  ns->created_link_ = true;
  ARCHI_RETURN_IF_ERROR(Ip({"link", "set", ns->ns_if_, "netns", ns->name_}));
  ARCHI_RETURN_IF_ERROR(Ip({"addr", "add", ns->host_ip_ + "/30", "dev", ns->host_if_}));
  ARCHI_RETURN_IF_ERROR(Ip({"link", "set", ns->host_if_, "up"}));
  ARCHI_RETURN_IF_ERROR(Ip({"-n", ns->name_, "addr", "add", ns->ns_ip_ + "/30", "dev", ns->ns_if_}));
  ARCHI_RETURN_IF_ERROR(Ip({"-n", ns->name_, "link", "set", ns->ns_if_, "up"}));
  ARCHI_RETURN_IF_ERROR(Ip({"-n", ns->name_, "link", "set", "lo", "up"}));
  return ns;
}

NetNamespace::~NetNamespace() {
  // Deleting the host end removes the pair; deleting the namespace frees its name.
  if (created_link_) Ip({"link", "del", host_if_}).IgnoreError();
  if (created_ns_) Ip({"netns", "del", name_}).IgnoreError();
}

std::vector<std::string> NetNamespace::ExecPrefix() const {
  return {IpBinary(), "netns", "exec", name_};
}

Status NetNamespace::Partition() { return Ip({"-n", name_, "link", "set", ns_if_, "down"}); }
Status NetNamespace::Heal() { return Ip({"-n", name_, "link", "set", ns_if_, "up"}); }

Status NetNamespace::SetDelay(int ms) {
  const std::string d = std::to_string(ms) + "ms";
  auto r = RunCommand(TcBinary(), {"qdisc", "replace", "dev", host_if_, "root", "netem", "delay", d});
  if (!r.ok()) {
    if (r.status().message().find("unknown") != std::string::npos) {
      return UnimplementedError("tc netem is not available in this kernel (sch_netem): " +
                                std::string(r.status().message()));
    }
    return r.status();
  }
  return RunCommand(IpBinary(), {"netns", "exec", name_, TcBinary(), "qdisc", "replace", "dev",
                                 ns_if_, "root", "netem", "delay", d})
      .status();
}

Status NetNamespace::SetRate(const std::string& rate) {
  const std::vector<std::string> tbf = {"root", "tbf", "rate", rate, "burst", "64kb", "latency",
                                        "400ms"};
  std::vector<std::string> a = {"qdisc", "replace", "dev", host_if_};
  a.insert(a.end(), tbf.begin(), tbf.end());
  ARCHI_RETURN_IF_ERROR(RunCommand(TcBinary(), a).status());
  std::vector<std::string> b = {"netns", "exec", name_, TcBinary(), "qdisc", "replace", "dev",
                                ns_if_};
  b.insert(b.end(), tbf.begin(), tbf.end());
  return RunCommand(IpBinary(), b).status();
}

Status NetNamespace::ClearQdisc() {
  RunCommand(TcBinary(), {"qdisc", "del", "dev", host_if_, "root"}).status().IgnoreError();
  return RunCommand(IpBinary(),
                    {"netns", "exec", name_, TcBinary(), "qdisc", "del", "dev", ns_if_, "root"})
      .status();
}

}  // namespace archi::harness

namespace archi::harness {

Result<NamespacedCluster> StartWithNamespacedReplica(CoordinatedClusterOptions o,
                                                      const NetNamespace& ns, int stage,
                                                      Deadline deadline) {
  if (stage < 0 || stage >= static_cast<int>(o.replicas.size()) || o.replicas[stage] < 2) {
    return InvalidArgumentError(
        "StartWithNamespacedReplica: the stage needs a target of at least 2 replicas");
  }
  const std::vector<int> target = o.replicas;
  const int idle = o.idle;
  o.listen_host = ns.host_ip();
  o.env.push_back({"ARCHI_BIND_HOST", ns.host_ip()});
  o.env.push_back({"ARCHI_SHM", "0"});
  o.replicas[stage] -= 1;
  o.idle = 0;
  ARCHI_ASSIGN_OR_RETURN(auto c, CoordinatedCluster::Start(o));
  NamespacedCluster out;
  WorkerLaunch in_ns{.wrapper = ns.ExecPrefix(), .env = {{"ARCHI_BIND_HOST", ns.ns_ip()}}};
  ARCHI_ASSIGN_OR_RETURN(out.ns_worker, c->SpawnWorker(in_ns));
  const std::string id = out.ns_worker;
  ARCHI_RETURN_IF_ERROR(c->WaitFor(
      [&](const proto::CoordinatorStatusResponse& s) {
        const auto* w = CoordinatedCluster::FindWorker(s, id);
        return w && w->state() == "idle";
      },
      deadline, id + " (in namespace " + ns.name() + ") registered and idle"));
  ARCHI_RETURN_IF_ERROR(c->Scale(stage, target[stage], deadline));
  ARCHI_RETURN_IF_ERROR(c->WaitFor(
      [&](const proto::CoordinatorStatusResponse& s) {
        const auto* w = CoordinatedCluster::FindWorker(s, id);
        return w && w->state() == "ready" && w->stage() == stage;
      },
      deadline, id + " ready in stage " + std::to_string(stage)));
  for (int i = 0; i < idle; ++i) ARCHI_RETURN_IF_ERROR(c->SpawnWorker().status());
  ARCHI_RETURN_IF_ERROR(c->WaitFor(
      [&](const proto::CoordinatorStatusResponse& s) {
        for (const auto& st : s.stages()) {
          if (st.ready_replicas() < target[static_cast<size_t>(st.stage())]) return false;
        }
        int n_idle = 0;
        for (const auto& w : s.workers()) n_idle += w.state() == "idle";
        return n_idle >= idle;
      },
      deadline, "every stage at its target and the idle pool filled"));
  out.cluster = std::move(c);
  return out;
}

}  // namespace archi::harness
