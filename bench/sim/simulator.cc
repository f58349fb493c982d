#include "bench/sim/simulator.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <queue>
#include <type_traits>
#include <unordered_map>

namespace archi::sim {

namespace {

using policy::ReplicaState;

// A FIFO over one vector that only grows (amortised: no allocation once warm).
template <typename T>
class RingOf {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  const T& front() const { return buf_[head_]; }
  void push(T v) {
    if (size_ == buf_.size()) Grow();
    buf_[(head_ + size_) & (buf_.size() - 1)] = v;
    ++size_;
  }
  T pop() {
    T v = buf_[head_];
    head_ = (head_ + 1) & (buf_.size() - 1);
    --size_;
    return v;
  }

 private:
  void Grow() {
    std::vector<T> n(buf_.empty() ? 16 : buf_.size() * 2);
    for (size_t i = 0; i < size_; ++i) n[i] = buf_[(head_ + i) & (buf_.size() - 1)];
    buf_.swap(n);
    head_ = 0;
  }
  std::vector<T> buf_;
  size_t head_ = 0, size_ = 0;
};
using Ring = RingOf<uint32_t>;

// Log-linear histogram of positive values (ms): each power of two is split into 2^sub_bits
// equal buckets, indexed straight from the double's exponent and top mantissa bits (no log()
// in the hot path). A bucket spans at most 2^-sub_bits of its value.
class LogHist {
 public:
  explicit LogHist(int sub_bits) : sub_bits_(sub_bits) {
    counts_.assign(static_cast<size_t>(kExpSpan) << sub_bits_, 0);
  }
  void Add(double v) {
    size_t i = Index(v);
    ++counts_[i];
    lo_ = std::min(lo_, i);
    hi_ = std::max(hi_, i);
    ++n_;
  }
  uint64_t count() const { return n_; }
  // Nearest-rank quantile, reported as the bucket's middle (within 2^-(sub_bits+1) of truth).
  double Quantile(double q) const {
    if (n_ == 0) return 0;
    uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(n_))));
    uint64_t seen = 0;
    for (size_t i = lo_; i <= hi_; ++i) {
      seen += counts_[i];
      if (seen >= rank) return Middle(i);
    }
    return Middle(hi_);
  }
  void Reset() {
    if (n_ == 0) return;
    std::fill(counts_.begin() + static_cast<ptrdiff_t>(lo_), counts_.begin() + static_cast<ptrdiff_t>(hi_) + 1, 0);
    lo_ = SIZE_MAX;
    hi_ = 0;
    n_ = 0;
  }

 private:
  // Values from 2^kMinExp (about 1e-3 ms) to 2^(kMinExp + kExpSpan) (about 1.7e10 ms).
  static constexpr int kMinExp = -10, kExpSpan = 44;
  size_t Index(double v) const {
    const uint64_t bits = std::bit_cast<uint64_t>(v);
    const int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
    if (v <= 0 || e < kMinExp) return 0;
    if (e >= kMinExp + kExpSpan) return counts_.size() - 1;
    const uint64_t m = (bits >> (52 - sub_bits_)) & ((uint64_t{1} << sub_bits_) - 1);
    return (static_cast<size_t>(e - kMinExp) << sub_bits_) | static_cast<size_t>(m);
  }
  double Middle(size_t i) const {
    const int e = static_cast<int>(i >> sub_bits_) + kMinExp;
    const double m = static_cast<double>(i & ((size_t{1} << sub_bits_) - 1));
    return std::ldexp(1.0 + (m + 0.5) / static_cast<double>(size_t{1} << sub_bits_), e);
  }
  int sub_bits_;
  std::vector<uint64_t> counts_;
  size_t lo_ = SIZE_MAX, hi_ = 0;
  uint64_t n_ = 0;
};

enum class EvType : uint8_t {
  kArrival,      // (unused: the next arrival is held outside the heap)
  kStageArrive,  // a = transfer group (a batch moving on), b = stage
  kServiceDone,  // a = replica slot, b = generation
  kJoinDone,     // a = replica slot, b = generation
  kNodeEvents,   // a = first trace event index of a timestamp
  kWarn,         // a = trace event index (a removal)
  kDecision,     // a = token (0: membership-triggered)
  kInterval,
  kBatchTimeout,  // a = batching group, b = its generation (issue 9)
  kKindWarn,      // the vanishing kind's notice
  kKindGone,      // the vanishing kind's removal
};

struct Ev {
  double t;
  uint64_t seq;
  EvType type;
  uint32_t a;
  uint32_t b;
};
// A batch moving to the next stage. The transfer time is one constant, so these events are
// created in time order and wait in a FIFO instead of the heap (same (time, seq) order).
struct Hop {
  double t;
  uint64_t seq;
  uint32_t group;
  uint32_t stage;
};

// A service completion. With a deterministic performance model every batch of one (stage,
// size) takes the same time, so completions with the same duration are created in time order:
// they wait in one FIFO per distinct duration instead of the heap (same (time, seq) order).
struct Done {
  double t;
  uint64_t seq;
  uint32_t slot;
  uint32_t gen;
};

struct Later {
  bool operator()(const Ev& x, const Ev& y) const {
    return x.t > y.t || (x.t == y.t && x.seq > y.seq);
  }
};

}  // namespace

NodeTrace ScaleTrace(const NodeTrace& trace, int k) {
  if (k <= 1) return trace;
  NodeTrace out = trace;
  out.events.clear();
  out.events.reserve(trace.events.size() * static_cast<size_t>(k));
  for (const NodeEvent& e : trace.events) {
    for (int i = 0; i < k; ++i) out.events.push_back({e.time_ms, e.op, e.node + "." + std::to_string(i)});
  }
  return out;
}

struct Simulator::Impl {
  enum class RState : uint8_t { kFree, kJoining, kReady, kDraining };

  struct Req {
    double arrival = 0, deadline = 0, stage_arrival = 0;
    int32_t stage = 0;
    int16_t app = -1;  // SimOptions::apps index
    int16_t grp = -1;  // batching group (-1: none)
    uint16_t cap = 0;  // the group's max batch (0: max_batch)
  };
  struct Rep {
    int node = -1;
    int stage = -1;
    RState state = RState::kFree;
    uint32_t gen = 0;
    Ring queue;
    std::vector<uint32_t> batch;
    bool busy = false;
    int view_pos = -1;   // index in slots[stage] / state.stages[stage].replicas
    int ready_pos = -1;  // index in stages[stage].ready while ready
    int kpos = -1;       // index in ready_k[stage][kind] while ready
    double busy_start = 0;
    double busy_ms_win = 0;
    uint64_t done_win = 0;
  };
  struct StageRt {
    std::vector<int> ready;  // replica slots taking traffic
    Ring pending;            // requests waiting for a ready replica
    LogHist hist{4};         // time at the stage, current window (buckets <= 6%)
    uint64_t done_win = 0;
  };
  struct Node {
    std::string id;
    bool present = false;
    bool warned = false;
    int rep = -1;
    int idle_pos = -1;  // index in state.idle / idle_nodes while idle
    bool cordoned = false;  // drained after its notice, never assigned again (coordinator mode)
    int kind = 0;           // index in kinds
  };
  // Issue 9: node kinds, routing weights, applications and batching groups.
  struct GroupRt {
    int max_batch = 1;
    double timeout_ms = 0;
    std::vector<double> route;  // weight per kind; empty: the stage's weights
    std::vector<uint32_t> buf;
    uint32_t gen = 0;
  };
  std::vector<NodeKind> kinds;
  std::vector<int> kind_pattern;
  bool hetero = false;          // a kind with capacity != 1 or extra time
  double present_price = 0;     // sum of the present nodes' prices per hour
  double price_ms = 0;          // integral of present_price over ms
  std::vector<std::vector<std::vector<int>>> ready_k;  // [stage][kind] ready slots
  std::vector<std::vector<double>> kind_w;             // [stage] weight per kind; empty: none
  std::vector<GroupRt> bgroups;
  std::vector<int> app_group;  // per app: index in bgroups or -1
  std::vector<double> app_cum;  // cumulative shares
  std::vector<uint64_t> app_bucket;
  std::vector<double> app_rate;
  double app_bucket_start = 0;
  std::mt19937_64 rng_app;

