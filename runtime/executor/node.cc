#include "runtime/executor/node.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "runtime/core/logging.h"
#include "runtime/core/params.h"

namespace archi::executor {

// One pair world with a neighbour. Everything but the reader thread is guarded by the node's mu_.
struct Link {
  std::string world;
  MemberInfo peer;
  bool downstream = false;  // true: we send batches to the peer
  int peer_rank = 0;
  std::shared_ptr<Communicator> comm;
  // Sends issued and the buffers they read; pruned when completed.
  struct Sent {
    Tensor header, payload;
    std::shared_ptr<Work> w1, w2;
  };
  std::vector<Sent> sends;
  int outstanding = 0;
  uint64_t batches_sent = 0;
  bool closing = false;         // downstream: we will send no more batches (kClose sent)
  bool closed_by_peer = false;  // upstream link: the peer said kClose
  bool removed = false;         // moved to dead_
  std::jthread reader;
};

struct PipelineNode::InFlight {
  Batch batch;
  Origin origin;
  std::shared_ptr<Link> link;  // where it was sent (null while pending)
  uint64_t hop_seq = 0;
};

namespace {

constexpr int64_t kIdleRecvTimeoutMs = 86'400'000;  // a reader's header Recv: the peer may be idle

std::string RandomIncarnation() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(getpid()));
  char buf[9];
  snprintf(buf, sizeof(buf), "%08x", static_cast<unsigned>(gen() & 0xffffffffu));
  return buf;
}

bool Linkable(const std::string& state) { return state == "joining" || state == "ready"; }

// A process of this host that no longer runs: absent, or a zombie nobody has reaped yet.
bool ProcessGone(int pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

}  // namespace

std::string MembersPrefix(const std::string& pipeline) {
  return "archi/pipeline/" + pipeline + "/members/";
}
std::string PlanKey(const std::string& pipeline) { return "archi/pipeline/" + pipeline + "/plan"; }
std::string AlivePrefix(const std::string& pipeline) {
  return "archi/pipeline/" + pipeline + "/alive/";
}

Status ValidateMemberId(const std::string& id) {
  if (id.empty() || id.size() > 24) {
    return InvalidArgumentError("member id '" + id + "' must have 1..24 characters");
  }
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
      return InvalidArgumentError("member id '" + id +
                                  "' may only contain letters, digits, _ and -");
    }
  }
  return Status::Ok();
}

std::string MemberInfo::ToJson() const {
  nlohmann::json j = {{"id", id},
                      {"stage", stage},
                      {"inc", incarnation},
                      {"state", state},
                      {"pid", pid},
                      {"host", host},
                      {"kind", kind},
                      {"batches", batches},
                      {"resent", resent},
                      {"ready_ms", ready_unix_ms},
                      {"first_batch_ms", first_batch_unix_ms}};
  return j.dump();
}

Result<MemberInfo> MemberInfo::FromJson(const std::string& json) {
  try {
    auto j = nlohmann::json::parse(json);
    MemberInfo m;
    m.id = j.at("id").get<std::string>();
    m.stage = j.at("stage").get<int>();
    m.incarnation = j.at("inc").get<std::string>();
    m.state = j.at("state").get<std::string>();
    m.pid = j.value("pid", 0);
    m.host = j.value("host", std::string());
    m.kind = j.value("kind", std::string());
    m.batches = j.value("batches", uint64_t{0});
    m.resent = j.value("resent", uint64_t{0});
    m.ready_unix_ms = j.value("ready_ms", int64_t{0});
    m.first_batch_unix_ms = j.value("first_batch_ms", int64_t{0});
    return m;
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("member entry: ") + e.what());
  }
}

PipelineNode::PipelineNode(NodeOptions options, BatchHandler on_batch)
    : options_(std::move(options)),
      on_batch_(std::move(on_batch)),
      incarnation_(options_.incarnation.empty() ? RandomIncarnation() : options_.incarnation),
      worlds_(std::make_unique<WorldManager>()) {
  self_key_ = MembersPrefix(options_.pipeline) + options_.id;
  options_.lease_timeout_ms =
      EnvInt("ARCHI_MEMBER_LEASE_MS", options_.lease_timeout_ms, 100, 3'600'000);
}

PipelineNode::~PipelineNode() { Stop(); }

int PipelineNode::UpstreamStage() const {
  const int s = options_.stage;
  if (s == -1) return options_.num_stages - 1;
  return s - 1;  // stage 0: -1, the frontend
}

