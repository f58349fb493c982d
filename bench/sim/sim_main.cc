// archi-sim: the trace-driven simulator's command line (docs/simulator.md).
//
//   archi-sim --trace ../shared/data/bamboo/traces/p3-trace.csv --requests 1000000 --out sim_out
//   archi-sim fit ../shared/data/spotserve/elastic-switch/trace/query/query_tpt1.txt
//
// Writes OUT/sim.md (summary), OUT/sim_timeline.csv, OUT/sim_events.csv, OUT/sim_summary.csv,
// OUT/sim.png (gnuplot, through bench_util). The wall time printed is measured around the run,
// outside the simulation (which never reads a clock).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <limits>
#include <sstream>

#include "bench/bench_util.h"
#include "bench/sim/fit.h"
#include "bench/sim/perf_model.h"
#include "bench/sim/simulator.h"
#include "bench/sim/traces.h"
#include "runtime/policy/availability_forecast.h"
#include "runtime/policy/parcae.h"
#include "runtime/policy/reactive.h"
#include "runtime/policy/registry.h"
#include "runtime/policy/research_policies.h"

namespace archi::sim {
namespace {

using bench::Fmt;

// A baseline that never acts: the initial placement stays as it is (minus preemptions).
class StaticPolicy final : public policy::Policy {
 public:
  std::string_view name() const override { return "static"; }
  policy::Plan Decide(const policy::ClusterState& state, const policy::ClusterMetrics&,
                      const policy::Forecast&) const override {
    policy::Plan p;
    p.memory = state.memory;
    p.next_evaluation_ms = state.now_ms + 1000;
    return p;
  }
};

// Per-policy options; RunSim fills `parcae` from the performance model and the costs.
using PolicyFlags = policy::PolicyOptions;

// --policy NAME: the runtime/policy registry (the names archi-coordinator accepts too) plus
// the simulator's own "static" baseline and "none" (static under the coordinator's reconcile
// loop: what archi-coordinator --policy none does).
std::vector<std::string> SimPolicyNames() {
  std::vector<std::string> names = policy::PolicyNames();
  names.push_back("static");
  names.push_back("none");
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::unique_ptr<policy::Policy>> MakeSimPolicy(const std::string& name,
                                                      const PolicyFlags& f) {
  if (name == "static" || name == "none") return std::unique_ptr<policy::Policy>(std::make_unique<StaticPolicy>());
  return policy::MakePolicy(name, f);
}

struct Flags {
  std::string trace;
  bool tolerate_quirks = false;
  int node_scale = 1;
  std::string arrivals, arrival_dist, fit_arrivals, rate_schedule;
  double rate = 0;
  size_t requests = 0;
  std::string perf = "constant:20,1";
  double overhead_ms = -1;  // --overhead-ms; negative: the model's own
  int tp = 1, output_len = 16;
  std::string harmony_device = "gpu";
  double gpu_gb = 0, vcpus = 2;
  std::string policy = "reactive";
  std::string forecast = "auto";
  PolicyFlags pf;
  // Issue 9: heterogeneous kinds, applications, the research policies' options.
  std::string node_kinds, apps, vanish_kind, harmony_model;
  double vanish_at_s = -1;
  std::string harmony_model_name = "VGG19";
  bool harmony_per_app = false, cost_only = false;
  double reference_rps = 0;
  int64_t duration_ms = -1;
  bool no_resend = false, no_initial_fill = false, quiet = false;
  std::string out = "sim_out";
  SimOptions o;
};

// Arrival times (ms) from a trace file: rescaled to `rate` if given, repeated (gaps as in the
// file) until `requests` or `end_ms`.
Result<std::vector<double>> TraceArrivals(const Flags& f, double end_ms) {
  ARCHI_ASSIGN_OR_RETURN(ArrivalTrace a, LoadArrivals(f.arrivals));
  std::vector<double> t = a.time_s;
  for (double& v : t) v *= 1000.0;
  if (f.rate > 0 && t.size() >= 2) {
    double observed = static_cast<double>(t.size() - 1) / ((t.back() - t.front()) / 1000.0);
    double k = observed / f.rate;
    for (double& v : t) v *= k;
  }
  std::vector<double> gaps = InterArrivals(t);
  std::vector<double> out = t;
  size_t g = 0;
  const size_t want = f.requests;
  while (!gaps.empty() && (want > 0 ? out.size() < want : out.back() + gaps[g] <= end_ms)) {
    out.push_back(out.back() + gaps[g]);
    g = (g + 1) % gaps.size();
  }
  if (want > 0 && out.size() > want) out.resize(want);
  return out;
}

Result<ArrivalSpec> MakeArrivals(const Flags& f, double end_ms) {
  ArrivalSpec a;
  a.max_requests = f.requests;
  int given = !f.arrivals.empty() + !f.arrival_dist.empty() + !f.fit_arrivals.empty() +
              !f.rate_schedule.empty();
  if (given > 1) {
    return InvalidArgumentError("give one of --arrivals, --arrival-dist, --fit-arrivals, --rate-schedule");
  }
  if (!f.rate_schedule.empty()) {
    ARCHI_ASSIGN_OR_RETURN(a.rate_per_minute, LoadRates(f.rate_schedule));
    if (f.rate > 0) {
      double mean = 0;
      for (double r : a.rate_per_minute) mean += r;
      mean /= static_cast<double>(a.rate_per_minute.size());
      if (mean <= 0) return InvalidArgumentError(f.rate_schedule + ": every rate is 0");
      for (double& r : a.rate_per_minute) r *= f.rate / mean;
    }
    return a;
  }
  if (!f.arrivals.empty()) {
    ARCHI_ASSIGN_OR_RETURN(a.times_ms, TraceArrivals(f, end_ms));
    return a;
  }
  Distribution d;
  if (!f.arrival_dist.empty()) {
    ARCHI_ASSIGN_OR_RETURN(d, Distribution::Parse(f.arrival_dist));
  } else if (!f.fit_arrivals.empty()) {
    ARCHI_ASSIGN_OR_RETURN(ArrivalTrace t, LoadArrivals(f.fit_arrivals));
    std::vector<double> gaps;
    for (double g : InterArrivals(t.time_s)) gaps.push_back(g * 1000.0);
    ARCHI_ASSIGN_OR_RETURN(FitReport rep, FitBest(gaps));
    d = rep.best().dist;
    if (!f.quiet) std::printf("arrival fit of %s (gaps in ms):\n%s\n", f.fit_arrivals.c_str(), rep.ToMarkdown().c_str());
  } else {
    double rate = f.rate;
    if (rate <= 0 && f.requests > 0 && end_ms > 0) rate = static_cast<double>(f.requests) / (end_ms / 1000.0);
    if (rate <= 0) {
      return InvalidArgumentError("no arrivals: give --arrivals FILE, --arrival-dist, --fit-arrivals, --rate or --requests");
    }
    d = Distribution::Exponential(rate / 1000.0);
  }
  if (f.rate > 0 && (!f.arrival_dist.empty() || !f.fit_arrivals.empty())) {
    // Rescale the gaps so the mean rate is --rate (shape kept).
    double k = (1000.0 / f.rate) / d.Mean();
    switch (d.kind) {
      case DistKind::kExponential: d.a /= k; break;
      case DistKind::kGamma: d.b *= k; break;
      case DistKind::kLognormal: d.a += std::log(k); break;
      case DistKind::kConstant: d.a *= k; break;
    }
  }
  a.gap_ms = d;
  return a;
}

Result<PerfModel> MakePerf(const Flags& f) {
  const int stages = f.o.stages, mb = f.o.max_batch;
  const std::string& p = f.perf;
  auto colon = p.find(':');
  std::string kind = p.substr(0, colon), arg = colon == std::string::npos ? "" : p.substr(colon + 1);
  if (kind == "constant") {
    double stage_ms = 0, transfer = 0;
    if (std::sscanf(arg.c_str(), "%lf,%lf", &stage_ms, &transfer) < 1 || stage_ms <= 0 || transfer < 0) {
      return InvalidArgumentError("--perf constant:STAGE_MS[,TRANSFER_MS]: bad '" + arg + "'");
    }
    return PerfModel::Constant(stages, mb, stage_ms, transfer);
  }
  if (kind == "profile") {
    ARCHI_ASSIGN_OR_RETURN(LatencyProfile prof, LoadLatencyProfile(arg));
    return PerfModel::FromProfile(prof, stages, mb, f.tp, f.output_len);
  }
  if (kind == "fit") {
    // fit:FILE[:COLUMN]; the column defaults to latency_ms (archi-bench pipeline_requests.csv).
    std::string file = arg, column = "latency_ms";
    if (auto c = arg.rfind(':'); c != std::string::npos) {
      file = arg.substr(0, c);
      column = arg.substr(c + 1);
    }
    ARCHI_ASSIGN_OR_RETURN(std::vector<double> v, LoadCsvColumn(file, column));
    FitReport rep;
    ARCHI_ASSIGN_OR_RETURN(PerfModel m, PerfModel::FromSamples(v, stages, mb, &rep));
    if (!f.quiet) std::printf("service time fit of %s (%s, ms):\n\n%s\n", file.c_str(), column.c_str(), rep.ToMarkdown().c_str());
    return m;
  }
  if (kind == "stages") {
    // stages:STAGE_CSV[,E2E_CSV[:COLUMN]]: per-worker compute medians and p99s by stage
    // (columns stage, compute_p50_ms, compute_p99_ms; archi-bench replay writes
    // replay_stage_compute.csv) and optionally unloaded end-to-end latencies, whose median
    // beyond the stages' sum becomes the overhead outside them.
    std::string stage_csv = arg, e2e_csv, column = "latency_ms";
    if (auto c = arg.find(','); c != std::string::npos) {
      stage_csv = arg.substr(0, c);
      e2e_csv = arg.substr(c + 1);
      if (auto k = e2e_csv.rfind(':'); k != std::string::npos) {
        column = e2e_csv.substr(k + 1);
        e2e_csv = e2e_csv.substr(0, k);
      }
    }
    ARCHI_ASSIGN_OR_RETURN(std::vector<double> st, LoadCsvColumn(stage_csv, "stage"));
    ARCHI_ASSIGN_OR_RETURN(std::vector<double> p50, LoadCsvColumn(stage_csv, "compute_p50_ms"));
    ARCHI_ASSIGN_OR_RETURN(std::vector<double> p99, LoadCsvColumn(stage_csv, "compute_p99_ms"));
    auto median = [](std::vector<double> v) {
      if (v.empty()) return 0.0;
      std::sort(v.begin(), v.end());
      const size_t n = v.size();
      return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    };
    std::vector<std::vector<double>> by_stage(static_cast<size_t>(stages));
    std::vector<double> ratios;
    for (size_t i = 0; i < st.size() && i < p50.size() && i < p99.size(); ++i) {
      const int s = static_cast<int>(st[i]);
      if (s < 0 || s >= stages || !(p50[i] > 0)) continue;
      by_stage[static_cast<size_t>(s)].push_back(p50[i]);
      ratios.push_back(std::max(1.0, p99[i] / p50[i]));
    }
    std::vector<double> med(static_cast<size_t>(stages));
    double sum = 0;
    for (int s = 0; s < stages; ++s) {
      if (by_stage[static_cast<size_t>(s)].empty()) {
        return InvalidArgumentError("--perf stages: " + stage_csv + " has no time for stage " + std::to_string(s));
      }
      med[static_cast<size_t>(s)] = median(by_stage[static_cast<size_t>(s)]);
      sum += med[static_cast<size_t>(s)];
    }
    double overhead = 0;
    if (!e2e_csv.empty()) {
      ARCHI_ASSIGN_OR_RETURN(std::vector<double> e2e, LoadCsvColumn(e2e_csv, column));
      overhead = std::max(0.0, median(e2e) - sum);
    }
    return PerfModel::FromStageTimes(med, median(ratios), overhead, mb);
  }
  if (kind == "harmony") {
    ARCHI_ASSIGN_OR_RETURN(HarmonyModel h, LoadHarmonyModel(arg));
    return PerfModel::FromHarmony(h, stages, mb, f.harmony_device, f.gpu_gb, f.vcpus);
  }
  return InvalidArgumentError("--perf '" + p + "': expected constant:MS[,MS], profile:FILE, fit:CSV[:COLUMN], stages:CSV[,CSV[:COLUMN]] or harmony:FILE");
}

std::string CsvQuote(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

Status WriteOutputs(const Flags& f, const std::string& cmdline, const PerfModel& perf,
                    const NodeTrace& trace, const SimResult& r, double wall_s) {
  ARCHI_RETURN_IF_ERROR(bench::MakeDirs(f.out));
  // Timeline.
  std::string tl =
      "t_s,arrived,served,timed_out,lost,throughput_rps,p50_ms,p99_ms,slo_attainment,nodes,ready,"
      "joining,draining,idle,in_system,cost\n";
  double prev_t = 0;
  for (const IntervalRow& row : r.timeline) {
    double span_s = std::max(1e-9, (row.t_ms - prev_t) / 1000.0);
    uint64_t ended = row.served + row.timed_out + row.lost;
    tl += Fmt("%.3f,%llu,%llu,%llu,%llu,%.4f,%.3f,%.3f,%.5f,%d,%d,%d,%d,%d,%llu,%.4f\n",
              row.t_ms / 1000.0, (unsigned long long)row.arrived, (unsigned long long)row.served,
              (unsigned long long)row.timed_out, (unsigned long long)row.lost,
              static_cast<double>(row.served) / span_s, row.p50_ms, row.p99_ms,
              ended > 0 ? static_cast<double>(row.within_slo) / static_cast<double>(ended) : 1.0,
              row.nodes, row.ready, row.joining, row.draining, row.idle,
              (unsigned long long)row.in_system, row.cost);
    prev_t = row.t_ms;
  }
  ARCHI_RETURN_IF_ERROR(bench::WriteFile(f.out + "/sim_timeline.csv", tl));
  std::string ev = "t_s,kind,stage,worker,reason\n";
  for (const ReconfigEvent& e : r.log) {
    ev += Fmt("%.3f,%s,%d,%s,%s\n", e.t_ms / 1000.0, e.kind.c_str(), e.stage,
              CsvQuote(e.worker).c_str(), CsvQuote(e.reason).c_str());
  }
  ARCHI_RETURN_IF_ERROR(bench::WriteFile(f.out + "/sim_events.csv", ev));
  auto rc = [&](const char* k) {
    auto it = r.reconfigs.find(k);
    return it == r.reconfigs.end() ? 0ull : static_cast<unsigned long long>(it->second);
  };
  std::string sum =
      "arrived,served,timed_out,lost_admission,lost_preempted,resent,rerouted,p50_ms,p90_ms,p99_ms,"
      "p999_ms,max_ms,mean_ms,slo_ms,slo_attainment,node_hours,cost,decisions,unmet,adds,drains,"
      "preemptions,preempt_notices,preempted_idle,repartitions,events,sim_end_s,wall_s\n";
  sum += Fmt("%llu,%llu,%llu,%llu,%llu,%llu,%llu,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.5f,%.3f,%.3f,"
             "%llu,%llu,%llu,%llu,%llu,%llu,%llu,%d,%llu,%.3f,%.3f\n",
             (unsigned long long)r.arrived, (unsigned long long)r.served,
             (unsigned long long)r.timed_out, (unsigned long long)r.lost_admission,
             (unsigned long long)r.lost_preempted, (unsigned long long)r.resent,
             (unsigned long long)r.rerouted, r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms,
             r.mean_ms, r.slo_ms, r.slo_attainment, r.node_hours, r.cost,
             (unsigned long long)r.decisions, (unsigned long long)r.unmet, rc("add"), rc("drain"),
             rc("preempt"), rc("preempt_notice"), rc("preempt_idle"), 0,
             (unsigned long long)r.events, r.end_ms / 1000.0, wall_s);
  ARCHI_RETURN_IF_ERROR(bench::WriteFile(f.out + "/sim_summary.csv", sum));
  // Issue 9: pay-per-use cost, routing / batching changes, per application.
  ARCHI_RETURN_IF_ERROR(bench::WriteFile(
      f.out + "/sim_policy.csv",
      Fmt("usage_cost,route_changes,batch_changes\n%.6f,%llu,%llu\n", r.usage_cost, rc("route"),
          rc("batch"))));
  if (!r.apps.empty()) {
    std::string apps = "app,slo_ms,arrived,served,within_slo,slo_attainment,batches,mean_batch\n";
    for (const SimResult::App& a : r.apps) {
      apps += Fmt("%s,%.1f,%llu,%llu,%llu,%.5f,%llu,%.3f\n", a.name.c_str(), a.slo_ms,
                  (unsigned long long)a.arrived, (unsigned long long)a.served,
                  (unsigned long long)a.within_slo,
                  a.arrived ? static_cast<double>(a.within_slo) / static_cast<double>(a.arrived) : 0.0,
                  (unsigned long long)a.batches,
                  a.batches ? static_cast<double>(a.batched) / static_cast<double>(a.batches) : 0.0);
    }
    ARCHI_RETURN_IF_ERROR(bench::WriteFile(f.out + "/sim_apps.csv", apps));
  }

  // Markdown.
  std::string md = "# archi-sim\n\n";
  md += "`" + cmdline + "`\n\n";
  md += Fmt("- node trace: %s (%zu events, scaled x%d; peak %d nodes, %.2f h)\n", trace.source.c_str(),
            trace.events.size(), f.node_scale, trace.MaxCount(), static_cast<double>(trace.end_ms) / 3.6e6);
  md += "- performance model: " + perf.description +
        Fmt("; unloaded pipeline latency at batch 1: %.3f ms\n", perf.PipelineMs(1));
  md += Fmt("- policy: %s; %d stages, max batch %d, timeout %.0f ms, SLO %.0f ms, warning %lld ms, "
            "resend %s, seed %llu\n",
            f.policy.c_str(), f.o.stages, f.o.max_batch, f.o.timeout_ms, r.slo_ms,
            (long long)f.o.warning_ms, f.o.resend ? "on" : "off", (unsigned long long)f.o.seed);
  md += Fmt("- reconfiguration costs: world creation %.0f ms, weight load %.0f ms per stage, "
            "re-partition %.0f ms\n",
            f.o.costs.world_create_ms, f.o.costs.weight_load_ms, f.o.costs.repartition_ms);
  md += Fmt("- wall time %.2f s for %llu events (%s; load average %s)\n\n", wall_s,
            (unsigned long long)r.events, bench::DescribeMachine(bench::GetMachineInfo()).c_str(),
            bench::LoadAverage1().c_str());
  bench::MarkdownTable t({"requests", "count", "share"}, {false, true, true});
  auto share = [&](uint64_t v) {
    return r.arrived ? Fmt("%.4f%%", 100.0 * static_cast<double>(v) / static_cast<double>(r.arrived)) : "-";
  };
  t.AddRow({"arrived", std::to_string(r.arrived), "100%"});
  t.AddRow({"served", std::to_string(r.served), share(r.served)});
  t.AddRow({Fmt("served within SLO (%.0f ms)", r.slo_ms), std::to_string(r.within_slo), share(r.within_slo)});
  t.AddRow({"timed out", std::to_string(r.timed_out), share(r.timed_out)});
  t.AddRow({"lost at admission", std::to_string(r.lost_admission), share(r.lost_admission)});
  t.AddRow({"lost to preemption", std::to_string(r.lost_preempted), share(r.lost_preempted)});
  t.AddRow({"resent after preemption", std::to_string(r.resent), share(r.resent)});
  t.AddRow({"rerouted on notice", std::to_string(r.rerouted), share(r.rerouted)});
  md += t.ToString() + "\n";
  bench::MarkdownTable l({"latency (served)", "ms"}, {false, true});
  l.AddRow({"p50", Fmt("%.2f", r.p50_ms)});
  l.AddRow({"p90", Fmt("%.2f", r.p90_ms)});
  l.AddRow({"p99", Fmt("%.2f", r.p99_ms)});
  l.AddRow({"p99.9", Fmt("%.2f", r.p999_ms)});
  l.AddRow({"max", Fmt("%.2f", r.max_ms)});
  l.AddRow({"mean", Fmt("%.2f", r.mean_ms)});
  md += l.ToString() + "\n(percentiles from a log-linear histogram, within 0.4%)\n\n";
  bench::MarkdownTable c({"reconfiguration", "count"}, {false, true});
  for (const auto& [k, v] : r.reconfigs) c.AddRow({k, std::to_string(v)});
  c.AddRow({"repartition", "0 (no policy plans one yet)"});
  md += c.ToString() + "\n";
  md += Fmt("Cost: %.2f node-hours x %.3f per hour = **%.2f**. Policy decisions: %llu (unmet wishes %llu, "
            "rejected plans %llu). Mean throughput %.2f req/s over %.2f h.\n\n",
            r.node_hours, f.o.price_per_hour, r.cost, (unsigned long long)r.decisions,
            (unsigned long long)r.unmet, (unsigned long long)r.rejected_plans,
            r.end_ms > 0 ? static_cast<double>(r.served) / (r.end_ms / 1000.0) : 0.0, r.end_ms / 3.6e6);
  md += "Files: `sim_timeline.csv` (per interval), `sim_events.csv` (reconfigurations), "
        "`sim_summary.csv` (totals), `sim.png` (plot; `gnuplot sim.gp` redraws it).\n";
  ARCHI_RETURN_IF_ERROR(bench::WriteFile(f.out + "/sim.md", md));

  std::string term = bench::GnuplotPngTerminal();
  if (term.empty()) term = "png";
  std::string gp = Fmt(
      "# Generated by archi-sim; regenerate with: gnuplot sim.gp\n"
      "set terminal %s size 1000,760\n"
      "set output 'sim.png'\n"
      "set datafile separator ','\n"
      "set key top left horizontal\n"
      "set offsets 0, 0, graph 0.2, 0\n"
      "set grid\n"
      "set multiplot layout 2,1 title \"archi-sim: %s, policy %s\" noenhanced\n"
      "set ylabel 'requests/s'\n"
      "set y2label 'nodes / replicas'\n"
      "set y2tics\n"
      "set ytics nomirror\n"
      "plot 'sim_timeline.csv' using ($1/3600):6 with lines lw 2 title 'served/s', \\\n"
      "     '' using ($1/3600):($2/(%g)) with lines dt 2 title 'arrived/s', \\\n"
      "     '' using ($1/3600):10 axes x1y2 with steps lc rgb 'black' title 'nodes', \\\n"
      "     '' using ($1/3600):11 axes x1y2 with steps lc rgb 'dark-green' title 'ready replicas'\n"
      "unset y2label\n"
      "unset y2tics\n"
      "set xlabel 'hours'\n"
      "set ylabel 'latency (ms)'\n"
      "set logscale y\n"
      "plot 'sim_timeline.csv' using ($1/3600):($7>0?$7:1/0) with lines title 'p50', \\\n"
      "     '' using ($1/3600):($8>0?$8:1/0) with lines title 'p99'\n"
      "unset multiplot\n",
      term.c_str(), trace.source.c_str(), f.policy.c_str(), static_cast<double>(f.o.interval_ms) / 1000.0);
  if (bench::WriteFile(f.out + "/sim.gp", gp).ok()) {
    if (Status s = bench::RunGnuplot(f.out + "/sim.gp"); !s.ok()) {
      std::fprintf(stderr, "archi-sim: %s\n", s.ToString().c_str());
    }
  }
  std::printf("%s", md.c_str());
  return Status::Ok();
}

// "a:1.0:2.0[:EXTRA_MS[:SHARE]],b:..." -> kinds (name:price per hour:capacity).
Result<std::vector<NodeKind>> ParseKinds(const std::string& spec) {
  std::vector<NodeKind> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    NodeKind k;
    char name[128] = {0};
    int share = 1;
    const int n = std::sscanf(item.c_str(), "%127[^:]:%lf:%lf:%lf:%d", name, &k.price_per_hour,
                              &k.capacity, &k.extra_ms, &share);
    if (n < 3 || !(k.capacity > 0) || k.price_per_hour < 0 || k.extra_ms < 0 || share < 1) {
      return InvalidArgumentError("--node-kinds: '" + item + "' is not NAME:PRICE:CAPACITY[:EXTRA_MS[:SHARE]]");
    }
    k.name = name;
    k.share = share;
    out.push_back(k);
  }
  return out;
}

// "a:SHARE:SLO_MS,b:..." -> applications.
Result<std::vector<AppSpec>> ParseApps(const std::string& spec) {
  std::vector<AppSpec> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    AppSpec a;
    char name[128] = {0};
    if (std::sscanf(item.c_str(), "%127[^:]:%lf:%lf", name, &a.share, &a.slo_ms) != 3 ||
        !(a.share > 0) || a.slo_ms < 0) {
      return InvalidArgumentError("--apps: '" + item + "' is not NAME:SHARE:SLO_MS");
    }
    a.name = name;
    out.push_back(a);
  }
  if (out.size() > 32000) return InvalidArgumentError("--apps: too many");
  return out;
}

// The research policies' options from the model (issue 9): a capacity-1.0 replica's req/s at
// one stage (max batch over the slowest stage), the latency per kind (unloaded pipeline at
// batch 1 / capacity + the kind's extra time per stage), the HarmonyBatch model.
Status FillResearchOptions(Flags& f, const PerfModel& perf) {
  double ref = f.reference_rps;
  if (ref <= 0) {
    ref = std::numeric_limits<double>::infinity();
    for (int s = 0; s < f.o.stages; ++s) {
      ref = std::min(ref, f.o.max_batch * 1000.0 / perf.StageMs(s, f.o.max_batch));
    }
  }
  std::map<std::string, double> lat;
  for (const NodeKind& k : f.o.kinds) {
    lat[k.name] = perf.PipelineMs(1) / k.capacity + k.extra_ms * f.o.stages;
  }
  auto& cc = f.pf.cost_capacity;
  cc.reference_rps = ref;
  cc.latency_ms = lat;
  cc.cost_only = f.cost_only;
  cc.scaling = f.pf.reactive;
  cc.routing.latency_slo_ms = f.o.slo_ms;
  auto& h = f.pf.harmony;
  h.scaling = f.pf.reactive;
  h.per_app = f.harmony_per_app;
  h.max_batch_cap = f.o.max_batch;
  std::string model = f.harmony_model;
  if (model.empty() && f.perf.rfind("harmony:", 0) == 0) model = f.perf.substr(8);
  if (!model.empty()) {
    ARCHI_ASSIGN_OR_RETURN(h.model, policy::LoadHarmonyModel(model, f.harmony_model_name));
  }
  if (f.perf.rfind("harmony:", 0) == 0) {
    // The simulated nodes are one device of a fixed size: plan for exactly that (no CPU
    // functions on a GPU run, the GPU share the nodes have).
    if (f.harmony_device == "gpu") {
      h.harmony.cpu_cores_min = 1;
      h.harmony.cpu_cores_max = 0;
      const int gb = f.gpu_gb > 0 ? static_cast<int>(f.gpu_gb) : static_cast<int>(h.model.gpu.total_gb);
      h.harmony.gpu_gb_min = h.harmony.gpu_gb_max = gb;
    } else {
      h.harmony.gpu_max_batch = 0;
      h.harmony.cpu_cores_min = h.harmony.cpu_cores_max = f.vcpus;
    }
  }
  auto& c = f.pf.combined;
  c.parcae = f.pf.parcae;
  c.routing = cc;
  c.batching = h;
  return Status::Ok();
}

Status RunSim(Flags f, const std::string& cmdline) {
  if (f.trace.empty()) return InvalidArgumentError("--trace FILE is required");
  LoadOptions lo;
  lo.tolerate_backwards_time = f.tolerate_quirks;
  ARCHI_ASSIGN_OR_RETURN(NodeTrace trace, LoadNodeTrace(f.trace, lo));
  if (f.node_scale < 1) return InvalidArgumentError("--node-scale must be >= 1");
  trace = ScaleTrace(trace, f.node_scale);
  f.o.end_ms = f.duration_ms >= 0 ? f.duration_ms : trace.end_ms;
  f.o.resend = !f.no_resend;
  f.o.initial_fill = !f.no_initial_fill;
  if (f.policy == "none") f.o.coordinator_reconcile = true;
  ARCHI_ASSIGN_OR_RETURN(PerfModel perf, MakePerf(f));
  if (f.overhead_ms >= 0) {
    perf.overhead_ms = f.overhead_ms;
    perf.description += Fmt("; overhead outside the stages %.3f ms (--overhead-ms)", f.overhead_ms);
  }
  if (!f.node_kinds.empty()) {
    ARCHI_ASSIGN_OR_RETURN(f.o.kinds, ParseKinds(f.node_kinds));
  }
  if (!f.apps.empty()) {
    ARCHI_ASSIGN_OR_RETURN(f.o.apps, ParseApps(f.apps));
  }
  f.o.vanish_kind = f.vanish_kind;
  f.o.vanish_at_ms = f.vanish_at_s >= 0 ? static_cast<int64_t>(f.vanish_at_s * 1000) : -1;
  ARCHI_ASSIGN_OR_RETURN(ArrivalSpec arrivals, MakeArrivals(f, static_cast<double>(f.o.end_ms)));
  {
    const std::vector<std::string> known = SimPolicyNames();
    if (std::find(known.begin(), known.end(), f.policy) == known.end()) {
      std::string names;
      for (const std::string& n : known) names += (names.empty() ? "" : ", ") + n;
      return InvalidArgumentError("--policy '" + f.policy + "': known policies are " + names);
    }
  }
  // Parcae's pipeline model and migration costs from ours: a batch through the whole model on
  // one instance takes the unloaded pipeline time without the hand-overs; rebuilding worlds
  // costs world creation, moving a stage adds its weight load.
  auto& po = f.pf.parcae;
  po.model.compute_s = (perf.PipelineMs(1) - perf.transfer_ms * (f.o.stages - 1)) / 1000.0;
  po.model.comm_s = perf.transfer_ms / 1000.0;
  po.model.min_depth = po.model.max_depth = f.o.stages;
  po.migration.rebuild_s = f.o.costs.world_create_ms / 1000.0;
  po.migration.move_stage_s = (f.o.costs.world_create_ms + f.o.costs.weight_load_ms) / 1000.0;
  po.migration.repartition_s = f.o.costs.repartition_ms / 1000.0;
  po.seed = f.o.seed;
  ARCHI_RETURN_IF_ERROR(FillResearchOptions(f, perf));
  ARCHI_ASSIGN_OR_RETURN(std::unique_ptr<policy::Policy> pol, MakeSimPolicy(f.policy, f.pf));
  // Availability forecast (per-minute usable nodes so far -> the next 10 minutes).
  std::string fc = f.forecast == "auto"
                       ? (f.policy == "parcae" || f.policy == "combined" ? "arima110" : "none")
                       : f.forecast;
  const int horizon = po.horizon;
  if (fc == "naive") {
    f.o.forecaster = [horizon](const std::vector<double>& h, policy::TimeMs now) {
      return policy::AvailabilityForecast(policy::ForecastNaive(h, horizon), now, 60'000);
    };
  } else if (fc == "arima110") {
    f.o.forecaster = [horizon](const std::vector<double>& h, policy::TimeMs now) {
      return policy::AvailabilityForecast(policy::ForecastArima110(h, horizon, policy::ArimaOptions{}),
                                          now, 60'000);
    };
  } else if (fc != "none") {
    return InvalidArgumentError("--forecast '" + f.forecast + "': expected auto, none, naive or arima110");
  }
  auto wall0 = std::chrono::steady_clock::now();
  if (!f.quiet) {
    auto last = std::make_shared<std::chrono::steady_clock::time_point>(wall0);
    f.o.progress = [last](double now, double end) {
      auto w = std::chrono::steady_clock::now();
      if (w - *last < std::chrono::seconds(2)) return;
      *last = w;
      std::fprintf(stderr, "archi-sim: %.2f / %.2f h simulated (%.0f%%)\n", now / 3.6e6, end / 3.6e6,
                   end > 0 ? 100.0 * std::min(1.0, now / end) : 100.0);
    };
  }
  SimOptions o = f.o;
  ARCHI_ASSIGN_OR_RETURN(std::unique_ptr<Simulator> sim,
                         Simulator::Create(o, perf, trace, std::move(arrivals), pol.get()));
  SimResult r = sim->Run();
  double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return WriteOutputs(f, cmdline, perf, trace, r, wall_s);
}

// `archi-sim fit FILE`: fit gaps (arrival files) or values (one number per line, or --column of
// a CSV with a header), print the table, optionally write a synthetic arrival trace.
Status RunFit(const std::string& file, const std::string& column, double scale, size_t generate,
              const std::string& out, uint64_t seed) {
  std::vector<double> values;
  bool arrivals = false;
  if (column.empty()) {
    auto a = LoadArrivals(file);
    if (a.ok()) {
      for (double g : InterArrivals(a->time_s)) values.push_back(g * 1000.0);
      arrivals = true;
    } else {
      std::ifstream in(file);
      if (!in) return NotFoundError(file + ": cannot open");
      std::string line;
      size_t ln = 0;
      while (std::getline(in, line)) {
        ++ln;
        if (line.empty()) continue;
        char* end = nullptr;
        double v = std::strtod(line.c_str(), &end);
        if (end == line.c_str() || *end != '\0') {
          return InvalidArgumentError(file + ":" + std::to_string(ln) + ": '" + line +
                                      "' is neither an arrival row nor a number");
        }
        values.push_back(v * scale);
      }
    }
  } else {
    ARCHI_ASSIGN_OR_RETURN(values, LoadCsvColumn(file, column));
    for (double& v : values) v *= scale;
  }
  ARCHI_ASSIGN_OR_RETURN(FitReport rep, FitBest(values));
  std::printf("%s of %s:\n\n%s", arrivals ? "inter-arrival gaps (ms)" : "values", file.c_str(),
              rep.ToMarkdown().c_str());
  if (generate > 0) {
    if (out.empty()) return InvalidArgumentError("--generate needs --out FILE");
    std::vector<double> g = Generate(rep.best().dist, generate, seed);
    std::string text;
    if (arrivals) {
      // The SpotServe arrival format, so --arrivals can read it back.
      double t = 0;
      for (size_t i = 0; i < g.size(); ++i) {
        t += g[i] / 1000.0;
        text += Fmt("%zu,%.9f,512,0\n", i, t);
      }
    } else {
      for (double v : g) text += Fmt("%.9g\n", v);
    }
    ARCHI_RETURN_IF_ERROR(bench::WriteFile(out, text));
    std::printf("\nwrote %zu synthetic %s to %s (seed %llu)\n", generate,
                arrivals ? "arrivals" : "values", out.c_str(), (unsigned long long)seed);
  }
  return Status::Ok();
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app{"archi-sim: trace-driven discrete-event simulator of an Archipelago cluster "
               "(docs/simulator.md)"};
  app.option_defaults()->always_capture_default();
  app.add_option("--trace", f.trace, "node trace: event log, count CSV, GCP counts, Parcae slice or SpotServe segment (format recognised)");
  app.add_flag("--tolerate-quirks", f.tolerate_quirks, "accept timestamps that step backwards (the GCP V100 file): rows are sorted by time");
  app.add_option("--node-scale", f.node_scale, "each trace node becomes K nodes (p3 x 313 = 10,016 at peak)")->check(CLI::PositiveNumber);
  app.add_option("--arrivals", f.arrivals, "request arrival file (id,time_s,...); --rate rescales it; repeated to fill --requests or the duration");
  app.add_option("--arrival-dist", f.arrival_dist, "inter-arrival gaps in ms: exp:RATE_PER_MS, gamma:SHAPE,SCALE, lognormal:MU,SIGMA, const:MS");
  app.add_option("--fit-arrivals", f.fit_arrivals, "fit the gaps of this arrival file (exponential/gamma/lognormal, KS) and draw from the best fit");
  app.add_option("--rate-schedule", f.rate_schedule, "Poisson arrivals whose rate (req/s) follows one value per minute from this file (arrival-rates.csv format), repeated; --rate rescales its mean");
  app.add_option("--rate", f.rate, "mean arrival rate (req/s); default with no arrival source: Poisson at --requests / duration");
  app.add_option("--requests", f.requests, "stop arrivals after this many (0: until the end of the trace)");
  app.add_option("--perf", f.perf, "performance model: constant:STAGE_MS[,TRANSFER_MS] | profile:FILE (SpotServe) | fit:CSV[:COLUMN] (fit measured times, default column latency_ms) | stages:STAGE_CSV[,E2E_CSV[:COLUMN]] (measured per-stage compute p50/p99 by worker; the end-to-end median beyond them is an overhead outside the stages) | harmony:FILE (HarmonyBatch)");
  app.add_option("--overhead-ms", f.overhead_ms, "time outside the stages added to every request's latency, occupying no replica (frontend, RPC); overrides the --perf model's own (stages: with an E2E file computes one)");
  app.add_option("--tp", f.tp, "profile: tensor-parallel degree");
  app.add_option("--output-len", f.output_len, "profile: generated tokens per request");
  app.add_option("--harmony-device", f.harmony_device, "harmony: gpu or cpu");
  app.add_option("--gpu-gb", f.gpu_gb, "harmony gpu: GB of the GPU per replica (0: all)");
  app.add_option("--vcpus", f.vcpus, "harmony cpu: vCPUs per replica");
  app.add_option("--stages", f.o.stages, "pipeline stages")->check(CLI::PositiveNumber);
  app.add_option("--max-batch", f.o.max_batch, "largest batch a replica serves at once")->check(CLI::PositiveNumber);
  app.add_option("--timeout-ms", f.o.timeout_ms, "request deadline after arrival");
  app.add_option("--slo-ms", f.o.slo_ms, "latency SLO for attainment and the policy's p99 rule (0: the timeout, no p99 rule)");
  app.add_option("--warning-ms", f.o.warning_ms, "preemption notice before a node is removed");
  app.add_flag("--no-resend", f.no_resend, "requests in service on a removed node are lost instead of resent");
  app.add_option("--max-in-system", f.o.max_in_system, "admission limit; arrivals beyond it are lost");
  app.add_option("--world-create-ms", f.o.costs.world_create_ms, "reconfiguration: creating a new replica's worlds");
  app.add_option("--weight-load-ms", f.o.costs.weight_load_ms, "reconfiguration: loading one stage's weights");
  app.add_option("--repartition-ms", f.o.costs.repartition_ms, "reconfiguration: full re-partition (no policy plans one yet)");
  app.add_option("--price-per-hour", f.o.price_per_hour, "price of one node-hour (idle or not)");
  app.add_option("--instance-kind", f.o.instance_kind, "Worker::kind given to the policy");
  app.add_flag("--coordinator-reconcile", f.o.coordinator_reconcile, "model archi-coordinator's reconcile loop on top of the policy: per-stage targets refilled from idle nodes, an emptied stage borrows a replica, a noticed replica is cordoned once done (--policy none implies it)");
  app.add_flag("--no-initial-fill", f.no_initial_fill, "start with every node idle (the policy places them) instead of round-robin over the stages");
  app.add_option("--service-cv", f.o.service_cv, "service time noise per batch: gamma, mean 1, this CV");
  app.add_option("--seed", f.o.seed, "seed of every random stream");
  app.add_option("--interval-ms", f.o.interval_ms, "timeline row length");
  app.add_option("--duration-ms", f.duration_ms, "last arrival time (default: the trace's end)");
  std::string policies;
  for (const std::string& n : SimPolicyNames()) policies += (policies.empty() ? "" : ", ") + n;
  app.add_option("--policy", f.policy, "scaling policy: " + policies);
  app.add_option("--forecast", f.forecast, "availability forecast handed to the policy: none, naive, arima110 (per-minute usable nodes, 10 minutes ahead); auto: arima110 for parcae, none otherwise");
  auto& ro = f.pf.reactive;
  app.add_option("--min-replicas", ro.bounds.min_replicas, "reactive: replicas per stage, at least");
  app.add_option("--max-replicas", ro.bounds.max_replicas, "reactive: replicas per stage, at most");
  app.add_option("--max-queue-per-replica", ro.max_queue_per_replica, "reactive: overload threshold");
  app.add_option("--scale-out-after-ms", ro.scale_out_after_ms, "reactive: sustained overload before an add");
  app.add_option("--scale-in-below", ro.scale_in_below, "reactive: idle utilisation threshold");
  app.add_option("--scale-in-after-ms", ro.scale_in_after_ms, "reactive: sustained idleness before a drain");
  app.add_option("--cooldown-ms", ro.cooldown_ms, "reactive: no add/drain on a stage this long after the last");
  app.add_option("--eval-interval-ms", ro.evaluation_interval_ms, "reactive: time between decisions");
  app.add_option("--max-adds-per-decision", ro.max_adds_per_decision, "reactive: adds per stage per decision (1: one; more: repair to min_replicas and scale out by the queue at once)");
  app.add_option("--node-kinds", f.node_kinds, "heterogeneous nodes: NAME:PRICE_PER_HOUR:CAPACITY[:EXTRA_MS[:SHARE]],... (a stage takes model time / CAPACITY + EXTRA_MS; a node's kind by a hash of its id, in proportion to SHARE); cost = sum of the nodes' prices");
  app.add_option("--vanish-kind", f.vanish_kind, "remove every node of this kind at --vanish-at-s (after the usual notice); none of it joins after");
  app.add_option("--vanish-at-s", f.vanish_at_s, "when --vanish-kind vanishes (simulated seconds)");
  app.add_option("--apps", f.apps, "applications: NAME:SHARE:SLO_MS,... (each arrival belongs to one, by share; SLO attainment per application)");
  app.add_option("--harmony-model", f.harmony_model, "harmony/combined: HarmonyBatch model.json (default: the --perf harmony:FILE)");
  app.add_option("--harmony-model-name", f.harmony_model_name, "harmony/combined: the model's key in the file");
  app.add_flag("--harmony-per-app", f.harmony_per_app, "harmony/combined: batch every application alone (the per-app baseline)");
  app.add_flag("--cost-only", f.cost_only, "cost-capacity: always cost-mode weights (ablation: no capacity mode)");
  app.add_option("--reference-rps", f.reference_rps, "cost-capacity/combined: req/s of a capacity-1 replica at one stage (0: max batch over the slowest stage's time)");
  app.add_flag("--quiet", f.quiet, "no progress lines");
  app.add_option("--out", f.out, "output folder");

  std::string fit_file, fit_column, fit_out;
  double fit_scale = 1;
  size_t fit_generate = 0;
  uint64_t fit_seed = 1;
  CLI::App* fit = app.add_subcommand("fit", "fit exponential, gamma and lognormal to a sample (PipeSim): arrival gaps or values");
  fit->add_option("file", fit_file, "arrival file (gaps are fitted) or one number per line, or a CSV with --column")->required();
  fit->add_option("--column", fit_column, "CSV column (with a header row) to fit, e.g. latency_ms of archi-bench pipeline output");
  fit->add_option("--scale", fit_scale, "multiply values by this (units)");
  fit->add_option("--generate", fit_generate, "draw this many values from the chosen fit");
  fit->add_option("--out", fit_out, "where --generate writes (arrival format for arrival files)");
  fit->add_option("--seed", fit_seed, "seed for --generate");

  CLI11_PARSE(app, argc, argv);
  std::vector<std::string> args(argv, argv + argc);
  Status s = fit->parsed() ? RunFit(fit_file, fit_column, fit_scale, fit_generate, fit_out, fit_seed)
                           : RunSim(f, bench::JoinArgs(args));
  if (!s.ok()) {
    std::fprintf(stderr, "archi-sim: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace archi::sim

int main(int argc, char** argv) { return archi::sim::Main(argc, argv); }
