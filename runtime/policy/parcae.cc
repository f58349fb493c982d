#include "runtime/policy/parcae.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <unordered_set>

#include "runtime/policy/str_format.h"

namespace archi::policy {
namespace {

// splitmix64: a small, fully specified generator (std distributions differ between standard
// libraries; this does not), so a seed gives the same scenarios everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  uint64_t Below(uint64_t n) { return Next() % n; }  // bias < n / 2^64: negligible here

 private:
  uint64_t s_;
};

uint64_t Mix(uint64_t a, uint64_t b) {
  Rng r(a ^ (b * 0xD1B54A32D192ED03ull));
  return r.Next();
}

// `count` distinct instances out of [0, n), sorted (Floyd's sampling). `mark` is scratch of
// size >= n, all zero on entry and on return.
void SamplePreempted(Rng& rng, int n, int count, std::vector<char>& mark, std::vector<int>& out) {
  out.clear();
  for (int j = n - count; j < n; ++j) {
    const int t = static_cast<int>(rng.Below(static_cast<uint64_t>(j) + 1));
    const int pick = mark[t] ? j : t;
    mark[pick] = 1;
    out.push_back(pick);
  }
  for (int i : out) mark[i] = 0;
  std::sort(out.begin(), out.end());
}

}  // namespace

Status ParcaeOptions::Validate() const {
  if (interval_ms <= 0 || horizon <= 0 || scenarios <= 0) {
    return InvalidArgumentError("parcae: interval_ms, horizon and scenarios must be > 0");
  }
  if (!(model.compute_s > 0) || model.comm_s < 0) {
    return InvalidArgumentError("parcae: need compute_s > 0, comm_s >= 0");
  }
  if (model.min_depth < 1 || model.max_depth < model.min_depth) {
    return InvalidArgumentError("parcae: need 1 <= min_depth <= max_depth");
  }
  if (migration.rebuild_s < 0 || migration.move_stage_s < 0 || migration.repartition_s < 0 ||
      min_hold_ms < 0) {
    return InvalidArgumentError("parcae: negative cost or hold time");
  }
  return Status::Ok();
}

double MigrationCost(const ParallelConfig& from, const ParallelConfig& to, const ParcaeOptions& o) {
  if (from == to || to.dp == 0) return 0;
  const PipelineModel& m = o.model;
  if (from.dp == 0) return to.dp * m.PipelineRps(to.pp) * o.migration.move_stage_s;
  if (from.pp == to.pp) {
    if (to.dp > from.dp) return (to.dp - from.dp) * m.PipelineRps(to.pp) * o.migration.move_stage_s;
    return m.Throughput(to) * o.migration.rebuild_s;
  }
  return m.Throughput(to) * o.migration.repartition_s;
}