int PipelineNode::DownstreamStage() const {
  const int s = options_.stage;
  if (s == -1) return 0;
  return s + 1 < options_.num_stages ? s + 1 : -1;
}

std::string PipelineNode::WorldName(const std::string& up_id, const std::string& up_inc,
                                    const std::string& down_id, const std::string& down_inc) const {
  return options_.pipeline + ":" + up_id + "." + up_inc + ":" + down_id + "." + down_inc;
}

Status PipelineNode::WriteSelf(const std::string& state) {
  // Read-modify-write so an admin's "draining" is never overwritten by our counters.
  for (int tries = 0; tries < 8; ++tries) {
    MemberInfo next;
    std::string expected;
    {
      std::lock_guard lock(mu_);
      expected = self_raw_;
      next = self_;
    }
    auto cur = options_.store->Get(self_key_, Deadline::AfterMs(2000));
    if (cur.ok()) {
      expected = *cur;
      auto parsed = MemberInfo::FromJson(*cur);
      if (parsed.ok() && parsed->incarnation == incarnation_) {
        if (parsed->state == "draining" && state != "gone") {
          draining_ = true;
          next.state = "draining";
        } else if (parsed->state == "gone" && state != "gone") {
          fenced_ = true;
          return AbortedError("member " + options_.id + " was marked gone by a neighbour");
        } else {
          next.state = state;
        }
      } else {
        next.state = state;
      }
    } else if (cur.status().code() == StatusCode::kNotFound) {
      expected.clear();
      next.state = state;
    } else {
      return cur.status();
    }
    if (next.state == "ready" && next.ready_unix_ms == 0) next.ready_unix_ms = UnixMillis();
    const std::string desired = next.ToJson();
    auto got = options_.store->CompareSet(self_key_, expected, desired, Deadline::AfterMs(2000));
    if (!got.ok()) return got.status();
    if (*got == desired) {
      std::lock_guard lock(mu_);
      self_ = next;
      self_raw_ = desired;
      return Status::Ok();
    }
  }
  return AbortedError("registry entry of " + options_.id + " kept changing");
}

Status PipelineNode::Start() {
  ARCHI_RETURN_IF_ERROR(ValidateMemberId(options_.id));
  if (!options_.store) return InvalidArgumentError("PipelineNode: no store");
  if (options_.num_stages < 1) return InvalidArgumentError("PipelineNode: num_stages < 1");
  if (options_.stage < -1 || options_.stage >= options_.num_stages) {
    return InvalidArgumentError("PipelineNode: stage " + std::to_string(options_.stage) +
                                " outside [0, " + std::to_string(options_.num_stages) + ")");
  }
  // Refuse to take over the id of a live member.
  auto cur = options_.store->Get(self_key_, Deadline::AfterMs(5000));
  if (cur.ok()) {
    auto m = MemberInfo::FromJson(*cur);
    if (m.ok() && m->state != "gone") {
      bool alive = true;
      if (ProcessGone(m->pid)) alive = false;  // meaningful on the same host only
      if (alive) {
        return AlreadyExistsError("pipeline '" + options_.pipeline + "' already has a member '" +
                                  options_.id + "' (state " + m->state + ", pid " +
                                  std::to_string(m->pid) + ")");
      }
    }
  } else if (cur.status().code() != StatusCode::kNotFound) {
    return cur.status();
  }
  {
    std::lock_guard lock(mu_);
    self_.id = options_.id;
    self_.stage = options_.stage;
    self_.incarnation = incarnation_;
    self_.pid = static_cast<int>(getpid());
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    self_.host = host;
    self_.kind = options_.kind;
    self_raw_ = cur.ok() ? *cur : std::string();
  }
  // Overwrite a stale entry (dead member with our id) unconditionally.
  MemberInfo fresh;
  {
    std::lock_guard lock(mu_);
    fresh = self_;
  }
  fresh.state = options_.stage == -1 ? "ready" : "joining";
  if (fresh.state == "ready") fresh.ready_unix_ms = UnixMillis();
  ARCHI_RETURN_IF_ERROR(options_.store->Set(self_key_, fresh.ToJson(), Deadline::AfterMs(5000)));
  {
    std::lock_guard lock(mu_);
    self_ = fresh;
    self_raw_ = fresh.ToJson();
  }
  started_ = true;
  membership_thread_ = std::jthread([this](std::stop_token st) { MembershipLoop(st); });
  ARCHI_LOG_INFO("pipeline {}: member {} (stage {}, inc {}) registered", options_.pipeline,
                 options_.id, options_.stage, incarnation_);
  return Status::Ok();
}

