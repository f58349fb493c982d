#include "runtime/coordinator/coordinator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "proto/coordinator.grpc.pb.h"
#include "proto/coordinator_state.pb.h"
#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/state_journal.h"
#include "runtime/coordinator/wal.h"
#include "runtime/coordinator/worker_index.h"
#include "runtime/core/logging.h"
#include "runtime/core/params.h"
#include "runtime/executor/metrics.h"
#include "runtime/executor/node.h"
#include "runtime/executor/wire.h"
#include "runtime/policy/availability_forecast.h"
#include "runtime/policy/reactive.h"
#include "runtime/policy/registry.h"

namespace archi::coordinator {

namespace pb = archi::proto;
namespace ex = archi::executor;
using ex::UnixMillis;

namespace {

grpc::Status Grpc(grpc::StatusCode code, std::string msg) { return {code, std::move(msg)}; }

constexpr size_t kMaxLinksReported = 4096;
constexpr size_t kMaxStringField = 256;

bool Assigned(const std::string& state) {
  return state == "loading" || state == "joining" || state == "ready";
}

}  // namespace

Status ValidateOptions(const CoordinatorOptions& o, const ex::PipelinePlan& plan) {
  if (o.heartbeat_interval_ms < 10 || o.heartbeat_interval_ms > 60'000) {
    return InvalidArgumentError("heartbeat interval must be 10..60000 ms");
  }
  if (o.heartbeat_timeout_ms < 2 * o.heartbeat_interval_ms || o.heartbeat_timeout_ms > 600'000) {
    return InvalidArgumentError("heartbeat timeout must be at least twice the interval (" +
                                std::to_string(2 * o.heartbeat_interval_ms) +
                                " ms) and at most 600000 ms");
  }
  if (o.suspect_ms < 0) return InvalidArgumentError("suspect_ms must be >= 0");
  if (!o.replicas.empty() && static_cast<int>(o.replicas.size()) != plan.num_stages()) {
    return InvalidArgumentError("replicas lists " + std::to_string(o.replicas.size()) +
                                " stages; the plan has " + std::to_string(plan.num_stages()));
  }
  for (int r : o.replicas) {
    if (r < 0 || r > 256) return InvalidArgumentError("replicas per stage must be 0..256");
  }
  if (o.policy != "none") {
    if (auto made = policy::MakePolicy(o.policy, o.policy_options); !made.ok()) {
      return InvalidArgumentError("policy '" + o.policy + "': " +
                                  std::string(made.status().message()) + " (none | " +
                                  policy::PolicyNamesJoined() + ")");
    }
  }
  if (o.slo_p99_ms < 0) return InvalidArgumentError("slo_p99_ms must be >= 0");
  if (o.policy_interval_ms < 10) return InvalidArgumentError("policy interval must be >= 10 ms");
  if (o.resume_grace_ms < 0) return InvalidArgumentError("resume_grace_ms must be >= 0");
  if (o.snapshot_every < 1) return InvalidArgumentError("snapshot_every must be >= 1");
  return Status::Ok();
}

// One worker session stream. gRPC owns the reactor (deleted in OnDone); the coordinator holds a
// shared SessionState to send on it and end it. Lock order: Impl::mu before SessionState::mu.
struct SessionState {
  std::mutex mu;
  grpc::ServerBidiReactor<pb::WorkerMessage, pb::CoordinatorMessage>* reactor = nullptr;
  std::deque<pb::CoordinatorMessage> out;
  bool writing = false;
  bool finish_pending = false;
  grpc::Status finish_status;
  bool finished = false;
  bool done = false;

  void Send(pb::CoordinatorMessage m) {
    std::lock_guard lock(mu);
    if (done || finished || finish_pending || out.size() > 1024) return;
    out.push_back(std::move(m));
    if (!writing) {
      writing = true;
      reactor->StartWrite(&out.front());
    }
  }
  void End(grpc::Status s) {
    std::lock_guard lock(mu);
    if (done || finished || finish_pending) return;
    if (writing) {
      finish_pending = true;
      finish_status = std::move(s);
      return;
    }
    finished = true;
    reactor->Finish(std::move(s));
  }
  void WriteDone(bool ok) {
    std::lock_guard lock(mu);
    if (!out.empty()) out.pop_front();
    if (ok && !out.empty() && !finish_pending) {
      reactor->StartWrite(&out.front());
      return;
    }
    writing = false;
    if (!ok) out.clear();
    if (finish_pending && !finished) {
      finished = true;
      reactor->Finish(finish_status);
    } else if (!ok && !finished) {
      finished = true;
      reactor->Finish(grpc::Status::CANCELLED);
    }
  }
};

struct WorkerEntry {
  pb::RegisterRequest spec;
  uint64_t epoch = 0;
  std::string state = "idle";  // idle | loading | joining | ready | draining | dead
  int stage = -1;
  uint64_t assignment_id = 0;
  bool release_sent = false;
  bool cordoned = false;  // drained by an admin: never assigned again
  int64_t failed_until_ms = 0;
  int64_t registered_ms = 0;
  int64_t last_hb_ms = 0;
  int64_t state_since_ms = 0;
  uint64_t processed_at_assign = 0;
  bool had_traffic = false;
  pb::LoadReport load;
  std::vector<std::string> links;
  std::shared_ptr<SessionState> session;
  std::string dead_reason;
  int64_t dead_ms = 0;
  // Loaded from the state dir and not reconnected yet: not declared dead before this time.
  int64_t unconfirmed_until_ms = 0;
};

struct Coordinator::Impl {
  CoordinatorOptions options;
  ex::PipelinePlan plan;
  std::shared_ptr<Store> store;
  std::string store_address;
  std::unique_ptr<policy::Policy> policy;

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, WorkerEntry> live;
  std::deque<WorkerEntry> dead;
  std::vector<int> target;
  std::map<int, int> lent;  // stage -> replicas it gave up to refill a stage a failure emptied
  std::deque<pb::Event> events;
  std::vector<pb::Recovery> recoveries;
  uint64_t next_epoch = 0;
  uint64_t next_assignment = 1;
  bool stopping = false;
  bool wake = false;
  policy::PolicyMemory memory;
  int64_t next_policy_ms = 0;
  std::function<policy::FrontendMetrics()> frontend_metrics;
  // Incremental indexes of `live` (worker_index.h), updated wherever a worker's state, stage,
  // session, cordon or heartbeat deadline changes, so that the control loop, assignments and
  // Status never walk every live worker: per-stage counts and members, the idle pool, the state
  // counts of the gauges (`index`) and the heartbeat deadlines (`hb_due`).
  WorkerIndex index;
  DueQueue hb_due;
  // Registered, connected workers at each whole minute (the last entry: the current minute's
  // latest count), for policies that take an availability forecast (parcae: ForecastNaive).
  std::vector<double> workers_per_minute;
  int64_t workers_minute = -1;
  // Store writes decided under mu, done by the control thread outside it.
  struct Gone {
    std::string id, incarnation;
  };
  std::vector<Gone> to_mark_gone;
  // The routing weights in force (policy SetRoutingWeights), published by the control thread
  // under ex::RoutingKey in the store, where every member's node reads them (routing.h).
  ex::RoutingTable routing;
  bool routing_dirty = false;
  std::string frontend_incarnation;  // read from the registry by the control thread

  // Durable state (options.state_dir; see Journal()). What the log last recorded, to append
  // only changes; `wal` is null without a state dir.
  struct Journaled {
    uint64_t epoch = 0;
    std::string state;
    int stage = -1;
    uint64_t assignment_id = 0;
    bool release_sent = false, cordoned = false, had_traffic = false;
    friend bool operator==(const Journaled&, const Journaled&) = default;
  };
  std::unique_ptr<StateLog> wal;  // WriteAheadLog, or options.state_log (etcd)
  std::map<std::string, Journaled> journaled;
  uint64_t journaled_epoch = 0, journaled_assignment = 0;
  std::vector<int> journaled_target;
  pb::PolicyState journaled_policy;
  std::vector<std::string> journaled_recoveries;  // serialized
  std::atomic<bool> wal_error_logged{false};  // (written outside mu by the control thread)
  int64_t restore_hold_until_ms = 0;  // no policy decisions while restored workers reconnect
  bool fenced = false;  // the state log refused us for good (etcd leadership lost)

  // Prometheus (SetMetrics; a disabled registry until then). Handles guarded by mu.
  std::unique_ptr<ex::Metrics> own_metrics = ex::Metrics::Disabled();
  struct {
    ex::Counter registered, dead_session, dead_heartbeat, dead_report, dead_other, restored,
        policy_actions;
    ex::Gauge idle, serving, draining;
    std::vector<ex::Gauge> target, ready;
    ex::Histogram restore_seconds, decide_seconds;
  } m_;
  void InitMetrics(ex::Metrics& m) {
    const ex::Labels l = {{"pipeline", plan.name}};
    m_.registered = m.AddCounter("archi_coordinator_registrations_total",
                                 "worker registrations (fresh epochs)", l);
    auto dead = [&](const char* cause) {
      ex::Labels lc = l;
      lc["cause"] = cause;
      return m.AddCounter("archi_coordinator_workers_dead_total",
                          "workers declared dead, by how it was detected", lc);
    };
    m_.dead_session = dead("session");
    m_.dead_heartbeat = dead("heartbeat");
    m_.dead_report = dead("report");
    m_.dead_other = dead("other");
    m_.restored = m.AddCounter("archi_coordinator_recoveries_total",
                               "failures whose replacement received traffic", l);
    m_.policy_actions =
        m.AddCounter("archi_coordinator_policy_actions_total", "actions the policy applied", l);
    auto state = [&](const char* s) {
      ex::Labels ls = l;
      ls["state"] = s;
      return m.AddGauge("archi_coordinator_workers", "live workers by state", ls);
    };
    m_.idle = state("idle");
    m_.serving = state("serving");
    m_.draining = state("draining");
    m_.target.clear();
    m_.ready.clear();
    for (int s = 0; s < plan.num_stages(); ++s) {
      ex::Labels ls = l;
      ls["stage"] = std::to_string(s);
      m_.target.push_back(m.AddGauge("archi_coordinator_stage_target_replicas",
                                     "target replicas of the stage", ls));
      m_.ready.push_back(m.AddGauge("archi_coordinator_stage_ready_replicas",
                                    "ready replicas of the stage", ls));
    }
    m_.restore_seconds = m.AddHistogram(
        "archi_coordinator_recovery_seconds",
        "failure detected to the replacement's first micro-batch", ex::Metrics::LatencyBuckets(), l);
    m_.decide_seconds = m.AddHistogram("archi_coordinator_policy_decide_seconds",
                                       "time of one Policy::Decide", ex::Metrics::LatencyBuckets(),
                                       l);
  }
  void UpdateGauges() {
    m_.idle.Set(index.idle());
    m_.serving.Set(index.serving());
    m_.draining.Set(index.draining());
    for (size_t s = 0; s < m_.target.size(); ++s) {
      m_.target[s].Set(target[s]);
      m_.ready[s].Set(index.Ready(static_cast<int>(s)));
    }
  }

