#include "runtime/policy/research_policies.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "runtime/policy/combined.h"
#include "runtime/policy/str_format.h"

namespace archi::policy {
namespace {

std::string KindName(const std::string& k) { return k.empty() ? "default" : k; }

// Shares below this are rounding residue of proportional splits (CombinedPlan's take()), not
// routing: without the cut a 1e-17 share appearing and vanishing re-emitted the groups.
constexpr double kNegligible = 1e-9;

// Copies the values under "<prefix>/" from `in` to `out`.
void KeepValues(const PolicyMemory& in, std::string_view prefix, PolicyMemory* out) {
  const std::string p = std::string(prefix) + "/";
  for (auto it = in.values.lower_bound(p); it != in.values.end() && it->first.starts_with(p); ++it) {
    out->values.insert(*it);
  }
}

void EraseValues(std::string_view prefix, PolicyMemory* m) {
  const std::string p = std::string(prefix) + "/";
  for (auto it = m->values.lower_bound(p); it != m->values.end() && it->first.starts_with(p);) {
    it = m->values.erase(it);
  }
}

// Whether `w` (with `mode`) differs from the weights last emitted under `key` by more than
// `tol` in any kind, or in the mode; stores `w` as the last emitted when it does.
bool WeightsChanged(const std::vector<KindWeight>& w, double mode, const std::string& key,
                    double tol, PolicyMemory* m) {
  std::map<std::string, double> now;
  for (const KindWeight& k : w) now[KindName(k.kind)] = k.weight;
  std::map<std::string, double> last;
  const std::string p = key + "/";
  for (auto it = m->values.lower_bound(p); it != m->values.end() && it->first.starts_with(p); ++it) {
    last[it->first.substr(p.size())] = it->second;
  }
  const auto mit = m->values.find(key + "#mode");
  bool changed = mit == m->values.end() || mit->second != mode;
  std::set<std::string> kinds;
  for (const auto& [k, _] : now) kinds.insert(k);
  for (const auto& [k, _] : last) kinds.insert(k);
  for (const std::string& k : kinds) {
    const double a = now.contains(k) ? now[k] : 0.0, b = last.contains(k) ? last[k] : 0.0;
    if ((a > kNegligible) != (b > kNegligible) || std::abs(a - b) > tol) changed = true;
  }
  if (!changed) return false;
  EraseValues(key, m);
  for (const auto& [k, v] : now) m->values[p + k] = v;
  m->values[key + "#mode"] = mode;
  return true;
}

std::vector<App> AppsOf(const ClusterMetrics& metrics) {
  std::vector<App> apps;
  for (const AppMetrics& a : metrics.apps) {
    if (a.slo_ms > 0) apps.push_back({a.app, std::max(0.0, a.rate_rps), a.slo_ms / 1000.0});
  }
  std::sort(apps.begin(), apps.end(), [](const App& x, const App& y) { return x.name < y.name; });
  return apps;
}

// Whether the batching plan must be redone: another set of applications, or a rate that moved
// by more than `frac` since the rates stored under "<prefix>/rate/".
bool NeedReplan(const std::vector<App>& apps, const PolicyMemory& mem, const std::string& prefix,
                double frac) {
  const std::string p = prefix + "/rate/";
  size_t stored = 0;
  for (auto it = mem.values.lower_bound(p); it != mem.values.end() && it->first.starts_with(p); ++it) {
    ++stored;
  }
  if (stored != apps.size() || apps.empty()) return stored != apps.size();
  for (const App& a : apps) {
    auto it = mem.values.find(p + a.name);
    if (it == mem.values.end()) return true;
    if (std::abs(a.rate_rps - it->second) > frac * std::max(it->second, 1.0)) return true;
  }
  return false;
}

// Stores the plan's rates and signature; true when the signature differs from the stored one.
bool StoreBatching(const std::vector<App>& apps, const std::vector<BatchingGroup>& groups,
                   const std::string& prefix, PolicyMemory* m) {
  std::map<std::string, double> sig;
  for (size_t j = 0; j < groups.size(); ++j) {
    for (const std::string& a : groups[j].apps) sig["g/" + a] = static_cast<double>(j);
    sig["b" + std::to_string(j)] = groups[j].max_batch;
    sig["t" + std::to_string(j)] = std::round(groups[j].timeout_ms);
  }
  std::map<std::string, double> old;
  const std::string sp = prefix + "/sig/";
  for (auto it = m->values.lower_bound(sp); it != m->values.end() && it->first.starts_with(sp); ++it) {
    old[it->first.substr(sp.size())] = it->second;
  }
  EraseValues(prefix + "/rate", m);
  for (const App& a : apps) m->values[prefix + "/rate/" + a.name] = a.rate_rps;
  if (old == sig) return false;
  EraseValues(prefix + "/sig", m);
  for (const auto& [k, v] : sig) m->values[sp + k] = v;
  return true;
}

// Exponential smoothing of a rate with time constant tau, in memory under "<prefix>/demand"
// and "<prefix>/demand_at": the first call takes the rate as is.
double SmoothedDemand(double rate, TimeMs now, TimeMs tau, const PolicyMemory& in,
                      const std::string& prefix, PolicyMemory* out) {
  double v = rate;
  auto d = in.values.find(prefix + "/demand");
  auto t = in.values.find(prefix + "/demand_at");
  if (tau > 0 && d != in.values.end() && t != in.values.end()) {
    const double dt = std::max(0.0, static_cast<double>(now) - t->second);
    const double a = 1.0 - std::exp(-dt / static_cast<double>(tau));
    v = d->second + a * (rate - d->second);
  }
  out->values[prefix + "/demand"] = v;
  out->values[prefix + "/demand_at"] = static_cast<double>(now);
  return v;
}

std::vector<BatchingGroup> PlanGroups(const HarmonyPolicyOptions& o, const std::vector<App>& apps) {
  const BatchingPlan plan = o.per_app ? PerAppBatching(o.model, o.harmony, apps)
                                      : PlanMultiSloBatching(o.model, o.harmony, apps);
  return GroupsOf(plan, apps, o.max_batch_cap);
}

}  // namespace

Status CostCapacityOptions::Validate() const {
  ARCHI_RETURN_IF_ERROR(routing.Validate());
  ARCHI_RETURN_IF_ERROR(scaling.Validate());
  if (!(reference_rps > 0)) return InvalidArgumentError("cost-capacity: reference_rps must be > 0");
  if (demand_smoothing_ms < 0) return InvalidArgumentError("cost-capacity: demand_smoothing_ms < 0");
  if (!(min_weight_change >= 0)) {
    return InvalidArgumentError("cost-capacity: min_weight_change must be >= 0");
  }
  return Status::Ok();
}

Status HarmonyPolicyOptions::Validate() const {
  ARCHI_RETURN_IF_ERROR(scaling.Validate());
  if (!(model.gpu.l1 > 0 || model.gpu.l2 > 0) || !(model.gpu.total_gb >= 1)) {
    return InvalidArgumentError("harmony: no GPU latency model (load one with LoadHarmonyModel)");
  }
  if (!(replan_rate_change >= 0)) return InvalidArgumentError("harmony: replan_rate_change < 0");
  if (max_batch_cap < 0) return InvalidArgumentError("harmony: max_batch_cap < 0");
  return Status::Ok();
}

Status CombinedPolicyOptions::Validate() const {
  ARCHI_RETURN_IF_ERROR(parcae.Validate());
  ARCHI_RETURN_IF_ERROR(routing.Validate());
  return batching.Validate();
}

std::vector<DeploymentUnit> PipelineUnits(const ClusterState& state, double reference_rps,
                                          const std::map<std::string, double>& latency_ms) {
  struct Sum {
    int n = 0;
    double capacity = 0, price = 0;
  };
  // kind -> per stage position
  std::map<std::string, std::vector<Sum>> by_kind;
  const size_t ns = state.stages.size();
  for (size_t s = 0; s < ns; ++s) {
    for (const Replica& r : state.stages[s].replicas) {
      if (r.state != ReplicaState::kReady) continue;
      auto& v = by_kind[KindName(r.worker.kind)];
      v.resize(ns);
      ++v[s].n;
      v[s].capacity += r.worker.capacity;
      v[s].price += r.worker.price_per_hour;
    }
  }
  std::vector<DeploymentUnit> out;
  for (const auto& [kind, per_stage] : by_kind) {
    DeploymentUnit u;
    u.name = kind;
    u.hardware = kind;
    double rps = std::numeric_limits<double>::infinity(), cost = 0;
    for (const Sum& s : per_stage) {
      if (s.n == 0) {
        rps = 0;
        continue;
      }
      rps = std::min(rps, s.capacity * reference_rps);
      const double one = s.capacity / s.n * reference_rps;
      cost += s.price / s.n / 3600.0 / one;
    }
    u.instances = rps > 0 ? 1 : 0;
    u.max_rps = rps > 0 ? rps : 0;
    u.cost_per_inference = cost;
    if (auto it = latency_ms.find(kind); it != latency_ms.end()) u.latency_ms = it->second;
    out.push_back(std::move(u));
  }
  return out;
}

std::vector<KindWeight> WeightsOf(const std::vector<DeploymentUnit>& units,
                                  const RoutingDecision& d) {
  std::vector<KindWeight> w;
  double sum = 0;
  for (size_t i = 0; i < units.size() && i < d.routes.size(); ++i) {
    if (d.routes[i].weight > kNegligible) {
      w.push_back({units[i].name, d.routes[i].weight});
      sum += d.routes[i].weight;
    }
  }
  for (KindWeight& k : w) k.weight /= sum;
  return w;
}

std::vector<KindWeight> CostOnlyWeights(const std::vector<DeploymentUnit>& units,
                                        const RoutingOptions& o) {
  double cheapest = std::numeric_limits<double>::infinity();
  auto eligible = [&](const DeploymentUnit& u) {
    return u.capacity_rps() > 0 && (o.latency_slo_ms <= 0 || u.latency_ms <= o.latency_slo_ms);
  };
  for (const DeploymentUnit& u : units) {
    if (eligible(u)) cheapest = std::min(cheapest, u.cost_per_inference);
  }
  std::vector<KindWeight> w;
  double sum = 0;
  for (const DeploymentUnit& u : units) {
    if (eligible(u) && u.cost_per_inference <= (1 + o.cheap_pool_margin) * cheapest) {
      w.push_back({u.name, u.capacity_rps() / std::max(u.cost_per_inference, 1e-12)});
      sum += w.back().weight;
    }
  }
  for (KindWeight& k : w) k.weight /= sum;
  return w;
}

BatchingPlan PerAppBatching(const HarmonyModel& model, const HarmonyOptions& o,
                            const std::vector<App>& apps) {
  BatchingPlan plan;
  std::vector<size_t> order(apps.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return apps[a].slo_s < apps[b].slo_s; });
  for (size_t i : order) {
    BatchGroup g;
    g.apps = {static_cast<int>(i)};
    g.rate_rps = apps[i].rate_rps;
    g.slo_s = apps[i].slo_s;
    g.unit = Provision(model, o, g.rate_rps, g.slo_s);
    g.cost_per_s = g.unit.feasible ? g.rate_rps * g.unit.cost_per_request
                                   : std::numeric_limits<double>::infinity();
    plan.cost_per_s += g.cost_per_s;
    plan.groups.push_back(std::move(g));
  }
  plan.singleton_cost_per_s = plan.cost_per_s;
  return plan;
}