void PipelineNode::Stop() {
  if (!started_.exchange(false)) return;
  stopping_ = true;
  membership_thread_.request_stop();
  if (membership_thread_.joinable()) membership_thread_.join();
  std::vector<ConnectTask> tasks;
  {
    std::lock_guard lock(mu_);
    tasks.swap(connect_threads_);
  }
  for (auto& t : tasks) t.thread.join();
  std::vector<std::shared_ptr<Link>> all;
  {
    std::lock_guard lock(mu_);
    all = links_;
    all.insert(all.end(), dead_.begin(), dead_.end());
    links_.clear();
    dead_.clear();
    for (auto& l : all) l->removed = true;
  }
  // The clean-up below talks to the store. When it is gone (e.g. with a killed frontend that
  // hosted it), one short probe says so and the rest is skipped or kept short instead of spending
  // each call's deadline on it (measured: ~2 s + 1 s per link).
  const auto probe = options_.store->Get(self_key_, Deadline::AfterMs(500));
  const bool store_gone = !probe.ok() && (probe.status().code() == StatusCode::kUnavailable ||
                                          probe.status().code() == StatusCode::kDeadlineExceeded);
  if (store_gone) {
    ARCHI_LOG_INFO("pipeline {}: store unreachable at stop ({}); registry clean-up skipped",
                   options_.pipeline, probe.status().ToString());
  }
  const int64_t remove_ms = store_gone ? 100 : 1000;
  for (auto& l : all) (worlds_->RemoveWorld(l->world, Deadline::AfterMs(remove_ms))).IgnoreError();
  for (auto& l : all) {
    if (l->reader.joinable()) l->reader.join();
  }
  {
    std::lock_guard lock(mu_);
    inflight_.clear();
    pending_.clear();
  }
  if (store_gone) return;
  // Leave the registry: "gone" keeps neighbours from linking again while they still see us.
  (WriteSelf("gone")).IgnoreError();
  (options_.store->Delete(self_key_, Deadline::AfterMs(1000))).IgnoreError();
  (options_.store->Delete(AlivePrefix(options_.pipeline) + options_.id + "." + incarnation_,
                          Deadline::AfterMs(1000)))
      .IgnoreError();
}

Status PipelineNode::BeginDrain() {
  draining_ = true;
  return WriteSelf("draining");
}

bool PipelineNode::Drained() const {
  if (!draining_) return false;
  std::lock_guard lock(mu_);
  if (!inflight_.empty() || !pending_.empty()) return false;
  for (const auto& l : links_) {
    if (!l->downstream && !l->closed_by_peer) return false;
  }
  return true;
}

NodeStats PipelineNode::stats() const {
  std::lock_guard lock(mu_);
  NodeStats s = stats_;
  s.inflight = inflight_.size();
  s.pending = pending_.size();
  return s;
}

std::string PipelineNode::state() const {
  std::lock_guard lock(mu_);
  return self_.state;
}

std::vector<LinkStats> PipelineNode::links() const {
  std::lock_guard lock(mu_);
  std::vector<LinkStats> out;
  for (const auto& l : links_) {
    out.push_back({l->peer.id, l->peer.incarnation, l->peer.stage, l->downstream, l->outstanding,
                   l->batches_sent, l->closing});
  }
  return out;
}

// ---- Data path ------------------------------------------------------------------------------

void PipelineNode::Forward(Batch&& batch, Origin origin) {
  auto e = std::make_unique<InFlight>();
  e->batch = std::move(batch);
  e->origin = std::move(origin);
  std::lock_guard lock(mu_);
  ++stats_.batches_forwarded;
  DispatchLocked(std::move(*e));
}

bool PipelineNode::DispatchLocked(InFlight&& e, bool front) {
  // Usable downstream links; the picker applies the routing weights (if any) and otherwise takes
  // the least outstanding one, round-robin among ties.
  std::vector<RouteCandidate> candidates;
  std::vector<size_t> index;
  candidates.reserve(links_.size());
  for (size_t i = 0; i < links_.size(); ++i) {
    const Link& l = *links_[i];
    if (!l.downstream || l.closing) continue;
    candidates.push_back({l.peer.kind, l.outstanding, l.outstanding < options_.max_inflight_per_link});
    index.push_back(i);
  }
  const std::optional<size_t> pick = picker_.Pick(candidates, rr_);
  if (!pick) {
    auto queued = std::make_unique<InFlight>(std::move(e));
    if (front) {
      pending_.insert(pending_.begin(), std::move(queued));
    } else {
      pending_.push_back(std::move(queued));
    }
    return false;
  }
  const size_t best_i = index[*pick];
  Link* best = links_[best_i].get();
  rr_ = *pick + 1;
  auto entry = std::make_unique<InFlight>(std::move(e));
  entry->hop_seq = next_hop_seq_++;
  entry->link = links_[best_i];
  SendBatchLocked(*best, *entry);
  inflight_[entry->hop_seq] = std::move(entry);
  return true;
}