  // ---- the incremental indexes (mu held) ----
  static WorkerFacts FactsOf(const WorkerEntry& w) {
    WorkerFacts f;
    f.state = WorkerFacts::ParseState(w.state);
    f.stage = w.stage;
    f.idle_eligible = w.state == "idle" && w.session != nullptr && !w.cordoned;
    f.capacity = w.spec.capacity();
    return f;
  }
  // The first time at which the heartbeat timeout declares `w` dead (ControlLoop's rule: more
  // than heartbeat_timeout_ms since its last heartbeat, and not within a restart's grace).
  int64_t HeartbeatDue(const WorkerEntry& w) const {
    return std::max(w.last_hb_ms + options.heartbeat_timeout_ms + 1, w.unconfirmed_until_ms);
  }
  // After a change of a live worker's state, stage, session or cordon.
  void Reindex(const WorkerEntry& w) { index.Update(w.spec.worker_id(), FactsOf(w)); }
  // After a worker enters `live`, or its heartbeat deadline moved earlier (a heartbeat that moves
  // it later needs nothing: DueQueue re-reads it when the old key comes due).
  void Track(const WorkerEntry& w) {
    Reindex(w);
    hb_due.Set(w.spec.worker_id(), HeartbeatDue(w));
  }
  void Untrack(const std::string& id) {
    index.Remove(id);
    hb_due.Erase(id);
  }
  // The live workers of stages a and b (either may be outside the plan), in id order (the order
  // a walk of `live` visits them in).
  std::vector<const std::string*> MembersOf(int a, int b) const {
    const auto& x = index.Members(a);
    const auto& y = index.Members(b);
    std::vector<const std::string*> out;
    out.reserve(x.size() + y.size());
    auto i = x.begin(), j = y.begin();
    while (i != x.end() || j != y.end()) {
      if (j == y.end() || (i != x.end() && *i < *j)) {
        out.push_back(&*i++);
      } else {
        out.push_back(&*j++);
      }
    }
    return out;
  }
  // Recomputes every index from `live` and aborts on a difference (options.verify_indexes).
  void VerifyIndexes() const {
    ARCHI_CHECK(index.size() == live.size() && hb_due.size() == live.size(),
                "coordinator index: {} indexed, {} deadlines, {} live", index.size(),
                hb_due.size(), live.size());
    WorkerIndex want(plan.num_stages());
    for (const auto& [id, w] : live) {
      want.Update(id, FactsOf(w));
      const WorkerFacts* f = index.Find(id);
      ARCHI_CHECK(f != nullptr && *f == FactsOf(w), "coordinator index: stale facts of {}", id);
      ARCHI_CHECK(hb_due.contains(id), "coordinator index: no heartbeat deadline for {}", id);
    }
    for (int s = 0; s < plan.num_stages(); ++s) {
      ARCHI_CHECK(want.Assigned(s) == index.Assigned(s) && want.Ready(s) == index.Ready(s) &&
                      want.Members(s) == index.Members(s),
                  "coordinator index: stage {} counts or members differ", s);
    }
    ARCHI_CHECK(want.idle() == index.idle() && want.draining() == index.draining() &&
                    want.idle_pool() == index.idle_pool(),
                "coordinator index: idle pool or state counts differ");
  }

  std::unique_ptr<pb::Coordinator::CallbackService> worker_service;
  std::unique_ptr<pb::CoordinatorAdmin::CallbackService> admin_service;
  std::jthread control;

  // ---- helpers (mu held) ----
  void Event(const std::string& kind, const std::string& worker, int stage,
             const std::string& detail) {
    pb::Event e;
    e.set_unix_ms(UnixMillis());
    e.set_kind(kind);
    e.set_worker_id(worker);
    e.set_stage(stage);
    e.set_detail(detail);
    ARCHI_LOG_INFO("coordinator: {} {}{}{}", kind, worker,
                   stage >= 0 ? " stage " + std::to_string(stage) : std::string(),
                   detail.empty() ? std::string() : ": " + detail);
    events.push_back(std::move(e));
    while (events.size() > options.max_events) events.pop_front();
  }

  // ---- member credentials (the store guard; only with a token) ----
  std::string member_secret;  // MemberSecret(token, pipeline) (auth.h); empty: no guard
  std::string frontend_credential;  // FrontendStoreCredential(token, pipeline)

  std::string Credential(const std::string& id, uint64_t epoch) const {
    const std::string tag = id + "." + std::to_string(epoch);
    return tag + ":" + HmacSha256Hex(member_secret, tag);
  }

  // The store guard (StoreServer::SetAuthorizer): see Assignment.member_credential.
  Status AuthorizeStore(StoreAccess access, const std::string& key, const std::string& cred) {
    const std::string world_root = "archi/world/";
    const std::string world_prefix = world_root + plan.name + ":";
    const std::string pipe_prefix = "archi/pipeline/" + plan.name + "/";
    const bool in_world = key.starts_with(world_prefix);
    const bool in_pipe = key.starts_with(pipe_prefix);
    // A prefix (List, DeletePrefix) that covers the guarded keys is guarded too.
    const bool covers = world_prefix.starts_with(key) || pipe_prefix.starts_with(key);
    if (!in_world && !in_pipe && !covers) return Status::Ok();
    if (cred.empty()) {
      return UnauthenticatedError("store key '" + key + "' of pipeline " + plan.name +
                                  " needs a member credential");
    }
    if (cred == frontend_credential) return Status::Ok();  // the pipeline's own frontend
    const size_t colon = cred.rfind(':');
    const size_t dot = cred.rfind('.', colon);
    if (colon == std::string::npos || dot == std::string::npos || dot == 0) {
      return PermissionDeniedError("malformed member credential");
    }
    const std::string tag = cred.substr(0, colon);
    const std::string id = cred.substr(0, dot);
    const std::string mac = cred.substr(colon + 1);
    const std::string want = HmacSha256Hex(member_secret, tag);
    unsigned diff = mac.size() == want.size() ? 0u : 1u;
    for (size_t i = 0; i < want.size(); ++i) {
      diff |= static_cast<unsigned>((i < mac.size() ? mac[i] : 0) ^ want[i]);
    }
    if (diff != 0) return PermissionDeniedError("invalid member credential for " + tag);
    std::lock_guard lock(mu);
    auto self = live.find(id);
    if (self == live.end() || tag != id + "." + std::to_string(self->second.epoch) ||
        self->second.stage < 0) {
      return PermissionDeniedError("member " + tag + " is not a live assigned member (retired?)");
    }
    if (covers && !in_world && !in_pipe) {
      if (access == StoreAccess::kRead) return Status::Ok();
      return PermissionDeniedError("a member may not write the prefix '" + key + "'");
    }
    if (in_pipe) {
      if (access == StoreAccess::kRead) return Status::Ok();
      const std::string rest = key.substr(pipe_prefix.size());
      if (rest == "members/" + id || rest == "alive/" + tag) return Status::Ok();
      return PermissionDeniedError("member " + tag + " may not write '" + key + "'");
    }
    // A world key: "archi/world/<pipeline>:<up>.<inc>:<down>.<inc>[/...]".
    const std::string name = key.substr(world_root.size(), key.find('/', world_root.size()) -
                                                               world_root.size());
    const size_t c1 = name.find(':'), c2 = name.find(':', c1 + 1);
    if (c2 == std::string::npos || name.find(':', c2 + 1) != std::string::npos) {
      return PermissionDeniedError("'" + name + "' is not a pipeline world name");
    }
    const std::string up = name.substr(c1 + 1, c2 - c1 - 1), down = name.substr(c2 + 1);
    if (up != tag && down != tag) {
      return PermissionDeniedError("world " + name + " does not include member " + tag);
    }
    const bool self_up = up == tag;
    const std::string other = self_up ? down : up;
    const size_t od = other.rfind('.');
    const std::string other_id = other.substr(0, od == std::string::npos ? 0 : od);
    const std::string other_inc = od == std::string::npos ? "" : other.substr(od + 1);
    const int self_stage = self->second.stage;
    int other_stage = -2;
    if (other_id == "frontend") {
      // Any incarnation: the registry's current one may be newer than what the control thread
      // last read (a restarted frontend), and a world with a frontend that is not there is
      // joined by nobody.
      other_stage = self_up ? plan.num_stages() : -1;  // the frontend is both ends of the pipe
    } else if (auto o = live.find(other_id);
               o != live.end() && std::to_string(o->second.epoch) == other_inc) {
      other_stage = o->second.stage;
    } else {
      for (const auto& d : dead) {  // a world with a dead peer may still be cleaned up
        if (d.spec.worker_id() == other_id && std::to_string(d.epoch) == other_inc) {
          other_stage = d.stage;
        }
      }
    }
    if (other_stage == -2) {
      return PermissionDeniedError("world " + name + ": " + other + " is no member of " +
                                   plan.name);
    }
    const int up_stage = self_up ? self_stage : other_stage;
    const int down_stage = self_up ? other_stage : self_stage;
    if (down_stage != up_stage + 1) {
      return PermissionDeniedError("world " + name + " does not join adjacent stages (" +
                                   std::to_string(up_stage) + " -> " +
                                   std::to_string(down_stage) + ")");
    }
    return Status::Ok();
  }