std::vector<double> LiveputOf(const std::vector<ParallelConfig>& configs, int available,
                              double drop, uint64_t salt, const ParcaeOptions& o) {
  const PipelineModel& m = o.model;
  std::vector<double> out(configs.size(), 0.0);
  // Configurations by depth, dp ascending, so one pass over a scenario's sorted preempted
  // instances serves every dp of that depth.
  std::vector<std::tuple<int, int, size_t>> order;  // (pp, dp, index)
  for (size_t i = 0; i < configs.size(); ++i) {
    const ParallelConfig& c = configs[i];
    if (c.dp <= 0 || c.pp <= 0 || c.instances() > available) continue;
    out[i] = m.Throughput(c);
    order.emplace_back(c.pp, c.dp, i);
  }
  drop = std::min(std::max(0.0, drop), static_cast<double>(available));
  if (drop <= 0 || order.empty()) return out;
  std::sort(order.begin(), order.end());

  const double interval_s = static_cast<double>(o.interval_ms) / 1000.0;
  const double rebuilt_share = std::max(0.0, interval_s - o.migration.rebuild_s) / interval_s;
  const double moved_share = std::max(0.0, interval_s - o.migration.move_stage_s) / interval_s;
  std::vector<double> sum(configs.size(), 0.0);
  std::vector<char> mark(available, 0);
  std::vector<int> preempted;
  std::vector<int> hits;
  const double whole = std::floor(drop);
  const double frac = drop - whole;
  const uint64_t base = Mix(Mix(o.seed, salt), static_cast<uint64_t>(available) * 1000003u +
                                                   static_cast<uint64_t>(std::llround(drop * 1e6)));
  for (int s = 0; s < o.scenarios; ++s) {
    Rng rng(Mix(base, static_cast<uint64_t>(s)));
    int count = static_cast<int>(whole) + (rng.Uniform() < frac ? 1 : 0);
    count = std::min(count, available);
    SamplePreempted(rng, available, count, mark, preempted);
    for (size_t g = 0; g < order.size();) {
      const int pp = std::get<0>(order[g]);
      hits.assign(pp, 0);
      size_t pos = 0;
      int hit_pipes = 0, last_pipe = -1;
      for (; g < order.size() && std::get<0>(order[g]) == pp; ++g) {
        const int dp = std::get<1>(order[g]);
        const size_t idx = std::get<2>(order[g]);
        const int used = dp * pp;
        while (pos < preempted.size() && preempted[pos] < used) {
          const int i = preempted[pos++];
          ++hits[i % pp];
          if (i / pp != last_pipe) {
            last_pipe = i / pp;
            ++hit_pipes;
          }
        }
        if (pos == 0) {
          sum[idx] += m.Throughput(configs[idx]);
          continue;
        }
        const int spares = available - used - static_cast<int>(preempted.size() - pos);
        const int max_hits = *std::max_element(hits.begin(), hits.end());
        const int regrouped = dp - max_hits;   // (a) pipelines after rebuilding worlds
        const int untouched = dp - hit_pipes;  // pipelines no preemption touched
        // (b) the most pipelines spares can complete: need(d) = sum_s max(0, hits_s - (dp - d)).
        auto need = [&](int d) {
          long long n = 0;
          for (int h : hits) n += std::max(0, h - (dp - d));
          return n;
        };
        int lo = regrouped,
            hi = dp;  // need(regrouped) == 0; find the largest d with need <= spares
        while (lo < hi) {
          const int mid = lo + (hi - lo + 1) / 2;
          if (need(mid) <= spares) {
            lo = mid;
          } else {
            hi = mid - 1;
          }
        }
        const double rps = m.PipelineRps(pp);
        const double a = rps * (untouched + (regrouped - untouched) * rebuilt_share);
        const double b = rps * (untouched + (lo - untouched) * moved_share);
        sum[idx] += std::max(a, b);
      }
    }
  }
  for (const auto& [pp, dp, idx] : order) out[idx] = sum[idx] / o.scenarios;
  return out;
}