void PipelineNode::ReadRoutingWeights() {
  const int64_t now = UnixMillis();
  if (now - last_routing_read_ms_ < 250) return;
  last_routing_read_ms_ = now;
  auto raw = options_.store->Get(RoutingKey(options_.pipeline), Deadline::AfterMs(500));
  std::string value;
  if (raw.ok()) {
    value = *raw;
  } else if (raw.status().code() != StatusCode::kNotFound) {
    return;  // the store is unreachable: keep the weights we have
  }
  std::lock_guard lock(mu_);
  if (value == routing_raw_) return;
  routing_raw_ = value;
  KindWeights weights;
  if (!value.empty()) {
    auto table = DecodeRoutingTable(value);
    if (!table.ok()) {
      ARCHI_LOG_WARN("pipeline {}: ignoring routing weights: {}", options_.pipeline,
                     table.status().ToString());
      return;
    }
    // The last stage sends to the frontend: nothing to choose there.
    if (DownstreamStage() >= 0) weights = WeightsForStage(*table, DownstreamStage());
  }
  if (weights != picker_.weights()) {
    std::string text;
    for (const auto& [kind, w] : weights) text += (text.empty() ? "" : " ") + kind + "=" + std::to_string(w);
    ARCHI_LOG_INFO("pipeline {}: {} routes to stage {} by kind weights [{}]", options_.pipeline,
                   options_.id, DownstreamStage(), text.empty() ? "none: least loaded" : text);
    picker_.SetWeights(std::move(weights));
    FlushPendingLocked();
  }
}

void PipelineNode::SendBatchLocked(Link& link, InFlight& e) {
  ++link.outstanding;
  ++link.batches_sent;
  auto header = EncodeHeader(MsgKind::kBatch, e.hop_seq, &e.batch);
  if (!header.ok()) {
    // A batch we built ourselves cannot be encoded: a bug; the link's break path re-sends nothing
    // useful, so log loudly. The entry stays in flight until its deadline makes it irrelevant.
    ARCHI_LOG_ERROR("pipeline {}: cannot encode batch {}: {}", options_.pipeline, e.batch.batch_id,
                    header.status().ToString());
    return;
  }
  Link::Sent s;
  s.header = *header;
  s.payload = e.batch.payload;
  s.w1 = link.comm->Send(s.header, link.peer_rank, kHeaderTag);
  s.w2 = link.comm->Send(s.payload, link.peer_rank, kPayloadTag);
  std::erase_if(link.sends, [](const Link::Sent& x) {
    return x.w1->IsCompleted() && (!x.w2 || x.w2->IsCompleted());
  });
  link.sends.push_back(std::move(s));
}

void PipelineNode::SendControlLocked(Link& link, MsgKind kind, uint64_t hop_seq) {
  auto header = EncodeHeader(kind, hop_seq, nullptr);
  if (!header.ok()) return;
  Link::Sent s;
  s.header = *header;
  s.w1 = link.comm->Send(s.header, link.peer_rank, kHeaderTag);
  std::erase_if(link.sends, [](const Link::Sent& x) {
    return x.w1->IsCompleted() && (!x.w2 || x.w2->IsCompleted());
  });
  link.sends.push_back(std::move(s));
}

void PipelineNode::Ack(const Origin& origin) {
  if (!origin.link) return;
  std::lock_guard lock(mu_);
  if (origin.link->removed) return;  // the upstream re-sends it elsewhere anyway
  SendControlLocked(*origin.link, MsgKind::kAck, origin.hop_seq);
}

void PipelineNode::OnAck(const std::shared_ptr<Link>& link, uint64_t hop_seq) {
  std::lock_guard lock(mu_);
  auto it = inflight_.find(hop_seq);
  if (it == inflight_.end() || it->second->link != link) {
    ARCHI_LOG_DEBUG("pipeline {}: ack {} from {} for nothing in flight", options_.pipeline, hop_seq,
                    link->peer.id);
    return;
  }
  std::unique_ptr<InFlight> e = std::move(it->second);
  inflight_.erase(it);
  --link->outstanding;
  if (e->origin.link && !e->origin.link->removed) {
    SendControlLocked(*e->origin.link, MsgKind::kAck, e->origin.hop_seq);
  }
  FlushPendingLocked();
}