  std::string WorldName(const std::string& up, const std::string& up_inc, const std::string& down,
                        const std::string& down_inc) const {
    return plan.name + ":" + up + "." + up_inc + ":" + down + "." + down_inc;
  }

  // The worlds member (id, epoch) of `stage` has with the current neighbours.
  std::vector<pb::WorldSpec> WorldsOf(const std::string& id, uint64_t epoch, int stage) const {
    std::vector<pb::WorldSpec> out;
    const std::string inc = std::to_string(epoch);
    auto add = [&](const std::string& peer, const std::string& peer_inc, bool peer_downstream) {
      pb::WorldSpec w;
      w.set_peer_id(peer);
      w.set_peer_epoch(peer_inc);
      w.set_rank(peer_downstream ? 0 : 1);
      w.set_name(peer_downstream ? WorldName(id, inc, peer, peer_inc)
                                 : WorldName(peer, peer_inc, id, inc));
      out.push_back(std::move(w));
    };
    for (const std::string* pid : MembersOf(stage - 1, stage + 1)) {
      const WorkerEntry& w = live.at(*pid);
      if (*pid == id || !Assigned(w.state)) continue;
      if (w.stage == stage - 1) add(*pid, std::to_string(w.epoch), false);
      if (w.stage == stage + 1) add(*pid, std::to_string(w.epoch), true);
    }
    if (!frontend_incarnation.empty()) {
      if (stage == 0) add("frontend", frontend_incarnation, false);
      if (stage == plan.num_stages() - 1) add("frontend", frontend_incarnation, true);
    }
    return out;
  }

  void Assign(WorkerEntry& w, int stage, const std::string& why) {
    w.state = "loading";
    w.stage = stage;
    Reindex(w);
    w.assignment_id = next_assignment++;
    w.release_sent = false;
    w.had_traffic = false;
    w.processed_at_assign = 0;
    w.state_since_ms = UnixMillis();
    SendAssignment(w);
    Event("assigned", w.spec.worker_id(), stage, why);
  }

  // Sends w's current assignment on its session (again, when it resumed without it).
  void SendAssignment(const WorkerEntry& w) {
    if (!w.session) return;
    pb::CoordinatorMessage m;
    auto* a = m.mutable_assign();
    a->set_assignment_id(w.assignment_id);
    a->set_pipeline(plan.name);
    a->set_stage(w.stage);
    a->set_layer_begin(plan.stages[static_cast<size_t>(w.stage)].begin);
    a->set_layer_end(plan.stages[static_cast<size_t>(w.stage)].end);
    a->set_store_address(store_address);
    if (!member_secret.empty()) a->set_member_credential(Credential(w.spec.worker_id(), w.epoch));
    for (auto& ws : WorldsOf(w.spec.worker_id(), w.epoch, w.stage)) *a->add_worlds() = ws;
    w.session->Send(std::move(m));
  }

  void Release(WorkerEntry& w, const std::string& why) {
    if (w.release_sent) return;
    w.release_sent = true;
    w.state = "draining";
    Reindex(w);
    w.state_since_ms = UnixMillis();
    pb::CoordinatorMessage m;
    m.mutable_release()->set_assignment_id(w.assignment_id);
    m.mutable_release()->set_reason(why);
    if (w.session) w.session->Send(std::move(m));
    Event("release", w.spec.worker_id(), w.stage, why);
  }

  void DeclareDead(const std::string& id, const std::string& cause) {
    auto it = live.find(id);
    if (it == live.end()) return;
    WorkerEntry w = std::move(it->second);
    live.erase(it);
    Untrack(id);
    const int64_t now = UnixMillis();
    (cause.starts_with("session") ? m_.dead_session
     : cause.starts_with("no heartbeat") ? m_.dead_heartbeat
     : cause.starts_with("neighbour") ? m_.dead_report
                                       : m_.dead_other)
        .Increment();
    w.dead_reason = cause;
    w.dead_ms = now;
    const int stage = w.stage;
    const bool serving = stage >= 0 && (Assigned(w.state) || w.state == "draining");
    Event("dead", id, stage,
          cause + " (epoch " + std::to_string(w.epoch) + " retired; last heartbeat " +
              std::to_string(now - w.last_hb_ms) + " ms ago)");
    if (w.session) {
      w.session->End(Grpc(grpc::StatusCode::FAILED_PRECONDITION,
                          "worker " + id + " epoch " + std::to_string(w.epoch) +
                              " was declared dead: " + cause));
      w.session.reset();
    }
    if (serving) {
      to_mark_gone.push_back({id, std::to_string(w.epoch)});
      // Tell its neighbours to drop its worlds now (they would also see the registry).
      for (const std::string* nid_ptr : MembersOf(stage - 1, stage + 1)) {
        const std::string& nid = *nid_ptr;
        WorkerEntry& n = live.at(nid);
        if (!n.session || n.stage < 0 || std::abs(n.stage - stage) != 1) continue;
        pb::CoordinatorMessage m;
        auto* r = m.mutable_worlds()->add_remove();
        r->set_peer_id(id);
        r->set_peer_epoch(std::to_string(w.epoch));
        const bool peer_downstream = n.stage < stage;  // n is upstream of the dead worker
        r->set_rank(peer_downstream ? 0 : 1);
        r->set_name(peer_downstream
                        ? WorldName(nid, std::to_string(n.epoch), id, std::to_string(w.epoch))
                        : WorldName(id, std::to_string(w.epoch), nid, std::to_string(n.epoch)));
        n.session->Send(std::move(m));
      }
      if (w.state != "draining") {
        pb::Recovery r;
        r.set_worker_id(id);
        r.set_stage(stage);
        r.set_cause(cause);
        r.set_detected_unix_ms(now);
        r.set_last_heartbeat_unix_ms(w.last_hb_ms);
        recoveries.push_back(std::move(r));
      }
    }
    dead.push_back(std::move(w));
    while (dead.size() > options.max_dead) dead.pop_front();
    wake = true;
    cv.notify_all();
  }

  int Active(int stage) const { return index.Assigned(stage); }

  // The idle worker to assign next: highest capacity, then smallest id; none whose assignment
  // failed in the last 5 s.
  WorkerEntry* PickIdle(int64_t now) {
    for (const auto& [capacity, id] : index.idle_pool()) {
      WorkerEntry& w = live.at(id);
      if (w.failed_until_ms <= now) return &w;
    }
    return nullptr;
  }

  // Brings every stage to its target: assign idle workers, drain extras, re-plan when a failure
  // emptied a stage and nobody is idle; then gives lent replicas back while idle workers are left.
  void Reconcile() {
    FillStages();
    while (!lent.empty() && PickIdle(UnixMillis()) != nullptr) {
      auto it = lent.begin();
      ++target[static_cast<size_t>(it->first)];
      Event("replan", "", it->first,
            "an idle worker is available: target back to " +
                std::to_string(target[static_cast<size_t>(it->first)]));
      if (--it->second == 0) lent.erase(it);
      FillStages();
    }
  }

  void FillStages() {
    const int64_t now = UnixMillis();
    for (int s = 0; s < plan.num_stages(); ++s) {
      int active = Active(s);
      while (active < target[static_cast<size_t>(s)]) {
        WorkerEntry* w = PickIdle(now);
        if (!w) break;
        Assign(*w, s, "stage " + std::to_string(s) + " has " + std::to_string(active) + " of " +
                          std::to_string(target[static_cast<size_t>(s)]) + " replicas");
        ++active;
        for (auto& r : recoveries) {
          if (r.stage() == s && r.decided_unix_ms() == 0) {
            r.set_decided_unix_ms(now);
            r.set_replacement(w->spec.worker_id());
            break;
          }
        }
      }
      // A failure left this stage empty and nobody is idle: take one replica from the stage with
      // the most (the capacity left is re-planned). Only after a failure: while workers are
      // still registering (start-up) a stage simply waits for the next one.
      bool failed_empty = false;
      for (const auto& r : recoveries) {
        failed_empty = failed_empty || (r.stage() == s && r.decided_unix_ms() == 0);
      }
      if (active == 0 && target[static_cast<size_t>(s)] > 0 && failed_empty) {
        int donor = -1, most = 1;
        for (int t = 0; t < plan.num_stages(); ++t) {
          const int a = Active(t);
          if (t != s && a > most && target[static_cast<size_t>(t)] > 1) {
            donor = t;
            most = a;
          }
        }
        if (donor >= 0) {
          --target[static_cast<size_t>(donor)];
          ++lent[donor];
          Event("replan", "", s,
                "no idle worker; moving one replica from stage " + std::to_string(donor) +
                    " (target now " + std::to_string(target[static_cast<size_t>(donor)]) + ")");
          for (auto& r : recoveries) {
            if (r.stage() == s && r.decided_unix_ms() == 0) r.set_decided_unix_ms(now);
          }
        }
      }
      // Extras: drain joining ones first, then the least busy.
      while (active > target[static_cast<size_t>(s)]) {
        WorkerEntry* pick = nullptr;
        for (const std::string& id : index.Members(s)) {
          WorkerEntry& w = live.at(id);
          if (w.stage != s || !Assigned(w.state) || w.release_sent) continue;
          auto rank = [](const WorkerEntry& e) {
            return std::make_pair(e.state == "ready" ? 1 : 0, e.load.queue_depth());
          };
          if (!pick || rank(w) < rank(*pick)) pick = &w;
        }
        if (!pick) break;
        Release(*pick, "stage " + std::to_string(s) + " has " + std::to_string(active) +
                           " replicas; target " + std::to_string(target[static_cast<size_t>(s)]));
        --active;
      }
    }
  }