namespace {

// Candidate configurations for one interval with n instances (see ParcaeOptions), over `depths`.
std::vector<ParallelConfig> Candidates(int n, int max_available, const ParallelConfig& current,
                                       const std::vector<int>& ns, const ParcaeOptions& o,
                                       const std::vector<int>& depths) {
  std::vector<ParallelConfig> out;
  out.push_back(ParallelConfig{0, 0});  // serve nothing: always possible
  std::vector<int> dps;
  for (int pp : depths) {
    const int fit = pp >= 1 ? n / pp : 0;
    if (fit < 1) continue;
    dps.clear();
    if (max_available <= o.enumerate_all_up_to) {
      for (int dp = 1; dp <= fit; ++dp) dps.push_back(dp);
    } else {
      if (current.pp == pp && current.dp >= 1 && current.dp <= fit) dps.push_back(current.dp);
      for (int nk : ns) {
        const int d = std::min(fit, nk / pp);
        if (d >= 1) dps.push_back(d);
      }
      std::sort(dps.begin(), dps.end());
      dps.erase(std::unique(dps.begin(), dps.end()), dps.end());
    }
    for (int dp : dps) out.push_back(ParallelConfig{dp, pp});
  }
  return out;
}

// Liveput tables for every interval over `depths`.
std::vector<LiveputInterval> Tables(const ParallelConfig& current,
                                    const std::vector<double>& available, const ParcaeOptions& o,
                                    const std::vector<int>& depths) {
  const int horizon = std::max(1, o.horizon);
  // n_0 .. n_horizon (the last only for the final interval's drop).
  std::vector<double> avail(available.begin(),
                            available.begin() + std::min<size_t>(available.size(), horizon + 1));
  if (avail.empty()) avail.push_back(current.instances());
  while (static_cast<int>(avail.size()) < horizon + 1) avail.push_back(avail.back());
  std::vector<int> ns(horizon + 1);
  int max_n = 0;
  for (int k = 0; k <= horizon; ++k) {
    avail[k] = std::max(0.0, avail[k]);
    ns[k] = static_cast<int>(std::floor(avail[k] + 1e-9));
    max_n = std::max(max_n, ns[k]);
  }
  std::vector<LiveputInterval> out(horizon);
  for (int k = 0; k < horizon; ++k) {
    LiveputInterval& iv = out[k];
    iv.available = ns[k];
    iv.drop = std::max(0.0, avail[k] - avail[k + 1]);
    iv.candidates = Candidates(ns[k], max_n, current, ns, o, depths);
    iv.liveput = LiveputOf(iv.candidates, ns[k], iv.drop, static_cast<uint64_t>(k) + 1, o);
  }
  return out;
}

// The dynamic program over the tables, restricted to depth `only` (and serving nothing) when set.
LiveputPlan Solve(const std::vector<LiveputInterval>& tables, const ParallelConfig& current,
                  const ParcaeOptions& o, std::optional<int> only) {
  LiveputPlan plan;
  const int horizon = static_cast<int>(tables.size());
  if (!only) {
    plan.intervals = tables;
  } else {
    plan.intervals.resize(horizon);
    for (int k = 0; k < horizon; ++k) {
      const LiveputInterval& t = tables[k];
      LiveputInterval& iv = plan.intervals[k];
      iv.available = t.available;
      iv.drop = t.drop;
      for (size_t j = 0; j < t.candidates.size(); ++j) {
        if (t.candidates[j].dp != 0 && t.candidates[j].pp != *only) continue;
        iv.candidates.push_back(t.candidates[j]);
        iv.liveput.push_back(t.liveput[j]);
      }
    }
  }
  const double interval_s = static_cast<double>(o.interval_ms) / 1000.0;

  // value[k][j]: best requests served through interval k ending in candidate j.
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> value(horizon);
  std::vector<std::vector<int>> parent(horizon);
  for (int k = 0; k < horizon; ++k) {
    const LiveputInterval& iv = plan.intervals[k];
    value[k].assign(iv.candidates.size(), kNegInf);
    parent[k].assign(iv.candidates.size(), -1);
    for (size_t j = 0; j < iv.candidates.size(); ++j) {
      const double served = iv.liveput[j] * interval_s;
      if (k == 0) {
        value[k][j] = served - MigrationCost(current, iv.candidates[j], o);
        continue;
      }
      const LiveputInterval& prev = plan.intervals[k - 1];
      for (size_t i = 0; i < prev.candidates.size(); ++i) {
        const double v =
            value[k - 1][i] - MigrationCost(prev.candidates[i], iv.candidates[j], o) + served;
        if (v > value[k][j]) {
          value[k][j] = v;
          parent[k][j] = static_cast<int>(i);
        }
      }
    }
  }
  // Best end; ties to the earliest candidate. Then walk back.
  int best = 0;
  for (size_t j = 1; j < value[horizon - 1].size(); ++j) {
    if (value[horizon - 1][j] > value[horizon - 1][best]) best = static_cast<int>(j);
  }
  plan.value = value[horizon - 1][best];
  plan.path.assign(horizon, ParallelConfig{});
  for (int k = horizon - 1, j = best; k >= 0; --k) {
    plan.path[k] = plan.intervals[k].candidates[j];
    j = parent[k][j];
  }
  plan.first = plan.path[0];
  return plan;
}

std::vector<int> DepthRange(const ParcaeOptions& o) {
  std::vector<int> d;
  for (int pp = std::max(1, o.model.min_depth); pp <= o.model.max_depth; ++pp) d.push_back(pp);
  return d;
}

}  // namespace

LiveputPlan PlanLiveput(const ParallelConfig& current, const std::vector<double>& available,
                        const ParcaeOptions& o, std::optional<int> depth) {
  const std::vector<int> depths = depth ? std::vector<int>{*depth} : DepthRange(o);
  return Solve(Tables(current, available, o, depths), current, o, std::nullopt);
}