void PipelineNode::FlushPendingLocked() {
  ExpirePendingLocked();
  while (!pending_.empty()) {
    bool can = false;
    for (const auto& l : links_) {
      if (l->downstream && !l->closing && l->outstanding < options_.max_inflight_per_link) {
        can = true;
        break;
      }
    }
    if (!can) return;
    std::unique_ptr<InFlight> e = std::move(pending_.front());
    pending_.erase(pending_.begin());
    // Not sent (the weighted kinds have no credit): it goes back to the head, in order.
    if (!DispatchLocked(std::move(*e), /*front=*/true)) return;
  }
}

void PipelineNode::ExpirePendingLocked() {
  const int64_t now = UnixMillis();
  std::erase_if(pending_, [&](std::unique_ptr<InFlight>& e) {
    if (e->batch.deadline_unix_ms == 0 || e->batch.deadline_unix_ms >= now) return false;
    // Every request in it is past its deadline (the frontend has answered them): let it go.
    if (e->origin.link && !e->origin.link->removed) {
      SendControlLocked(*e->origin.link, MsgKind::kAck, e->origin.hop_seq);
    }
    return true;
  });
}

void PipelineNode::OnLinkBroken(const std::shared_ptr<Link>& link, const Status& why) {
  bool expected = false;  // peer was leaving: not a failure
  MemberInfo peer;
  {
    std::lock_guard lock(mu_);
    if (link->removed) return;
    link->removed = true;
    std::erase(links_, link);
    dead_.push_back(link);
    peer = link->peer;
    expected = link->closing || link->closed_by_peer || stopping_;
    if (!expected) ++stats_.links_broken;
    failed_.push_back(peer.id + "." + peer.incarnation);
    // Re-send what the peer had not acknowledged, oldest first.
    std::vector<std::unique_ptr<InFlight>> again;
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      if (it->second->link == link) {
        again.push_back(std::move(it->second));
        it = inflight_.erase(it);
      } else {
        ++it;
      }
    }
    link->outstanding = 0;
    for (auto& e : again) {
      ++e->batch.attempt;
      e->link.reset();
      ++stats_.batches_resent;
      DispatchLocked(std::move(*e));
    }
    if (!again.empty() || !expected) {
      ARCHI_LOG_WARN("pipeline {}: link to {} (stage {}) broke: {}; re-sent {} micro-batch(es)",
                     options_.pipeline, peer.id, peer.stage, why.ToString(), again.size());
    }
  }
  if (!expected && options_.on_link_broken) options_.on_link_broken(link->world, peer, why);
}

void PipelineNode::DropPeer(const std::string& id, const std::string& incarnation,
                            const std::string& why) {
  std::lock_guard lock(mu_);
  const std::string tag = id + "." + incarnation;
  if (std::find(failed_.begin(), failed_.end(), tag) == failed_.end()) failed_.push_back(tag);
  for (auto& l : links_) {
    // The reader's pending Recv fails at once; OnLinkBroken re-sends what it held.
    if (l->peer.id == id && l->peer.incarnation == incarnation) {
      l->comm->Abort(Status(StatusCode::kUnavailable, why));
    }
  }
}

Status SetMemberState(Store& store, const std::string& pipeline, const std::string& id,
                      const std::string& incarnation, const std::string& state) {
  if (state != "draining" && state != "gone") {
    return InvalidArgumentError("SetMemberState: state must be draining or gone, not " + state);
  }
  const std::string key = MembersPrefix(pipeline) + id;
  for (int tries = 0; tries < 8; ++tries) {
    ARCHI_ASSIGN_OR_RETURN(std::string cur, store.Get(key, Deadline::AfterMs(1000)));
    ARCHI_ASSIGN_OR_RETURN(MemberInfo m, MemberInfo::FromJson(cur));
    if (!incarnation.empty() && m.incarnation != incarnation) {
      return NotFoundError("member " + id + " has incarnation " + m.incarnation + ", not " +
                           incarnation);
    }
    if (m.state == state || m.state == "gone") return Status::Ok();
    MemberInfo next = m;
    next.state = state;
    ARCHI_ASSIGN_OR_RETURN(std::string got,
                           store.CompareSet(key, cur, next.ToJson(), Deadline::AfterMs(1000)));
    if (got == next.ToJson()) return Status::Ok();
  }
  return AbortedError("registry entry of " + id + " kept changing");
}