  void UpdateRecoveries(int64_t now) {
    for (auto& r : recoveries) {
      if (r.worlds_removed_unix_ms() == 0) {
        const std::string tag = r.worker_id() + ".";
        bool still = false;
        for (const auto& d : dead) {
          if (d.spec.worker_id() != r.worker_id() || d.dead_ms != r.detected_unix_ms()) continue;
          const std::string full = r.worker_id() + "." + std::to_string(d.epoch);
          for (const auto& [id, w] : live) {
            still = still || std::find(w.links.begin(), w.links.end(), full) != w.links.end();
          }
        }
        if (!still) {
          r.set_worlds_removed_unix_ms(now);
          Event("worlds_removed", r.worker_id(), r.stage(),
                std::to_string(now - r.detected_unix_ms()) + " ms after detection");
        }
      }
      if (!r.replacement().empty() &&
          (r.replacement_ready_unix_ms() == 0 || r.traffic_restored_unix_ms() == 0)) {
        auto it = live.find(r.replacement());
        if (it == live.end()) continue;
        const WorkerEntry& w = it->second;
        if (r.replacement_ready_unix_ms() == 0 && w.state == "ready" && w.stage == r.stage()) {
          r.set_replacement_ready_unix_ms(now);
        }
        if (r.traffic_restored_unix_ms() == 0 && w.had_traffic && w.stage == r.stage()) {
          r.set_traffic_restored_unix_ms(now);
          m_.restored.Increment();
          m_.restore_seconds.Observe(static_cast<double>(now - r.detected_unix_ms()) / 1e3);
          Event("traffic_restored", r.replacement(), r.stage(),
                "replacing " + r.worker_id() + ": " +
                    std::to_string(now - r.detected_unix_ms()) + " ms after detection");
        }
      }
    }
  }

  // Per-minute count of registered workers -> the next 10 minutes (last value: ForecastNaive,
  // the forecaster docs/policies.md chose by error on the shared traces). Only parcae uses it.
  policy::Forecast AvailabilityForecastAt(int64_t now) {
    double n = 0;
    for (const auto& [id, w] : live) n += (w.session && !w.cordoned) ? 1 : 0;
    const int64_t minute = now / 60'000;
    if (workers_minute < 0 || minute < workers_minute) {
      workers_per_minute.assign(1, n);
    } else {
      for (int64_t m = workers_minute; m < minute; ++m) workers_per_minute.push_back(n);
      workers_per_minute.back() = n;
    }
    workers_minute = minute;
    if (workers_per_minute.size() > 120) {
      workers_per_minute.erase(workers_per_minute.begin(),
                               workers_per_minute.end() - 120);
    }
    if (!policy || policy->name() != "parcae") return {};
    return policy::AvailabilityForecast(policy::ForecastNaive(workers_per_minute, 10), now,
                                        60'000);
  }

  void PolicyTick(int64_t now) {
    if (!policy || now < next_policy_ms) return;
    if (restore_hold_until_ms > now) {  // restored workers still reconnecting: no decisions yet
      for (const auto& [id, w] : live) {
        if (w.unconfirmed_until_ms > 0) return;
      }
      restore_hold_until_ms = 0;
    }
    policy::ClusterState state;
    state.now_ms = now;
    state.memory = memory;
    policy::ClusterMetrics metrics;
    for (int s = 0; s < plan.num_stages(); ++s) {
      policy::Stage st;
      st.index = s;
      st.layer_begin = plan.stages[static_cast<size_t>(s)].begin;
      st.layer_end = plan.stages[static_cast<size_t>(s)].end;
      policy::StageMetrics sm;
      sm.stage = s;
      int ready = 0;
      for (const std::string& id : index.Members(s)) {
        const WorkerEntry& w = live.at(id);
        if (w.stage != s || (!Assigned(w.state) && w.state != "draining")) continue;
        policy::Replica r;
        r.worker = {id, w.spec.host(), w.spec.kind(), w.spec.capacity(), w.spec.price_per_hour()};
        r.state = w.state == "ready"      ? policy::ReplicaState::kReady
                  : w.state == "draining" ? policy::ReplicaState::kDraining
                                          : policy::ReplicaState::kJoining;
        r.state_since_ms = w.state_since_ms;
        st.replicas.push_back(r);
        if (w.state == "ready") {
          ++ready;
          sm.queue_depth += w.load.queue_depth() + static_cast<double>(w.load.inflight());
          sm.p50_ms = std::max(sm.p50_ms, w.load.compute_p50_ms());
          sm.p99_ms = std::max(sm.p99_ms, w.load.compute_p99_ms());
          sm.throughput_rps += w.load.throughput_bps();
          sm.utilisation += w.load.utilisation();
          sm.replicas.push_back(
              {id, w.load.queue_depth(), w.load.utilisation(), w.load.throughput_bps()});
        }
      }
      if (ready > 0) {
        sm.utilisation /= ready;
        metrics.stages.push_back(sm);
      }
      state.stages.push_back(std::move(st));
    }
    std::vector<const std::string*> idle_ids;  // in id order, as a walk of `live` finds them
    for (const auto& [capacity, id] : index.idle_pool()) idle_ids.push_back(&id);
    std::sort(idle_ids.begin(), idle_ids.end(),
              [](const std::string* a, const std::string* b) { return *a < *b; });
    for (const std::string* id : idle_ids) {
      const WorkerEntry& w = live.at(*id);
      state.idle.push_back(
          {*id, w.spec.host(), w.spec.kind(), w.spec.capacity(), w.spec.price_per_hour()});
    }
    if (frontend_metrics) metrics.frontend = frontend_metrics();
    if (options.slo_p99_ms > 0) metrics.frontend.slo_p99_ms = options.slo_p99_ms;
    const auto decide_t0 = std::chrono::steady_clock::now();
    policy::Plan p = policy->Decide(state, metrics, AvailabilityForecastAt(now));
    m_.decide_seconds.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - decide_t0).count());
    next_policy_ms = std::max(now + 10, std::min(p.next_evaluation_ms,
                                                 now + options.policy_interval_ms));
    if (Status v = policy::ValidatePlan(p, state); !v.ok()) {
      Event("policy_rejected", "", -1, std::string(policy->name()) + ": " + v.ToString());
      return;
    }
    memory = p.memory;
    for (const auto& a : p.actions) {
      std::visit(
          [&](const auto& op) {
            using T = std::decay_t<decltype(op)>;
            if constexpr (std::is_same_v<T, policy::SetRoutingWeights>) {
              // Applied by the data plane: published in the store (ControlLoop), read by every
              // member's node, which picks the downstream replica's kind by these weights.
              if (op.stage == -1) routing.clear();
              ex::KindWeights w;
              for (const auto& kw : op.weights) w[ex::NormalKind(kw.kind)] += kw.weight;
              if (w.empty()) {
                routing.erase(op.stage);
              } else {
                routing[op.stage] = std::move(w);
              }
              routing_dirty = true;
              Event("policy", "", op.stage, policy::ToString(a));
              m_.policy_actions.Increment();
              return;
            } else if constexpr (std::is_same_v<T, policy::SetBatchingGroups>) {
              // Batching groups act on the frontend's batcher: not applied live yet (issue 9).
              Event("policy", "", -1, policy::ToString(a));
              m_.policy_actions.Increment();
              return;
            } else {
            auto it = live.find(op.worker);
            if (it == live.end()) return;
            if constexpr (std::is_same_v<T, policy::AddReplica>) {
              ++target[static_cast<size_t>(op.stage)];
              Event("policy", op.worker, op.stage, policy::ToString(a));
              m_.policy_actions.Increment();
              Assign(it->second, op.stage, a.reason);
            } else {
              target[static_cast<size_t>(op.stage)] =
                  std::max(0, target[static_cast<size_t>(op.stage)] - 1);
              Event("policy", op.worker, op.stage, policy::ToString(a));
              m_.policy_actions.Increment();
              Release(it->second, a.reason);
            }
            }
          },
          a.op);
    }
  }

