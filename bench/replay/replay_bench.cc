#include "bench/replay/replay_bench.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"
#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/sim/traces.h"
#include "proto/coordinator.grpc.pb.h"
#include "runtime/core/deadline.h"
#include "runtime/model/model.h"

#ifndef ARCHI_SIM_BIN
#define ARCHI_SIM_BIN ""
#endif

namespace archi::bench {
namespace {

namespace fs = std::filesystem;
using harness::CoordinatedCluster;
using harness::CoordinatedClusterOptions;
using harness::LoadGenerator;
using harness::LoadInput;
using harness::LoadOptions;
using harness::LoadReport;
using harness::RequestRecord;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- The scaled, compressed trace and arrivals ----

struct ReplayPlan {
  sim::NodeTrace trace;           // compressed (replay ms), scaled down
  int scale_div = 1;              // f: count' = ceil(count / f)
  int trace_peak = 0;             // in the window, before scaling
  int initial = 0;                // nodes at t = 0 (after scaling)
  double duration_ms = 0;         // replay ms
  std::vector<double> arrivals_ms;  // replay ms
};

Result<ReplayPlan> MakeReplayPlan(const ReplayOptions& o) {
  ReplayPlan p;
  sim::LoadOptions lo;
  lo.tolerate_backwards_time = o.tolerate_quirks;
  ARCHI_ASSIGN_OR_RETURN(sim::NodeTrace t, sim::LoadNodeTrace(o.trace, lo));
  const int64_t s0 = static_cast<int64_t>(std::llround(o.start_s * 1000));
  int64_t s1 = s0 + static_cast<int64_t>(std::llround(o.duration_s * o.speedup * 1000));
  // A trace with an end of its own (a DONE row after the last event) ends the window there.
  if (!t.events.empty() && t.end_ms > t.events.back().time_ms && t.end_ms > s0) {
    s1 = std::min(s1, t.end_ms);
  }
  if (s1 <= s0) return InvalidArgumentError("replay: the trace ends before --start-s");
  std::vector<int64_t> times = {s0};
  for (const sim::NodeEvent& e : t.events) {
    if (e.time_ms > s0 && e.time_ms < s1 && e.time_ms != times.back()) times.push_back(e.time_ms);
  }
  std::vector<int> counts;
  for (int64_t x : times) counts.push_back(t.CountAt(x));
  p.trace_peak = *std::max_element(counts.begin(), counts.end());
  if (p.trace_peak <= 0) return InvalidArgumentError("replay: no node present in the window");
  p.scale_div = (p.trace_peak + o.max_workers - 1) / o.max_workers;
  sim::CountSeries cs;
  cs.source = o.trace;
  for (size_t i = 0; i < times.size(); ++i) {
    const int64_t ms = static_cast<int64_t>(
        std::llround(static_cast<double>(times[i] - s0) / o.speedup));
    cs.points.push_back({ms, (counts[i] + p.scale_div - 1) / p.scale_div});
  }
  if (p.scale_div == 1) {
    // Not scaled: keep the trace's own nodes (which one leaves matters: a serving or an idle one).
    std::vector<std::string> present;
    for (const sim::NodeEvent& e : t.events) {
      if (e.time_ms > s0) break;
      if (e.op == sim::NodeOp::kAdd) {
        present.push_back(e.node);
      } else {
        present.erase(std::remove(present.begin(), present.end(), e.node), present.end());
      }
    }
    p.trace.source = o.trace;
    for (const std::string& n : present) p.trace.events.push_back({0, sim::NodeOp::kAdd, n});
    for (const sim::NodeEvent& e : t.events) {
      if (e.time_ms <= s0 || e.time_ms >= s1) continue;
      sim::NodeEvent x = e;
      x.time_ms = static_cast<int64_t>(std::llround(static_cast<double>(e.time_ms - s0) / o.speedup));
      p.trace.events.push_back(x);
    }
  } else {
    p.trace = sim::EventsFromCounts(cs, "node");
  }
  p.duration_ms = static_cast<double>(s1 - s0) / o.speedup;
  p.trace.end_ms = static_cast<int64_t>(p.duration_ms);
  p.initial = cs.points.front().count;
  if (p.initial < o.stages) {
    return InvalidArgumentError(Fmt("replay: %d node(s) at the window start (after scaling by 1/%d) "
                                    "cannot serve %d stages; use fewer --stages or another "
                                    "--start-s",
                                    p.initial, p.scale_div, o.stages));
  }
  // Arrivals.
  if (!o.arrivals.empty()) {
    ARCHI_ASSIGN_OR_RETURN(sim::ArrivalTrace a, sim::LoadArrivals(o.arrivals));
    if (a.time_s.size() < 2) return InvalidArgumentError(o.arrivals + ": fewer than 2 arrivals");
    // Trace seconds -> replay ms, repeating the file (same gaps) to cover the window.
    const double span = a.time_s.back() - a.time_s.front();
    const double period = span + span / static_cast<double>(a.time_s.size() - 1);
    std::vector<double> out;
    for (int rep = 0; out.size() < 5'000'000; ++rep) {
      bool any = false;
      for (double ts : a.time_s) {
        const double trace_s = ts + rep * period;
        if (trace_s < o.start_s) continue;
        const double ms = (trace_s - o.start_s) * 1000.0 / o.speedup;
        if (ms >= p.duration_ms) break;
        out.push_back(ms);
        any = true;
      }
      if (!any && rep * period > o.start_s + o.duration_s * o.speedup) break;
      if (rep > 1'000'000) break;
    }
    if (o.rate > 0 && out.size() >= 2) {
      // Rescale so the mean rate over the window is o.rate.
      const double observed = static_cast<double>(out.size()) / (p.duration_ms / 1000.0);
      const double k = observed / o.rate;
      std::vector<double> scaled;
      for (double v : out) {
        if (v * k < p.duration_ms) scaled.push_back(v * k);
      }
      // A faster rate leaves the end of the window empty: repeat the gaps to fill it.
      if (scaled.size() >= 2) {
        std::vector<double> gaps;
        for (size_t i = 1; i < scaled.size(); ++i) gaps.push_back(scaled[i] - scaled[i - 1]);
        size_t g = 0;
        while (scaled.back() + gaps[g] < p.duration_ms) {
          scaled.push_back(scaled.back() + gaps[g]);
          g = (g + 1) % gaps.size();
        }
      }
      out = std::move(scaled);
    }
    p.arrivals_ms = std::move(out);
  } else {
    if (!(o.rate > 0)) return InvalidArgumentError("replay: give --arrivals or --rate");
    std::mt19937_64 rng(o.seed);
    std::exponential_distribution<double> gap(o.rate / 1000.0);
    for (double t = gap(rng); t < p.duration_ms; t += gap(rng)) p.arrivals_ms.push_back(t);
  }
  if (p.arrivals_ms.empty()) return InvalidArgumentError("replay: no arrival in the window");
  return p;
}

Status WriteReplayInputs(const ReplayPlan& p, const std::string& out) {
  std::string tr;
  for (const sim::NodeEvent& e : p.trace.events) {
    tr += Fmt("%lld,%s,%s\n", static_cast<long long>(e.time_ms),
              e.op == sim::NodeOp::kAdd ? "add" : "remove", e.node.c_str());
  }
  ARCHI_RETURN_IF_ERROR(WriteFile(out + "/replay_trace.csv", tr));
  std::string ar;
  for (size_t i = 0; i < p.arrivals_ms.size(); ++i) {
    ar += Fmt("%zu,%.9f,512,0\n", i, p.arrivals_ms[i] / 1000.0);
  }
  return WriteFile(out + "/replay_arrivals.txt", ar);
}

// ---- Workload: a small generated model, token-id requests ----

struct Workload {
  std::string model_dir;
  int64_t layers = 0;
  std::vector<LoadInput> inputs;
};

Result<Workload> MakeWorkload(const std::string& run_dir) {
  Workload w;
  model::ModelConfig c;
  c.architecture = model::Architecture::kBertEncoder;
  c.vocab_size = 1000;
  c.hidden_size = 64;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.intermediate_size = 256;
  c.max_positions = 64;
  c.type_vocab_size = 2;
  w.model_dir = fs::absolute(run_dir + "/gen_model").string();
  ARCHI_RETURN_IF_ERROR(model::WriteRandomModel(w.model_dir, c, 7));
  w.layers = c.num_layers;
  std::mt19937 rng(11);
  for (int i = 0; i < 16; ++i) {
    std::vector<int32_t> seq(16);
    for (int32_t& id : seq) id = static_cast<int32_t>(1 + rng() % 999);
    w.inputs.push_back(LoadInput::Ids(std::move(seq)));
  }
  return w;
}

Result<std::string> WritePlan(const std::string& dir, const Workload& w, const ReplayOptions& o) {
  std::string yaml = "pipeline: replay\nmodel: " + w.model_dir + "\nstages:\n";
  for (int s = 0; s < o.stages; ++s) {
    yaml += Fmt("  - layers: [%lld, %lld]\n", static_cast<long long>(w.layers * s / o.stages),
                static_cast<long long>(w.layers * (s + 1) / o.stages));
  }
  yaml += Fmt("batching:\n  max_batch: %d\n  max_wait_ms: 2\nrequest:\n  default_timeout_ms: %lld\n",
              o.batch, static_cast<long long>(o.timeout_ms));
  const std::string path = dir + "/replay.yaml";
  ARCHI_RETURN_IF_ERROR(WriteFile(path, yaml));
  return path;
}

// ---- Admin: Drain (the harness has no Drain call) ----

class Admin {
 public:
  explicit Admin(const std::string& target)
      : stub_(proto::CoordinatorAdmin::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}
  std::string Drain(const std::string& worker, int64_t deadline_ms) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    proto::DrainWorkerRequest q;
    q.set_worker_id(worker);
    proto::DrainWorkerResponse r;
    grpc::Status s = stub_->Drain(&ctx, q, &r);
    return s.ok() ? "drain: " + r.state() : "drain refused: " + s.error_message();
  }