  SimOptions o;
  PerfModel model;
  NodeTrace trace;
  ArrivalSpec arrivals;
  const policy::Policy* policy;

  std::mt19937_64 rng_arrival, rng_route, rng_noise;
  std::optional<Sampler> gap_sampler, noise_sampler;
  std::exponential_distribution<double> unit_exp{1.0};

  std::priority_queue<Ev, std::vector<Ev>, Later> heap;
  RingOf<Hop> hops;
  // Completions by duration (deterministic model): done_fifo_of[stage][batch - 1] indexes
  // done_fifos; empty when completions go through the heap.
  std::vector<RingOf<Done>> done_fifos;
  std::vector<std::vector<uint8_t>> done_fifo_of;
  uint64_t seq = 0;

  std::vector<Req> reqs;
  std::vector<uint32_t> free_reqs;
  // Batches between stages (one event per batch, not per request); vectors are reused.
  std::vector<std::vector<uint32_t>> groups;
  std::vector<uint32_t> free_groups;
  double next_arrival_t = -1;  // the next arrival is kept out of the heap (one per request)
  uint64_t in_system = 0;
  std::vector<Rep> reps;
  std::vector<int> free_reps;
  std::vector<StageRt> stages;
  std::vector<Node> nodes;
  std::unordered_map<std::string, int> node_by_id;
  int present = 0;
  int warned_present = 0;              // present nodes under a preemption notice
  std::vector<double> minute_usable;   // usable nodes at each whole minute (forecaster input)
  int counts[4] = {0, 0, 0, 0};  // replicas by RState

  // The live coordinator's own reconcile loop (SimOptions::coordinator_reconcile).
  std::vector<int> target;            // per stage
  std::vector<bool> failed_stage;     // a replica of the stage was removed, not yet replaced
  std::map<int, int> lent;            // donor stage -> replicas lent to an emptied stage
  int cordoned = 0;                   // present nodes drained after their notice
  bool in_reconcile = false, reconcile_again = false;

  // What the policy sees, kept up to date incrementally (rebuilding it for 10,000 workers at
  // every decision would dominate the run); slots[s][i] is the replica behind
  // state.stages[s].replicas[i] and metrics.stages[s].replicas[i].
  policy::ClusterState state;
  policy::ClusterMetrics metrics;
  std::vector<std::vector<int>> slots;
  std::vector<int> idle_nodes;  // node behind state.idle[i]
  policy::Forecast forecast;
  uint64_t decision_token = 0;
  bool membership_decision_pending = false;
  double window_start = 0;
  uint64_t arrived_win = 0;
  LogHist e2e_win{4};

  // Arrivals.
  size_t next_arrival_index = 0;
  size_t arrivals_made = 0;
  double arrival_end = 0;
  bool arrivals_done = false;

  // Accounting.
  SimResult r;
  LogHist e2e{7};           // buckets <= 0.8%: quantiles within 0.4%
  LogHist e2e_interval{7};
  double latency_sum = 0;
  double node_ms = 0, last_count_change = 0;
  IntervalRow cur;  // counters of the current interval
  double slo = 0;

  void Push(double t, EvType type, uint32_t a = 0, uint32_t b = 0) {
    heap.push(Ev{t, seq++, type, a, b});
  }

  void Log(double t, const char* kind, int stage, const std::string& worker, std::string reason = {}) {
    r.reconfigs[kind]++;
    r.log.push_back({t, kind, stage, worker, std::move(reason)});
  }

  // --- requests ---------------------------------------------------------------------------

  uint32_t AllocReq() {
    ++in_system;
    if (!free_reqs.empty()) {
      uint32_t i = free_reqs.back();
      free_reqs.pop_back();
      return i;
    }
    reqs.emplace_back();
    return static_cast<uint32_t>(reqs.size() - 1);
  }
  void FreeReq(uint32_t i) {
    --in_system;
    free_reqs.push_back(i);
  }
  void TimedOut(uint32_t i) {
    ++r.timed_out;
    ++cur.timed_out;
    FreeReq(i);
  }

  void Finish(uint32_t i, double now) {
    const Req& q = reqs[i];
    // The model's overhead outside the stages (frontend, RPC) occupies no replica: it is only
    // added to the latency.
    const double done = now + model.overhead_ms;
    if (done > q.deadline) {
      TimedOut(i);
      return;
    }
    double lat = done - q.arrival;
    ++r.served;
    ++cur.served;
    e2e.Add(lat);
    e2e_interval.Add(lat);
    e2e_win.Add(lat);
    latency_sum += lat;
    r.max_ms = std::max(r.max_ms, lat);
    double slo_i = slo;
    if (q.app >= 0) {
      SimResult::App& ra = r.apps[static_cast<size_t>(q.app)];
      ++ra.served;
      if (ra.slo_ms > 0) slo_i = ra.slo_ms;
      if (lat <= slo_i) ++ra.within_slo;
    }
    if (lat <= slo_i) {
      ++r.within_slo;
      ++cur.within_slo;
    }
    if (o.record_latencies) r.latencies.push_back(lat);
    FreeReq(i);
  }

  // Sends request i to a ready replica of `stage` (power of two choices), or holds it.
  void Route(uint32_t i, int stage, double now) { RouteMany(&i, 1, stage, now); }

  // Sends n requests (a batch moving on together) to one ready replica of `stage`.
  void RouteMany(const uint32_t* ids, size_t count, int stage, double now) {
    for (size_t k = 0; k < count; ++k) {
      Req& q = reqs[ids[k]];
      q.stage = stage;
      q.stage_arrival = now;
    }
    StageRt& st = stages[stage];
    if (st.ready.empty()) {
      for (size_t k = 0; k < count; ++k) st.pending.push(ids[k]);
      return;
    }
    int slot = st.ready[0];
    const size_t n = st.ready.size();
    const int picked = kind_w.empty() ? -1 : PickWeighted(stage, reqs[ids[0]].grp);
    if (picked >= 0) {
      slot = picked;
    } else if (n > 1) {
      size_t a = rng_route() % n, b = rng_route() % (n - 1);
      if (b >= a) ++b;
      const Rep& ra = reps[st.ready[a]];
      const Rep& rb = reps[st.ready[b]];
      size_t la = ra.queue.size() + ra.batch.size(), lb = rb.queue.size() + rb.batch.size();
      slot = lb < la ? st.ready[b] : st.ready[a];
    }
    Rep& rep = reps[slot];
    for (size_t k = 0; k < count; ++k) rep.queue.push(ids[k]);
    if (!rep.busy) StartBatch(slot, now);
  }

  uint32_t NewGroup(const std::vector<uint32_t>& ids) {
    uint32_t g;
    if (!free_groups.empty()) {
      g = free_groups.back();
      free_groups.pop_back();
    } else {
      groups.emplace_back();
      g = static_cast<uint32_t>(groups.size() - 1);
    }
    groups[g].assign(ids.begin(), ids.end());
    return g;
  }

  void GroupArrives(uint32_t g, int stage, double now) {
    RouteMany(groups[g].data(), groups[g].size(), stage, now);
    groups[g].clear();
    free_groups.push_back(g);
  }

  void StartBatch(int slot, double now) {
    Rep& rep = reps[slot];
    if (!bgroups.empty()) FillGroupBatch(rep, now);  // issue 9: one group per batch
    while (bgroups.empty() && rep.batch.size() < static_cast<size_t>(o.max_batch) &&
           !rep.queue.empty()) {
      uint32_t i = rep.queue.pop();
      if (reqs[i].deadline < now) {
        TimedOut(i);
      } else {
        rep.batch.push_back(i);
      }
    }
    if (rep.batch.empty()) {
      rep.busy = false;
      if (rep.state == RState::kDraining) {
        if (!nodes[rep.node].warned) {
          FinishDrain(slot, now);
        } else if (o.coordinator_reconcile) {
          Cordon(slot, now);
        }
      }
      return;
    }
    rep.busy = true;
    rep.busy_start = now;
    const int b = static_cast<int>(rep.batch.size());
    double d = model.StageMs(rep.stage, b);
    const NodeKind& kind = kinds[static_cast<size_t>(nodes[rep.node].kind)];
    if (hetero) d = d / kind.capacity + kind.extra_ms;
    if (!r.apps.empty() && rep.stage == 0 && reqs[rep.batch[0]].app >= 0) {
      SimResult::App& ra = r.apps[static_cast<size_t>(reqs[rep.batch[0]].app)];
      ++ra.batches;
      ra.batched += rep.batch.size();
    }
    if (!done_fifos.empty()) {
      r.usage_cost += d * kind.price_per_hour / 3.6e6;
      done_fifos[done_fifo_of[rep.stage][b - 1]].push(
          Done{now + d, seq++, static_cast<uint32_t>(slot), rep.gen});
      return;
    }
    if (noise_sampler) d *= (*noise_sampler)(rng_noise);
    r.usage_cost += d * kind.price_per_hour / 3.6e6;
    Push(now + d, EvType::kServiceDone, static_cast<uint32_t>(slot), rep.gen);
  }