  void ControlLoop(std::stop_token st) {
    int64_t last_frontend_read = 0;
    int64_t last_routing_write = 0;
    uint64_t snapshot_lsn = 0;
    std::string snapshot;
    while (!st.stop_requested()) {
      std::vector<Gone> gone;
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return wake || stopping; });
        wake = false;
        if (stopping) return;
        if (wal && !fenced && !wal->Writable().ok()) {
          // Another coordinator leads (etcd): decide nothing, write nothing (not even "gone"
          // in the registry), end every session so workers move to the leader.
          fenced = true;
          Event("fenced", "", -1, "state writes refused (" + wal->Writable().ToString() + ")");
          for (auto& [id, w] : live) {
            if (w.session) {
              w.session->End(Grpc(grpc::StatusCode::UNAVAILABLE, "coordinator stepped down"));
            }
          }
        }
        if (fenced) continue;
        const int64_t now = UnixMillis();
        // Heartbeat timeouts (and restored workers past their grace) from the deadline queue:
        // each worker is looked at about once per timeout, not on every pass.
        std::vector<std::string> timed_out = hb_due.PopDue(now, [&](const std::string& id) {
          auto it = live.find(id);
          return it == live.end() ? now : HeartbeatDue(it->second);
        });
        std::sort(timed_out.begin(), timed_out.end());  // id order, as a walk of `live` had it
        for (const auto& id : timed_out) {
          auto it = live.find(id);
          if (it == live.end()) continue;
          const WorkerEntry& w = it->second;
          DeclareDead(id, w.unconfirmed_until_ms > 0
                              ? "did not reconnect within " +
                                    std::to_string(now - w.last_hb_ms) +
                                    " ms of the coordinator's restart"
                              : "no heartbeat for " + std::to_string(now - w.last_hb_ms) +
                                    " ms (timeout " +
                                    std::to_string(options.heartbeat_timeout_ms) + " ms)");
        }
        Reconcile();
        PolicyTick(now);
        UpdateRecoveries(now);
        UpdateGauges();
        if (options.verify_indexes) VerifyIndexes();
        gone.swap(to_mark_gone);
        Journal();
        if (wal && wal->records_since_snapshot() >= options.snapshot_every) {
          if (auto lsn = wal->BeginSnapshot(); lsn.ok()) {
            snapshot_lsn = *lsn;
            snapshot = Capture().SerializeAsString();
          }
        }
      }
      if (wal) {  // the batched flush (every <= 20 ms) and the snapshot, outside mu
        Status synced = wal->Sync();
        if (!synced.ok()) WalError(synced);
        if (snapshot_lsn > 0) {
          Status written = wal->WriteSnapshot(snapshot_lsn, snapshot);
          if (!written.ok()) WalError(written);
          snapshot_lsn = 0;
          snapshot.clear();
        }
      }
      for (const auto& g : gone) {
        Status s = ex::SetMemberState(*store, plan.name, g.id, g.incarnation, "gone");
        if (!s.ok() && s.code() != StatusCode::kNotFound) {
          ARCHI_LOG_WARN("coordinator: cannot mark {} gone in the registry: {}", g.id,
                         s.ToString());
        }
      }
      const int64_t now = UnixMillis();
      // Routing weights: written when they change, and again every 2 s while any are in force
      // (a frontend restarted with a fresh embedded store has lost them).
      std::string routing_value;
      {
        std::lock_guard lock(mu);
        if (routing_dirty || (!routing.empty() && now - last_routing_write > 2000)) {
          routing_value = ex::EncodeRoutingTable(routing);
          routing_dirty = false;
        }
      }
      if (!routing_value.empty()) {
        Status s = store->Set(ex::RoutingKey(plan.name), routing_value, Deadline::AfterMs(500));
        if (s.ok()) {
          last_routing_write = now;
        } else {
          ARCHI_LOG_WARN("coordinator: cannot publish routing weights: {}", s.ToString());
          std::lock_guard lock(mu);
          routing_dirty = true;
        }
      }
      if (now - last_frontend_read > 500) {
        last_frontend_read = now;
        auto f = store->Get(ex::MembersPrefix(plan.name) + "frontend", Deadline::AfterMs(200));
        if (f.ok()) {
          auto m = ex::MemberInfo::FromJson(*f);
          std::lock_guard lock(mu);
          if (m.ok()) frontend_incarnation = m->incarnation;
        }
      }
    }
  }

  // ---- durable state (options.state_dir) ----
  pb::DurableWorker ToDurable(const WorkerEntry& w) const {
    pb::DurableWorker d;
    *d.mutable_spec() = w.spec;
    d.set_epoch(w.epoch);
    d.set_state(w.state);
    d.set_stage(w.stage);
    d.set_assignment_id(w.assignment_id);
    d.set_release_sent(w.release_sent);
    d.set_cordoned(w.cordoned);
    d.set_had_traffic(w.had_traffic);
    d.set_registered_unix_ms(w.registered_ms);
    d.set_state_since_unix_ms(w.state_since_ms);
    d.set_dead_reason(w.dead_reason);
    d.set_dead_unix_ms(w.dead_ms);
    if (w.dead_ms != 0) d.set_last_heartbeat_unix_ms(w.last_hb_ms);
    return d;
  }
  static WorkerEntry FromDurable(const pb::DurableWorker& d) {
    WorkerEntry w;
    w.spec = d.spec();
    w.epoch = d.epoch();
    w.state = d.state();
    w.stage = d.stage();
    w.assignment_id = d.assignment_id();
    w.release_sent = d.release_sent();
    w.cordoned = d.cordoned();
    w.had_traffic = d.had_traffic();
    w.registered_ms = d.registered_unix_ms();
    w.state_since_ms = d.state_since_unix_ms();
    w.dead_reason = d.dead_reason();
    w.dead_ms = d.dead_unix_ms();
    w.last_hb_ms = d.last_heartbeat_unix_ms();
    return w;
  }
  static Journaled Summary(const WorkerEntry& w) {
    return {w.epoch,        w.state,    w.stage,      w.assignment_id,
            w.release_sent, w.cordoned, w.had_traffic};
  }
  pb::PolicyState PolicyProto() const {
    return ToProto(policy ? std::string(policy->name()) : "none", options.slo_p99_ms, memory);
  }
  void WalError(const Status& s) {
    if (wal_error_logged.exchange(true)) return;  // once per process
    ARCHI_LOG_ERROR("coordinator: state log in {}: {} (changes may not survive a restart)",
                    StateWhere(), s.ToString());
  }
  void Append(const pb::StateRecord& r) {
    if (auto lsn = wal->Append(r.SerializeAsString()); !lsn.ok()) WalError(lsn.status());
  }

  // The whole durable state (mu held): the snapshot.
  pb::CoordinatorState Capture() const {
    pb::CoordinatorState s;
    s.set_pipeline(plan.name);
    s.set_num_stages(plan.num_stages());
    s.mutable_counters()->set_next_epoch(next_epoch);
    s.mutable_counters()->set_next_assignment(next_assignment);
    for (int t : target) s.mutable_targets()->add_replicas(t);
    *s.mutable_policy() = PolicyProto();
    for (const auto& [id, w] : live) *s.add_live() = ToDurable(w);
    for (const auto& w : dead) *s.add_dead() = ToDurable(w);
    for (const auto& r : recoveries) *s.add_recoveries() = r;
    return s;
  }

  // Appends a record for every durable change since the last call (mu held) and returns the
  // last lsn (0 without a state dir). Called at the end of every locked section that may change
  // durable state, so each change is in the log (written: it survives a kill -9) before the lock
  // is released; fdatasync follows on the control thread within 20 ms, or before Register
  // answers. Changes that only a heartbeat made are re-derived from the next heartbeat anyway.
  // Cost: O(workers) comparisons of a few fields.
  uint64_t Journal() {
    if (!wal) return 0;
    const int64_t now = UnixMillis();
    for (auto it = journaled.begin(); it != journaled.end();) {  // the dead first
      auto l = live.find(it->first);
      if (l != live.end() && l->second.epoch == it->second.epoch) {
        ++it;
        continue;
      }
      pb::StateRecord r;
      auto d = std::find_if(dead.rbegin(), dead.rend(), [&](const WorkerEntry& e) {
        return e.spec.worker_id() == it->first && e.epoch == it->second.epoch;
      });
      if (d != dead.rend()) {
        *r.mutable_dead() = ToDurable(*d);
      } else {
        r.mutable_dead()->mutable_spec()->set_worker_id(it->first);
        r.mutable_dead()->set_epoch(it->second.epoch);
        r.mutable_dead()->set_state("dead");
        r.mutable_dead()->set_stage(-1);
        r.mutable_dead()->set_dead_unix_ms(now);
      }
      Append(r);
      it = journaled.erase(it);
    }
    for (const auto& [id, w] : live) {
      const Journaled j = Summary(w);
      auto it = journaled.find(id);
      if (it != journaled.end() && it->second == j) continue;
      pb::StateRecord r;
      *r.mutable_worker() = ToDurable(w);
      Append(r);
      journaled[id] = j;
    }
    if (next_epoch != journaled_epoch || next_assignment != journaled_assignment) {
      pb::StateRecord r;
      r.mutable_counters()->set_next_epoch(next_epoch);
      r.mutable_counters()->set_next_assignment(next_assignment);
      Append(r);
      journaled_epoch = next_epoch;
      journaled_assignment = next_assignment;
    }
    if (target != journaled_target) {
      pb::StateRecord r;
      for (int t : target) r.mutable_targets()->add_replicas(t);
      Append(r);
      journaled_target = target;
    }
    const std::string policy_name = policy ? std::string(policy->name()) : "none";
    if (policy_name != journaled_policy.name() ||
        options.slo_p99_ms != journaled_policy.slo_p99_ms() ||
        memory != FromProto(journaled_policy)) {
      pb::StateRecord r;
      *r.mutable_policy() = PolicyProto();
      Append(r);
      journaled_policy = r.policy();
    }
    for (size_t i = 0; i < recoveries.size(); ++i) {
      std::string bytes = recoveries[i].SerializeAsString();
      if (i < journaled_recoveries.size() && journaled_recoveries[i] == bytes) continue;
      pb::StateRecord r;
      r.mutable_recovery()->set_index(static_cast<uint32_t>(i));
      *r.mutable_recovery()->mutable_recovery() = recoveries[i];
      Append(r);
      if (i < journaled_recoveries.size()) {
        journaled_recoveries[i] = std::move(bytes);
      } else {
        journaled_recoveries.push_back(std::move(bytes));
      }
    }
    return wal->last_lsn();
  }

  // What the log holds is the current state (after loading it, or a snapshot of it).
  void MarkJournaled() {
    journaled.clear();
    for (const auto& [id, w] : live) journaled[id] = Summary(w);
    journaled_epoch = next_epoch;
    journaled_assignment = next_assignment;
    journaled_target = target;
    journaled_policy = PolicyProto();
    journaled_recoveries.clear();
    for (const auto& r : recoveries) journaled_recoveries.push_back(r.SerializeAsString());
  }

  // Opens the state dir (before any RPC or the control thread): loads snapshot + log, restores
  // workers as alive but unconfirmed, and writes a fresh snapshot (compacting the log).
  Status OpenState() {
    WalContents c;
    Result<std::unique_ptr<StateLog>> opened = [&]() -> Result<std::unique_ptr<StateLog>> {
      if (options.state_log) return options.state_log(&c);
      ARCHI_ASSIGN_OR_RETURN(auto w, WriteAheadLog::Open(options.state_dir, &c));
      return std::unique_ptr<StateLog>(std::move(w));
    }();
    if (!opened.ok()) {
      return Status(opened.status().code(),
                    "coordinator state in " + StateWhere() + ": " +
                        std::string(opened.status().message()));
    }
    wal = std::move(*opened);
    if (!c.torn.empty()) {
      ARCHI_LOG_WARN("coordinator: dropped a torn last record of the state log ({})", c.torn);
    }
    bool found = false;
    auto st = RebuildState(c, plan.name, plan.num_stages(), options.max_dead, &found);
    if (!st.ok()) {
      return Status(st.status().code(), "coordinator state in " + StateWhere() + ": " +
                                            std::string(st.status().message()));
    }
    const int64_t now = UnixMillis();
    std::lock_guard lock(mu);
    if (found) {
      // Counters skip ahead: an id handed out after the last fdatasync (a machine crash) is
      // never handed out twice. Epochs also stay above the clock-based start.
      constexpr uint64_t kGap = 1024;
      next_epoch = std::max(next_epoch, st->counters().next_epoch() + kGap);
      next_assignment = std::max(next_assignment, st->counters().next_assignment() + kGap);
      if (st->targets().replicas_size() == plan.num_stages()) {
        target.assign(st->targets().replicas().begin(), st->targets().replicas().end());
      }
      if (!st->policy().name().empty()) {
        // "none": no policy
        auto restored = policy::MakePolicy(st->policy().name(), options.policy_options);
        if (restored.ok()) {
          policy = std::move(*restored);
        } else {
          policy.reset();
        }
        options.slo_p99_ms = st->policy().slo_p99_ms();
        memory = FromProto(st->policy());
      }
      // Agents retry their resume with backoff (up to 2 s between tries) and gRPC's reconnect
      // backoff on top: 4-8 s after a restart on a loaded host. A serving worker that really
      // died is declared dead sooner, when a neighbour reports its world broken.
      const int grace = options.resume_grace_ms > 0
                            ? options.resume_grace_ms
                            : std::max(3 * options.heartbeat_timeout_ms, 15'000);
      for (const auto& d : st->live()) {
        WorkerEntry w = FromDurable(d);
        w.last_hb_ms = now;
        w.unconfirmed_until_ms = now + grace;
        const std::string id = w.spec.worker_id();
        Track(live[id] = std::move(w));
      }
      for (const auto& d : st->dead()) dead.push_back(FromDurable(d));
      recoveries.assign(st->recoveries().begin(), st->recoveries().end());
      restore_hold_until_ms = live.empty() ? 0 : now + grace;
      Event("restored", "", -1,
            std::to_string(live.size()) + " workers to reconnect within " +
                std::to_string(grace) + " ms, " + std::to_string(recoveries.size()) +
                " recoveries, from " + StateWhere() + " (lsn " +
                std::to_string(c.last_lsn) + ")");
    }
    MarkJournaled();
    ARCHI_ASSIGN_OR_RETURN(uint64_t lsn, wal->BeginSnapshot());
    return wal->WriteSnapshot(lsn, Capture().SerializeAsString());
  }

  // ---- RPCs ----
  grpc::Status Register(grpc::CallbackServerContext* ctx, const pb::RegisterRequest& req,
                        pb::RegisterResponse* resp);
  void OnMessage(const std::shared_ptr<SessionState>& session, std::string* bound_id,
                 uint64_t* bound_epoch, const pb::WorkerMessage& m, grpc::Status* end);
  void OnSessionEnd(const std::shared_ptr<SessionState>& session, const std::string& id,
                    uint64_t epoch);
  grpc::Status Authorize(grpc::CallbackServerContext* ctx) const {
    grpc::Status token = CheckToken(ctx->client_metadata(), options.token);
    if (!token.ok()) return token;
    if (wal) {  // fenced off (etcd: another coordinator leads now): serve nothing
      if (Status w = wal->Writable(); !w.ok()) {
        return Grpc(grpc::StatusCode::UNAVAILABLE, "coordinator stepped down: " + w.ToString());
      }
    }
    return grpc::Status::OK;
  }
  std::string StateWhere() const { return wal ? wal->Describe() : options.state_dir; }
  // The state log refused us for good (etcd: another coordinator leads). No I/O.
  bool Fenced() const { return wal && !wal->Writable().ok(); }
  grpc::Status GetStatus(pb::CoordinatorStatusResponse* resp);
  grpc::Status Scale(const pb::ScaleRequest& req, pb::ScaleResponse* resp);
  grpc::Status Drain(const pb::DrainWorkerRequest& req, pb::DrainWorkerResponse* resp);
  grpc::Status SetPolicy(const pb::SetPolicyRequest& req, pb::SetPolicyResponse* resp);
  grpc::Status GetEvents(const pb::EventsRequest& req, pb::EventsResponse* resp);
  void Shutdown();
};

