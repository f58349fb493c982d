// archi-policy-bench: (1) availability forecasters (naive last value vs ARIMA(1,1,0) variants)
// compared by rolling-origin forecast error on the shared per-minute p3 and g4dn instance
// counts; (2) decision time of the "parcae" policy on a 10,000-worker cluster, with the reactive
// policy timed on the same state in the same run as the reference; (3) HarmonyBatch grouping on
// the shared VGG19 coefficients for an example set of applications.
//
//   archi-policy-bench [--data ../shared/data] [--out bench-out/policy] [--runs 20]
//                      [--workers 10000] [--stages 8]
//
// Writes policy.md, forecast.csv, decision.csv, forecast_mae.png (gnuplot) under --out.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "runtime/policy/availability_forecast.h"
#include "runtime/policy/harmony_batch.h"
#include "runtime/policy/parcae.h"
#include "runtime/policy/reactive.h"
#include "runtime/policy/registry.h"

namespace archi::bench {
namespace {

using policy::ArimaOptions;
using policy::ForecasterKind;
using policy::ForecastErrors;
using policy::TimeMs;

// "time_ms,add|remove,nodeK" rows -> (time, running count) rows.
Result<std::vector<std::pair<TimeMs, double>>> ReadEventTrace(const std::string& path) {
  std::ifstream f(path);
  if (!f) return NotFoundError("cannot read " + path);
  std::vector<std::pair<TimeMs, double>> rows;
  std::string line;
  double count = 0;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    std::stringstream ss(line);
    std::string t, ev;
    if (!std::getline(ss, t, ',') || !std::getline(ss, ev, ',')) {
      return InvalidArgumentError(path + ": bad row: " + line);
    }
    count += ev == "add" ? 1 : ev == "remove" ? -1 : 0;
    rows.emplace_back(std::stoll(t), count);
  }
  return rows;
}

struct Variant {
  std::string name;
  ForecasterKind kind;
  ArimaOptions o;
};

std::vector<Variant> Variants() {
  std::vector<Variant> v;
  v.push_back({"naive (last value)", ForecasterKind::kNaive, {}});
  ArimaOptions a;
  v.push_back({"ARIMA(1,1,0) w=30", ForecasterKind::kArima110, a});
  a.window = 60;
  v.push_back({"ARIMA(1,1,0) w=60", ForecasterKind::kArima110, a});
  a = ArimaOptions{};
  a.with_intercept = true;
  v.push_back({"ARIMA(1,1,0)+c w=30", ForecasterKind::kArima110, a});
  a = ArimaOptions{};
  a.damping = 0.8;
  v.push_back({"ARIMA(1,1,0) w=30 damped 0.8", ForecasterKind::kArima110, a});
  return v;
}

struct DecisionTiming {
  std::string policy;
  Summary ms;
  size_t actions = 0;
  std::string first;
};

template <class F>
Summary TimeRuns(int runs, F&& f) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return Summarize(ms);
}