  void ServiceDone(int slot, uint32_t gen, double now) {
    Rep& rep = reps[slot];
    if (rep.gen != gen || !rep.busy) return;  // the node was removed meanwhile
    rep.busy_ms_win += now - std::max(rep.busy_start, window_start);
    StageRt& st = stages[rep.stage];
    const int last = o.stages - 1;
    const int stage = rep.stage;
    for (uint32_t i : rep.batch) st.hist.Add(now - reqs[i].stage_arrival);
    st.done_win += rep.batch.size();
    rep.done_win += rep.batch.size();
    // Hand the batch on, as one unit: to the next stage after the transfer time (one event),
    // or out of the pipeline.
    if (stage == last) {
      for (uint32_t i : rep.batch) Finish(i, now);
    } else if (model.transfer_ms > 0) {
      hops.push(Hop{now + model.transfer_ms, seq++, NewGroup(rep.batch), static_cast<uint32_t>(stage + 1)});
    } else {
      RouteMany(rep.batch.data(), rep.batch.size(), stage + 1, now);
    }
    reps[slot].batch.clear();
    reps[slot].busy = false;
    StartBatch(slot, now);
  }

  // --- replicas and the policy's view ---------------------------------------------------

  static ReplicaState ViewState(RState s) {
    return s == RState::kJoining ? ReplicaState::kJoining
           : s == RState::kReady ? ReplicaState::kReady
                                 : ReplicaState::kDraining;
  }

  policy::Worker MakeWorker(const Node& n) const {
    policy::Worker w;
    w.id = n.id;
    w.host = n.id;
    const NodeKind& k = kinds[static_cast<size_t>(n.kind)];
    w.kind = k.name;
    w.capacity = k.capacity;
    w.price_per_hour = k.price_per_hour;
    return w;
  }

  // The idle pool, the ready lists and the policy's replica lists are unordered sets with
  // O(1) removal (swap with the last); the policy does not depend on their order.
  void AddIdle(int node) {
    nodes[node].idle_pos = static_cast<int>(state.idle.size());
    state.idle.push_back(MakeWorker(nodes[node]));
    idle_nodes.push_back(node);
  }
  void RemoveIdle(int node) {
    int pos = nodes[node].idle_pos;
    if (pos < 0) return;
    int last = static_cast<int>(state.idle.size()) - 1;
    if (pos != last) {
      state.idle[pos] = std::move(state.idle[last]);
      idle_nodes[pos] = idle_nodes[last];
      nodes[idle_nodes[pos]].idle_pos = pos;
    }
    state.idle.pop_back();
    idle_nodes.pop_back();
    nodes[node].idle_pos = -1;
  }

  void AddReady(int slot) {
    auto& ready = stages[reps[slot].stage].ready;
    reps[slot].ready_pos = static_cast<int>(ready.size());
    ready.push_back(slot);
    auto& rk = ReadyOfKind(slot);
    reps[slot].kpos = static_cast<int>(rk.size());
    rk.push_back(slot);
  }
  void RemoveReady(int slot) {
    auto& ready = stages[reps[slot].stage].ready;
    int pos = reps[slot].ready_pos;
    int last = static_cast<int>(ready.size()) - 1;
    if (pos != last) {
      ready[pos] = ready[last];
      reps[ready[pos]].ready_pos = pos;
    }
    ready.pop_back();
    reps[slot].ready_pos = -1;
    auto& rk = ReadyOfKind(slot);
    const int kp = reps[slot].kpos, kl = static_cast<int>(rk.size()) - 1;
    if (kp != kl) {
      rk[static_cast<size_t>(kp)] = rk[static_cast<size_t>(kl)];
      reps[rk[static_cast<size_t>(kp)]].kpos = kp;
    }
    rk.pop_back();
    reps[slot].kpos = -1;
  }

  size_t ViewPos(int slot) const { return static_cast<size_t>(reps[slot].view_pos); }

  void SetState(int slot, RState s, double now) {
    Rep& rep = reps[slot];
    --counts[static_cast<int>(rep.state)];
    ++counts[static_cast<int>(s)];
    if (rep.state == RState::kReady) RemoveReady(slot);
    rep.state = s;
    if (s == RState::kReady) AddReady(slot);
    size_t pos = ViewPos(slot);
    auto& vr = state.stages[rep.stage].replicas[pos];
    vr.state = ViewState(s);
    vr.state_since_ms = static_cast<policy::TimeMs>(now);
  }

  int NewReplica(int node, int stage, RState s, double now) {
    int slot;
    if (!free_reps.empty()) {
      slot = free_reps.back();
      free_reps.pop_back();
    } else {
      reps.emplace_back();
      slot = static_cast<int>(reps.size() - 1);
    }
    Rep& rep = reps[slot];
    rep.node = node;
    rep.stage = stage;
    rep.state = s;
    rep.busy = false;
    rep.busy_ms_win = 0;
    rep.done_win = 0;
    rep.batch.reserve(static_cast<size_t>(o.max_batch));
    ++counts[static_cast<int>(s)];
    nodes[node].rep = slot;
    state.stages[stage].replicas.push_back(
        policy::Replica{MakeWorker(nodes[node]), ViewState(s), static_cast<policy::TimeMs>(now)});
    metrics.stages[stage].replicas.push_back(policy::ReplicaMetrics{nodes[node].id, 0, 0, 0});
    rep.view_pos = static_cast<int>(slots[stage].size());
    slots[stage].push_back(slot);
    if (s == RState::kReady) {
      AddReady(slot);
      DrainPending(stage, now);
    }
    return slot;
  }

  // Removes the replica from every view; the node keeps running (drain) or is gone (preempt).
  void ReleaseReplica(int slot) {
    Rep& rep = reps[slot];
    if (rep.state == RState::kReady) RemoveReady(slot);
    const size_t pos = ViewPos(slot);
    auto& vs = state.stages[rep.stage].replicas;
    auto& ms = metrics.stages[rep.stage].replicas;
    auto& sl = slots[rep.stage];
    const size_t last = sl.size() - 1;
    if (pos != last) {
      vs[pos] = std::move(vs[last]);
      ms[pos] = std::move(ms[last]);
      sl[pos] = sl[last];
      reps[sl[pos]].view_pos = static_cast<int>(pos);
    }
    vs.pop_back();
    ms.pop_back();
    sl.pop_back();
    rep.view_pos = -1;
    --counts[static_cast<int>(rep.state)];
    nodes[rep.node].rep = -1;
    rep.state = RState::kFree;
    rep.node = -1;
    ++rep.gen;
    rep.busy = false;
    rep.batch.clear();
    free_reps.push_back(slot);
  }

  void FinishDrain(int slot, double now) {
    int node = reps[slot].node;
    int stage = reps[slot].stage;
    ReleaseReplica(slot);
    Log(now, "drained", stage, nodes[node].id);
    AddIdle(node);
    Reconcile(now);
  }

  // Coordinator mode: a replica under a preemption notice that has finished its work is
  // released like the live coordinator's admin drain does (the worker reports idle) but never
  // assigned again.
  void Cordon(int slot, double now) {
    int node = reps[slot].node;
    int stage = reps[slot].stage;
    ReleaseReplica(slot);
    nodes[node].cordoned = true;
    ++cordoned;
    Log(now, "drained", stage, nodes[node].id, "cordoned after its preemption notice");
  }