grpc::Status Coordinator::Impl::Register(grpc::CallbackServerContext* ctx,
                                         const pb::RegisterRequest& req,
                                         pb::RegisterResponse* resp) {
  if (auto a = Authorize(ctx); !a.ok()) return a;
  if (Status v = ex::ValidateMemberId(req.worker_id()); !v.ok()) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, v.ToString());
  }
  if (req.worker_id() == "frontend") {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, "worker id 'frontend' is reserved");
  }
  if (req.host().size() > kMaxStringField || req.kind().size() > kMaxStringField) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, "host and kind must be at most 256 bytes");
  }
  if (req.pid() < 0 || req.devices() < 0 || req.devices() > 4096) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, "pid must be >= 0 and devices 0..4096");
  }
  if (!(req.capacity() >= 0 && req.capacity() <= 1e6) ||
      !(req.price_per_hour() >= 0 && req.price_per_hour() <= 1e9)) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT,
                "capacity must be in [0, 1e6] and price_per_hour in [0, 1e9]");
  }
  std::unique_lock lock(mu);
  if (stopping) return Grpc(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down");
  const int64_t now = UnixMillis();
  auto it = live.find(req.worker_id());
  if (req.resume_epoch() != 0) {
    if (it == live.end() || it->second.epoch != req.resume_epoch()) {
      return Grpc(grpc::StatusCode::FAILED_PRECONDITION,
                  "epoch " + std::to_string(req.resume_epoch()) + " of worker " +
                      req.worker_id() + " is retired; register afresh");
    }
    it->second.last_hb_ms = now;
    Track(it->second);
    resp->set_epoch(it->second.epoch);
    resp->set_resumed(true);
    Event("resumed", req.worker_id(), it->second.stage, "epoch " + std::to_string(it->second.epoch));
  } else {
    if (it != live.end()) {
      if (it->second.session && now - it->second.last_hb_ms <= options.heartbeat_timeout_ms) {
        return Grpc(grpc::StatusCode::ALREADY_EXISTS,
                    "worker '" + req.worker_id() + "' is registered and alive (epoch " +
                        std::to_string(it->second.epoch) + ")");
      }
      DeclareDead(req.worker_id(), "registered again as a new process");
    }
    WorkerEntry w;
    w.spec = req;
    if (w.spec.capacity() == 0) w.spec.set_capacity(1.0);
    w.epoch = ++next_epoch;
    w.registered_ms = now;
    w.last_hb_ms = now;
    w.state_since_ms = now;
    resp->set_epoch(w.epoch);
    m_.registered.Increment();
    Event("registered", req.worker_id(), -1,
          "epoch " + std::to_string(w.epoch) + ", host " + req.host() + ", pid " +
              std::to_string(req.pid()) + ", capacity " + std::to_string(w.spec.capacity()));
    Track(live[req.worker_id()] = std::move(w));
  }
  resp->set_pipeline(plan.name);
  resp->set_store_address(store_address);
  resp->set_heartbeat_interval_ms(options.heartbeat_interval_ms);
  resp->set_heartbeat_timeout_ms(options.heartbeat_timeout_ms);
  // The new epoch is durable before the worker hears of it: no restart hands it out again.
  const uint64_t lsn = Journal();
  lock.unlock();
  if (wal) {
    if (Status synced = wal->SyncTo(lsn); !synced.ok()) {
      return Grpc(grpc::StatusCode::UNAVAILABLE,
                  "coordinator cannot make its state durable: " + synced.ToString());
    }
  }
  return grpc::Status::OK;
}

