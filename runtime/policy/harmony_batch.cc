#include "runtime/policy/harmony_batch.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

namespace archi::policy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
using nlohmann::json;

Result<std::vector<std::array<double, 3>>> ParseTriples(const json& j, const std::string& what) {
  if (!j.is_array() || j.empty())
    return InvalidArgumentError(what + ": expected a non-empty array");
  std::vector<std::array<double, 3>> out;
  for (const json& t : j) {
    if (!t.is_array() || t.size() != 3) return InvalidArgumentError(what + ": expected [g0,g1,g2]");
    std::array<double, 3> a{};
    for (int i = 0; i < 3; ++i) {
      if (!t[i].is_number()) return InvalidArgumentError(what + ": non-numeric coefficient");
      a[i] = t[i].get<double>();
    }
    if (!(a[1] > 0)) return InvalidArgumentError(what + ": g1 must be > 0");
    out.push_back(a);
  }
  return out;
}

Result<double> Number(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key) || !obj[key].is_number()) {
    return InvalidArgumentError(where + "." + key + ": missing or not a number");
  }
  return obj[key].get<double>();
}

// Ceil that ignores representation noise (L / (g t) = 2.0000000001 is 2 slices).
double NoisyCeil(double x) { return std::ceil(x - 1e-9); }

}  // namespace

Result<HarmonyModel> ParseHarmonyModel(std::string_view text, std::string_view model_name) {
  const json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidArgumentError("harmony model: not valid JSON");
  const std::string name(model_name);
  if (!root.is_object() || !root.contains(name) || !root[name].is_object()) {
    return InvalidArgumentError("harmony model: no model \"" + name + "\"");
  }
  const json& m = root[name];
  if (!m.contains("CPU") || !m.contains("GPU")) {
    return InvalidArgumentError("harmony model: " + name + " needs CPU and GPU entries");
  }
  HarmonyModel out;
  const json& cpu = m["CPU"];
  if (!cpu.contains("mem") || !cpu["mem"].is_array() || cpu["mem"].size() != 2 ||
      !cpu["mem"][0].is_number() || !cpu["mem"][1].is_number()) {
    return InvalidArgumentError("harmony model: CPU.mem must be [a, b]");
  }
  out.cpu.mem_mb_per_batch = cpu["mem"][0].get<double>();
  out.cpu.mem_mb_base = cpu["mem"][1].get<double>();
  for (const char* which : {"avg", "max"}) {
    if (!cpu.contains(which) || !cpu[which].is_object() || !cpu[which].contains("Exponential")) {
      return InvalidArgumentError(std::string("harmony model: CPU.") + which +
                                  ".Exponential missing");
    }
    auto triples = ParseTriples(cpu[which]["Exponential"], std::string("CPU.") + which);
    if (!triples.ok()) return triples.status();
    (std::string_view(which) == "avg" ? out.cpu.avg : out.cpu.max) = std::move(*triples);
  }
  if (out.cpu.avg.size() != out.cpu.max.size()) {
    return InvalidArgumentError("harmony model: CPU avg and max cover different batch sizes");
  }
  const json& gpu = m["GPU"];
  if (!gpu.is_object()) return InvalidArgumentError("harmony model: GPU must be an object");
  if (gpu.contains("mem") && gpu["mem"].is_number()) out.gpu.host_mem_mb = gpu["mem"].get<double>();
  if (gpu.contains("gpu_mem")) {
    if (!gpu["gpu_mem"].is_array()) return InvalidArgumentError("harmony model: GPU.gpu_mem");
    for (const json& v : gpu["gpu_mem"]) {
      if (!v.is_number()) return InvalidArgumentError("harmony model: GPU.gpu_mem entry");
      out.gpu.mem_batch_thresholds.push_back(v.get<int>());
    }
  }
  bool found = false;
  for (const auto& [key, dev] : gpu.items()) {
    if (!dev.is_object() || !dev.contains("l1")) continue;
    const std::string where = "GPU." + key;
    auto l1 = Number(dev, "l1", where);
    auto l2 = Number(dev, "l2", where);
    auto t = Number(dev, "t", where);
    auto g = Number(dev, "G", where);
    for (const Result<double>* r : {&l1, &l2, &t, &g}) {
      if (!r->ok()) return r->status();
    }
    if (!(*t > 0) || !(*g >= 1)) return InvalidArgumentError(where + ": need t > 0, G >= 1");
    out.gpu.l1 = *l1;
    out.gpu.l2 = *l2;
    out.gpu.slice_s = *t;
    out.gpu.total_gb = *g;
    found = true;
    break;
  }
  if (!found) return InvalidArgumentError("harmony model: no GPU device entry with l1/l2/t/G");
  return out;
}