  // --- the live coordinator's reconcile loop (SimOptions::coordinator_reconcile) ------------
  //
  // archi-coordinator keeps a target replica count per stage on top of any policy (the initial
  // placement; +1 per policy AddReplica, -1 per DrainReplica) and, every 20 ms and on every
  // admin drain, brings each stage to it: idle workers are assigned to a stage below target
  // (its PickIdle: equal capacities, so the smallest id), a stage emptied by a failure with no
  // idle worker borrows one replica from the stage with the most (its target -1, given back once
  // a worker is idle), extras are drained (joining first, then the shortest queue). The
  // simulator runs it at each of those moments: membership changes, notices, finished drains,
  // after every policy plan.

  int Active(int stage) const {
    int n = 0;
    for (int slot : slots[stage]) {
      n += reps[slot].state == RState::kJoining || reps[slot].state == RState::kReady;
    }
    return n;
  }

  void CoordinatorAssign(int stage, int active, double now) {
    size_t best = 0;
    for (size_t k = 1; k < state.idle.size(); ++k) {
      if (state.idle[k].id < state.idle[best].id) best = k;
    }
    const int node = idle_nodes[best];
    RemoveIdle(node);
    const int slot = NewReplica(node, stage, RState::kJoining, now);
    Log(now, "add", stage, nodes[node].id,
        "coordinator: stage " + std::to_string(stage) + " has " + std::to_string(active) +
            " of " + std::to_string(target[static_cast<size_t>(stage)]) + " replicas");
    Push(now + o.costs.world_create_ms + o.costs.weight_load_ms, EvType::kJoinDone,
         static_cast<uint32_t>(slot), reps[slot].gen);
  }

  void FillStages(double now) {
    for (int s = 0; s < o.stages; ++s) {
      int& t = target[static_cast<size_t>(s)];
      int active = Active(s);
      while (active < t && !state.idle.empty()) {
        CoordinatorAssign(s, active, now);
        ++active;
        failed_stage[static_cast<size_t>(s)] = false;
      }
      if (active == 0 && t > 0 && failed_stage[static_cast<size_t>(s)]) {
        int donor = -1, most = 1;
        for (int d = 0; d < o.stages; ++d) {
          const int a = Active(d);
          if (d != s && a > most && target[static_cast<size_t>(d)] > 1) {
            donor = d;
            most = a;
          }
        }
        if (donor >= 0) {
          --target[static_cast<size_t>(donor)];
          ++lent[donor];
          failed_stage[static_cast<size_t>(s)] = false;
          Log(now, "replan", s, "", "coordinator: no idle worker; one replica from stage " +
                                        std::to_string(donor));
          reconcile_again = true;
        }
      }
      while (active > t) {
        int pick = -1;
        for (int slot : slots[s]) {
          const Rep& r = reps[slot];
          if (r.state != RState::kJoining && r.state != RState::kReady) continue;
          if (pick < 0) {
            pick = slot;
            continue;
          }
          const Rep& p = reps[pick];
          const auto rank = [](const Rep& x) {
            return std::make_pair(x.state == RState::kReady ? 1 : 0, x.queue.size());
          };
          if (rank(r) < rank(p)) pick = slot;
        }
        if (pick < 0) break;
        Log(now, "drain", s, nodes[reps[pick].node].id,
            "coordinator: stage " + std::to_string(s) + " has " + std::to_string(active) +
                " replicas; target " + std::to_string(t));
        SetState(pick, RState::kDraining, now);
        --active;
        if (!reps[pick].busy && reps[pick].queue.empty()) FinishDrain(pick, now);
      }
    }
  }

  void Reconcile(double now) {
    if (!o.coordinator_reconcile || target.empty()) return;
    if (in_reconcile) {  // a drain finished inside: run again at the end
      reconcile_again = true;
      return;
    }
    in_reconcile = true;
    do {
      reconcile_again = false;
      FillStages(now);
      while (!lent.empty() && !state.idle.empty()) {
        auto it = lent.begin();
        ++target[static_cast<size_t>(it->first)];
        Log(now, "replan", it->first, "", "coordinator: an idle worker is available, target back");
        if (--it->second == 0) lent.erase(it);
        FillStages(now);
      }
    } while (reconcile_again);
    in_reconcile = false;
  }

  // Requests held for a stage with no ready replica go out once one is ready.
  void DrainPending(int stage, double now) {
    StageRt& st = stages[stage];
    size_t n = st.pending.size();
    for (size_t k = 0; k < n && !st.ready.empty(); ++k) {
      uint32_t i = st.pending.pop();
      if (reqs[i].deadline < now) {
        TimedOut(i);
      } else {
        Route(i, stage, now);
      }
    }
  }

  // Moves a replica's waiting requests to the other replicas of its stage.
  void Reroute(int slot, double now) {
    Rep& rep = reps[slot];
    const int stage = rep.stage;
    while (!reps[slot].queue.empty()) {
      uint32_t i = reps[slot].queue.pop();
      ++r.rerouted;
      Route(i, stage, now);
    }
  }

  // --- nodes --------------------------------------------------------------------------------

  void CountChange(double now) {
    node_ms += static_cast<double>(present) * (now - last_count_change);
    price_ms += present_price * (now - last_count_change);
    last_count_change = now;
  }

  void NodeAdd(const std::string& id, double now) {
    auto [it, fresh] = node_by_id.try_emplace(id, static_cast<int>(nodes.size()));
    if (fresh) {
      nodes.push_back(Node{id});
      nodes.back().kind = kind_pattern[KindHash(id) % kind_pattern.size()];
      if (auto k = o.node_kind_of.find(id); k != o.node_kind_of.end()) {
        for (size_t j = 0; j < kinds.size(); ++j) {
          if (kinds[j].name == k->second) nodes.back().kind = static_cast<int>(j);
        }
      }
    }
    Node& n = nodes[it->second];
    if (Vanished(n.kind, now)) return;  // that kind is gone for good
    CountChange(now);
    present_price += kinds[static_cast<size_t>(n.kind)].price_per_hour;
    n.present = true;
    n.warned = false;
    n.rep = -1;
    ++present;
    AddIdle(it->second);
    Log(now, "join", -1, id);
  }

  void NodeWarn(const std::string& id, double now) {
    auto it = node_by_id.find(id);
    if (it == node_by_id.end()) return;
    Node& n = nodes[it->second];
    if (!n.present || n.warned) return;
    n.warned = true;
    ++warned_present;
    if (n.rep < 0) {
      RemoveIdle(it->second);
      return;
    }
    int slot = n.rep;
    Log(now, "preempt_notice", reps[slot].stage, id);
    if (reps[slot].state != RState::kDraining) SetState(slot, RState::kDraining, now);
    Reroute(slot, now);
    if (o.coordinator_reconcile) {
      if (!reps[slot].busy && reps[slot].queue.empty()) Cordon(slot, now);
      Reconcile(now);
    }
  }

  void NodeRemove(const std::string& id, double now) {
    auto it = node_by_id.find(id);
    if (it == node_by_id.end()) return;
    Node& n = nodes[it->second];
    if (!n.present) return;
    CountChange(now);
    present_price -= kinds[static_cast<size_t>(n.kind)].price_per_hour;
    n.present = false;
    --present;
    if (n.warned) --warned_present;
    if (n.rep < 0) {
      if (!n.warned) RemoveIdle(it->second);
      if (n.cordoned) {
        // It served a stage until its notice (the live replay counts its kill as a preemption).
        n.cordoned = false;
        --cordoned;
        Log(now, "preempt", -1, id);
        return;
      }
      Log(now, "preempt_idle", -1, id);
      return;
    }
    int slot = n.rep;
    Rep& rep = reps[slot];
    const int stage = rep.stage;
    std::vector<uint32_t> in_service;
    in_service.swap(rep.batch);
    if (rep.state != RState::kDraining) SetState(slot, RState::kDraining, now);
    Reroute(slot, now);
    ReleaseReplica(slot);
    for (uint32_t i : in_service) {
      if (o.resend) {
        ++r.resent;
        Route(i, stage, now);
      } else {
        ++r.lost_preempted;
        ++cur.lost;
        FreeReq(i);
      }
    }
    reps[slot].batch.swap(in_service);  // keep its capacity for the slot's next use
    reps[slot].batch.clear();
    Log(now, "preempt", stage, id);
    if (o.coordinator_reconcile && !failed_stage.empty()) failed_stage[static_cast<size_t>(stage)] = true;
  }