void Coordinator::Impl::OnMessage(const std::shared_ptr<SessionState>& session,
                                  std::string* bound_id, uint64_t* bound_epoch,
                                  const pb::WorkerMessage& m, grpc::Status* end) {
  std::lock_guard lock(mu);
  if (Fenced()) {  // another coordinator leads (etcd): the worker moves there
    *end = Grpc(grpc::StatusCode::UNAVAILABLE, "coordinator stepped down: not the leader");
    return;
  }
  auto it = live.find(m.worker_id());
  if (it == live.end() || it->second.epoch != m.epoch()) {
    *end = Grpc(grpc::StatusCode::FAILED_PRECONDITION,
                "worker " + m.worker_id() + " epoch " + std::to_string(m.epoch()) +
                    " is not live (retired or never registered); register afresh");
    if (it == live.end() || m.epoch() < it->second.epoch) {
      Event("rejected", m.worker_id(), -1,
            "message with retired epoch " + std::to_string(m.epoch()));
    }
    return;
  }
  WorkerEntry& w = it->second;
  if (bound_id->empty()) {
    if (!m.has_heartbeat()) {
      *end = Grpc(grpc::StatusCode::INVALID_ARGUMENT, "a session must start with a heartbeat");
      return;
    }
    if (w.session && w.session != session) {
      w.session->End(Grpc(grpc::StatusCode::ABORTED, "replaced by a newer session"));
    }
    w.session = session;
    Reindex(w);
    *bound_id = m.worker_id();
    *bound_epoch = m.epoch();
    if (w.unconfirmed_until_ms > 0) {
      w.unconfirmed_until_ms = 0;
      Track(w);  // its deadline may move earlier: the restart's grace is over
      Event("reconnected", w.spec.worker_id(), w.stage,
            "epoch " + std::to_string(w.epoch) + " resumed after the coordinator's restart");
    }
    // It does not hold the assignment it was given (the message went down with a broken session
    // or a restarted coordinator): send it again.
    const auto& first = m.heartbeat();
    if (Assigned(w.state) && w.stage >= 0 && !w.release_sent &&
        first.assignment_id() != w.assignment_id && first.state() != "failed") {
      SendAssignment(w);
    }
    // Re-send the assignment when the worker resumed without it (it reports its own below).
  } else if (*bound_id != m.worker_id() || *bound_epoch != m.epoch()) {
    *end = Grpc(grpc::StatusCode::INVALID_ARGUMENT, "worker id or epoch changed mid-session");
    return;
  }
  const int64_t now = UnixMillis();
  if (m.has_heartbeat()) {
    const auto& hb = m.heartbeat();
    if (hb.links_size() > static_cast<int>(kMaxLinksReported)) {
      *end = Grpc(grpc::StatusCode::INVALID_ARGUMENT, "too many links in a heartbeat");
      return;
    }
    const bool clock_back = now < w.last_hb_ms;
    w.last_hb_ms = now;  // a later deadline: hb_due reads it when the queued one comes due
    if (clock_back) hb_due.Set(w.spec.worker_id(), HeartbeatDue(w));  // an earlier one: re-queue
    w.load = hb.load();
    w.links.assign(hb.links().begin(), hb.links().end());
    const std::string& s = hb.state();
    const int prev_stage = w.stage;
    if (s == "idle" || s == "failed") {
      if (s == "failed" && hb.assignment_id() == w.assignment_id && w.stage >= 0) {
        Event("assignment_failed", w.spec.worker_id(), w.stage, hb.error());
        w.failed_until_ms = now + 5000;
      }
      // Idle with the current assignment finished, or never started (not yet received).
      if (w.stage >= 0 && (hb.assignment_id() == w.assignment_id || w.release_sent ||
                           s == "failed")) {
        if (w.state != "idle") Event("released", w.spec.worker_id(), prev_stage, "back to idle");
        w.state = "idle";
        w.stage = -1;
        w.release_sent = false;
        w.state_since_ms = now;
        wake = true;
      } else if (w.stage < 0) {
        w.state = "idle";
      }
    } else if (hb.assignment_id() == w.assignment_id && w.stage >= 0) {
      if (!w.release_sent && s != w.state &&
          (s == "loading" || s == "joining" || s == "ready" || s == "draining")) {
        if (s == "ready") Event("ready", w.spec.worker_id(), w.stage, "");
        w.state = s;
        w.state_since_ms = now;
      }
      if (!w.had_traffic && hb.load().batches_processed() > 0 && w.state == "ready") {
        w.had_traffic = true;
        Event("traffic", w.spec.worker_id(), w.stage, "first micro-batch");
      }
    } else if (hb.assignment_id() != 0 && w.stage < 0) {
      // A resumed worker still serving an assignment this coordinator does not know (it
      // restarted without state): release it, the plan is decided again from here.
      pb::CoordinatorMessage r;
      r.mutable_release()->set_assignment_id(hb.assignment_id());
      r.mutable_release()->set_reason("unknown assignment");
      session->Send(std::move(r));
    }
    Reindex(w);
    pb::CoordinatorMessage ack;
    ack.mutable_ack()->set_coordinator_unix_ms(now);
    session->Send(std::move(ack));
    return;
  }
  if (m.has_broken()) {
    const auto& b = m.broken();
    Event("world_broken", w.spec.worker_id(), w.stage,
          "to " + b.peer_id() + "." + b.peer_epoch() + ": " + b.reason());
    auto p = live.find(b.peer_id());
    if (p != live.end() && std::to_string(p->second.epoch) == b.peer_epoch() &&
        now - p->second.last_hb_ms > options.suspect_ms) {
      DeclareDead(b.peer_id(), "neighbour " + w.spec.worker_id() +
                                   " reported its world broken and its last heartbeat is " +
                                   std::to_string(now - p->second.last_hb_ms) + " ms old");
      Journal();
    }
  }
}

void Coordinator::Impl::OnSessionEnd(const std::shared_ptr<SessionState>& session,
                                     const std::string& id, uint64_t epoch) {
  std::lock_guard lock(mu);
  if (stopping || id.empty() || Fenced()) return;  // a fenced coordinator decides nothing
  auto it = live.find(id);
  if (it == live.end() || it->second.epoch != epoch || it->second.session != session) return;
  DeclareDead(id, "session broken (connection closed)");
  Journal();
}

class SessionReactor final
    : public grpc::ServerBidiReactor<pb::WorkerMessage, pb::CoordinatorMessage> {
 public:
  SessionReactor(Coordinator::Impl* c, grpc::CallbackServerContext* ctx) : c_(c) {
    state_ = std::make_shared<SessionState>();
    state_->reactor = this;
    if (auto a = c_->Authorize(ctx); !a.ok()) {
      state_->End(a);
      return;
    }
    StartRead(&in_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      c_->OnSessionEnd(state_, id_, epoch_);
      state_->End(grpc::Status::OK);
      return;
    }
    grpc::Status end;
    c_->OnMessage(state_, &id_, &epoch_, in_, &end);
    if (!end.ok()) {
      state_->End(end);
      return;
    }
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override { state_->WriteDone(ok); }
  void OnCancel() override { c_->OnSessionEnd(state_, id_, epoch_); }
  void OnDone() override {
    {
      std::lock_guard lock(state_->mu);
      state_->done = true;
      state_->reactor = nullptr;
    }
    delete this;
  }

 private:
  Coordinator::Impl* c_;
  std::shared_ptr<SessionState> state_;
  pb::WorkerMessage in_;
  std::string id_;
  uint64_t epoch_ = 0;
};

class WorkerService final : public pb::Coordinator::CallbackService {
 public:
  explicit WorkerService(Coordinator::Impl* c) : c_(c) {}
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const pb::RegisterRequest* req,
                                     pb::RegisterResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    r->Finish(c_->Register(ctx, *req, resp));
    return r;
  }
  grpc::ServerBidiReactor<pb::WorkerMessage, pb::CoordinatorMessage>* Session(
      grpc::CallbackServerContext* ctx) override {
    return new SessionReactor(c_, ctx);
  }

 private:
  Coordinator::Impl* c_;
};

class AdminService final : public pb::CoordinatorAdmin::CallbackService {
 public:
  explicit AdminService(Coordinator::Impl* c) : c_(c) {}
  template <typename F>
  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* ctx, F f) {
    auto* r = ctx->DefaultReactor();
    auto a = c_->Authorize(ctx);
    r->Finish(a.ok() ? f() : a);
    return r;
  }
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx,
                                   const pb::CoordinatorStatusRequest*,
                                   pb::CoordinatorStatusResponse* resp) override {
    return Run(ctx, [&] { return c_->GetStatus(resp); });
  }
  grpc::ServerUnaryReactor* Scale(grpc::CallbackServerContext* ctx, const pb::ScaleRequest* req,
                                  pb::ScaleResponse* resp) override {
    return Run(ctx, [&] { return c_->Scale(*req, resp); });
  }
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx,
                                  const pb::DrainWorkerRequest* req,
                                  pb::DrainWorkerResponse* resp) override {
    return Run(ctx, [&] { return c_->Drain(*req, resp); });
  }
  grpc::ServerUnaryReactor* SetPolicy(grpc::CallbackServerContext* ctx,
                                      const pb::SetPolicyRequest* req,
                                      pb::SetPolicyResponse* resp) override {
    return Run(ctx, [&] { return c_->SetPolicy(*req, resp); });
  }
  grpc::ServerUnaryReactor* Events(grpc::CallbackServerContext* ctx, const pb::EventsRequest* req,
                                   pb::EventsResponse* resp) override {
    return Run(ctx, [&] { return c_->GetEvents(*req, resp); });
  }

 private:
  Coordinator::Impl* c_;
};

// What Status reports of one worker, copied under the lock (short strings, scalars: no heap
// allocation for typical ids and hosts) and turned into the answer outside it.
struct StatusRow {
  std::string worker_id, state, host, kind, dead_reason;
  uint64_t epoch = 0;
  int stage = -1;
  int32_t pid = 0;
  double capacity = 0;
  int64_t last_hb_ms = 0;
  pb::LoadReport load;
  std::vector<std::string> links;
};

