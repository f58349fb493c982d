#include "runtime/policy/combined.h"

#include <algorithm>
#include <numeric>

namespace archi::policy {

DeploymentUnit SpotUnit(const CombinedInput& in) {
  DeploymentUnit u;
  u.name = in.spot_unit;
  u.hardware = "spot";
  u.instances = in.config.dp;
  u.max_rps = in.config.dp > 0 ? std::max(0.0, in.liveput_rps) / in.config.dp : 0.0;
  u.latency_ms = in.spot_latency_ms;
  u.cost_per_inference = in.spot_cost_per_inference;
  return u;
}

CombinedDecision CombinedPlan(const CombinedInput& in) {
  CombinedDecision d;
  d.config = in.config;
  d.units.push_back(SpotUnit(in));
  d.units.insert(d.units.end(), in.units.begin(), in.units.end());
  for (const BatchGroup& g : in.groups) d.demand_rps += std::max(0.0, g.rate_rps);
  d.routing = DecideRouting(d.units, d.demand_rps, in.now_ms, in.memory, in.routing);

  const size_t n = d.units.size();
  std::vector<double> routed(n, 0.0), spare(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const DeploymentUnit& u = d.units[i];
    const double cap = u.instances > 0 ? u.instances * std::max(0.0, u.max_rps) : 0.0;
    routed[i] = std::min(cap, d.routing.routes[i].load_rps);
    spare[i] = std::max(0.0, cap - routed[i]);
  }
  // Groups in SLO order (stable for equal SLOs), tightest first.
  std::vector<size_t> order(in.groups.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return in.groups[a].slo_s < in.groups[b].slo_s;
  });
  d.groups.resize(in.groups.size());
  // Takes up to `want` from `pool` over the eligible units, proportionally to what is left.
  auto take = [&](std::vector<double>& pool, const std::vector<bool>& ok, double want,
                  std::vector<double>& load) {
    double avail = 0;
    for (size_t i = 0; i < n; ++i) avail += ok[i] ? pool[i] : 0.0;
    if (avail <= 0 || want <= 0) return 0.0;
    const double got = std::min(want, avail);
    for (size_t i = 0; i < n; ++i) {
      if (!ok[i]) continue;
      const double x = got * pool[i] / avail;
      load[i] += x;
      pool[i] -= x;
    }
    return got;
  };
  for (size_t gi : order) {
    const BatchGroup& g = in.groups[gi];
    GroupRoute& r = d.groups[gi];
    r.group = static_cast<int>(gi);
    r.rate_rps = std::max(0.0, g.rate_rps);
    r.slo_s = g.slo_s;
    r.load_rps.assign(n, 0.0);
    std::vector<bool> ok(n);
    for (size_t i = 0; i < n; ++i) {
      ok[i] = d.units[i].instances > 0 &&
              d.units[i].latency_ms / 1000.0 + std::max(0.0, g.unit.timeout_s) <= g.slo_s;
    }
    double got = take(routed, ok, r.rate_rps, r.load_rps);
    got += take(spare, ok, r.rate_rps - got, r.load_rps);
    r.served_rps = got;
    r.unserved_rps = r.rate_rps - got;
    d.served_rps += r.served_rps;
    d.unserved_rps += r.unserved_rps;
    for (size_t i = 0; i < n; ++i) d.cost_per_s += r.load_rps[i] * d.units[i].cost_per_inference;
  }
  return d;
}

}  // namespace archi::policy