  void NodeEvents(size_t first, double now) {
    size_t i = first;
    for (; i < trace.events.size() && trace.events[i].time_ms == trace.events[first].time_ms; ++i) {
      const NodeEvent& e = trace.events[i];
      if (e.op == NodeOp::kAdd) {
        NodeAdd(e.node, now);
      } else {
        NodeRemove(e.node, now);
      }
    }
    if (i < trace.events.size() && static_cast<double>(trace.events[i].time_ms) <= arrival_end) {
      Push(static_cast<double>(trace.events[i].time_ms), EvType::kNodeEvents, static_cast<uint32_t>(i));
    }
    Reconcile(now);
    RequestMembershipDecision(now);
  }

  // --- policy -------------------------------------------------------------------------------

  void RequestMembershipDecision(double now) {
    if (membership_decision_pending) return;
    membership_decision_pending = true;
    Push(now, EvType::kDecision, 0);
  }

  void UpdateMetrics(double now) {
    const double win = std::max(1.0, now - window_start);
    for (int s = 0; s < o.stages; ++s) {
      StageRt& st = stages[s];
      policy::StageMetrics& m = metrics.stages[s];
      double queued = static_cast<double>(st.pending.size());
      double util_sum = 0;
      int ready = 0;
      for (size_t k = 0; k < slots[s].size(); ++k) {
        Rep& rep = reps[slots[s][k]];
        double busy = rep.busy_ms_win + (rep.busy ? now - std::max(rep.busy_start, window_start) : 0);
        double util = std::min(1.0, busy / win);
        policy::ReplicaMetrics& rm = m.replicas[k];
        rm.queue_depth = static_cast<double>(rep.queue.size()) / o.max_batch;
        rm.utilisation = util;
        rm.throughput_rps = static_cast<double>(rep.done_win) * 1000.0 / win;
        queued += static_cast<double>(rep.queue.size());
        if (rep.state == RState::kReady) {
          util_sum += util;
          ++ready;
        }
      }
      m.queue_depth = queued / o.max_batch;
      m.p50_ms = st.hist.Quantile(0.50);
      m.p99_ms = st.hist.Quantile(0.99);
      m.throughput_rps = static_cast<double>(st.done_win) * 1000.0 / win;
      m.utilisation = ready > 0 ? util_sum / ready : 0;
    }
    metrics.frontend.admitted_rps = static_cast<double>(arrived_win) * 1000.0 / win;
    metrics.frontend.p99_ms = e2e_win.Quantile(0.99);
    metrics.frontend.slo_p99_ms = o.slo_ms;
    if (!o.apps.empty()) {
      RollAppBucket(now);
      metrics.apps.resize(o.apps.size());
      for (size_t k = 0; k < o.apps.size(); ++k) {
        metrics.apps[k] = {o.apps[k].name, app_rate[k], r.apps[k].slo_ms};
      }
    }
  }

  void ResetWindow(double now) {
    window_start = now;
    arrived_win = 0;
    e2e_win.Reset();
    for (int s = 0; s < o.stages; ++s) {
      stages[s].hist.Reset();
      stages[s].done_win = 0;
      for (int slot : slots[s]) {
        reps[slot].busy_ms_win = 0;
        reps[slot].done_win = 0;
      }
    }
  }

  void Apply(const policy::Action& a, double now) {
    if (const auto* add = std::get_if<policy::AddReplica>(&a.op)) {
      int node = node_by_id.at(add->worker);
      RemoveIdle(node);
      int slot = NewReplica(node, add->stage, RState::kJoining, now);
      Log(now, "add", add->stage, add->worker, a.reason);
      if (o.coordinator_reconcile) ++target[static_cast<size_t>(add->stage)];
      Push(now + o.costs.world_create_ms + o.costs.weight_load_ms, EvType::kJoinDone,
           static_cast<uint32_t>(slot), reps[slot].gen);
    } else if (const auto* drain = std::get_if<policy::DrainReplica>(&a.op)) {
      int slot = nodes[node_by_id.at(drain->worker)].rep;
      Log(now, "drain", drain->stage, drain->worker, a.reason);
      if (o.coordinator_reconcile) {
        target[static_cast<size_t>(drain->stage)] = std::max(0, target[static_cast<size_t>(drain->stage)] - 1);
      }
      SetState(slot, RState::kDraining, now);
      if (!reps[slot].busy && reps[slot].queue.empty()) FinishDrain(slot, now);
    } else if (const auto* rw = std::get_if<policy::SetRoutingWeights>(&a.op)) {
      ApplyRouting(*rw, now);
      Log(now, "route", rw->stage, "", policy::ToString(a));
    } else if (const auto* bg = std::get_if<policy::SetBatchingGroups>(&a.op)) {
      ApplyBatching(*bg, now);
      Log(now, "batch", -1, "", policy::ToString(a));
    }
  }

  void Decide(double now, bool regular, uint32_t token) {
    if (regular && token != decision_token) return;  // superseded by a later decision
    if (!regular) membership_decision_pending = false;
    state.now_ms = static_cast<policy::TimeMs>(now);
    UpdateMetrics(now);
    if (o.forecaster) {
      // Decisions come at least every evaluation interval, so the count now stands for any
      // minute boundary passed since the last one.
      while (static_cast<double>(minute_usable.size()) * 60'000.0 <= now) {
        minute_usable.push_back(static_cast<double>(present - warned_present));
      }
      forecast = o.forecaster(minute_usable, state.now_ms);
    }
    policy::Plan plan = policy->Decide(state, metrics, forecast);
    ++r.decisions;
    r.unmet += plan.unmet.size();
    if (!plan.actions.empty()) {
      if (Status s = policy::ValidatePlan(plan, state); !s.ok()) {
        ++r.rejected_plans;
        Log(now, "rejected_plan", -1, "", s.ToString());
      } else {
        for (const policy::Action& a : plan.actions) Apply(a, now);
      }
    }
    Reconcile(now);
    state.memory = std::move(plan.memory);
    ResetWindow(now);
    ++decision_token;
    double next = std::max(static_cast<double>(plan.next_evaluation_ms), now + 1);
    if (!arrivals_done || in_system > 0) {
      Push(next, EvType::kDecision, static_cast<uint32_t>(decision_token), 1);
    }
  }

  // --- arrivals -----------------------------------------------------------------------------

  // The time of the next arrival, or a negative value when there is none.
  double NextArrival(double now) {
    if (arrivals.max_requests > 0 && arrivals_made >= arrivals.max_requests) return -1;
    double t;
    if (!arrivals.times_ms.empty()) {
      if (next_arrival_index >= arrivals.times_ms.size()) return -1;
      t = arrivals.times_ms[next_arrival_index++];
    } else if (gap_sampler) {
      t = now + (*gap_sampler)(rng_arrival);
    } else if (!arrivals.rate_per_minute.empty()) {
      t = NextScheduled(now);
    } else {
      return -1;
    }
    if (t > arrival_end) return -1;
    return t;
  }