HeldAndFreePlans PlanLiveputHeldAndFree(const ParallelConfig& current,
                                        const std::vector<double>& available,
                                        const ParcaeOptions& o) {
  std::vector<int> depths = DepthRange(o);
  if (current.pp >= 1 && std::find(depths.begin(), depths.end(), current.pp) == depths.end()) {
    depths.push_back(current.pp);
  }
  const std::vector<LiveputInterval> tables = Tables(current, available, o, depths);
  HeldAndFreePlans out;
  out.held = Solve(tables, current, o, current.pp);
  out.free = Solve(tables, current, o, std::nullopt);
  return out;
}

ParcaePolicy::ParcaePolicy(ParcaeOptions options) : options_(std::move(options)) {}

ParallelConfig ParcaePolicy::CurrentConfig(const ClusterState& state) {
  if (state.stages.empty()) return ParallelConfig{0, 0};
  int dp = std::numeric_limits<int>::max();
  for (const Stage& s : state.stages) {
    int active = 0;
    for (const Replica& r : s.replicas) active += r.state != ReplicaState::kDraining;
    dp = std::min(dp, active);
  }
  return ParallelConfig{dp, static_cast<int>(state.stages.size())};
}

std::vector<double> ParcaePolicy::AvailabilityPath(const ClusterState& state,
                                                   const Forecast& f) const {
  int n0 = static_cast<int>(state.idle.size());
  for (const Stage& s : state.stages) {
    for (const Replica& r : s.replicas) n0 += r.state != ReplicaState::kDraining;
  }
  std::vector<double> out{static_cast<double>(n0)};
  const auto& pts = f.available_workers;
  for (int k = 1; k <= options_.horizon; ++k) {
    if (pts.empty()) {
      out.push_back(n0);
      continue;
    }
    const TimeMs t = state.now_ms + k * options_.interval_ms;
    auto it = std::upper_bound(pts.begin(), pts.end(), t,
                               [](TimeMs v, const ForecastPoint& p) { return v < p.at_ms; });
    out.push_back(it == pts.begin() ? pts.front().value : std::prev(it)->value);
  }
  return out;
}