int Main(int argc, char** argv) {
  CLI::App app{"archi-policy-bench: forecaster error on the shared traces, policy decision time"};
  std::string data = ARCHI_SHARED_DATA_DEFAULT;
  std::string out = "bench-out/policy";
  int runs = 20, workers = 10'000, stages = 8, horizon = 10, warmup = 30;
  app.add_option("--data", data, "shared data folder");
  app.add_option("--out", out, "output folder");
  app.add_option("--runs", runs, "timed decisions per policy");
  app.add_option("--workers", workers, "cluster size for the decision timing");
  app.add_option("--stages", stages, "pipeline depth of that cluster");
  app.add_option("--horizon", horizon, "forecast horizon (minutes)");
  app.add_option("--warmup", warmup, "minutes of history before the first forecast origin");
  CLI11_PARSE(app, argc, argv);
  std::vector<std::string> args(argv, argv + argc);

  std::string md = "# archi-policy-bench\n\n";
  md += Fmt("`%s` at %s; %s; load average %s.\n\n", JoinArgs(args).c_str(), NowUtc().c_str(),
            DescribeMachine(GetMachineInfo()).c_str(), LoadAverage1().c_str());

  // (1) Forecasters.
  std::string csv = "trace,forecaster,origins,mae_h1,mae_h5,mae_h10,mae_mean,rmse\n";
  std::string dat;
  const std::vector<std::pair<std::string, std::string>> traces = {
      {"p3", data + "/bamboo/traces/p3-trace.csv"},
      {"g4dn", data + "/bamboo/traces/g4dn-trace.csv"}};
  md +=
      Fmt("## Availability forecasters: error in instances, horizons 1..%d min, rolling origin "
          "after %d min\n\n",
          horizon, warmup);
  int block = 0;
  std::vector<std::string> block_names;
  for (const auto& [name, path] : traces) {
    auto rows = ReadEventTrace(path);
    if (!rows.ok()) {
      std::fprintf(stderr, "archi-policy-bench: %s\n", rows.status().ToString().c_str());
      return 1;
    }
    const std::vector<double> series = policy::PerMinuteCounts(*rows);
    md += Fmt("### %s (%zu minutes, `%s`)\n\n", name.c_str(), series.size(), path.c_str());
    MarkdownTable t(
        {"forecaster", "origins", "MAE h=1", "MAE h=5", "MAE h=10", "MAE mean 1..H", "RMSE"},
        {false, true, true, true, true, true, true});
    for (const Variant& v : Variants()) {
      const ForecastErrors e = policy::EvaluateForecaster(series, v.kind, v.o, horizon, warmup);
      const int h5 = std::min(5, horizon) - 1;
      t.AddRow({v.name, Fmt("%d", e.origins), Fmt("%.3f", e.mae_by_horizon[0]),
                Fmt("%.3f", e.mae_by_horizon[h5]), Fmt("%.3f", e.mae_by_horizon[horizon - 1]),
                Fmt("%.3f", e.mae), Fmt("%.3f", e.rmse)});
      csv += Fmt("%s,%s,%d,%.6f,%.6f,%.6f,%.6f,%.6f\n", name.c_str(), v.name.c_str(), e.origins,
                 e.mae_by_horizon[0], e.mae_by_horizon[h5], e.mae_by_horizon[horizon - 1], e.mae,
                 e.rmse);
      dat += Fmt("# %s %s\n", name.c_str(), v.name.c_str());
      for (int h = 0; h < horizon; ++h) dat += Fmt("%d %.6f\n", h + 1, e.mae_by_horizon[h]);
      dat += "\n\n";
      block_names.push_back(name + ": " + v.name);
      ++block;
    }
    md += t.ToString() + "\n";
  }

  // (2) Decision time at `workers` workers: `stages` stages, 92% of the workers serving, the rest
  // idle; the forecast loses 1% of the workers a minute for 10 minutes (so every interval has
  // preemption scenarios to evaluate).
  policy::ClusterState state;
  state.now_ms = 3'600'000;
  const int serving = workers * 92 / 100;
  const int per_stage = serving / stages;
  for (int s = 0; s < stages; ++s) {
    policy::Stage st;
    st.index = s;
    st.layer_begin = 4 * s;
    st.layer_end = 4 * s + 4;
    for (int r = 0; r < per_stage; ++r) {
      const std::string id = Fmt("s%dr%d", s, r);
      st.replicas.push_back(policy::Replica{policy::Worker{id, "h-" + id, "p3.2xlarge", 1.0, 3.06},
                                            policy::ReplicaState::kReady, 0});
    }
    state.stages.push_back(std::move(st));
  }
  for (int i = stages * per_stage; i < workers; ++i) {
    const std::string id = Fmt("i%d", i);
    state.idle.push_back(policy::Worker{id, "h-" + id, "p3.2xlarge", 1.0, 3.06});
  }
  std::vector<double> fc;
  for (int k = 1; k <= horizon; ++k) fc.push_back(workers * (1.0 - 0.01 * k));
  const policy::Forecast forecast = policy::AvailabilityForecast(fc, state.now_ms, 60'000);
  policy::ClusterMetrics metrics;
  for (int s = 0; s < stages; ++s) {
    policy::StageMetrics m;
    m.stage = s;
    m.queue_depth = s % 2 ? 2.0 * per_stage * 5 : 0.1 * per_stage;
    m.utilisation = s % 2 ? 0.95 : 0.1;
    metrics.stages.push_back(m);
  }
  // The reactive reference acts too: odd stages overloaded for 10 s (an add each), even stages
  // idle for 2 minutes (a drain each, which walks the stage's replicas for the least loaded).
  for (int s = 0; s < stages; ++s) {
    policy::StageMemory sm;
    if (s % 2) {
      sm.over_since_ms = state.now_ms - 10'000;
    } else {
      sm.under_since_ms = state.now_ms - 120'000;
    }
    state.memory.stages[s] = sm;
  }
  policy::ParcaeOptions po;
  po.model = policy::PipelineModel{1.0, 0.02, 1, 16};
  const policy::ParcaePolicy parcae(po);
  policy::ReactiveOptions ro;
  ro.bounds = policy::ReplicaBounds{1, workers};  // no bound in the way at this size
  const policy::ReactivePolicy reactive(ro);
  std::vector<DecisionTiming> timings;
  for (const policy::Policy* p : std::vector<const policy::Policy*>{&reactive, &parcae}) {
    policy::Plan plan;
    p->Decide(state, metrics, forecast);  // warm caches
    DecisionTiming t;
    t.policy = std::string(p->name());
    t.ms = TimeRuns(runs, [&] { plan = p->Decide(state, metrics, forecast); });
    if (Status s = policy::ValidatePlan(plan, state); !s.ok()) {
      std::fprintf(stderr, "archi-policy-bench: %s plan invalid: %s\n", t.policy.c_str(),
                   s.ToString().c_str());
      return 1;
    }
    t.actions = plan.actions.size();
    t.first = plan.actions.empty() ? (plan.unmet.empty() ? "-" : plan.unmet[0].reason)
                                   : policy::ToString(plan.actions[0]);
    timings.push_back(std::move(t));
  }
  // Issue 9 policies on the same cluster with three worker kinds and 20 applications: kinds by
  // replica index (2 of 4 "spot" at 0.9/h, 1 "od" at 3.06/h, 1 "cpu" of capacity 0.4 at 0.5/h),
  // 20 applications of 5..24 req/s with SLOs of 0.2..2.1 s. Each decision re-plans the
  // batching groups (empty memory: the worst case). Skipped without the HarmonyBatch model.
  auto hmodel = policy::LoadHarmonyModel(data + "/harmonybatch/conf/model.json", "VGG19");
  if (hmodel.ok()) {
    policy::ClusterState hs = state;
    const char* kname[4] = {"spot", "spot", "od", "cpu"};
    const double kprice[4] = {0.9, 0.9, 3.06, 0.5}, kcap[4] = {1, 1, 1, 0.4};
    for (policy::Stage& st : hs.stages) {
      for (size_t i = 0; i < st.replicas.size(); ++i) {
        policy::Worker& w = st.replicas[i].worker;
        w.kind = kname[i % 4];
        w.price_per_hour = kprice[i % 4];
        w.capacity = kcap[i % 4];
      }
    }
    policy::ClusterMetrics hm = metrics;
    hm.frontend.admitted_rps = 0;
    for (int a = 0; a < 20; ++a) {
      hm.apps.push_back({Fmt("app%d", a), 5.0 + a, 200.0 + 100.0 * a});
      hm.frontend.admitted_rps += 5.0 + a;
    }
    policy::PolicyOptions opts;
    opts.cost_capacity.reference_rps = 10;
    opts.cost_capacity.latency_ms = {{"spot", 300}, {"od", 300}, {"cpu", 750}};
    opts.cost_capacity.scaling = ro;
    opts.harmony.model = *hmodel;
    opts.harmony.scaling = ro;
    opts.combined.parcae = po;
    opts.combined.routing = opts.cost_capacity;
    opts.combined.batching = opts.harmony;
    for (const char* name : {"cost-capacity", "harmony", "combined"}) {
      auto made = policy::MakePolicy(name, opts);
      if (!made.ok()) {
        std::fprintf(stderr, "archi-policy-bench: %s\n", made.status().ToString().c_str());
        return 1;
      }
      const policy::Policy& p = **made;
      policy::Plan plan;
      p.Decide(hs, hm, forecast);
      DecisionTiming t;
      t.policy = std::string(p.name()) + " (kinds, 20 apps)";
      t.ms = TimeRuns(runs, [&] { plan = p.Decide(hs, hm, forecast); });
      if (Status v = policy::ValidatePlan(plan, hs); !v.ok()) {
        std::fprintf(stderr, "archi-policy-bench: %s plan invalid: %s\n", name, v.ToString().c_str());
        return 1;
      }
      t.actions = plan.actions.size();
      t.first = plan.actions.empty() ? "-" : policy::ToString(plan.actions.back());
      if (t.first.size() > 120) t.first = t.first.substr(0, 117) + "...";
      timings.push_back(std::move(t));
    }
  }
  md += Fmt("## Decision time at %d workers (%d stages x %d replicas + %zu idle), %d runs\n\n",
            workers, stages, per_stage, state.idle.size(), runs);
  md +=
      Fmt("parcae: horizon %d x 60 s, %d scenarios, depths %d..%d (the held depth and the "
          "unrestricted one are both planned each decision); forecast -1%% of the workers per "
          "minute.\n\n",
          po.horizon, po.scenarios, po.model.min_depth, po.model.max_depth);
  MarkdownTable dt({"policy", "median ms", "p90 ms", "max ms", "x reactive (median)", "actions",
                    "first action / unmet"},
                   {false, true, true, true, true, true, false});
  std::string dcsv = "policy,workers,runs,median_ms,p90_ms,max_ms,actions\n";
  for (const DecisionTiming& t : timings) {
    dt.AddRow({t.policy, Fmt("%.2f", t.ms.median), Fmt("%.2f", t.ms.p90), Fmt("%.2f", t.ms.max),
               Fmt("%.1f", t.ms.median / std::max(1e-9, timings[0].ms.median)),
               Fmt("%zu", t.actions), t.first});
    dcsv += Fmt("%s,%d,%d,%.4f,%.4f,%.4f,%zu\n", t.policy.c_str(), workers, runs, t.ms.median,
                t.ms.p90, t.ms.max, t.actions);
  }
  md += dt.ToString() + "\n";

  // (3) HarmonyBatch on the shared VGG19 / A10 coefficients, an example set of applications
  // (rates and SLOs chosen here, not from a trace: the paper's app traces are not shared).
  auto model = policy::LoadHarmonyModel(data + "/harmonybatch/conf/model.json", "VGG19");
  if (model.ok()) {
    const std::vector<policy::App> apps = {
        {"a1", 2, 0.5}, {"a2", 5, 0.6}, {"a3", 3, 0.8}, {"a4", 20, 1.0}, {"a5", 1, 1.0}};
    const policy::HarmonyOptions ho;
    const policy::BatchingPlan bp = policy::PlanMultiSloBatching(*model, ho, apps);
    md +=
        "## HarmonyBatch grouping (VGG19 coefficients; example apps a1..a5 = (rate req/s, SLO s) "
        "(2, 0.5) (5, 0.6) (3, 0.8) (20, 1.0) (1, 1.0))\n\n";
    MarkdownTable ht(
        {"group", "rate", "SLO s", "unit", "size", "batch", "timeout s", "max lat s", "$/1M req"},
        {false, true, true, false, true, true, true, true, true});
    for (const policy::BatchGroup& g : bp.groups) {
      std::string names;
      for (int a : g.apps) names += (names.empty() ? "" : "+") + apps[a].name;
      const bool cpu = g.unit.kind == policy::UnitKind::kCpu;
      ht.AddRow({names, Fmt("%.1f", g.rate_rps), Fmt("%.2f", g.slo_s),
                 std::string(policy::UnitKindName(g.unit.kind)),
                 cpu ? Fmt("%.1f cores", g.unit.cores) : Fmt("%d GB", g.unit.gpu_gb),
                 Fmt("%d", g.unit.batch), Fmt("%.3f", g.unit.timeout_s),
                 Fmt("%.3f", g.unit.max_latency_s), Fmt("%.2f", g.unit.cost_per_request * 1e6)});
    }
    md += ht.ToString();
    md +=
        Fmt("\nTotal %.4g $/s grouped vs %.4g $/s with every application alone (%.1f%% less); "
            "%zu merges.\n",
            bp.cost_per_s, bp.singleton_cost_per_s,
            100.0 * (1 - bp.cost_per_s / bp.singleton_cost_per_s), bp.history.size());
  }

  std::fputs(md.c_str(), stdout);
  auto check = [](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "archi-policy-bench: %s\n", st.ToString().c_str());
    return st.ok();
  };
  if (!check(MakeDirs(out))) return 1;
  check(WriteFile(out + "/policy.md", md));
  check(WriteFile(out + "/forecast.csv", csv));
  check(WriteFile(out + "/decision.csv", dcsv));
  check(WriteFile(out + "/forecast_mae.dat", dat));
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  std::string plot;
  for (int b = 0; b < block; ++b) {
    plot += Fmt("%s'forecast_mae.dat' index %d using 1:2 with linespoints title '%s'",
                b == 0 ? "" : ", \\\n     ", b, block_names[b].c_str());
  }
  const std::string gp = Fmt(
      "# Generated by archi-policy-bench; regenerate with: gnuplot forecast_mae.gp\n"
      "set terminal %s size 960,640\nset output 'forecast_mae.png'\nset grid\nset key top left\n"
      "set title 'Availability forecast MAE by horizon (p3, g4dn)' noenhanced\n"
      "set xlabel 'horizon (minutes)'\nset ylabel 'MAE (instances)'\nplot %s\n",
      term.c_str(), plot.c_str());
  if (check(WriteFile(out + "/forecast_mae.gp", gp))) check(RunGnuplot(out + "/forecast_mae.gp"));
  std::printf("\n[policy] wrote %s/{policy.md,forecast.csv,decision.csv,forecast_mae.png}\n",
              out.c_str());
  return 0;
}

}  // namespace
}  // namespace archi::bench

int main(int argc, char** argv) { return archi::bench::Main(argc, argv); }