Result<HarmonyModel> LoadHarmonyModel(const std::string& path, std::string_view model) {
  std::ifstream f(path);
  if (!f) return NotFoundError("harmony model: cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ParseHarmonyModel(ss.str(), model);
}

namespace {
double Exponential(const std::vector<std::array<double, 3>>& t, int batch, double cores) {
  if (batch < 1 || batch > static_cast<int>(t.size()) || !(cores > 0)) return kInf;
  const auto& g = t[batch - 1];
  return g[0] * std::exp(-cores / g[1]) + g[2];
}
}  // namespace

double CpuAvgLatency(const CpuLatencyModel& m, int batch, double cores) {
  return Exponential(m.avg, batch, cores);
}
double CpuMaxLatency(const CpuLatencyModel& m, int batch, double cores) {
  return Exponential(m.max, batch, cores);
}
double CpuMemGb(const CpuLatencyModel& m, int batch) {
  return (m.mem_mb_per_batch * batch + m.mem_mb_base) / 1024.0;
}
double GpuFullLatency(const GpuLatencyModel& m, int batch) {
  if (batch < 1) return kInf;
  return m.l1 * batch + m.l2;
}
double GpuAvgLatency(const GpuLatencyModel& m, int batch, int gpu_gb) {
  if (batch < 1 || gpu_gb < 1 || gpu_gb > m.total_gb) return kInf;
  return m.total_gb / gpu_gb * GpuFullLatency(m, batch);
}
double GpuMaxLatency(const GpuLatencyModel& m, int batch, int gpu_gb) {
  if (batch < 1 || gpu_gb < 1 || gpu_gb > m.total_gb) return kInf;
  const double l = GpuFullLatency(m, batch);
  const double g = gpu_gb;
  // While this function holds the GPU for g/G of each round of slices, the others hold it for
  // (G - g) slices' worth between its own: ceil(L / (g t)) rounds of waiting.
  const double waits = (m.total_gb - g) * NoisyCeil(l / (g * m.slice_s)) * m.slice_s;
  return (waits + l) * (g < m.total_gb ? 1.2 : 1.0);
}
int GpuMinMemGb(const GpuLatencyModel& m, int batch) {
  const auto& th = m.mem_batch_thresholds;
  for (size_t i = 0; i < th.size(); ++i) {
    if (batch <= th[i]) return static_cast<int>(i) + 1;
  }
  return static_cast<int>(th.size()) + 1;
}

int MaxBatchForTimeout(double rate_rps, double timeout_s) {
  if (!(rate_rps > 0) || !(timeout_s > 0)) return 1;
  const double n = std::floor(rate_rps * timeout_s + 1e-9);
  return n >= 1e6 ? 1'000'001 : static_cast<int>(n) + 1;
}

std::string_view UnitKindName(UnitKind k) { return k == UnitKind::kCpu ? "cpu" : "gpu"; }

namespace {
// Candidate `c` replaces `best` if strictly cheaper (relative tolerance against noise);
// otherwise the earlier (smaller batch, fewer resources: the loops' order) stays.
bool Cheaper(const UnitConfig& c, const UnitConfig& best) {
  if (!best.feasible) return true;
  return c.cost_per_request < best.cost_per_request * (1 - 1e-12);
}
}  // namespace

namespace {
// One (size, batch) choice: kept in `best` if the SLO holds (timeout = SLO - max latency >= 0),
// the batch is within the bound for that timeout, and it is cheaper per request.
void Consider(UnitKind kind, double cores, int gpu_gb, int batch, double avg_s, double max_s,
              double price_per_s, double rate_rps, double slo_s, const HarmonyPrices& prices,
              UnitConfig& best) {
  const double timeout = slo_s - max_s;
  if (timeout < 0 || batch > MaxBatchForTimeout(rate_rps, timeout)) return;
  const UnitConfig u{true,   kind,  cores,
                     gpu_gb, batch, timeout,
                     avg_s,  max_s, (avg_s * price_per_s + prices.per_invocation) / batch};
  if (Cheaper(u, best)) best = u;
}
}  // namespace

UnitConfig ProvisionCpu(const HarmonyModel& model, const HarmonyOptions& o, double rate_rps,
                        double slo_s) {
  UnitConfig best;
  const int max_b = static_cast<int>(model.cpu.avg.size());
  if (!(o.cpu_cores_step > 0)) return best;
  const int steps =
      static_cast<int>(std::floor((o.cpu_cores_max - o.cpu_cores_min) / o.cpu_cores_step + 1e-9));
  for (int b = 1; b <= max_b; ++b) {
    for (int k = 0; k <= steps; ++k) {
      const double c = o.cpu_cores_min + k * o.cpu_cores_step;
      const double price =
          c * o.prices.cpu_per_core_s + CpuMemGb(model.cpu, b) * o.prices.mem_per_gb_s;
      Consider(UnitKind::kCpu, c, 0, b, CpuAvgLatency(model.cpu, b, c),
               CpuMaxLatency(model.cpu, b, c), price, rate_rps, slo_s, o.prices, best);
    }
  }
  return best;
}

UnitConfig ProvisionGpu(const HarmonyModel& model, const HarmonyOptions& o, double rate_rps,
                        double slo_s) {
  UnitConfig best;
  best.kind = UnitKind::kGpu;
  const int total = o.gpu_gb_max > 0 ? std::min(o.gpu_gb_max, static_cast<int>(model.gpu.total_gb))
                                      : static_cast<int>(model.gpu.total_gb);
  const double host_price = model.gpu.host_mem_mb / 1024.0 * o.prices.mem_per_gb_s;
  for (int b = 1; b <= o.gpu_max_batch; ++b) {
    for (int g = std::max({1, o.gpu_gb_min, GpuMinMemGb(model.gpu, b)}); g <= total; ++g) {
      Consider(UnitKind::kGpu, 0, g, b, GpuAvgLatency(model.gpu, b, g),
               GpuMaxLatency(model.gpu, b, g), g * o.prices.gpu_per_gb_s + host_price, rate_rps,
               slo_s, o.prices, best);
    }
  }
  return best;
}

UnitConfig Provision(const HarmonyModel& model, const HarmonyOptions& o, double rate_rps,
                     double slo_s) {
  UnitConfig cpu = ProvisionCpu(model, o, rate_rps, slo_s);
  UnitConfig gpu = ProvisionGpu(model, o, rate_rps, slo_s);
  if (!gpu.feasible) return cpu;
  if (!cpu.feasible) return gpu;
  return gpu.cost_per_request < cpu.cost_per_request ? gpu : cpu;
}

namespace {

class Grouper {
 public:
  Grouper(const HarmonyModel& model, const HarmonyOptions& o, const std::vector<App>& apps)
      : model_(model), o_(o), apps_(apps) {}

  BatchGroup Make(std::vector<int> members) const {
    BatchGroup g;
    g.slo_s = kInf;
    for (int a : members) {
      g.rate_rps += apps_[a].rate_rps;
      g.slo_s = std::min(g.slo_s, apps_[a].slo_s);
    }
    g.apps = std::move(members);
    g.unit = Provision(model_, o_, g.rate_rps, g.slo_s);
    g.cost_per_s = g.unit.feasible ? g.rate_rps * g.unit.cost_per_request : kInf;
    return g;
  }
  BatchGroup Merge(const BatchGroup& a, const BatchGroup& b) const {
    std::vector<int> m = a.apps;
    m.insert(m.end(), b.apps.begin(), b.apps.end());
    return Make(std::move(m));
  }

 private:
  const HarmonyModel& model_;
  const HarmonyOptions& o_;
  const std::vector<App>& apps_;
};

double Total(const std::vector<BatchGroup>& gs) {
  double t = 0;
  for (const BatchGroup& g : gs) t += g.cost_per_s;
  return t;
}

bool OnCpu(const BatchGroup& g) { return g.unit.feasible && g.unit.kind == UnitKind::kCpu; }
bool OnGpu(const BatchGroup& g) { return g.unit.feasible && g.unit.kind == UnitKind::kGpu; }

}  // namespace

BatchingPlan PlanMultiSloBatching(const HarmonyModel& model, const HarmonyOptions& o,
                                  const std::vector<App>& apps) {
  BatchingPlan plan;
  std::vector<int> order(apps.size());
  for (size_t i = 0; i < apps.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return apps[a].slo_s < apps[b].slo_s; });
  const Grouper grouper(model, o, apps);
  std::vector<BatchGroup> groups;
  for (int a : order) groups.push_back(grouper.Make({a}));
  plan.singleton_cost_per_s = Total(groups);

  auto record = [&](int stage, size_t i, const BatchGroup& merged) {
    const double before = Total(groups);
    MergeStep step{stage, groups[i].apps, groups[i + 1].apps, before, 0, merged.unit.kind};
    groups[i] = merged;
    groups.erase(groups.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    step.cost_after = Total(groups);
    plan.history.push_back(std::move(step));
  };

  // Stage 1: merge adjacent CPU groups (in SLO order) where that lowers the cost; the first
  // merge that makes a GPU the cheaper unit ends the stage.
  for (size_t i = 0; i + 1 < groups.size();) {
    if (!OnCpu(groups[i]) || !OnCpu(groups[i + 1])) {
      ++i;
      continue;
    }
    BatchGroup merged = grouper.Merge(groups[i], groups[i + 1]);
    if (!(merged.cost_per_s < (groups[i].cost_per_s + groups[i + 1].cost_per_s) * (1 - 1e-12))) {
      ++i;  // merging this pair saves nothing: try the next pair
      continue;
    }
    const bool switched = OnGpu(merged);
    record(1, i, merged);
    if (switched) break;  // a GPU unit became cheaper: stage 2 takes over
  }

  // Stage 2: best cost-lowering merge of adjacent groups that involves and yields a GPU group.
  while (groups.size() >= 2) {
    size_t best_i = groups.size();
    BatchGroup best;
    double best_gain = 0;
    for (size_t i = 0; i + 1 < groups.size(); ++i) {
      if (!OnGpu(groups[i]) && !OnGpu(groups[i + 1])) continue;
      BatchGroup merged = grouper.Merge(groups[i], groups[i + 1]);
      if (!OnGpu(merged)) continue;
      const double gain = groups[i].cost_per_s + groups[i + 1].cost_per_s - merged.cost_per_s;
      if (gain > best_gain * (1 + 1e-12) && gain > 0) {
        best_gain = gain;
        best_i = i;
        best = std::move(merged);
      }
    }
    if (best_i == groups.size()) break;
    record(2, best_i, best);
  }

  plan.cost_per_s = Total(groups);
  plan.groups = std::move(groups);
  return plan;
}

}  // namespace archi::policy