std::vector<BatchingGroup> GroupsOf(const BatchingPlan& plan, const std::vector<App>& apps,
                                    int max_batch_cap) {
  std::vector<BatchingGroup> out;
  for (const BatchGroup& g : plan.groups) {
    BatchingGroup b;
    for (int i : g.apps) b.apps.push_back(apps[static_cast<size_t>(i)].name);
    b.slo_ms = g.slo_s * 1000.0;
    if (g.unit.feasible) {
      b.max_batch = std::max(1, g.unit.batch);
      if (max_batch_cap > 0) b.max_batch = std::min(b.max_batch, max_batch_cap);
      b.timeout_ms = std::max(0.0, g.unit.timeout_s * 1000.0);
    }
    out.push_back(std::move(b));
  }
  return out;
}

// --- cost-capacity ----------------------------------------------------------------------------

CostCapacityPolicy::CostCapacityPolicy(CostCapacityOptions options)
    : options_(std::move(options)), scaling_(options_.scaling) {}

Plan CostCapacityPolicy::Decide(const ClusterState& state, const ClusterMetrics& metrics,
                                const Forecast& forecast) const {
  Plan plan = scaling_.Decide(state, metrics, forecast);
  KeepValues(state.memory, kName, &plan.memory);
  const std::string name(kName);
  const double demand =
      SmoothedDemand(metrics.frontend.admitted_rps, state.now_ms, options_.demand_smoothing_ms,
                     state.memory, name, &plan.memory);
  for (const Stage& stage : state.stages) {
    // One unit per kind among the stage's ready replicas.
    ClusterState one;
    one.stages.push_back(stage);
    const std::vector<DeploymentUnit> units =
        PipelineUnits(one, options_.reference_rps, options_.latency_ms);
    // A stage that has never had a ready replica has nothing to route and no mode yet: no
    // decision. (DecideRouting would call it "no eligible unit", capacity mode, held for
    // leave_after_ms once replicas are ready: live, the first decisions come before any replica
    // is ready.) After weights were emitted, a stage without units is a failover as before.
    if (units.empty() &&
        !state.memory.values.contains(name + "/w" + std::to_string(stage.index) + "#mode")) {
      continue;
    }
    const std::string prefix = name + "/s" + std::to_string(stage.index);
    const RoutingMemory mem = LoadRoutingMemory(state.memory, prefix);
    const RoutingDecision d = DecideRouting(units, demand, state.now_ms, mem, options_.routing);
    StoreRoutingMemory(d.memory, prefix, &plan.memory);
    std::vector<KindWeight> w =
        options_.cost_only ? CostOnlyWeights(units, options_.routing) : WeightsOf(units, d);
    const RoutingMode mode = options_.cost_only ? RoutingMode::kCost : d.mode;
    if (WeightsChanged(w, mode == RoutingMode::kCost ? 0 : 1,
                       name + "/w" + std::to_string(stage.index), options_.min_weight_change,
                       &plan.memory)) {
      SetRoutingWeights op{stage.index, std::move(w), std::string(RoutingModeName(mode))};
      plan.actions.push_back(
          {std::move(op), StrFormat("demand %.1f req/s, pressure %.2f%s", demand, d.pressure,
                                    d.lost.empty() ? "" : ", failover")});
    }
  }
  return plan;
}