 private:
  std::unique_ptr<proto::CoordinatorAdmin::Stub> stub_;
};

// ---- Measurements ----

struct Sample {
  double t_ms = 0;
  int nodes = 0, ready = 0, joining = 0, draining = 0, idle = 0;
};
Sample Count(const proto::CoordinatorStatusResponse& s, double t_ms) {
  Sample x;
  x.t_ms = t_ms;
  for (const auto& w : s.workers()) {
    const std::string& st = w.state();
    if (st == "dead") continue;
    ++x.nodes;
    if (st == "ready") ++x.ready;
    else if (st == "draining") ++x.draining;
    else if (st == "idle") ++x.idle;
    else ++x.joining;  // loading | joining
  }
  return x;
}

struct EventRow {
  double t_ms = 0;
  std::string kind;
  int stage = -1;
  std::string worker, reason;
};

std::string CsvQuote(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

bool IsTimeout(const RequestRecord& r) { return !r.lost && r.code == 4; }  // DEADLINE_EXCEEDED
bool IsAdmission(const RequestRecord& r) { return !r.lost && r.code == 8; }  // RESOURCE_EXHAUSTED

struct Totals {
  uint64_t arrived = 0, served = 0, timed_out = 0, lost_admission = 0, lost_other = 0, resent = 0;
  uint64_t within_slo = 0;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0, end_ms = 0;
};

Totals Summarise(const std::vector<RequestRecord>& recs, double slo_ms) {
  Totals t;
  std::vector<double> lat;
  for (const RequestRecord& r : recs) {
    ++t.arrived;
    const double end = r.lost ? r.send_ms : r.finish_ms;
    t.end_ms = std::max(t.end_ms, end);
    if (!r.lost && r.code == 0) {
      ++t.served;
      lat.push_back(r.latency_ms());
      if (r.latency_ms() <= slo_ms) ++t.within_slo;
      if (r.attempts > 1 || r.server_attempts > 1) ++t.resent;
    } else if (IsTimeout(r)) {
      ++t.timed_out;
    } else if (IsAdmission(r)) {
      ++t.lost_admission;
    } else {
      ++t.lost_other;
    }
  }
  if (!lat.empty()) {
    t.p50 = harness::Percentile(lat, 50);
    t.p90 = harness::Percentile(lat, 90);
    t.p99 = harness::Percentile(lat, 99);
    t.p999 = harness::Percentile(lat, 99.9);
    t.max = *std::max_element(lat.begin(), lat.end());
    double sum = 0;
    for (double v : lat) sum += v;
    t.mean = sum / static_cast<double>(lat.size());
  }
  return t;
}

// A request's end (for in_system and the timeline): its answer, or its deadline + grace if lost.
double EndMs(const RequestRecord& r, double lost_after_ms) {
  return r.lost ? r.send_ms + lost_after_ms : r.finish_ms;
}

std::string TimelineCsv(const std::vector<RequestRecord>& recs, const std::vector<Sample>& samples,
                        const ReplayOptions& o, double slo_ms, double end_ms) {
  const double iv = static_cast<double>(o.interval_ms);
  const size_t bins = static_cast<size_t>(std::max(1.0, std::ceil(end_ms / iv)));
  struct Bin {
    uint64_t arrived = 0, served = 0, timed_out = 0, lost = 0, within = 0;
    std::vector<double> lat;
  };
  std::vector<Bin> b(bins);
  const double lost_after = static_cast<double>(o.timeout_ms + 2000);
  auto bin_of = [&](double ms) {
    return std::min(bins - 1, static_cast<size_t>(std::max(0.0, ms) / iv));
  };
  for (const RequestRecord& r : recs) {
    ++b[bin_of(r.send_ms)].arrived;
    Bin& e = b[bin_of(EndMs(r, lost_after))];
    if (!r.lost && r.code == 0) {
      ++e.served;
      e.lat.push_back(r.latency_ms());
      if (r.latency_ms() <= slo_ms) ++e.within;
    } else if (IsTimeout(r)) {
      ++e.timed_out;
    } else {
      ++e.lost;
    }
  }
  std::string tl =
      "t_s,arrived,served,timed_out,lost,throughput_rps,p50_ms,p99_ms,slo_attainment,nodes,ready,"
      "joining,draining,idle,in_system,cost\n";
  uint64_t sent = 0, ended = 0;
  double cost = 0;
  size_t si = 0;
  Sample cur;
  for (size_t k = 0; k < bins; ++k) {
    const double t_end = static_cast<double>(k + 1) * iv;
    while (si < samples.size() && samples[si].t_ms <= t_end) cur = samples[si++];
    sent += b[k].arrived;
    const uint64_t done = b[k].served + b[k].timed_out + b[k].lost;
    ended += done;
    cost += cur.nodes * (iv / 3.6e6) * o.price_per_hour;
    tl += Fmt("%.3f,%llu,%llu,%llu,%llu,%.4f,%.3f,%.3f,%.5f,%d,%d,%d,%d,%d,%llu,%.4f\n", t_end / 1000,
              (unsigned long long)b[k].arrived, (unsigned long long)b[k].served,
              (unsigned long long)b[k].timed_out, (unsigned long long)b[k].lost,
              static_cast<double>(b[k].served) / (iv / 1000), harness::Percentile(b[k].lat, 50),
              harness::Percentile(b[k].lat, 99),
              done > 0 ? static_cast<double>(b[k].within) / static_cast<double>(done) : 1.0,
              cur.nodes, cur.ready, cur.joining, cur.draining, cur.idle,
              (unsigned long long)(sent - ended), cost);
  }
  return tl;
}

// archi-sim's summary, one row. Columns the replay cannot measure are left empty: rerouted,
// decisions, unmet (the live policy's), events (the simulator's event count).
std::string SummaryCsv(const Totals& t, double slo_ms, double node_hours, double price, uint64_t adds,
                       uint64_t drains, uint64_t preempts, uint64_t notices, uint64_t idle_kills,
                       double wall_s) {
  std::string s =
      "arrived,served,timed_out,lost_admission,lost_preempted,resent,rerouted,p50_ms,p90_ms,p99_ms,"
      "p999_ms,max_ms,mean_ms,slo_ms,slo_attainment,node_hours,cost,decisions,unmet,adds,drains,"
      "preemptions,preempt_notices,preempted_idle,repartitions,events,sim_end_s,wall_s\n";
  s += Fmt("%llu,%llu,%llu,%llu,%llu,%llu,,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.1f,%.5f,%.5f,%.5f,,,%llu,"
           "%llu,%llu,%llu,%llu,0,,%.3f,%.3f\n",
           (unsigned long long)t.arrived, (unsigned long long)t.served,
           (unsigned long long)t.timed_out, (unsigned long long)t.lost_admission,
           (unsigned long long)t.lost_other, (unsigned long long)t.resent, t.p50, t.p90, t.p99,
           t.p999, t.max, t.mean, slo_ms,
           t.arrived ? static_cast<double>(t.within_slo) / static_cast<double>(t.arrived) : 0.0,
           node_hours, node_hours * price, (unsigned long long)adds, (unsigned long long)drains,
           (unsigned long long)preempts, (unsigned long long)notices,
           (unsigned long long)idle_kills, t.end_ms / 1000, wall_s);
  return s;
}

// Reads one row of a sim_summary.csv into name -> value.
std::map<std::string, double> ReadSummary(const std::string& path) {
  std::map<std::string, double> m;
  std::ifstream f(path);
  std::string h, v;
  if (!std::getline(f, h) || !std::getline(f, v)) return m;
  std::stringstream hs(h), vs(v);
  std::string a, b;
  while (std::getline(hs, a, ',')) {
    if (!std::getline(vs, b, ',')) break;
    if (!b.empty()) m[a] = std::atof(b.c_str());
  }
  return m;
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int RunReplay(ReplayOptions o) {
  const auto wall0 = Clock::now();
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "archi-bench replay: %s\n", s.ToString().c_str());
    return 1;
  };
  if (Status s = MakeDirs(o.out_dir); !s.ok()) return fail(s);
  auto plan_or = MakeReplayPlan(o);
  if (!plan_or.ok()) return fail(plan_or.status());
  ReplayPlan p = std::move(*plan_or);
  if (Status s = WriteReplayInputs(p, o.out_dir); !s.ok()) return fail(s);
  const double slo_ms = o.slo_ms > 0 ? o.slo_ms : static_cast<double>(o.timeout_ms);
  std::printf("[replay] %s: window %.0f..%.0f s of the trace (peak %d nodes, scaled by 1/%d), "
              "x%.1f -> %.1f s; %zu trace events, %d workers at start, %zu requests (%.1f/s)\n",
              o.trace.c_str(), o.start_s, o.start_s + p.duration_ms * o.speedup / 1000,
              p.trace_peak, p.scale_div, o.speedup, p.duration_ms / 1000, p.trace.events.size(),
              p.initial, p.arrivals_ms.size(),
              static_cast<double>(p.arrivals_ms.size()) / (p.duration_ms / 1000));
  std::fflush(stdout);

  const std::string run_dir = o.out_dir + "/run";
  std::error_code ec;
  fs::remove_all(run_dir, ec);
  if (Status s = MakeDirs(run_dir); !s.ok()) return fail(s);
  auto w_or = MakeWorkload(run_dir);
  if (!w_or.ok()) return fail(w_or.status());
  const Workload w = std::move(*w_or);
  auto plan_path = WritePlan(run_dir, w, o);
  if (!plan_path.ok()) return fail(plan_path.status());

  // Initial nodes: round-robin over the stages (archi-sim's initial fill).
  CoordinatedClusterOptions co;
  co.frontend_bin = o.frontend_bin;
  co.worker_bin = o.worker_bin;
  co.plan_path = *plan_path;
  co.work_dir = run_dir;
  co.replicas.assign(static_cast<size_t>(o.stages), 0);
  for (int i = 0; i < p.initial; ++i) ++co.replicas[static_cast<size_t>(i % o.stages)];
  co.idle = 0;
  co.env = {{"ARCHI_LOG_LEVEL", o.log_level}};
  co.extra_frontend_args = {"--policy", o.policy, "--heartbeat-timeout-ms",
                            std::to_string(o.heartbeat_timeout_ms)};
  if (o.extra_compute_ms > 0) {
    co.extra_worker_args = {"--extra-compute-ms", std::to_string(o.extra_compute_ms)};
  }
  co.start_timeout_ms = 90'000;
  std::printf("[replay] starting archi-frontend (coordinator, policy %s) + %d workers ...\n",
              o.policy.c_str(), p.initial);
  std::fflush(stdout);
  auto c_or = CoordinatedCluster::Start(co);
  if (!c_or.ok()) return fail(c_or.status());
  std::unique_ptr<CoordinatedCluster> c = std::move(*c_or);
  std::printf("[replay] cluster up in %.1f s at %s\n", MsSince(wall0) / 1000,
              c->frontend_address().c_str());
  // Trace node -> worker id. archi-sim's initial fill puts the k-th node present at t = 0 on stage
  // k % stages; the k-th node here is a worker the coordinator placed on that stage, so a removal
  // takes a replica of the same stage in both.
  std::map<std::string, std::string> worker_of;
  {
    auto st = c->GetStatus(Deadline::AfterMs(5000));
    if (!st.ok()) return fail(st.status());
    std::map<int, std::vector<std::string>> by_stage;
    for (const auto& wk : st->workers()) {
      if (wk.state() == "ready") by_stage[wk.stage()].push_back(wk.worker_id());
    }
    for (auto& [stage, ids] : by_stage) std::sort(ids.begin(), ids.end());
    int k = 0;
    for (const sim::NodeEvent& e : p.trace.events) {
      if (e.time_ms > 0 || e.op != sim::NodeOp::kAdd) break;
      auto& ids = by_stage[k++ % o.stages];
      if (ids.empty()) return fail(InternalError("replay: the coordinator's placement differs from "
                                                 "the round-robin initial fill"));
      worker_of[e.node] = ids.front();
      ids.erase(ids.begin());
    }
  }
  Admin admin(c->coordinator_address());

  LoadOptions lo;
  lo.target = c->frontend_address();
  lo.inputs = w.inputs;
  lo.deadline_ms = o.timeout_ms;
  lo.grace_ms = 2000;
  lo.channels = 2;
  lo.max_reconnect_backoff_ms = 500;

  // Calibration: unloaded latencies (1 outstanding) on the initial cluster, not part of the replay.
  bool have_stage_compute = false;
  double calib_overhead_ms = 0;  // unloaded end-to-end p50 minus the stages' compute medians
  if (o.calibrate_s > 0) {
    LoadOptions cl = lo;
    cl.mode = LoadOptions::Mode::kClosed;
    cl.concurrency = 1;
    cl.duration_s = o.calibrate_s;
    auto g = LoadGenerator::Create(cl);
    if (!g.ok()) return fail(g.status());
    if (Status s = (*g)->Start(); !s.ok()) return fail(s);
    auto rep = (*g)->Wait(Deadline::AfterMs(static_cast<int64_t>(o.calibrate_s * 1000) +
                                            o.timeout_ms + 5000));
    if (!rep.ok()) return fail(rep.status());
    std::string csv = "latency_ms\n";
    for (const RequestRecord& r : rep->records) {
      // The first few include connection set-up: skipped.
      if (!r.lost && r.code == 0 && r.index >= 5) csv += Fmt("%.3f\n", r.latency_ms());
    }
    if (Status s = WriteFile(o.out_dir + "/replay_calibration.csv", csv); !s.ok()) return fail(s);
    std::printf("[replay] calibration: %lld requests at 1 outstanding, p50 %.2f ms, p99 %.2f ms\n",
                static_cast<long long>(rep->summary.ok), rep->summary.p50_ms, rep->summary.p99_ms);
    // The workers' own compute timings of those micro-batches (their heartbeat LoadReport: p50
    // and p99 of the last 256, sent every 250 ms): archi-sim's stage service times, so that the
    // frontend, gRPC and batching share of the end-to-end latency is not charged to a stage.
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    auto st = c->GetStatus(Deadline::AfterMs(5000));
    if (!st.ok()) return fail(st.status());
    std::string sc = "stage,worker,compute_p50_ms,compute_p99_ms,batches\n";
    int rows = 0;
    for (const auto& wk : st->workers()) {
      if (wk.state() != "ready" || wk.stage() < 0 || wk.load().batches_processed() == 0 ||
          !(wk.load().compute_p50_ms() > 0)) {
        continue;
      }
      sc += Fmt("%d,%s,%.3f,%.3f,%llu\n", wk.stage(), wk.worker_id().c_str(),
                wk.load().compute_p50_ms(), wk.load().compute_p99_ms(),
                static_cast<unsigned long long>(wk.load().batches_processed()));
      std::printf("[replay] calibration: stage %d worker %s compute p50 %.2f ms p99 %.2f ms (%llu "
                  "micro-batches)\n",
                  wk.stage(), wk.worker_id().c_str(), wk.load().compute_p50_ms(),
                  wk.load().compute_p99_ms(),
                  static_cast<unsigned long long>(wk.load().batches_processed()));
      ++rows;
    }
    if (Status s = WriteFile(o.out_dir + "/replay_stage_compute.csv", sc); !s.ok()) return fail(s);
    have_stage_compute = rows > 0;
    std::map<int, std::vector<double>> p50s;
    for (const auto& wk : st->workers()) {
      if (wk.state() == "ready" && wk.stage() >= 0 && wk.load().compute_p50_ms() > 0) {
        p50s[wk.stage()].push_back(wk.load().compute_p50_ms());
      }
    }
    double stage_sum = 0;
    for (auto& [stage, v] : p50s) {
      std::sort(v.begin(), v.end());
      stage_sum += v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    }
    calib_overhead_ms = std::max(0.0, rep->summary.p50_ms - stage_sum);
  }

  // The actions, in replay time.
  struct Action {
    double t_ms;
    int kind;  // 0 drain, 1 kill, 2 spawn
    std::string node;
  };
  std::vector<Action> actions;
  for (const sim::NodeEvent& e : p.trace.events) {
    if (e.time_ms <= 0) continue;
    const double t = static_cast<double>(e.time_ms);
    if (e.op == sim::NodeOp::kAdd) {
      actions.push_back({t, 2, e.node});
    } else {
      if (o.warning_ms > 0) actions.push_back({std::max(0.0, t - o.warning_ms), 0, e.node});
      actions.push_back({t, 1, e.node});
    }
  }
  std::stable_sort(actions.begin(), actions.end(),
                   [](const Action& a, const Action& b) { return a.t_ms < b.t_ms; });

  lo.mode = LoadOptions::Mode::kOpen;
  lo.send_times_ms = p.arrivals_ms;
  auto gen_or = LoadGenerator::Create(lo);
  if (!gen_or.ok()) return fail(gen_or.status());
  std::unique_ptr<LoadGenerator> gen = std::move(*gen_or);
  std::vector<EventRow> events;
  std::vector<Sample> samples;
  uint64_t drains = 0, kills = 0, idle_kills = 0, spawns = 0;
  if (Status s = gen->Start(); !s.ok()) return fail(s);
  const auto t0 = gen->start_time();
  const int64_t t0_unix = NowUnixMs();
  std::map<std::string, std::string> last_state;  // worker -> state at the last sample
  std::map<std::string, std::string> state_at_notice;
  // The workers' own compute timings during the replay (p50/p99 of their last 256 micro-batches,
  // from each interval's status sample, for workers that computed since the previous one): the
  // service times the host actually gave the stages, load included.
  std::string run_compute = "stage,worker,compute_p50_ms,compute_p99_ms,batches\n";
  std::map<std::string, uint64_t> last_batches;
  std::set<int> run_stages;
  auto sample = [&]() {
    auto st = c->GetStatus(Deadline::AfterMs(500));
    if (!st.ok()) return;
    samples.push_back(Count(*st, MsSince(t0)));
    for (const auto& wk : st->workers()) {
      last_state[wk.worker_id()] = wk.state();
      const uint64_t b = wk.load().batches_processed();
      uint64_t& seen = last_batches[wk.worker_id()];
      if (wk.state() == "ready" && wk.stage() >= 0 && b > seen && wk.load().compute_p50_ms() > 0) {
        run_compute += Fmt("%d,%s,%.3f,%.3f,%llu\n", wk.stage(), wk.worker_id().c_str(),
                           wk.load().compute_p50_ms(), wk.load().compute_p99_ms(),
                           static_cast<unsigned long long>(b));
        run_stages.insert(wk.stage());
      }
      seen = b;
    }
  };
  sample();
  size_t next = 0;
  double next_sample = static_cast<double>(o.interval_ms);
  double next_progress = 5000;
  const double end_ms = p.duration_ms;
  while (true) {
    const double now = MsSince(t0);
    while (next < actions.size() && actions[next].t_ms <= now) {
      const Action& a = actions[next++];
      if (a.kind == 2) {
        auto id = c->SpawnWorker();
        if (!id.ok()) {
          events.push_back({MsSince(t0), "join_failed", -1, a.node, id.status().ToString()});
          continue;
        }
        worker_of[a.node] = *id;
        ++spawns;
        events.push_back({MsSince(t0), "join", -1, *id, "trace add " + a.node});
        continue;
      }
      auto it = worker_of.find(a.node);
      if (it == worker_of.end()) continue;
      const std::string& id = it->second;
      if (a.kind == 0) {
        ++drains;
        state_at_notice[id] = last_state[id];
        events.push_back({MsSince(t0), "preempt_notice", -1, id, admin.Drain(id, 1000)});
      } else {
        // A drained replica goes back to the idle pool before its kill: it was serving.
        const bool was_idle =
            (state_at_notice.count(id) ? state_at_notice[id] : last_state[id]) == "idle";
        Status s = c->Kill(id, SIGKILL);
        ++(was_idle ? idle_kills : kills);
        events.push_back({MsSince(t0), was_idle ? "preempt_idle" : "preempt", -1, id,
                          "kill -9 (trace remove " + a.node + ")" +
                              (s.ok() ? std::string() : ": " + s.ToString())});
      }
    }
    if (now >= next_sample) {
      sample();
      next_sample += static_cast<double>(o.interval_ms);
    }
    if (now >= next_progress) {
      auto pr = gen->GetProgress();
      const Sample& s = samples.empty() ? Sample{} : samples.back();
      std::printf("[replay] t=%5.1f/%.1f s: sent %lld ok %lld errors %lld outstanding %lld; "
                  "workers %d (ready %d, joining %d, draining %d, idle %d); trace actions %zu/%zu\n",
                  now / 1000, end_ms / 1000, (long long)pr.sent, (long long)pr.ok,
                  (long long)pr.errors, (long long)pr.outstanding, s.nodes, s.ready, s.joining,
                  s.draining, s.idle, next, actions.size());
      std::fflush(stdout);
      next_progress += 5000;
    }
    if (now >= end_ms && next >= actions.size()) break;
    double wake = std::min(next_sample, end_ms);
    if (next < actions.size()) wake = std::min(wake, actions[next].t_ms);
    wake = std::max(wake, now + 1);
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double, std::milli>(wake)));
  }
  // Requests still out: keep sampling until they are answered (bounded by deadline + grace).
  Result<LoadReport> rep = InternalError("no report");
  const auto wait_until = Clock::now() + Millis(o.timeout_ms + 10'000);
  while (true) {
    rep = gen->Wait(Deadline::AfterMs(static_cast<int64_t>(o.interval_ms)));
    if (rep.ok() || Clock::now() > wait_until) break;
    sample();
  }
  if (!rep.ok()) return fail(rep.status());
  sample();
  // The coordinator's own events (assignments, ready, dead, ...).
  std::vector<double> assign_ms;
  int false_deaths = 0;  // declared dead for missed heartbeats (no kill): host stalls
  std::map<std::string, double> assigned_at;
  if (auto ev = c->GetEvents(Deadline::AfterMs(3000), t0_unix); ev.ok()) {
    for (const auto& e : ev->events()) {
      const double t = static_cast<double>(e.unix_ms() - t0_unix);
      std::string kind = e.kind() == "ready" ? "ready" : e.kind() == "assigned" ? "add" : e.kind();
      if (kind != "ready" && kind != "add") kind = "coord_" + kind;
      if (e.kind() == "assigned") assigned_at[e.worker_id()] = t;
      if (e.kind() == "dead" && e.detail().find("no heartbeat") != std::string::npos) ++false_deaths;
      if (e.kind() == "ready" && assigned_at.count(e.worker_id())) {
        assign_ms.push_back(t - assigned_at[e.worker_id()]);
      }
      events.push_back({t, kind, e.stage(), e.worker_id(), e.detail()});
    }
  }
  std::vector<std::string> stop_errors = c->Stop(Millis(3000));
  c.reset();
  const double wall_s = MsSince(wall0) / 1000;

  // ---- Outputs ----
  const std::vector<RequestRecord>& recs = rep->records;
  const Totals tot = Summarise(recs, slo_ms);
  const double tl_end = std::max(p.duration_ms, tot.end_ms);
  double node_hours = 0;
  for (size_t i = 0; i + 1 < samples.size(); ++i) {
    node_hours += samples[i].nodes * (samples[i + 1].t_ms - samples[i].t_ms) / 3.6e6;
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const EventRow& a, const EventRow& b) { return a.t_ms < b.t_ms; });
  uint64_t adds = 0;
  for (const EventRow& e : events) adds += e.kind == "add" && e.t_ms > 0;
  std::string ev = "t_s,kind,stage,worker,reason\n";
  for (const EventRow& e : events) {
    ev += Fmt("%.3f,%s,%d,%s,%s\n", e.t_ms / 1000, e.kind.c_str(), e.stage,
              CsvQuote(e.worker).c_str(), CsvQuote(e.reason).c_str());
  }
  Status ws = WriteFile(o.out_dir + "/sim_events.csv", ev);
  if (ws.ok()) {
    ws = WriteFile(o.out_dir + "/sim_timeline.csv", TimelineCsv(recs, samples, o, slo_ms, tl_end));
  }
  if (ws.ok()) {
    ws = WriteFile(o.out_dir + "/sim_summary.csv",
                   SummaryCsv(tot, slo_ms, node_hours, o.price_per_hour, adds, drains, kills,
                              drains, idle_kills, wall_s));
  }
  if (ws.ok()) ws = WriteFile(o.out_dir + "/replay_requests.csv", rep->RecordsCsv());
  if (!ws.ok()) return fail(ws);
  const double thr_live = static_cast<double>(tot.served) / (p.duration_ms / 1000);
  std::printf("[replay] done in %.1f s: arrived %llu served %llu timed out %llu lost %llu "
              "(admission %llu); throughput %.2f/s over the %.1f s window; p50 %.1f ms p99 %.1f ms\n",
              wall_s, (unsigned long long)tot.arrived, (unsigned long long)tot.served,
              (unsigned long long)tot.timed_out,
              (unsigned long long)(tot.lost_other + tot.lost_admission),
              (unsigned long long)tot.lost_admission, thr_live, p.duration_ms / 1000, tot.p50,
              tot.p99);

  // ---- archi-sim on the same files ----
  std::string sim_bin = o.sim_bin.empty() ? std::string(ARCHI_SIM_BIN) : o.sim_bin;
  std::string sim_cmd;
  std::string compare_md;
  const double weight_load_ms =
      assign_ms.empty() ? 500.0 : std::accumulate(assign_ms.begin(), assign_ms.end(), 0.0) /
                                      static_cast<double>(assign_ms.size());
  {
    // Stage service from the workers' compute timings plus the rest of the unloaded latency as
    // an overhead outside the stages; without them (no calibration, or no worker reported) the
    // whole unloaded latency split over the stages, as before.
    // --stage-times run (default): the workers' compute timings sampled during the replay, with
    // the calibration's overhead; calibration: those of the 2 s calibration only.
    const bool use_run = o.stage_times == "run" && have_stage_compute &&
                         static_cast<int>(run_stages.size()) == o.stages &&
                         WriteFile(o.out_dir + "/replay_stage_compute_run.csv", run_compute).ok();
    const std::string perf =
        use_run ? Fmt("stages:%s/replay_stage_compute_run.csv --overhead-ms %.3f",
                      o.out_dir.c_str(), calib_overhead_ms)
        : have_stage_compute ? "stages:" + o.out_dir + "/replay_stage_compute.csv," + o.out_dir +
                                   "/replay_calibration.csv"
        : o.calibrate_s > 0  ? "fit:" + o.out_dir + "/replay_calibration.csv"
                             : Fmt("constant:%.3f,0", tot.p50 / o.stages);
    // The live coordinator reconciles stage targets under any policy (--policy none: only
    // that): archi-sim models it with --coordinator-reconcile (its "none" implies it).
    const std::string sim_policy =
        o.policy == "none" ? std::string("none") : o.policy + " --coordinator-reconcile";
    sim_cmd = Fmt("%s --trace %s --arrivals %s --requests %zu --duration-ms %.0f --stages %d "
                  "--max-batch %d --timeout-ms %lld --slo-ms %.0f --warning-ms %lld "
                  "--interval-ms %lld --weight-load-ms %.0f --world-create-ms 0 --policy %s "
                  "--perf %s --price-per-hour %g --seed %llu --quiet --out %s",
                  sim_bin.empty() ? "archi-sim" : sim_bin.c_str(),
                  (o.out_dir + "/replay_trace.csv").c_str(),
                  (o.out_dir + "/replay_arrivals.txt").c_str(), p.arrivals_ms.size(),
                  p.duration_ms, o.stages, o.batch, static_cast<long long>(o.timeout_ms), slo_ms,
                  static_cast<long long>(o.warning_ms), static_cast<long long>(o.interval_ms),
                  weight_load_ms, sim_policy.c_str(), perf.c_str(),
                  o.price_per_hour, static_cast<unsigned long long>(o.seed),
                  (o.out_dir + "/sim").c_str());
  }
  const bool run_sim = !o.no_sim && !sim_bin.empty() && fs::exists(sim_bin);
  if (run_sim) {
    const std::string cmd = "timeout 120 " + sim_cmd + " > " + ShellQuote(o.out_dir + "/sim.log") +
                            " 2>&1";
    const int rc = std::system(cmd.c_str());
    auto sim = ReadSummary(o.out_dir + "/sim/sim_summary.csv");
    if (rc != 0 || sim.empty()) {
      compare_md = Fmt("archi-sim failed (exit %d); see sim.log.\n", rc);
    } else {
      const double thr_sim = sim["served"] / (p.duration_ms / 1000);
      const double thr_err = 100 * (thr_sim - thr_live) / thr_live;
      const double p99_err = tot.p99 > 0 ? 100 * (sim["p99_ms"] - tot.p99) / tot.p99 : 0;
      const double p50_err = tot.p50 > 0 ? 100 * (sim["p50_ms"] - tot.p50) / tot.p50 : 0;
      MarkdownTable t({"", "live replay", "archi-sim", "sim error"});
      t.AddRow({"throughput (served / window, req/s)", Fmt("%.2f", thr_live), Fmt("%.2f", thr_sim),
                Fmt("%+.1f%%", thr_err)});
      t.AddRow({"p50 (ms)", Fmt("%.2f", tot.p50), Fmt("%.2f", sim["p50_ms"]),
                Fmt("%+.1f%%", p50_err)});
      t.AddRow({"p99 (ms)", Fmt("%.2f", tot.p99), Fmt("%.2f", sim["p99_ms"]),
                Fmt("%+.1f%%", p99_err)});
      t.AddRow({"served / timed out / lost", Fmt("%llu / %llu / %llu", (unsigned long long)tot.served,
                                                 (unsigned long long)tot.timed_out,
                                                 (unsigned long long)(tot.lost_other + tot.lost_admission)),
                Fmt("%.0f / %.0f / %.0f", sim["served"], sim["timed_out"],
                    sim["lost_admission"] + sim["lost_preempted"]),
                ""});
      compare_md = t.ToString();
      std::printf("[replay] archi-sim on the same trace/arrivals: throughput %.2f/s (%+.1f%%), "
                  "p99 %.1f ms (%+.1f%%), p50 %.1f ms (%+.1f%%)\n",
                  thr_sim, thr_err, sim["p99_ms"], p99_err, sim["p50_ms"], p50_err);
    }
  }

  // ---- Plot ----
  const std::string term = GnuplotPngTerminal();
  std::string gp = Fmt(
      "# Generated by archi-bench replay; regenerate with: gnuplot replay.gp\n"
      "set terminal %s size 1000,800\nset output 'replay%s.png'\nset datafile separator ','\n"
      "set key outside top center horizontal\nset multiplot layout 3,1\nset grid\n"
      "set ylabel 'served/s'\n"
      "plot 'sim_timeline.csv' using 1:6 with steps lw 2 title 'live served/s', "
      "'sim_timeline.csv' using 1:($2/%g) with steps dt 2 title 'live arrived/s'%s\n"
      "set ylabel 'p99 (ms)'\n"
      "plot 'sim_timeline.csv' using 1:($8>0?$8:1/0) with steps lw 2 title 'live p99'%s\n"
      "set ylabel 'workers'\nset xlabel 'replay time (s)'\n"
      "plot 'sim_timeline.csv' using 1:10 with steps lw 2 title 'live nodes', "
      "'sim_timeline.csv' using 1:11 with steps title 'live ready'%s\n"
      "unset multiplot\n",
      term.c_str(), run_sim ? "_vs_sim" : "", static_cast<double>(o.interval_ms) / 1000,
      run_sim ? ", 'sim/sim_timeline.csv' using 1:6 with steps lw 2 title 'archi-sim served/s'" : "",
      run_sim ? ", 'sim/sim_timeline.csv' using 1:($8>0?$8:1/0) with steps lw 2 title 'archi-sim p99'"
              : "",
      run_sim ? ", 'sim/sim_timeline.csv' using 1:10 with steps title 'archi-sim nodes'" : "");
  const std::string gp_path = o.out_dir + "/replay.gp";
  if (WriteFile(gp_path, gp).ok()) {
    if (Status s = RunGnuplot(gp_path); !s.ok()) {
      std::printf("[replay] no plot: %s\n", s.ToString().c_str());
    }
  }

  // ---- Markdown ----
  std::string md = "# archi-bench replay\n\n";
  md += Fmt("Generated by `%s` on %s (%.0f s wall; load average %s).\n\n",
            JoinArgs(o.command).c_str(), NowUtc().c_str(), wall_s, LoadAverage1().c_str());
  md += Fmt("- trace %s, window %.0f..%.0f s, peak %d nodes scaled by 1/%d (count' = ceil(count / "
            "%d)), compressed x%g into %.1f s: %zu events (replay_trace.csv), %d workers at start\n",
            o.trace.c_str(), o.start_s, o.start_s + p.duration_ms * o.speedup / 1000, p.trace_peak,
            p.scale_div, p.scale_div, o.speedup, p.duration_ms / 1000, p.trace.events.size(),
            p.initial);
  md += Fmt("- requests: %s, %zu in the window (replay_arrivals.txt)\n",
            o.arrivals.empty() ? Fmt("Poisson at %.2f/s", o.rate).c_str()
                               : (o.arrivals + (o.rate > 0 ? Fmt(" rescaled to %.2f/s", o.rate)
                                                           : std::string()))
                                     .c_str(),
            p.arrivals_ms.size());
  md += Fmt("- pipeline: generated BERT (4 layers, H=64), %d stages, max batch %d, "
            "--extra-compute-ms %lld per micro-batch, timeout %lld ms, SLO %.0f ms, policy %s, "
            "drain %lld ms before each kill -9\n",
            o.stages, o.batch, static_cast<long long>(o.extra_compute_ms),
            static_cast<long long>(o.timeout_ms), slo_ms, o.policy.c_str(),
            static_cast<long long>(o.warning_ms));
  md += Fmt("- coordinator heartbeat timeout %d ms; workers declared dead without a kill: %d\n",
            o.heartbeat_timeout_ms, false_deaths);
  md += Fmt("- workers started %llu, drained %llu, killed %llu (+%llu idle); assigned -> ready "
            "%.0f ms mean (%zu)\n",
            (unsigned long long)spawns, (unsigned long long)drains, (unsigned long long)kills,
            (unsigned long long)idle_kills, weight_load_ms, assign_ms.size());
  md += Fmt("- arrived %llu, served %llu, timed out %llu, lost %llu; p50 %.2f ms, p99 %.2f ms\n\n",
            (unsigned long long)tot.arrived, (unsigned long long)tot.served,
            (unsigned long long)tot.timed_out,
            (unsigned long long)(tot.lost_other + tot.lost_admission), tot.p50, tot.p99);
  md += "archi-sim on the same files:\n\n```\n" + sim_cmd + "\n```\n\n";
  if (!compare_md.empty()) md += compare_md + "\n";
  md += "Columns of sim_*.csv the replay cannot measure are empty in sim_summary.csv (rerouted, "
        "decisions, unmet, events); lost_preempted holds every request without a proper answer "
        "other than a deadline (lost, UNAVAILABLE, ...); node counts are sampled from "
        "CoordinatorAdmin.Status once per interval.\n";
  for (const std::string& e : stop_errors) md += "- stop: " + e + "\n";
  if (Status s = WriteFile(o.out_dir + "/replay.md", md); !s.ok()) return fail(s);
  if (!o.keep_logs) fs::remove_all(run_dir, ec);
  std::printf("[replay] wrote %s/{sim_timeline,sim_summary,sim_events}.csv, replay.md%s\n",
              o.out_dir.c_str(), run_sim ? ", sim/, replay_vs_sim.png" : ", replay.png");
  return tot.arrived == tot.served + tot.timed_out + tot.lost_other + tot.lost_admission ? 0 : 1;
}