  // Piecewise-constant Poisson process: exponential gaps at the current minute's rate; a gap
  // that crosses the minute's end restarts there at the next rate (memoryless, so exact).
  double NextScheduled(double from) {
    const auto& rates = arrivals.rate_per_minute;
    double t = from;
    for (;;) {
      const double minute = std::floor(t / 60'000.0);
      const double end = (minute + 1) * 60'000.0;
      const double r = rates[static_cast<size_t>(minute) % rates.size()] / 1000.0;  // per ms
      if (r > 0) {
        const double next = t + unit_exp(rng_arrival) / r;
        if (next < end) return next;
      }
      t = end;
    }
  }

  void ScheduleNextArrival(double now) {
    double t = NextArrival(now);
    if (t < 0) {
      arrivals_done = true;
      return;
    }
    ++arrivals_made;
    next_arrival_t = t;
  }

  void Arrival(double now) {
    ++r.arrived;
    ++cur.arrived;
    ++arrived_win;
    if (in_system >= o.max_in_system) {
      ++r.lost_admission;
      ++cur.lost;
    } else {
      uint32_t i = AllocReq();
      reqs[i].arrival = now;
      reqs[i].deadline = now + o.timeout_ms;
      reqs[i].grp = -1;
      reqs[i].cap = 0;
      reqs[i].app = -1;
      if (!o.apps.empty() && AppArrival(i, now)) {
        // held by its group's batcher
      } else {
        Route(i, 0, now);
      }
    }
    ScheduleNextArrival(now);
  }

  // --- timeline -----------------------------------------------------------------------------

  void CloseInterval(double now) {
    cur.t_ms = now;
    cur.p50_ms = e2e_interval.Quantile(0.5);
    cur.p99_ms = e2e_interval.Quantile(0.99);
    cur.nodes = present;
    cur.joining = counts[static_cast<int>(RState::kJoining)];
    cur.ready = counts[static_cast<int>(RState::kReady)];
    cur.draining = counts[static_cast<int>(RState::kDraining)];
    cur.idle = static_cast<int>(state.idle.size()) + cordoned;  // cordoned workers report idle
    cur.in_system = in_system;
    CountChange(now);
    cur.cost = o.kinds.empty() ? node_ms / 3.6e6 * o.price_per_hour : price_ms / 3.6e6;
    r.timeline.push_back(cur);
    cur = IntervalRow{};
    e2e_interval.Reset();
  }

  // --- issue 9: node kinds, routing weights, applications, batching groups -----------------

  template <typename Q>
  static uint32_t QId(const Q& q) {
    if constexpr (std::is_integral_v<Q>) {
      return q;
    } else {
      return q.id;
    }
  }

  void SetUpKindsAndApps() {
    kinds = o.kinds;
    if (kinds.empty()) kinds.push_back(NodeKind{o.instance_kind, o.price_per_hour, 1.0, 0.0, 1});
    for (size_t k = 0; k < kinds.size(); ++k) {
      for (int j = 0; j < std::max(1, kinds[k].share); ++j) kind_pattern.push_back(static_cast<int>(k));
      hetero |= kinds[k].capacity != 1.0 || kinds[k].extra_ms != 0.0;
    }
    ready_k.assign(static_cast<size_t>(o.stages), std::vector<std::vector<int>>(kinds.size()));
    double cum = 0;
    for (const AppSpec& a : o.apps) {
      cum += a.share;
      app_cum.push_back(cum);
      r.apps.push_back(SimResult::App{a.name, a.slo_ms > 0 ? a.slo_ms : (o.slo_ms > 0 ? o.slo_ms : o.timeout_ms)});
    }
    app_group.assign(o.apps.size(), -1);
    app_bucket.assign(o.apps.size(), 0);
    app_rate.assign(o.apps.size(), 0.0);
    if (!o.vanish_kind.empty() && o.vanish_at_ms >= 0) {
      Push(static_cast<double>(std::max<int64_t>(0, o.vanish_at_ms - o.warning_ms)), EvType::kKindWarn);
      Push(static_cast<double>(o.vanish_at_ms), EvType::kKindGone);
    }
  }

  // A node's kind comes from a hash of its id (FNV-1a), not its order of appearance, so that
  // kinds do not line up with the round-robin stage placement.
  static uint64_t KindHash(const std::string& id) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
    return h;
  }

  std::vector<int>& ReadyOfKind(int slot) {
    return ready_k[static_cast<size_t>(reps[slot].stage)][static_cast<size_t>(nodes[reps[slot].node].kind)];
  }

  bool Vanished(int kind, double now) const {
    return !o.vanish_kind.empty() && o.vanish_at_ms >= 0 && now >= static_cast<double>(o.vanish_at_ms) &&
           kinds[static_cast<size_t>(kind)].name == o.vanish_kind;
  }

  // The vanishing kind: a notice to every present node of it, then their removal.
  void KindEvent(double now, bool gone) {
    std::vector<std::string> ids;
    for (const Node& n : nodes) {
      if (n.present && kinds[static_cast<size_t>(n.kind)].name == o.vanish_kind) ids.push_back(n.id);
    }
    for (const std::string& id : ids) gone ? NodeRemove(id, now) : NodeWarn(id, now);
    RequestMembershipDecision(now);
  }

  // A ready replica of `stage` by kind weight (the group's route if it has one, else the
  // stage's), least loaded of two within the kind; -1 when no weighted kind has a ready one.
  int PickWeighted(int stage, int16_t grp) {
    const std::vector<double>* w = &kind_w[static_cast<size_t>(stage)];
    if (grp >= 0 && static_cast<size_t>(grp) < bgroups.size() && !bgroups[static_cast<size_t>(grp)].route.empty()) {
      w = &bgroups[static_cast<size_t>(grp)].route;
    }
    if (w->empty()) return -1;
    const auto& rk = ready_k[static_cast<size_t>(stage)];
    double total = 0;
    for (size_t k = 0; k < w->size(); ++k) total += rk[k].empty() ? 0.0 : (*w)[k];
    if (!(total > 0)) return -1;
    double u = std::uniform_real_distribution<double>(0.0, total)(rng_route);
    size_t kind = 0;
    for (size_t k = 0; k < w->size(); ++k) {
      if (rk[k].empty() || (*w)[k] <= 0) continue;
      kind = k;
      if (u < (*w)[k]) break;
      u -= (*w)[k];
    }
    const std::vector<int>& c = rk[kind];
    if (c.size() == 1) return c[0];
    size_t a = rng_route() % c.size(), b = rng_route() % (c.size() - 1);
    if (b >= a) ++b;
    const Rep& ra = reps[c[a]];
    const Rep& rb = reps[c[b]];
    return rb.queue.size() + rb.batch.size() < ra.queue.size() + ra.batch.size() ? c[b] : c[a];
  }

  std::vector<double> KindWeights(const std::vector<policy::KindWeight>& ws) const {
    if (ws.empty()) return {};
    std::vector<double> w(kinds.size(), 0.0);
    for (const policy::KindWeight& kw : ws) {
      for (size_t k = 0; k < kinds.size(); ++k) {
        const std::string& name = kinds[k].name.empty() ? std::string("default") : kinds[k].name;
        if (name == (kw.kind.empty() ? std::string("default") : kw.kind)) w[k] = kw.weight;
      }
    }
    return w;
  }

  void ApplyRouting(const policy::SetRoutingWeights& rw, double /*now*/) {
    if (kind_w.empty()) kind_w.assign(static_cast<size_t>(o.stages), {});
    for (int s = 0; s < o.stages; ++s) {
      if (rw.stage == -1 || rw.stage == s) kind_w[static_cast<size_t>(s)] = KindWeights(rw.weights);
    }
  }

  void ApplyBatching(const policy::SetBatchingGroups& bg, double now) {
    for (size_t g = 0; g < bgroups.size(); ++g) {
      if (!bgroups[g].buf.empty()) Dispatch(static_cast<uint32_t>(g), now);
    }
    bgroups.clear();
    std::fill(app_group.begin(), app_group.end(), -1);
    for (const policy::BatchingGroup& g : bg.groups) {
      GroupRt rt;
      rt.max_batch = std::clamp(g.max_batch, 1, o.max_batch);
      rt.timeout_ms = g.timeout_ms;
      rt.route = KindWeights(g.route);
      for (const std::string& app : g.apps) {
        for (size_t k = 0; k < o.apps.size(); ++k) {
          if (o.apps[k].name == app) app_group[k] = static_cast<int>(bgroups.size());
        }
      }
      bgroups.push_back(std::move(rt));
      if (!bgroups.back().route.empty() && kind_w.empty()) kind_w.assign(static_cast<size_t>(o.stages), {});
    }
  }

  void RollAppBucket(double now) {
    constexpr double kBucketMs = 30'000;
    if (now < app_bucket_start + kBucketMs) return;
    const bool skipped = now >= app_bucket_start + 2 * kBucketMs;  // a bucket with no arrival
    for (size_t k = 0; k < app_bucket.size(); ++k) {
      app_rate[k] = skipped ? 0.0 : static_cast<double>(app_bucket[k]) * 1000.0 / kBucketMs;
      app_bucket[k] = 0;
    }
    app_bucket_start = std::floor(now / kBucketMs) * kBucketMs;
  }