void PipelineNode::MarkGone(const MemberInfo& peer, const std::string& why) {
  const std::string key = MembersPrefix(options_.pipeline) + peer.id;
  auto cur = options_.store->Get(key, Deadline::AfterMs(1000));
  if (!cur.ok()) return;
  auto m = MemberInfo::FromJson(*cur);
  if (!m.ok() || m->incarnation != peer.incarnation || m->state == "gone") return;
  MemberInfo next = *m;
  next.state = "gone";
  auto got = options_.store->CompareSet(key, *cur, next.ToJson(), Deadline::AfterMs(1000));
  if (got.ok() && *got == next.ToJson()) {
    ARCHI_LOG_WARN("pipeline {}: member {} (stage {}, pid {}) is gone: {}", options_.pipeline,
                   peer.id, peer.stage, peer.pid, why);
  }
}

void PipelineNode::KeepRegistry(const std::map<std::string, MemberInfo>& members) {
  auto alive = options_.store->List(AlivePrefix(options_.pipeline), Deadline::AfterMs(2000));
  if (!alive.ok()) return;
  const std::string prefix = AlivePrefix(options_.pipeline);
  std::map<std::string, std::string> counters;  // "id.inc" -> counter
  for (const auto& [key, value] : *alive) {
    counters[key.starts_with(prefix) ? key.substr(prefix.size()) : key] = value;
  }
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const int64_t now = UnixMillis();
  std::map<std::string, std::pair<std::string, int64_t>> next;
  for (const auto& [id, m] : members) {
    if (id == options_.id || m.state == "gone") continue;
    const std::string tag = id + "." + m.incarnation;
    if (m.host == host && ProcessGone(m.pid)) {
      MarkGone(m, "its process " + std::to_string(m.pid) + " no longer exists");
      continue;
    }
    const auto c = counters.find(tag);
    const std::string value = c == counters.end() ? std::string() : c->second;
    auto prev = leases_.find(tag);
    if (prev == leases_.end() || prev->second.first != value) {
      next[tag] = {value, now};
      continue;
    }
    next[tag] = prev->second;
    if (now - prev->second.second > options_.lease_timeout_ms) {
      MarkGone(m, "its liveness lease did not move for " +
                      std::to_string(now - prev->second.second) + " ms (limit " +
                      std::to_string(options_.lease_timeout_ms) + " ms)");
    }
  }
  leases_ = std::move(next);
}

void PipelineNode::ReaderLoop(std::shared_ptr<Link> link) {
  Status why;
  while (true) {
    auto header = Tensor::Empty({static_cast<int64_t>(kHeaderBytes)}, DType::kU8);
    if (!header.ok()) {
      why = header.status();
      break;
    }
    auto w = link->comm->Recv(*header, link->peer_rank, kHeaderTag,
                              OpOptions{.timeout_ms = kIdleRecvTimeoutMs});
    Status st;
    while (true) {
      st = w->Wait(Deadline::AfterMs(500));
      if (st.code() == StatusCode::kDeadlineExceeded && !w->IsCompleted()) continue;
      break;
    }
    if (!st.ok()) {
      why = st;
      break;
    }
    auto msg = DecodeHeader(*header);
    if (!msg.ok()) {
      why = msg.status();
      link->comm->Abort(why);
      break;
    }
    if (msg->kind == MsgKind::kAck) {
      if (!link->downstream) {
        why = Status(StatusCode::kDataLoss, "ack received from an upstream member");
        link->comm->Abort(why);
        break;
      }
      OnAck(link, msg->hop_seq);
      continue;
    }
    if (link->downstream) {
      why = Status(StatusCode::kDataLoss,
                   std::string(MsgKindName(msg->kind)) + " received from a downstream member");
      link->comm->Abort(why);
      break;
    }
    if (msg->kind == MsgKind::kClose) {
      std::lock_guard lock(mu_);
      link->closed_by_peer = true;
      continue;
    }
    auto payload = Tensor::Empty(msg->payload_shape, msg->payload_dtype);
    if (!payload.ok()) {
      why = payload.status();
      link->comm->Abort(why);
      break;
    }
    auto pw = link->comm->Recv(*payload, link->peer_rank, kPayloadTag);
    st = pw->Wait(Deadline::AfterMs(options_.world.op_timeout_ms + 1000));
    if (!st.ok()) {
      why = st;
      if (!pw->IsCompleted()) link->comm->Abort(st);
      break;
    }
    msg->batch.payload = std::move(*payload);
    {
      std::lock_guard lock(mu_);
      ++stats_.batches_received;
    }
    on_batch_(std::move(msg->batch), Origin{link, msg->hop_seq});
  }
  OnLinkBroken(link, why);
}

