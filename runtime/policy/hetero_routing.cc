#include "runtime/policy/hetero_routing.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <set>

#include "runtime/policy/str_format.h"

namespace archi::policy {

std::string_view RoutingModeName(RoutingMode m) {
  return m == RoutingMode::kCost ? "cost" : "capacity";
}

Status RoutingOptions::Validate() const {
  if (!(cheap_pool_margin >= 0)) return InvalidArgumentError("routing: cheap_pool_margin < 0");
  if (!(leave_capacity_below > 0 && leave_capacity_below < enter_capacity_at &&
        enter_capacity_at <= 1)) {
    return InvalidArgumentError("routing: need 0 < leave_capacity_below < enter_capacity_at <= 1");
  }
  if (leave_after_ms < 0) return InvalidArgumentError("routing: leave_after_ms < 0");
  if (latency_slo_ms < 0) return InvalidArgumentError("routing: latency_slo_ms < 0");
  return Status::Ok();
}

RoutingDecision DecideRouting(const std::vector<DeploymentUnit>& units, double demand_rps,
                              TimeMs now_ms, const RoutingMemory& previous,
                              const RoutingOptions& o) {
  RoutingDecision d;
  const size_t n = units.size();
  demand_rps = std::max(0.0, demand_rps);

  std::vector<char> eligible(n, 0);
  double cheapest = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) {
    const DeploymentUnit& u = units[i];
    eligible[i] =
        u.capacity_rps() > 0 && (o.latency_slo_ms <= 0 || u.latency_ms <= o.latency_slo_ms);
    if (eligible[i]) cheapest = std::min(cheapest, u.cost_per_inference);
  }
  std::vector<char> cheap(n, 0);
  for (size_t i = 0; i < n; ++i) {
    cheap[i] = eligible[i] && units[i].cost_per_inference <= (1 + o.cheap_pool_margin) * cheapest;
  }

  // Cost-mode weights and the pressure they would put on the cheap pool.
  std::vector<double> cost_w(n, 0.0), cap_w(n, 0.0);
  double cost_sum = 0, cap_sum = 0;
  for (size_t i = 0; i < n; ++i) {
    if (cheap[i]) {
      // A free unit (cost 0) would divide by zero: it counts as costing 1e-12 per inference.
      const double c = std::max(units[i].cost_per_inference, 1e-12);
      cost_w[i] = units[i].capacity_rps() / c;
      cost_sum += cost_w[i];
    }
    if (eligible[i]) {
      cap_w[i] = units[i].capacity_rps();
      cap_sum += cap_w[i];
    }
  }
  double pressure = 0;
  if (cost_sum > 0) {
    for (size_t i = 0; i < n; ++i) {
      cost_w[i] /= cost_sum;
      if (cheap[i]) pressure = std::max(pressure, demand_rps * cost_w[i] / units[i].capacity_rps());
    }
  }
  if (cap_sum > 0) {
    for (double& w : cap_w) w /= cap_sum;
  }
  d.pressure = pressure;

  // Failover: units that carried traffic last time and are not eligible now.
  for (const std::string& name : previous.serving) {
    auto it = std::find_if(units.begin(), units.end(),
                           [&](const DeploymentUnit& u) { return u.name == name; });
    if (it == units.end() || !eligible[static_cast<size_t>(it - units.begin())]) {
      d.lost.push_back(name);
    }
  }

  // Mode and hysteresis.
  RoutingMemory mem;
  mem.mode = previous.mode;
  if (cap_sum <= 0) {
    mem.mode = RoutingMode::kCapacity;
    d.reason = "no eligible unit";
  } else if (!d.lost.empty()) {
    mem.mode = RoutingMode::kCapacity;
    d.reason = "failover: " + std::to_string(d.lost.size()) + " unit(s) gone (" + d.lost[0] +
               (d.lost.size() > 1 ? ", ...)" : ")");
  } else if (previous.mode == RoutingMode::kCost) {
    if (pressure >= o.enter_capacity_at) {
      mem.mode = RoutingMode::kCapacity;
      d.reason =
          StrFormat("cheap pool at %.2f >= %.2f: capacity mode", pressure, o.enter_capacity_at);
    } else {
      d.reason = StrFormat("cheap pool at %.2f < %.2f: cost mode", pressure, o.enter_capacity_at);
    }
  } else if (pressure < o.leave_capacity_below) {
    mem.calm_since_ms = previous.calm_since_ms != kNoTime ? previous.calm_since_ms : now_ms;
    const TimeMs calm_for = now_ms - mem.calm_since_ms;
    if (calm_for >= o.leave_after_ms) {
      mem.mode = RoutingMode::kCost;
      mem.calm_since_ms = kNoTime;
      d.reason = StrFormat("cheap pool below %.2f for %.0f ms: cost mode", o.leave_capacity_below,
                           static_cast<double>(calm_for));
    } else {
      d.reason = StrFormat("cheap pool at %.2f < %.2f, waiting out the hysteresis", pressure,
                           o.leave_capacity_below);
    }
  } else {
    d.reason = StrFormat("cheap pool at %.2f >= %.2f: stay in capacity mode", pressure,
                         o.leave_capacity_below);
  }
  d.mode = mem.mode;