  // Gives request i its application; true when its group's batcher holds it.
  bool AppArrival(uint32_t i, double now) {
    const double u = std::uniform_real_distribution<double>(0.0, app_cum.back())(rng_app);
    size_t app = 0;
    while (app + 1 < app_cum.size() && u >= app_cum[app]) ++app;
    reqs[i].app = static_cast<int16_t>(app);
    ++r.apps[app].arrived;
    RollAppBucket(now);
    ++app_bucket[app];
    const int g = app_group[app];
    if (g < 0) return false;
    GroupRt& rt = bgroups[static_cast<size_t>(g)];
    reqs[i].grp = static_cast<int16_t>(g);
    reqs[i].cap = static_cast<uint16_t>(rt.max_batch);
    rt.buf.push_back(i);
    if (static_cast<int>(rt.buf.size()) >= rt.max_batch || rt.timeout_ms <= 0) {
      Dispatch(static_cast<uint32_t>(g), now);
    } else if (rt.buf.size() == 1) {
      Push(now + rt.timeout_ms, EvType::kBatchTimeout, static_cast<uint32_t>(g), rt.gen);
    }
    return true;
  }

  // A group's batch goes into the pipeline as one unit.
  void Dispatch(uint32_t g, double now) {
    GroupRt& rt = bgroups[g];
    ++rt.gen;
    if (rt.buf.empty()) return;
    std::vector<uint32_t> ids;
    ids.swap(rt.buf);
    RouteMany(ids.data(), ids.size(), 0, now);
    rt.buf.swap(ids);
    rt.buf.clear();
  }

  // With batching groups: the batch takes the head request's group, up to its max batch,
  // stopping at a request of another group.
  void FillGroupBatch(Rep& rep, double now) {
    size_t cap = static_cast<size_t>(o.max_batch);
    int16_t grp = -1;
    while (rep.batch.size() < cap && !rep.queue.empty()) {
      const uint32_t i = QId(rep.queue.front());
      if (reqs[i].deadline < now) {
        rep.queue.pop();
        TimedOut(i);
        continue;
      }
      if (rep.batch.empty()) {
        grp = reqs[i].grp;
        if (reqs[i].cap > 0) cap = std::min<size_t>(cap, reqs[i].cap);
      } else if (reqs[i].grp != grp) {
        break;
      }
      rep.queue.pop();
      rep.batch.push_back(i);
    }
  }

  // --- main loop ----------------------------------------------------------------------------

  // One completion FIFO per distinct stage time of a deterministic model (at most 8; more, or
  // service noise, or SimOptions::heap_only: every completion goes through the heap).
  void SetUpDoneFifos() {
    if (noise_sampler || o.heap_only || hetero) return;
    std::vector<double> distinct;
    done_fifo_of.assign(static_cast<size_t>(o.stages), std::vector<uint8_t>(static_cast<size_t>(o.max_batch)));
    for (int s = 0; s < o.stages; ++s) {
      for (int b = 1; b <= o.max_batch; ++b) {
        const double d = model.StageMs(s, b);
        auto it = std::find(distinct.begin(), distinct.end(), d);
        if (it == distinct.end()) {
          if (distinct.size() == 8) {
            done_fifo_of.clear();
            return;
          }
          distinct.push_back(d);
          it = distinct.end() - 1;
        }
        done_fifo_of[s][b - 1] = static_cast<uint8_t>(it - distinct.begin());
      }
    }
    done_fifos.resize(distinct.size());
  }

  SimResult Run() {
    slo = o.slo_ms > 0 ? o.slo_ms : o.timeout_ms;
    r.slo_ms = slo;
    arrival_end = o.end_ms >= 0 ? static_cast<double>(o.end_ms) : static_cast<double>(trace.end_ms);
    SetUpKindsAndApps();
    SetUpDoneFifos();  // after the kinds: heterogeneous nodes make durations per node
    stages.resize(static_cast<size_t>(o.stages));
    slots.resize(static_cast<size_t>(o.stages));
    state.stages.resize(static_cast<size_t>(o.stages));
    metrics.stages.resize(static_cast<size_t>(o.stages));
    // One layer per stage index in the policy's view (the simulator does not split layers; the
    // performance model does).
    for (int s = 0; s < o.stages; ++s) {
      state.stages[s].index = s;
      state.stages[s].layer_begin = s;
      state.stages[s].layer_end = s + 1;
      metrics.stages[s].stage = s;
    }
    // Time zero: the nodes present at the start, then the first plan.
    size_t first = 0;
    while (first < trace.events.size() && trace.events[first].time_ms <= 0) {
      const NodeEvent& e = trace.events[first++];
      e.op == NodeOp::kAdd ? NodeAdd(e.node, 0) : NodeRemove(e.node, 0);
    }
    if (o.initial_fill) {
      std::vector<policy::Worker> idle = state.idle;
      int k = 0;
      for (const policy::Worker& w : idle) {
        int node = node_by_id.at(w.id);
        RemoveIdle(node);
        NewReplica(node, k % o.stages, RState::kReady, 0);
        Log(0, "initial", k % o.stages, w.id);
        ++k;
      }
    }
    target.assign(static_cast<size_t>(o.stages), 0);
    failed_stage.assign(static_cast<size_t>(o.stages), false);
    for (int s = 0; s < o.stages; ++s) target[static_cast<size_t>(s)] = Active(s);
    if (first < trace.events.size() && static_cast<double>(trace.events[first].time_ms) <= arrival_end) {
      Push(static_cast<double>(trace.events[first].time_ms), EvType::kNodeEvents,
           static_cast<uint32_t>(first));
    }
    for (size_t i = 0; i < trace.events.size(); ++i) {
      const NodeEvent& e = trace.events[i];
      if (e.op != NodeOp::kRemove || e.time_ms <= 0 || static_cast<double>(e.time_ms) > arrival_end) continue;
      double w = std::max(0.0, static_cast<double>(e.time_ms - o.warning_ms));
      Push(w, EvType::kWarn, static_cast<uint32_t>(i));
    }
    if (arrivals.times_ms.empty() && !gap_sampler && !arrivals.rate_per_minute.empty()) {
      double t = NextScheduled(arrivals.start_ms);
      if (t <= arrival_end) {
        ++arrivals_made;
        next_arrival_t = t;
      } else {
        arrivals_done = true;
      }
    } else if (arrivals.times_ms.empty() && gap_sampler) {
      // The first arrival is one gap after the start.
      double t = arrivals.start_ms + (*gap_sampler)(rng_arrival);
      if (t <= arrival_end) {
        ++arrivals_made;
        next_arrival_t = t;
      } else {
        arrivals_done = true;
      }
    } else {
      ScheduleNextArrival(0);
    }
    Push(static_cast<double>(o.interval_ms), EvType::kInterval);
    Decide(0, /*regular=*/false, 0);

    double now = 0;
    double hard_stop = -1;
    uint64_t events = 0;
    for (;;) {
      // Three sources in (time, seq) order: the next arrival (first among equal times), the
      // FIFO of batches between stages, the heap.
      // Completions wait in FIFOs by duration when the model is deterministic: a fourth source.
      const bool have_heap = !heap.empty(), have_hop = !hops.empty();
      double best_t = have_heap ? heap.top().t : -1;
      uint64_t best_seq = have_heap ? heap.top().seq : 0;
      enum : uint8_t { kHeap, kHop, kDone } src = kHeap;
      size_t done_src = 0;
      auto better = [&](double t, uint64_t sq) {
        return best_t < 0 || t < best_t || (t == best_t && sq < best_seq);
      };
      if (have_hop && better(hops.front().t, hops.front().seq)) {
        best_t = hops.front().t;
        best_seq = hops.front().seq;
        src = kHop;
      }
      for (size_t k = 0; k < done_fifos.size(); ++k) {
        if (done_fifos[k].empty()) continue;
        const Done& d = done_fifos[k].front();
        if (better(d.t, d.seq)) {
          best_t = d.t;
          best_seq = d.seq;
          src = kDone;
          done_src = k;
        }
      }
      const bool hop = src == kHop;
      const double next_event_t = best_t;
      const bool arrival =
          next_arrival_t >= 0 && (next_event_t < 0 || next_arrival_t <= next_event_t);
      if (!arrival && next_event_t < 0) break;
      const double t = arrival ? next_arrival_t : next_event_t;
      if (arrivals_done) {
        // After the last arrival: stop when the system is empty, or when every deadline has
        // passed (arrival_end + timeout).
        if (hard_stop < 0) hard_stop = std::max(now, arrival_end) + o.timeout_ms;
        if (in_system == 0 || t > hard_stop) break;
      }
      now = t;
      ++events;
      if (o.progress && (events & ((1u << 20) - 1)) == 0) o.progress(now, arrival_end);
      if (arrival) {
        next_arrival_t = -1;
        Arrival(now);
        continue;
      }
      if (hop) {
        Hop h = hops.pop();
        GroupArrives(h.group, static_cast<int>(h.stage), now);
        continue;
      }
      if (src == kDone) {
        Done d = done_fifos[done_src].pop();
        ServiceDone(static_cast<int>(d.slot), d.gen, now);
        continue;
      }
      Ev ev = heap.top();
      heap.pop();
      switch (ev.type) {
        case EvType::kArrival: break;  // arrivals do not go through the heap
        case EvType::kStageArrive: GroupArrives(ev.a, static_cast<int>(ev.b), now); break;
        case EvType::kServiceDone: ServiceDone(static_cast<int>(ev.a), ev.b, now); break;
        case EvType::kJoinDone:
          if (reps[ev.a].gen == ev.b && reps[ev.a].state == RState::kJoining) {
            SetState(static_cast<int>(ev.a), RState::kReady, now);
            Log(now, "ready", reps[ev.a].stage, nodes[reps[ev.a].node].id);
            DrainPending(reps[ev.a].stage, now);
          }
          break;
        case EvType::kNodeEvents: NodeEvents(ev.a, now); break;
        case EvType::kWarn: NodeWarn(trace.events[ev.a].node, now); break;
        case EvType::kDecision: Decide(now, ev.b == 1, ev.a); break;
        case EvType::kBatchTimeout:
          if (ev.a < bgroups.size() && bgroups[ev.a].gen == ev.b) Dispatch(ev.a, now);
          break;
        case EvType::kKindWarn: KindEvent(now, /*gone=*/false); break;
        case EvType::kKindGone: KindEvent(now, /*gone=*/true); break;
        case EvType::kInterval:
          CloseInterval(now);
          Push(now + static_cast<double>(o.interval_ms), EvType::kInterval);
          break;
      }
    }
    if (hard_stop >= 0 && in_system > 0) now = std::max(now, hard_stop);
    // Whatever is still inside has passed its deadline (or the run was cut at the hard stop).
    for (int s = 0; s < o.stages; ++s) {
      while (!stages[s].pending.empty()) TimedOut(stages[s].pending.pop());
    }
    for (GroupRt& g : bgroups) {
      for (uint32_t i : g.buf) TimedOut(i);
      g.buf.clear();
    }
    for (Rep& rep : reps) {
      while (!rep.queue.empty()) TimedOut(rep.queue.pop());
      for (uint32_t i : rep.batch) TimedOut(i);
      rep.batch.clear();
    }
    // Requests between stages.
    while (!hops.empty()) {
      for (uint32_t i : groups[hops.pop().group]) TimedOut(i);
    }
    while (!heap.empty()) {
      Ev ev = heap.top();
      heap.pop();
      if (ev.type == EvType::kStageArrive) {
        for (uint32_t i : groups[ev.a]) TimedOut(i);
      }
    }
    CloseInterval(now);
    r.end_ms = now;
    r.events = events;
    r.node_hours = node_ms / 3.6e6;
    r.cost = o.kinds.empty() ? r.node_hours * o.price_per_hour : price_ms / 3.6e6;
    r.p50_ms = e2e.Quantile(0.5);
    r.p90_ms = e2e.Quantile(0.9);
    r.p99_ms = e2e.Quantile(0.99);
    r.p999_ms = e2e.Quantile(0.999);
    r.mean_ms = r.served > 0 ? latency_sum / static_cast<double>(r.served) : 0;
    r.slo_attainment = r.arrived > 0 ? static_cast<double>(r.within_slo) / static_cast<double>(r.arrived) : 0;
    return std::move(r);
  }
};