// --- harmony ----------------------------------------------------------------------------------

HarmonyPolicy::HarmonyPolicy(HarmonyPolicyOptions options)
    : options_(std::move(options)), scaling_(options_.scaling) {}

Plan HarmonyPolicy::Decide(const ClusterState& state, const ClusterMetrics& metrics,
                           const Forecast& forecast) const {
  Plan plan = scaling_.Decide(state, metrics, forecast);
  KeepValues(state.memory, kName, &plan.memory);
  const std::string name(kName);
  const std::vector<App> apps = AppsOf(metrics);
  if (!NeedReplan(apps, state.memory, name, options_.replan_rate_change)) return plan;
  std::vector<BatchingGroup> groups = PlanGroups(options_, apps);
  if (StoreBatching(apps, groups, name, &plan.memory)) {
    plan.actions.push_back({SetBatchingGroups{std::move(groups)},
                            StrFormat("%zu applications, %s", apps.size(),
                                      options_.per_app ? "per application" : "multi-SLO merge")});
  }
  return plan;
}

// --- combined ---------------------------------------------------------------------------------

CombinedPolicy::CombinedPolicy(CombinedPolicyOptions options)
    : options_(std::move(options)), parcae_(options_.parcae) {}

Plan CombinedPolicy::Decide(const ClusterState& state, const ClusterMetrics& metrics,
                            const Forecast& forecast) const {
  Plan plan = parcae_.Decide(state, metrics, forecast);
  KeepValues(state.memory, kName, &plan.memory);
  const std::string name(kName);
  const CostCapacityOptions& ro = options_.routing;

  // Groups: re-planned as the harmony policy does; otherwise the last ones, rebuilt from memory.
  const std::vector<App> apps = AppsOf(metrics);
  std::vector<BatchingGroup> groups;
  const bool replan = NeedReplan(apps, state.memory, name, options_.batching.replan_rate_change);
  bool groups_changed = false;
  if (replan) {
    groups = PlanGroups(options_.batching, apps);
    groups_changed = StoreBatching(apps, groups, name, &plan.memory);
  }
  // The group layout in force is the stored one (the same as `groups` after a re-plan).
  // Without a re-plan, keep the stored layout: regroup `apps` by the stored signature.
  if (!replan) {
    std::map<int, BatchingGroup> stored;
    for (const App& a : apps) {
      auto it = plan.memory.values.find(name + "/sig/g/" + a.name);
      if (it == plan.memory.values.end()) continue;
      const int j = static_cast<int>(it->second);
      BatchingGroup& g = stored[j];
      g.apps.push_back(a.name);
      g.slo_ms = g.slo_ms > 0 ? std::min(g.slo_ms, a.slo_s * 1000.0) : a.slo_s * 1000.0;
      g.max_batch = static_cast<int>(plan.memory.values[name + "/sig/b" + std::to_string(j)]);
      g.timeout_ms = plan.memory.values[name + "/sig/t" + std::to_string(j)];
    }
    groups.clear();
    for (auto& [_, g] : stored) groups.push_back(std::move(g));
  }

  // Routing over the pipeline's kinds for the groups' total rate (CombinedPlan).
  CombinedInput in;
  in.config = ParallelConfig{0, 1};  // the pool's capacity is in the kinds below
  in.spot_unit = "(parcae pool)";  // unused: no separate preemptible unit here
  in.units = PipelineUnits(state, ro.reference_rps, ro.latency_ms);
  in.routing = ro.routing;
  in.memory = LoadRoutingMemory(state.memory, name + "/route");
  in.now_ms = state.now_ms;
  std::map<std::string, double> rate;
  for (const App& a : apps) rate[a.name] = a.rate_rps;
  for (const BatchingGroup& g : groups) {
    BatchGroup bg;
    for (const std::string& a : g.apps) bg.rate_rps += rate[a];
    bg.slo_s = g.slo_ms / 1000.0;
    bg.unit.timeout_s = g.timeout_ms / 1000.0;
    in.groups.push_back(std::move(bg));
  }
  if (in.groups.empty()) {  // no applications: one anonymous class with the frontend's rate
    BatchGroup bg;
    bg.rate_rps = SmoothedDemand(metrics.frontend.admitted_rps, state.now_ms,
                                 ro.demand_smoothing_ms, state.memory, name, &plan.memory);
    bg.slo_s = std::numeric_limits<double>::infinity();
    in.groups.push_back(bg);
  }
  const CombinedDecision d = CombinedPlan(in);
  StoreRoutingMemory(d.routing.memory, name + "/route", &plan.memory);

  // Per-group routes: the group's load per kind.
  bool routes_changed = false;
  for (size_t j = 0; j < groups.size() && j < d.groups.size(); ++j) {
    std::vector<KindWeight> w;
    double sum = 0;
    for (size_t i = 0; i < d.units.size(); ++i) sum += d.groups[j].load_rps[i];
    for (size_t i = 0; i < d.units.size(); ++i) {
      if (sum > 0 && d.groups[j].load_rps[i] > kNegligible * sum) {
        w.push_back({d.units[i].name, d.groups[j].load_rps[i]});
      }
    }
    double kept = 0;
    for (const KindWeight& k : w) kept += k.weight;
    for (KindWeight& k : w) k.weight /= kept;
    groups[j].route = std::move(w);
    routes_changed |= WeightsChanged(groups[j].route, 0, name + "/gw" + std::to_string(j),
                                     ro.min_weight_change, &plan.memory);
  }
  // Requests of no group (and every stage's default): the routing decision's weights.
  std::vector<KindWeight> w = WeightsOf(d.units, d.routing);
  if (WeightsChanged(w, d.routing.mode == RoutingMode::kCost ? 0 : 1, name + "/w",
                     ro.min_weight_change, &plan.memory)) {
    plan.actions.push_back({SetRoutingWeights{-1, std::move(w),
                                              std::string(RoutingModeName(d.routing.mode))},
                            StrFormat("demand %.1f req/s, pressure %.2f%s", d.demand_rps,
                                      d.routing.pressure, d.routing.lost.empty() ? "" : ", failover")});
  }
  if ((groups_changed || routes_changed) && !groups.empty()) {
    plan.actions.push_back(
        {SetBatchingGroups{std::move(groups)},
         StrFormat("%zu applications, served within SLO %.1f of %.1f req/s", apps.size(),
                   d.served_rps, d.demand_rps)});
  }
  return plan;
}

}  // namespace archi::policy