std::function<std::optional<int>(const std::vector<std::string>&)> AddReplayCommand(CLI::App& app) {
  auto o = std::make_shared<ReplayOptions>();
  auto* rc = app.add_subcommand(
      "replay",
      "live trace replay: the real coordinator and workers on this host follow a node trace "
      "time-compressed by --speedup (adds start workers; removes drain through "
      "CoordinatorAdmin.Drain --warning-ms before a kill -9), requests at the compressed times of "
      "an arrival trace (or Poisson at --rate); writes archi-sim's CSVs (sim_timeline.csv, "
      "sim_summary.csv, sim_events.csv) and runs archi-sim on the same scaled trace and arrivals "
      "for a side-by-side plot");
  rc->add_option("--trace", o->trace, "node trace (any format archi-sim reads)")->required();
  rc->add_flag("--tolerate-quirks", o->tolerate_quirks, "accept the GCP file's backward steps");
  rc->add_option("--speedup", o->speedup, "trace seconds per replay second")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 1e7));
  rc->add_option("--arrivals", o->arrivals, "SpotServe arrival file (request_id,arrival_time_s,...)");
  rc->add_option("--rate", o->rate,
                 "replay req/s: Poisson at this rate, or the mean rate --arrivals is rescaled to")
      ->check(CLI::Range(0.0, 1e5));
  rc->add_option("--start-s", o->start_s, "trace window start (trace seconds)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  rc->add_option("--duration-s", o->duration_s, "replay seconds at most (the trace may end first)")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 600.0));
  rc->add_option("--max-workers", o->max_workers,
                 "workers at the trace's peak: counts are divided by ceil(peak / N), rounded up")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  rc->add_option("--warning-ms", o->warning_ms, "replay ms between the drain and the kill -9")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{600'000}));
  rc->add_option("--policy", o->policy, "coordinator policy (archi-sim gets static for none)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "reactive"}));
  rc->add_option("--stages", o->stages, "pipeline stages")->capture_default_str()->check(CLI::Range(1, 4));
  rc->add_option("--batch", o->batch, "plan max_batch")->capture_default_str()->check(CLI::Range(1, 64));
  rc->add_option("--extra-compute-ms", o->extra_compute_ms,
                 "archi-worker --extra-compute-ms per micro-batch (a steady service time on a busy "
                 "machine)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{10'000}));
  rc->add_option("--timeout-ms", o->timeout_ms, "per-request deadline")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{600'000}));
  rc->add_option("--slo-ms", o->slo_ms, "SLO for attainment (0: the timeout)")->check(CLI::Range(0.0, 1e7));
  rc->add_option("--interval-ms", o->interval_ms, "timeline row length")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{600'000}));
  rc->add_option("--heartbeat-timeout-ms", o->heartbeat_timeout_ms,
                 "coordinator heartbeat timeout (a kill -9 is detected by the broken session at "
                 "once; a short timeout turns a busy host's scheduling stalls into false deaths)")
      ->capture_default_str()
      ->check(CLI::Range(100, 600'000));
  rc->add_option("--price-per-hour", o->price_per_hour, "per worker-hour")->capture_default_str();
  rc->add_option("--stage-times", o->stage_times,
                 "archi-sim's stage service times: run (the workers' compute timings sampled "
                 "during the replay, default) or calibration (those of the calibration only)")
      ->check(CLI::IsMember({"run", "calibration"}));
  rc->add_option("--calibrate-s", o->calibrate_s,
                 "closed-loop calibration (1 outstanding) before the replay; archi-sim fits its "
                 "service times to it (0: none, then constant p50 / stages)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60.0));
  rc->add_option("--seed", o->seed, "Poisson arrivals (and archi-sim's seed)")->capture_default_str();
  rc->add_option("--out", o->out_dir, "output directory")->capture_default_str();
  rc->add_option("--frontend-bin", o->frontend_bin, "archi-frontend binary");
  rc->add_option("--worker-bin", o->worker_bin, "archi-worker binary");
  rc->add_option("--sim-bin", o->sim_bin, "archi-sim binary (default: the one built with this)");
  rc->add_flag("--no-sim", o->no_sim, "do not run archi-sim on the same files afterwards");
  rc->add_option("--log-level", o->log_level, "ARCHI_LOG_LEVEL of the processes")->capture_default_str();
  rc->add_flag("--keep-logs", o->keep_logs, "keep OUT/run (process logs, plan, model)");
  return [o, rc](const std::vector<std::string>& command) -> std::optional<int> {
    if (!*rc) return std::nullopt;
    o->command = command;
    return RunReplay(*o);
  };
}

}  // namespace archi::bench