// ---- Membership -----------------------------------------------------------------------------

void PipelineNode::Connect(MemberInfo peer, bool downstream) {
  const std::string name = downstream
                               ? WorldName(options_.id, incarnation_, peer.id, peer.incarnation)
                               : WorldName(peer.id, peer.incarnation, options_.id, incarnation_);
  const int rank = downstream ? 0 : 1;
  Status st = worlds_->InitializeWorld(name, rank, 2, options_.store, options_.world);
  std::shared_ptr<Link> link;
  if (st.ok()) {
    auto comm = worlds_->GetCommunicator(name);
    if (comm.ok()) {
      link = std::make_shared<Link>();
      link->world = name;
      link->peer = peer;
      link->downstream = downstream;
      link->peer_rank = 1 - rank;
      link->comm = *comm;
    } else {
      st = comm.status();
    }
  }
  std::lock_guard lock(mu_);
  std::erase(connecting_, name);
  if (!st.ok() || stopping_) {
    if (!st.ok()) {
      ARCHI_LOG_WARN("pipeline {}: cannot link with {} (stage {}): {}", options_.pipeline, peer.id,
                     peer.stage, st.ToString());
      failed_.push_back(peer.id + "." + peer.incarnation);
    }
    if (st.ok()) {
      // Stopping: give the world back.
      dead_.push_back(link);
      link->removed = true;
    }
    return;
  }
  links_.push_back(link);
  link->reader = std::jthread([this, link] { ReaderLoop(link); });
  ARCHI_LOG_INFO("pipeline {}: linked with {} (stage {}) as {}", options_.pipeline, peer.id,
                 peer.stage, downstream ? "upstream" : "downstream");
  if (downstream) FlushPendingLocked();
}