Plan ParcaePolicy::Decide(const ClusterState& state, const ClusterMetrics& /*metrics*/,
                          const Forecast& forecast) const {
  const ParcaeOptions& o = options_;
  const TimeMs now = state.now_ms;
  Plan plan;
  plan.next_evaluation_ms = now + o.interval_ms;
  plan.memory = state.memory;
  if (state.stages.empty()) return plan;

  const ParallelConfig cur = CurrentConfig(state);
  const std::vector<double> avail = AvailabilityPath(state, forecast);
  const int n0 = static_cast<int>(avail[0]);
  const HeldAndFreePlans plans = PlanLiveputHeldAndFree(cur, avail, o);
  const LiveputPlan& held = plans.held;
  const LiveputPlan& free = plans.free;
  int target = held.first.dp;

  // Hysteresis on the target: keep the last one for min_hold_ms unless it no longer fits.
  const std::string k_dp = std::string(kName) + "/dp";
  const std::string k_since = std::string(kName) + "/since_ms";
  const auto& mv = state.memory.values;
  TimeMs since = now;
  if (auto it = mv.find(k_dp); it != mv.end()) {
    const int last = static_cast<int>(it->second);
    const auto s = mv.find(k_since);
    const TimeMs last_since = s != mv.end() ? static_cast<TimeMs>(s->second) : kNoTime;
    if (last == target) {
      since = last_since != kNoTime ? last_since : now;
    } else if (last_since != kNoTime && now - last_since < o.min_hold_ms && last * cur.pp <= n0) {
      target = last;
      since = last_since;
    }
  }
  plan.memory.values[k_dp] = target;
  plan.memory.values[k_since] = static_cast<double>(since);
  plan.memory.values[std::string(kName) + "/pp"] = cur.pp;
  plan.memory.values[std::string(kName) + "/value"] = held.value;

  // Would another depth do better? Only the coordinator can re-partition: report it.
  {
    plan.memory.values[std::string(kName) + "/best_pp"] = free.first.pp;
    plan.memory.values[std::string(kName) + "/best_dp"] = free.first.dp;
    if (free.first.pp != cur.pp && free.value > held.value * (1 + 1e-9)) {
      plan.unmet.push_back(Unmet{
          -1,
          StrFormat("re-partition to %d x %d would serve %.0f requests over the horizon vs %.0f at "
                    "depth %d (needs a re-partition action)",
                    free.first.dp, free.first.pp, free.value, held.value, cur.pp)});
    }
  }

  // Idle workers for adds: a host with no replica first, then the cheapest, then the lowest id.
  std::unordered_set<std::string_view> busy_hosts;
  for (const Stage& s : state.stages) {
    for (const Replica& r : s.replicas) busy_hosts.insert(r.worker.host);
  }
  // The same order as re-ranking the idle pool after every pick by (host busy now, price, id),
  // without re-sorting: `by_key` is sorted once by (host busy at the start, price, id) and the
  // first untaken worker in it whose host is still free is the best free-host worker (a host
  // only ever becomes busy); once none is left, `by_price` gives the rest by (price, id).
  std::vector<const Worker*> by_key, by_price;
  for (const Worker& w : state.idle) by_key.push_back(&w);
  by_price = by_key;
  auto price_id = [](const Worker* w) {
    return std::make_tuple(w->price_per_hour, std::string_view(w->id));
  };
  std::sort(by_price.begin(), by_price.end(),
            [&](const Worker* a, const Worker* b) { return price_id(a) < price_id(b); });
  std::stable_sort(by_key.begin(), by_key.end(), [&](const Worker* a, const Worker* b) {
    return std::make_tuple(busy_hosts.contains(a->host), a->price_per_hour,
                           std::string_view(a->id)) < std::make_tuple(busy_hosts.contains(b->host),
                                                                      b->price_per_hour,
                                                                      std::string_view(b->id));
  });
  std::unordered_set<const Worker*> taken;
  size_t scan_free = 0, scan_any = 0;
  auto pick = [&]() -> const Worker* {
    for (; scan_free < by_key.size(); ++scan_free) {
      const Worker* w = by_key[scan_free];
      if (taken.contains(w) || busy_hosts.contains(w->host)) continue;
      taken.insert(w);
      busy_hosts.insert(w->host);
      ++scan_free;
      return w;
    }
    for (; scan_any < by_price.size(); ++scan_any) {
      const Worker* w = by_price[scan_any];
      if (taken.contains(w)) continue;
      taken.insert(w);
      ++scan_any;
      return w;
    }
    return nullptr;
  };

  const std::string why = StrFormat(
      "liveput plan %d x %d (now %d x %d, %d workers, horizon %d x %lld s)", target, cur.pp, cur.dp,
      cur.pp, n0, o.horizon, static_cast<long long>(o.interval_ms / 1000));
  for (const Stage& stage : state.stages) {
    std::vector<const Replica*> active;
    for (const Replica& r : stage.replicas) {
      if (r.state != ReplicaState::kDraining) active.push_back(&r);
    }
    const int have = static_cast<int>(active.size());
    for (int i = have; i < target; ++i) {
      if (const Worker* w = pick()) {
        plan.actions.push_back(Action{AddReplica{stage.index, w->id}, why});
      } else {
        plan.unmet.push_back(
            Unmet{stage.index, StrFormat("no idle worker: %d of %d replicas", i, target)});
        break;
      }
    }
    if (have > target) {
      // Joining replicas first (they serve nothing yet), then the most expensive, then the
      // highest id.
      std::sort(active.begin(), active.end(), [](const Replica* a, const Replica* b) {
        return std::make_tuple(a->state != ReplicaState::kJoining, -a->worker.price_per_hour,
                               std::string_view(b->worker.id)) <
               std::make_tuple(b->state != ReplicaState::kJoining, -b->worker.price_per_hour,
                               std::string_view(a->worker.id));
      });
      for (int i = 0; i < have - target; ++i) {
        plan.actions.push_back(Action{DrainReplica{stage.index, active[i]->worker.id}, why});
      }
    }
  }
  return plan;
}

}  // namespace archi::policy