grpc::Status Coordinator::Impl::GetStatus(pb::CoordinatorStatusResponse* resp) {
  // The lock is held only to copy (at 10,000 workers, building the ~740 kB answer under it held
  // it for ~100 ms, and heartbeats, Scale and the control loop waited that long).
  std::vector<StatusRow> rows;
  std::vector<pb::Recovery> recs;
  std::vector<int> targets, ready;
  std::string policy_name;
  int64_t now = 0;
  {
    std::lock_guard lock(mu);
    now = UnixMillis();
    policy_name = policy ? std::string(policy->name()) : "none";
    targets = target;
    for (int s = 0; s < plan.num_stages(); ++s) ready.push_back(index.Ready(s));
    rows.reserve(live.size() + dead.size());
    auto copy = [&](const WorkerEntry& w) {
      StatusRow& r = rows.emplace_back();
      r.worker_id = w.spec.worker_id();
      r.state = w.dead_ms ? "dead" : w.state;
      r.host = w.spec.host();
      r.kind = w.spec.kind();
      r.dead_reason = w.dead_reason;
      r.epoch = w.epoch;
      r.stage = w.stage;
      r.pid = w.spec.pid();
      r.capacity = w.spec.capacity();
      r.last_hb_ms = w.last_hb_ms;
      r.load = w.load;
      r.links = w.links;
    };
    for (const auto& [id, w] : live) copy(w);
    for (const auto& w : dead) copy(w);
    recs.assign(recoveries.begin(), recoveries.end());
  }
  resp->set_pipeline(plan.name);  // the plan is immutable
  resp->set_policy(policy_name);
  for (int s = 0; s < plan.num_stages(); ++s) {
    auto* st = resp->add_stages();
    st->set_stage(s);
    st->set_layer_begin(plan.stages[static_cast<size_t>(s)].begin);
    st->set_layer_end(plan.stages[static_cast<size_t>(s)].end);
    st->set_target_replicas(targets[static_cast<size_t>(s)]);
    st->set_ready_replicas(ready[static_cast<size_t>(s)]);
  }
  resp->mutable_workers()->Reserve(static_cast<int>(rows.size()));
  for (auto& r : rows) {
    auto* ws = resp->add_workers();
    ws->set_worker_id(std::move(r.worker_id));
    ws->set_epoch(r.epoch);
    ws->set_state(std::move(r.state));
    ws->set_stage(r.stage);
    ws->set_host(std::move(r.host));
    ws->set_pid(r.pid);
    ws->set_capacity(r.capacity);
    ws->set_kind(std::move(r.kind));
    ws->set_last_heartbeat_ms_ago(now - r.last_hb_ms);
    *ws->mutable_load() = r.load;
    for (auto& l : r.links) ws->add_links(std::move(l));
    ws->set_dead_reason(std::move(r.dead_reason));
  }
  for (auto& r : recs) *resp->add_recoveries() = std::move(r);
  return grpc::Status::OK;
}

grpc::Status Coordinator::Impl::Scale(const pb::ScaleRequest& req, pb::ScaleResponse* resp) {
  if (req.stage() < 0 || req.stage() >= plan.num_stages()) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT,
                "stage " + std::to_string(req.stage()) + " outside [0, " +
                    std::to_string(plan.num_stages()) + ")");
  }
  if (req.replicas() < 0 || req.replicas() > 256) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, "replicas must be 0..256");
  }
  std::lock_guard lock(mu);
  resp->set_previous(target[static_cast<size_t>(req.stage())]);
  target[static_cast<size_t>(req.stage())] = req.replicas();
  lent.erase(req.stage());  // the admin's number stands
  Event("scale", "", req.stage(),
        std::to_string(resp->previous()) + " -> " + std::to_string(req.replicas()) +
            " replicas (admin)");
  Reconcile();
  Journal();
  return grpc::Status::OK;
}

grpc::Status Coordinator::Impl::Drain(const pb::DrainWorkerRequest& req,
                                      pb::DrainWorkerResponse* resp) {
  if (Status v = ex::ValidateMemberId(req.worker_id()); !v.ok()) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, v.ToString());
  }
  std::lock_guard lock(mu);
  auto it = live.find(req.worker_id());
  if (it == live.end()) {
    return Grpc(grpc::StatusCode::NOT_FOUND, "no live worker '" + req.worker_id() + "'");
  }
  WorkerEntry& w = it->second;
  w.cordoned = true;
  Reindex(w);
  if (w.stage >= 0 && !w.release_sent) Release(w, "drained by an admin");
  Event("cordoned", w.spec.worker_id(), w.stage, "admin drain: never assigned again");
  resp->set_state(w.state);
  Reconcile();  // a replacement, if one is idle
  Journal();
  return grpc::Status::OK;
}

grpc::Status Coordinator::Impl::SetPolicy(const pb::SetPolicyRequest& req,
                                          pb::SetPolicyResponse* resp) {
  std::unique_ptr<policy::Policy> next;
  if (req.policy() != "none") {
    auto made = policy::MakePolicy(req.policy(), options.policy_options);
    if (!made.ok()) {  // an unknown name, or options it refuses (harmony without a model)
      return Grpc(grpc::StatusCode::INVALID_ARGUMENT,
                  "policy '" + req.policy() + "': " + std::string(made.status().message()) +
                      " (none | " + policy::PolicyNamesJoined() + ")");
    }
    next = std::move(*made);
  }
  if (!(req.slo_p99_ms() >= 0 && req.slo_p99_ms() < 1e7)) {
    return Grpc(grpc::StatusCode::INVALID_ARGUMENT, "slo_p99_ms must be in [0, 1e7)");
  }
  std::lock_guard lock(mu);
  resp->set_previous(policy ? std::string(policy->name()) : "none");
  policy = std::move(next);
  memory = {};
  if (!routing.empty()) {  // the new policy starts from least-loaded routing
    routing.clear();
    routing_dirty = true;
  }
  if (req.slo_p99_ms() > 0) options.slo_p99_ms = req.slo_p99_ms();
  Event("policy_set", "", -1, resp->previous() + " -> " + req.policy());
  Journal();
  return grpc::Status::OK;
}

grpc::Status Coordinator::Impl::GetEvents(const pb::EventsRequest& req, pb::EventsResponse* resp) {
  if (req.limit() < 0) return Grpc(grpc::StatusCode::INVALID_ARGUMENT, "limit must be >= 0");
  const size_t limit = req.limit() == 0 ? 1000 : static_cast<size_t>(req.limit());
  std::lock_guard lock(mu);
  for (const auto& e : events) {
    if (e.unix_ms() < req.since_unix_ms()) continue;
    if (static_cast<size_t>(resp->events_size()) >= limit) break;
    *resp->add_events() = e;
  }
  return grpc::Status::OK;
}

void Coordinator::Impl::Shutdown() {
  {
    std::lock_guard lock(mu);
    if (stopping) return;
    stopping = true;
    for (auto& [id, w] : live) {
      if (w.session) {
        w.session->End(Grpc(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down"));
      }
    }
  }
  cv.notify_all();
  control.request_stop();
  if (control.joinable()) control.join();
  if (wal) {
    {
      std::lock_guard lock(mu);
      Journal();
    }
    if (Status s = wal->Sync(); !s.ok()) WalError(s);
  }
}

Result<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options,
                                                         ex::PipelinePlan plan,
                                                         std::shared_ptr<Store> store,
                                                         std::string store_address) {
  options.heartbeat_timeout_ms = static_cast<int>(
      EnvInt("ARCHI_HEARTBEAT_TIMEOUT_MS", options.heartbeat_timeout_ms, 20, 600'000));
  ARCHI_RETURN_IF_ERROR(ValidateOptions(options, plan));
  if (!store) return InvalidArgumentError("coordinator: no store");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->plan = std::move(plan);
  impl->store = std::move(store);
  impl->store_address = std::move(store_address);
  impl->index = WorkerIndex(impl->plan.num_stages());
  impl->target = options.replicas.empty() ? std::vector<int>(impl->plan.stages.size(), 1)
                                          : options.replicas;
  // Epochs grow across coordinator restarts without durable state: start from the clock.
  impl->next_epoch = static_cast<uint64_t>(UnixMillis()) * 1000;
  if (options.policy != "none") {
    ARCHI_ASSIGN_OR_RETURN(impl->policy, policy::MakePolicy(options.policy, options.policy_options));
  }
  if (options.token.empty()) {
    ARCHI_LOG_WARN(
        "coordinator: no token: workers and admin clients are not authenticated and the store "
        "does not check member credentials");
  } else {
    impl->member_secret = MemberSecret(options.token, impl->plan.name);
    impl->frontend_credential = FrontendStoreCredential(options.token, impl->plan.name);
  }
  if (!options.state_dir.empty() || options.state_log) ARCHI_RETURN_IF_ERROR(impl->OpenState());
  impl->InitMetrics(*impl->own_metrics);
  impl->worker_service = std::make_unique<WorkerService>(impl.get());
  impl->admin_service = std::make_unique<AdminService>(impl.get());
  Impl* raw = impl.get();
  impl->control = std::jthread([raw](std::stop_token st) { raw->ControlLoop(st); });
  {
    std::lock_guard lock(raw->mu);
    std::string t;
    for (size_t i = 0; i < raw->target.size(); ++i) {
      t += (i ? "," : "") + std::to_string(raw->target[i]);
    }
    raw->Event("started", "", -1,
               "pipeline " + raw->plan.name + ", " + std::to_string(raw->plan.num_stages()) +
                   " stages, replicas " + t + ", policy " + raw->options.policy +
                   ", heartbeat timeout " + std::to_string(raw->options.heartbeat_timeout_ms) +
                   " ms");
  }
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() { Shutdown(); }

std::vector<grpc::Service*> Coordinator::services() {
  return {impl_->worker_service.get(), impl_->admin_service.get()};
}

void Coordinator::SetFrontendMetrics(std::function<policy::FrontendMetrics()> source) {
  std::lock_guard lock(impl_->mu);
  impl_->frontend_metrics = std::move(source);
}

void Coordinator::Shutdown() { impl_->Shutdown(); }

void Coordinator::SetMetrics(executor::Metrics* metrics) {
  if (metrics == nullptr) return;
  std::lock_guard lock(impl_->mu);
  impl_->InitMetrics(*metrics);
}

StoreAuthorizer Coordinator::store_authorizer() {
  if (impl_->member_secret.empty()) return nullptr;
  Impl* impl = impl_.get();
  return [impl](StoreAccess access, const std::string& key, const std::string& credential) {
    return impl->AuthorizeStore(access, key, credential);
  };
}

}  // namespace archi::coordinator