void PipelineNode::MembershipLoop(std::stop_token st) {
  const std::string prefix = MembersPrefix(options_.pipeline);
  while (!st.stop_requested()) {
    auto list = options_.store->List(prefix, Deadline::AfterMs(2000));
    if (list.ok()) {
      std::map<std::string, MemberInfo> members;
      for (const auto& [key, value] : *list) {
        auto m = MemberInfo::FromJson(value);
        if (m.ok()) members[m->id] = *m;
      }
      // Our own entry: drained by an admin, or fenced by a neighbour.
      auto self = members.find(options_.id);
      if (self == members.end() && !fenced_ && !stopping_) {
        // Our entry vanished (a new frontend replaced the registry): register again, same
        // incarnation, so the new neighbours can find us.
        std::string raw;
        {
          std::lock_guard lock(mu_);
          raw = self_.ToJson();
        }
        if (options_.store->Set(self_key_, raw, Deadline::AfterMs(1000)).ok()) {
          std::lock_guard lock(mu_);
          self_raw_ = raw;
          ARCHI_LOG_WARN("pipeline {}: registry entry of {} was missing; registered again",
                         options_.pipeline, options_.id);
        }
      }
      if (self != members.end() && self->second.incarnation == incarnation_) {
        if (self->second.state == "draining") draining_ = true;
        if (self->second.state == "gone" && !fenced_) {
          fenced_ = true;
          ARCHI_LOG_ERROR("pipeline {}: member {} was marked gone by a neighbour; stopping",
                          options_.pipeline, options_.id);
        }
      }
      const int64_t now_ms = UnixMillis();
      if (now_ms - last_lease_ms_ >= options_.lease_interval_ms && !fenced_) {
        auto bumped =
            options_.store->Add(AlivePrefix(options_.pipeline) + options_.id + "." + incarnation_,
                                1, Deadline::AfterMs(1000));
        if (bumped.ok()) last_lease_ms_ = now_ms;
      }
      if (options_.stage == -1) KeepRegistry(members);
      ReadRoutingWeights();
      if (!options_.plan_json.empty() && now_ms - last_plan_check_ms_ >= 1000 && !fenced_) {
        last_plan_check_ms_ = now_ms;
        auto plan = options_.store->Get(PlanKey(options_.pipeline), Deadline::AfterMs(1000));
        if (plan.ok() && *plan != options_.plan_json) {
          fenced_ = true;
          ARCHI_LOG_ERROR(
              "pipeline {}: the plan in the store changed (a new frontend?); member {} "
              "no longer fits it and stops",
              options_.pipeline, options_.id);
        }
      }
      const int up = UpstreamStage();
      const int down = DownstreamStage();
      bool has_up = false, has_down = false;
      {
        std::lock_guard lock(mu_);
        for (const auto& l : links_) (l->downstream ? has_down : has_up) = true;
        for (auto& [id, m] : members) {
          if (id == options_.id) continue;
          for (int dir = 0; dir < 2; ++dir) {
            const bool downstream = dir == 0;
            if (m.stage != (downstream ? down : up)) continue;
            // A neighbour marked gone (dead or fenced): break its links now rather than wait for
            // the world layer to notice, so its unacknowledged work is re-sent at once.
            if (m.state == "gone") {
              for (auto& l : links_) {
                if (l->peer.id == id && l->peer.incarnation == m.incarnation && !l->closing &&
                    !l->closed_by_peer) {
                  l->comm->Abort(Status(StatusCode::kUnavailable, "peer " + id + " marked gone"));
                }
              }
            }
            // Close down-links to members that are leaving.
            for (auto& l : links_) {
              if (l->peer.id == id && l->downstream == downstream && downstream && !l->closing &&
                  (l->peer.incarnation != m.incarnation || !Linkable(m.state))) {
                l->closing = true;
                SendControlLocked(*l, MsgKind::kClose, 0);
              }
            }
            if (!Linkable(m.state) || draining_ || fenced_) continue;
            const std::string tag = m.id + "." + m.incarnation;
            if (std::find(failed_.begin(), failed_.end(), tag) != failed_.end()) continue;
            const std::string name =
                downstream ? WorldName(options_.id, incarnation_, m.id, m.incarnation)
                           : WorldName(m.id, m.incarnation, options_.id, incarnation_);
            bool have =
                std::find(connecting_.begin(), connecting_.end(), name) != connecting_.end();
            for (const auto& l : links_) have = have || l->world == name;
            for (const auto& l : dead_) have = have || l->world == name;
            if (have) continue;
            connecting_.push_back(name);
            auto done = std::make_shared<std::atomic<bool>>(false);
            connect_threads_.push_back({done, std::jthread([this, m, downstream, done] {
                                          Connect(m, downstream);
                                          *done = true;
                                        })});
          }
        }
        // A peer missing from the registry is not closed: a new frontend replaces the registry
        // and live members register again; one that exited breaks its worlds anyway.
        ExpirePendingLocked();
      }
      std::string want;
      {
        std::lock_guard lock(mu_);
        want = self_.state;
      }
      if (!draining_ && !fenced_ && want == "joining" && has_up && has_down) {
        (WriteSelf("ready")).IgnoreError();
      }
      // Counters, at most every 200 ms and only when they moved.
      const int64_t now = UnixMillis();
      uint64_t received;
      {
        std::lock_guard lock(mu_);
        // One number that moves when either counter does (both only grow).
        received = stats_.batches_received + stats_.batches_resent;
        self_.batches = stats_.batches_received;
        self_.resent = stats_.batches_resent;
        if (received > 0 && self_.first_batch_unix_ms == 0) self_.first_batch_unix_ms = now;
      }
      if (received != written_batches_ && now - last_stats_write_ms_ >= 200 && !fenced_) {
        std::string state;
        {
          std::lock_guard lock(mu_);
          state = self_.state;
        }
        if (WriteSelf(state).ok()) {
          written_batches_ = received;
          last_stats_write_ms_ = now;
        }
      }
    } else if (!registry_warned_) {
      registry_warned_ = true;  // once per outage: the loop retries every poll
      ARCHI_LOG_WARN("pipeline {}: registry unreachable (retrying every {} ms): {}",
                     options_.pipeline, options_.poll_ms, list.status().ToString());
    }
    if (list.ok() && registry_warned_) {
      registry_warned_ = false;
      ARCHI_LOG_INFO("pipeline {}: registry reachable again", options_.pipeline);
    }
    // Reap dead links: join their readers, remove their worlds.
    std::vector<std::shared_ptr<Link>> dead;
    {
      std::lock_guard lock(mu_);
      dead.swap(dead_);
    }
    for (auto& l : dead) {
      (worlds_->RemoveWorld(l->world, Deadline::AfterMs(1000))).IgnoreError();
      if (l->reader.joinable()) l->reader.join();
    }
    std::vector<ConnectTask> finished;
    {
      std::lock_guard lock(mu_);
      for (auto it = connect_threads_.begin(); it != connect_threads_.end();) {
        if (it->done->load()) {
          finished.push_back(std::move(*it));
          it = connect_threads_.erase(it);
        } else {
          ++it;
        }
      }
    }
    finished.clear();  // joins, outside the lock
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.poll_ms));
  }
}

}  // namespace archi::executor