Result<std::unique_ptr<Simulator>> Simulator::Create(SimOptions options, PerfModel model,
                                                     NodeTrace trace, ArrivalSpec arrivals,
                                                     const policy::Policy* policy) {
  if (policy == nullptr) return InvalidArgumentError("simulator: no policy");
  if (options.stages < 1) return InvalidArgumentError("simulator: stages must be >= 1");
  if (options.max_batch < 1) return InvalidArgumentError("simulator: max batch must be >= 1");
  if (static_cast<int>(model.stage_ms.size()) != options.stages) {
    return InvalidArgumentError("simulator: the performance model has " +
                                std::to_string(model.stage_ms.size()) + " stages, options say " +
                                std::to_string(options.stages));
  }
  for (const auto& s : model.stage_ms) {
    if (static_cast<int>(s.size()) < options.max_batch) {
      return InvalidArgumentError("simulator: the performance model covers batch sizes up to " +
                                  std::to_string(s.size()));
    }
    for (double v : s) {
      if (!(v > 0) || !std::isfinite(v)) return InvalidArgumentError("simulator: non-positive stage time in the model");
    }
  }
  if (options.timeout_ms <= 0) return InvalidArgumentError("simulator: timeout must be > 0");
  if (options.warning_ms < 0) return InvalidArgumentError("simulator: warning period must be >= 0");
  if (options.interval_ms <= 0) {
    return InvalidArgumentError("simulator: the timeline interval must be > 0");
  }
  if (options.service_cv < 0) return InvalidArgumentError("simulator: service CV must be >= 0");
  if (options.service_cv > 0 && model.noise) {
    return InvalidArgumentError("simulator: the fitted performance model has its own variability; "
                                "drop the service CV");
  }
  for (size_t i = 1; i < arrivals.times_ms.size(); ++i) {
    if (arrivals.times_ms[i] < arrivals.times_ms[i - 1]) {
      return InvalidArgumentError("simulator: arrival times are not sorted (index " + std::to_string(i) + ")");
    }
  }
  if (arrivals.times_ms.empty() && !arrivals.gap_ms && arrivals.rate_per_minute.empty()) {
    return InvalidArgumentError("simulator: no arrivals (no times, gap distribution or rate schedule)");
  }
  for (double r : arrivals.rate_per_minute) {
    if (!(r >= 0) || !std::isfinite(r)) return InvalidArgumentError("simulator: a scheduled rate is negative or not finite");
  }
  if (!arrivals.rate_per_minute.empty() &&
      *std::max_element(arrivals.rate_per_minute.begin(), arrivals.rate_per_minute.end()) <= 0) {
    return InvalidArgumentError("simulator: every scheduled rate is 0");
  }
  auto impl = std::make_unique<Impl>();
  impl->o = std::move(options);
  impl->model = std::move(model);
  impl->trace = std::move(trace);
  impl->arrivals = std::move(arrivals);
  impl->policy = policy;
  const uint64_t seed = impl->o.seed;
  impl->rng_arrival.seed(seed);
  impl->rng_route.seed(seed ^ 0x9E3779B97F4A7C15ull);
  impl->rng_noise.seed(seed ^ 0xD1B54A32D192ED03ull);
  impl->rng_app.seed(seed ^ 0x94D049BB133111EBull);
  if (impl->arrivals.gap_ms) impl->gap_sampler.emplace(*impl->arrivals.gap_ms);
  if (impl->model.noise) {
    impl->noise_sampler.emplace(*impl->model.noise);
  } else if (impl->o.service_cv > 0) {
    impl->noise_sampler.emplace(Distribution::GammaMeanCv(1.0, impl->o.service_cv));
  }
  return std::unique_ptr<Simulator>(new Simulator(std::move(impl)));
}

Simulator::Simulator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Simulator::~Simulator() = default;
SimResult Simulator::Run() { return impl_->Run(); }

}  // namespace archi::sim