  const std::vector<double>& w = d.mode == RoutingMode::kCost ? cost_w : cap_w;
  d.routes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    UnitRoute r;
    r.unit = units[i].name;
    r.weight = w[i];
    r.load_rps = demand_rps * w[i];
    const double cap = units[i].capacity_rps();
    r.utilisation = cap > 0 ? r.load_rps / cap : 0;
    const double served = std::min(r.load_rps, cap);
    d.served_rps += served;
    d.cost_per_s += served * units[i].cost_per_inference;
    if (r.weight > 0) mem.serving.push_back(r.unit);
    d.routes.push_back(std::move(r));
  }
  d.unserved_rps = std::max(0.0, demand_rps - d.served_rps);
  std::sort(mem.serving.begin(), mem.serving.end());
  d.memory = std::move(mem);
  return d;
}

std::vector<DeploymentUnit> UnitsFromWorkers(const std::vector<Worker>& workers,
                                             double reference_rps,
                                             const std::map<std::string, double>& latency_ms) {
  struct Sum {
    int n = 0;
    double capacity = 0;
    double price = 0;
  };
  std::vector<std::string> order;
  std::map<std::string, Sum> sums;
  for (const Worker& w : workers) {
    const std::string kind = w.kind.empty() ? "default" : w.kind;
    auto [it, fresh] = sums.try_emplace(kind);
    if (fresh) order.push_back(kind);
    ++it->second.n;
    it->second.capacity += w.capacity;
    it->second.price += w.price_per_hour;
  }
  std::vector<DeploymentUnit> out;
  for (const std::string& kind : order) {
    const Sum& s = sums[kind];
    DeploymentUnit u;
    u.name = kind;
    u.hardware = kind;
    u.instances = s.n;
    u.max_rps = s.capacity / s.n * reference_rps;
    u.cost_per_inference = u.max_rps > 0 ? s.price / s.n / 3600.0 / u.max_rps : 0;
    if (auto it = latency_ms.find(kind); it != latency_ms.end()) u.latency_ms = it->second;
    out.push_back(std::move(u));
  }
  return out;
}

void StoreRoutingMemory(const RoutingMemory& m, std::string_view prefix, PolicyMemory* out) {
  const std::string p(prefix);
  // Drop what an older decision stored under the prefix (units no longer serving).
  for (auto it = out->values.lower_bound(p + "/");
       it != out->values.end() && it->first.compare(0, p.size() + 1, p + "/") == 0;) {
    it = out->values.erase(it);
  }
  out->values[p + "/mode"] = m.mode == RoutingMode::kCost ? 0.0 : 1.0;
  out->values[p + "/calm_since_ms"] = static_cast<double>(m.calm_since_ms);
  for (const std::string& u : m.serving) out->values[p + "/serving/" + u] = 1.0;
}

RoutingMemory LoadRoutingMemory(const PolicyMemory& in, std::string_view prefix) {
  RoutingMemory m;
  const std::string p(prefix);
  if (auto it = in.values.find(p + "/mode"); it != in.values.end()) {
    m.mode = it->second != 0 ? RoutingMode::kCapacity : RoutingMode::kCost;
  }
  if (auto it = in.values.find(p + "/calm_since_ms"); it != in.values.end()) {
    m.calm_since_ms = static_cast<TimeMs>(it->second);
  }
  const std::string sp = p + "/serving/";
  for (auto it = in.values.lower_bound(sp);
       it != in.values.end() && it->first.compare(0, sp.size(), sp) == 0; ++it) {
    m.serving.push_back(it->first.substr(sp.size()));
  }
  return m;
}

}  // namespace archi::policy
