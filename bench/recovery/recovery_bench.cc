#include "bench/recovery/recovery_bench.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>

#include "bench/bench_util.h"
#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "bench/harness/netns.h"
#include "runtime/core/deadline.h"
#include "runtime/model/model.h"

namespace archi::bench {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;
using harness::CoordinatedCluster;
using harness::CoordinatedClusterOptions;
using harness::LoadGenerator;
using harness::LoadInput;
using harness::LoadOptions;
using harness::LoadReport;
using harness::NetNamespace;

constexpr double kBinMs = 500;   // the back-to-full-throughput metric
constexpr double kPlotBinMs = 200;
constexpr double kPreFaultMs = 2000;  // the "before" window of the throughput comparison
constexpr double kWarmupS = 2.5;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* const kTexts[] = {
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email account?",
    "The restaurant near the station serves excellent pasta but the service is slow.",
    "Scientists have discovered a new species of frog in the rainforests of Peru.",
    "Please send me the quarterly report before the meeting on Thursday.",
    "The train to Berlin was delayed by forty minutes because of a signal failure.",
    "Which programming language should I learn first for data analysis?",
    "Heavy rain is expected across the northern regions this weekend.",
};

struct Workload {
  std::string model_dir;
  std::string description;
  int64_t layers = 0;
  std::vector<LoadInput> inputs;
};

Result<Workload> MakeWorkload(const RecoveryOptions& o, const std::string& run_dir) {
  Workload w;
  std::string dir = o.model_dir;
  int vocab = 1000;
  if (dir.empty()) {
    model::ModelConfig c;
    c.architecture = model::Architecture::kBertEncoder;
    c.vocab_size = vocab;
    c.hidden_size = 128;
    c.num_layers = 6;
    c.num_heads = 4;
    c.num_kv_heads = 4;
    c.intermediate_size = 512;
    c.max_positions = 64;
    c.type_vocab_size = 2;
    dir = run_dir + "/gen_model";
    ARCHI_RETURN_IF_ERROR(model::WriteRandomModel(dir, c, 7));
    w.description = "generated BERT model (6 layers, H=128), token-id requests of 8..32 ids";
  }
  ARCHI_ASSIGN_OR_RETURN(auto m, model::Model::Load(dir, {0, 1}));
  w.layers = m->config().num_layers;
  vocab = static_cast<int>(m->config().vocab_size);
  if (!o.model_dir.empty() && fs::exists(dir + "/vocab.txt")) {
    for (const char* t : kTexts) w.inputs.push_back(LoadInput::Text(t));
    w.description = dir + ", text requests (8 sentences, tokenised by the frontend)";
  } else {
    std::mt19937 rng(11);
    for (int i = 0; i < 32; ++i) {
      std::vector<int32_t> seq(static_cast<size_t>(8 + (i * 7) % 25));
      for (int32_t& id : seq) id = static_cast<int32_t>(1 + rng() % (vocab - 1));
      w.inputs.push_back(LoadInput::Ids(std::move(seq)));
    }
    if (!o.model_dir.empty()) w.description = dir + " (no vocab.txt), token-id requests";
  }
  w.model_dir = fs::absolute(dir).string();
  return w;
}

Result<std::string> WritePlan(const std::string& dir, const std::string& name, const Workload& w,
                              int batch) {
  std::string yaml = "pipeline: " + name + "\nmodel: " + w.model_dir + "\nstages:\n";
  for (int s = 0; s < 3; ++s) {
    yaml += Fmt("  - layers: [%lld, %lld]\n", static_cast<long long>(w.layers * s / 3),
                static_cast<long long>(w.layers * (s + 1) / 3));
  }
  yaml += Fmt("batching:\n  max_batch: %d\n  max_wait_ms: 2\nrequest:\n  default_timeout_ms: "
              "20000\n",
              batch);
  const std::string path = dir + "/" + name + ".yaml";
  ARCHI_RETURN_IF_ERROR(WriteFile(path, yaml));
  return path;
}

// One fault's measurements.
struct FaultResult {
  std::string fault;        // kill | stop | frontend | partition | slow
  std::string description;  // what was done
  bool skipped = false;
  std::string skip_reason;
  std::string victim;
  std::string load;  // "closed 16" / "open 150/s"
  double fault_ms = 0;                   // into the load
  double detect_ms = -1;                 // fault -> detected_unix_ms
  std::string cause;
  double ready_ms = -1;                  // fault -> replacement ready
  double traffic_ms = -1;                // fault -> traffic restored (coordinator)
  double serve_again_ms = -1;            // frontend: fault -> first OK answer sent after it
  double reassigned_ms = -1;             // frontend: fault -> every stage at target again
  double back_full_ms = -1;              // -1: never; 0: no dip
  double pre_median = 0, dip_min = 0;    // per-second throughput of 500 ms bins
  double end_median = 0;                 // the last 2 s of the load
  std::string timeline;                  // frontend: the new coordinator's events
  int64_t retried = 0, recovered = 0;    // frontend: requests resent by the client; answered
                                         // from an execution the new frontend recovered
  int64_t sent = 0, ok = 0, lost = 0, failed = 0;
  std::string codes;
  double p99_before = 0, p99_during = 0;
  int64_t n_during = 0;
};

std::string Ms(double v) { return v < 0 ? "-" : Fmt("%.0f", v); }

// The throughput analysis of a report around a fault at `fault_ms` (load time).
void Analyse(const LoadReport& rep, double end_ms, FaultResult* r) {
  const auto bins = rep.Timeline(kBinMs);
  const double fault = r->fault_ms;
  std::vector<double> pre;
  for (size_t b = 0; b < bins.size(); ++b) {
    const double start = static_cast<double>(b) * kBinMs;
    if (start + kBinMs <= fault && start >= fault - kPreFaultMs) {
      pre.push_back(static_cast<double>(bins[b]) * 1000 / kBinMs);
    }
  }
  r->pre_median = Median(pre);
  std::vector<double> tail;
  for (size_t b = 0; b < bins.size(); ++b) {
    const double start = static_cast<double>(b) * kBinMs;
    if (start >= end_ms - kPreFaultMs && start + kBinMs <= end_ms) {
      tail.push_back(static_cast<double>(bins[b]) * 1000 / kBinMs);
    }
  }
  r->end_median = Median(tail);
  const double thr = 0.9 * r->pre_median;
  // Bins that start after the fault and end before the load stopped sending.
  size_t first = static_cast<size_t>(std::ceil(fault / kBinMs));
  size_t last = static_cast<size_t>(end_ms / kBinMs);  // exclusive
  r->dip_min = -1;
  long dip = -1;
  for (size_t b = first; b < last; ++b) {
    const double v = b < bins.size() ? static_cast<double>(bins[b]) * 1000 / kBinMs : 0;
    if (r->dip_min < 0 || v < r->dip_min) r->dip_min = v;
    if (dip < 0 && v < thr) dip = static_cast<long>(b);
  }
  if (dip < 0) {
    r->back_full_ms = 0;
  } else {
    for (size_t b = static_cast<size_t>(dip) + 1; b < last; ++b) {
      const double v = b < bins.size() ? static_cast<double>(bins[b]) * 1000 / kBinMs : 0;
      if (v >= thr) {
        r->back_full_ms = (static_cast<double>(b) + 1) * kBinMs - fault;
        break;
      }
    }
  }
  const double until = r->back_full_ms > 0 ? fault + r->back_full_ms : fault + 1000;
  std::vector<double> before, during;
  for (const auto& q : rep.records) {
    if (q.code != 0 || q.lost) continue;
    if (q.finish_ms < fault) before.push_back(q.latency_ms());
    if (q.send_ms < until && q.finish_ms > fault) during.push_back(q.latency_ms());
  }
  r->p99_before = harness::Percentile(before, 99);
  r->p99_during = harness::Percentile(during, 99);
  r->n_during = static_cast<int64_t>(during.size());
  const auto& s = rep.summary;
  r->sent = s.sent;
  r->ok = s.ok;
  r->lost = s.lost;
  r->failed = s.sent - s.ok - s.lost;
  for (const auto& [code, n] : s.by_code) {
    if (code == "OK") continue;
    r->codes += Fmt("%s%s=%lld", r->codes.empty() ? "" : " ", code.c_str(),
                    static_cast<long long>(n));
  }
}

class RecoveryBench {
 public:
  RecoveryBench(const RecoveryOptions& o, std::string run_dir, Workload w)
      : o_(o), run_dir_(std::move(run_dir)), w_(std::move(w)) {}

  Result<FaultResult> Run(const std::string& fault);
  const std::vector<std::string>& plots() const { return plots_; }

 private:
  static std::string ReadyOf(const pb::CoordinatorStatusResponse& s, int stage) {
    for (const auto& w : s.workers()) {
      if (w.stage() == stage && w.state() == "ready") return w.worker_id();
    }
    return "";
  }
  LoadOptions BaseLoad(const std::string& target) const {
    LoadOptions l;
    l.target = target;
    l.inputs = w_.inputs;
    l.deadline_ms = 20'000;
    l.grace_ms = 2'000;
    l.mode = LoadOptions::Mode::kClosed;
    l.concurrency = o_.concurrency;
    return l;
  }
  Status Plot(const FaultResult& r, const LoadReport& rep, const std::vector<double>& marks_ms,
              const std::vector<std::string>& labels);

  const RecoveryOptions& o_;
  const std::string run_dir_;
  const Workload w_;
  std::vector<std::string> plots_;
};

Result<FaultResult> RecoveryBench::Run(const std::string& fault) {
  FaultResult r;
  r.fault = fault;
  const bool netns = fault == "partition" || fault == "slow";
  const std::string dir = run_dir_ + "/" + fault;
  ARCHI_RETURN_IF_ERROR(MakeDirs(dir));
  ARCHI_ASSIGN_OR_RETURN(const std::string plan, WritePlan(dir, "rec_" + fault, w_, o_.batch));
  CoordinatedClusterOptions co;
  co.frontend_bin = o_.frontend_bin;
  co.worker_bin = o_.worker_bin;
  co.plan_path = plan;
  co.work_dir = dir;
  co.replicas = {1, 2, 1};
  co.idle = 1;
  co.token = "recovery-bench";
  co.worker_threads = o_.worker_threads;
  co.env = {{"ARCHI_LOG_LEVEL", o_.log_level}};
  co.extra_frontend_args = {"--heartbeat-timeout-ms", std::to_string(o_.heartbeat_timeout_ms),
                            "--heartbeat-interval-ms", std::to_string(o_.heartbeat_interval_ms)};
  if (fault == "frontend" && !o_.frontend_no_ids) {
    // The admission log: the restarted frontend re-dispatches what the killed one held.
    co.extra_frontend_args.insert(co.extra_frontend_args.end(), {"--state-dir", dir + "/state"});
  }
  if (o_.extra_compute_ms > 0) {
    co.extra_worker_args = {"--extra-compute-ms", std::to_string(o_.extra_compute_ms)};
  }
  co.start_timeout_ms = 60'000;

  std::unique_ptr<NetNamespace> ns;
  if (netns) {
    auto created = NetNamespace::Create(fault);
    if (!created.ok()) {
      r.skipped = true;
      r.skip_reason = "cannot create a network namespace: " + created.status().ToString();
      std::printf("[recovery] %s: SKIPPED (%s)\n", fault.c_str(), r.skip_reason.c_str());
      return r;
    }
    ns = std::move(*created);
  }
  const auto t_start = Clock::now();
  std::printf("[recovery] %s: starting archi-frontend + 5 workers (1-2-1 + 1 idle)%s ...\n",
              fault.c_str(), netns ? (", one stage-1 replica in namespace " + ns->name()).c_str()
                                   : "");
  std::fflush(stdout);
  std::unique_ptr<CoordinatedCluster> c;
  if (netns) {
    ARCHI_ASSIGN_OR_RETURN(auto nc, harness::StartWithNamespacedReplica(
                                        co, *ns, 1, Deadline::AfterMs(co.start_timeout_ms)));
    c = std::move(nc.cluster);
    r.victim = nc.ns_worker;
  } else {
    ARCHI_ASSIGN_OR_RETURN(c, CoordinatedCluster::Start(co));
  }
  ARCHI_ASSIGN_OR_RETURN(auto s0, c->GetStatus(Deadline::AfterMs(5000)));
  if (fault == "kill" || fault == "stop") r.victim = ReadyOf(s0, 1);
  if (fault == "frontend") r.victim = "frontend";
  if (r.victim.empty()) return InternalError("no stage-1 replica to inject the fault into");
  std::printf("[recovery] %s: cluster up in %.1f s at %s; victim %s\n", fault.c_str(),
              MsSince(t_start) / 1000, c->frontend_address().c_str(), r.victim.c_str());

  // Warm-up (not recorded): connections, first batches; its throughput sets the open-loop rate.
  LoadOptions l = BaseLoad(c->frontend_address());
  double warm_tput = 0;
  {
    LoadOptions warm = l;
    warm.duration_s = kWarmupS;
    ARCHI_ASSIGN_OR_RETURN(auto g, LoadGenerator::Create(warm));
    ARCHI_ASSIGN_OR_RETURN(auto wr, g->Run());
    warm_tput = wr.summary.throughput;
    std::printf("[recovery] %s: warm-up %s\n", fault.c_str(), wr.summary.ToString().c_str());
  }
  if (fault == "frontend") {
    l.mode = LoadOptions::Mode::kOpen;
    l.rate_per_s = std::max(5.0, o_.frontend_rate * warm_tput);
    l.poisson = false;
    l.max_reconnect_backoff_ms = 250;
    r.load = Fmt("open %.0f/s", l.rate_per_s);
    if (!o_.frontend_no_ids) {
      // Idempotent retries: the same request id on every attempt, backoff 50..500 ms, within
      // the request's 20 s deadline.
      l.request_id_prefix = "rec-";
      l.max_attempts = 1000;
      l.retry_backoff_ms = 50;
      l.max_retry_backoff_ms = 500;
      r.load += ", ids + retries";
    }
  } else {
    r.load = Fmt("closed %d", o_.concurrency);
  }
  l.duration_s = o_.duration_s;

  std::string shaped;
  if (fault == "slow") {
    Status d = ns->SetDelay(o_.delay_ms);
    if (d.ok()) {
      shaped = Fmt("tc netem delay %d ms each way", o_.delay_ms);
    } else if (d.code() == StatusCode::kUnimplemented) {
      ARCHI_RETURN_IF_ERROR(ns->SetRate(o_.slow_rate));
      shaped = "tc tbf rate " + o_.slow_rate + " each way (this kernel has no netem, so no delay)";
      std::printf("[recovery] slow: no tc netem in this kernel; the slow link is a rate limit "
                  "instead (%s)\n",
                  o_.slow_rate.c_str());
    } else {
      return d;
    }
  }
  if (fault == "kill") r.description = "kill -9 of stage-1 replica " + r.victim;
  if (fault == "stop") {
    r.description = Fmt("SIGSTOP of stage-1 replica %s, SIGCONT %.1f s later", r.victim.c_str(),
                        o_.stop_s);
  }
  if (fault == "frontend") {
    r.description = "kill -9 of the frontend (embedded coordinator + store), restarted at once";
  }
  if (fault == "partition") {
    r.description = "link of stage-1 replica " + r.victim + " (in its namespace) set down";
  }

  ARCHI_ASSIGN_OR_RETURN(auto gen, LoadGenerator::Create(l));
  ARCHI_RETURN_IF_ERROR(gen->Start());
  const auto load_t0 = gen->start_time();
  // Unix ms of load time 0, to place the coordinator's timestamps on the load's axis.
  const double unix0 = static_cast<double>(NowUnixMs()) - MsSince(load_t0);
  auto progress = [&](const char* what) {
    auto p = gen->GetProgress();
    std::printf("[recovery] %s t=%4.1fs sent %lld ok %lld errors %lld outstanding %lld%s\n",
                fault.c_str(), p.elapsed_ms / 1000, static_cast<long long>(p.sent),
                static_cast<long long>(p.ok), static_cast<long long>(p.errors),
                static_cast<long long>(p.outstanding), what);
    std::fflush(stdout);
  };
  auto sleep_until_load_ms = [&](double ms) {
    double next_print = std::ceil(MsSince(load_t0) / 1000) * 1000;
    while (MsSince(load_t0) < ms) {
      if (MsSince(load_t0) >= next_print) {
        progress("");
        next_print += 1000;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  sleep_until_load_ms(o_.fault_at_s * 1000);
  int64_t fault_unix = NowUnixMs();
  r.fault_ms = MsSince(load_t0);
  if (fault == "kill") ARCHI_RETURN_IF_ERROR(c->Kill(r.victim, SIGKILL));
  if (fault == "stop") ARCHI_RETURN_IF_ERROR(c->Kill(r.victim, SIGSTOP));
  if (fault == "frontend") ARCHI_RETURN_IF_ERROR(c->Kill("frontend", SIGKILL));
  if (fault == "partition") ARCHI_RETURN_IF_ERROR(ns->Partition());
  if (fault == "slow") {
    // The link was shaped before the load; the "fault" mark is only the analysis split.
    r.description = "link of stage-1 replica " + r.victim + ": " + shaped +
                    ", for the whole load (the mark splits the analysis)";
  }
  progress(("  << " + r.description).c_str());

  double restart_ms = -1;
  if (fault == "frontend") {
    Status st = c->RestartFrontend(Deadline::AfterMs(30'000));
    if (!st.ok()) return st;
    restart_ms = MsSince(load_t0) - r.fault_ms;
    progress(Fmt("  << new frontend listening %.0f ms after the kill", restart_ms).c_str());
    // Every stage served again (workers re-registered and re-assigned by the new coordinator).
    Status back = c->WaitFor(
        [](const pb::CoordinatorStatusResponse& s) {
          for (const auto& st : s.stages()) {
            if (st.ready_replicas() < st.target_replicas()) return false;
          }
          return true;
        },
        Deadline::AfterMs(20'000), "every stage ready after the frontend restart");
    if (auto ev = c->GetEvents(Deadline::AfterMs(5000)); ev.ok()) {
      for (const auto& e : ev->events()) {
        if (e.kind() != "registered" && e.kind() != "assigned" && e.kind() != "ready" &&
            e.kind() != "traffic") {
          continue;
        }
        r.timeline += Fmt("%s%s %s +%lld ms", r.timeline.empty() ? "" : ", ", e.worker_id().c_str(),
                          e.kind().c_str(), static_cast<long long>(e.unix_ms() - fault_unix));
      }
      std::printf("[recovery] frontend: the new coordinator's events (ms after the kill): %s\n",
                  r.timeline.c_str());
    }
    if (back.ok()) {
      r.reassigned_ms = MsSince(load_t0) - r.fault_ms;
      progress(Fmt("  << every stage at its target again %.0f ms after the kill",
                   r.reassigned_ms)
                   .c_str());
    } else {
      std::printf("[recovery] frontend: %s\n", back.ToString().c_str());
    }
  }
  if (fault == "stop") {
    sleep_until_load_ms(r.fault_ms + o_.stop_s * 1000);
    ARCHI_RETURN_IF_ERROR(c->Kill(r.victim, SIGCONT));
    progress(("  << SIGCONT " + r.victim).c_str());
  }
  // Until the load stops sending, printing once a second.
  sleep_until_load_ms(o_.duration_s * 1000);
  ARCHI_ASSIGN_OR_RETURN(LoadReport rep, gen->Wait(Deadline::AfterMs(60'000)));
  if (fault == "partition") ns->Heal().IgnoreError();
  if (fault == "slow") ns->ClearQdisc().IgnoreError();

  // The coordinator's record of the repair.
  auto st = c->GetStatus(Deadline::AfterMs(5000));
  if (st.ok()) {
    for (const auto& rec : st->recoveries()) {
      if (rec.worker_id() != r.victim || rec.detected_unix_ms() < fault_unix - 5000) continue;
      auto rel = [&](int64_t t) { return t > 0 ? static_cast<double>(t - fault_unix) : -1.0; };
      r.detect_ms = rel(rec.detected_unix_ms());
      r.ready_ms = rel(rec.replacement_ready_unix_ms());
      r.traffic_ms = rel(rec.traffic_restored_unix_ms());
      r.cause = rec.cause();
      break;
    }
  }
  Analyse(rep, o_.duration_s * 1000, &r);
  r.retried = rep.summary.retried;
  r.recovered = rep.summary.recovered;
  if (fault == "frontend") {
    for (const auto& q : rep.records) {
      if (q.code == 0 && q.send_ms > r.fault_ms) {
        const double t = q.finish_ms - r.fault_ms;
        if (r.serve_again_ms < 0 || t < r.serve_again_ms) r.serve_again_ms = t;
      }
    }
  }
  std::printf("[recovery] %s: detection %s ms, back to full throughput %s ms, lost %lld, failed "
              "%lld, p99 %.1f ms before / %.1f ms during%s\n",
              fault.c_str(), Ms(r.detect_ms).c_str(), Ms(r.back_full_ms).c_str(),
              static_cast<long long>(r.lost), static_cast<long long>(r.failed), r.p99_before,
              r.p99_during,
              fault == "frontend"
                  ? Fmt("; serving again %s ms after the kill", Ms(r.serve_again_ms).c_str()).c_str()
                  : "");

  // Files: per-fault timeline and requests, the plot.
  ARCHI_RETURN_IF_ERROR(
      WriteFile(o_.out_dir + "/recovery_" + fault + ".csv", rep.TimelineCsv(kPlotBinMs)));
  ARCHI_RETURN_IF_ERROR(
      WriteFile(o_.out_dir + "/recovery_" + fault + "_requests.csv", rep.RecordsCsv()));
  std::vector<double> marks = {r.fault_ms};
  std::vector<std::string> labels = {fault == "slow" ? "analysis split" : "fault"};
  if (r.detect_ms >= 0) {
    marks.push_back(r.fault_ms + r.detect_ms);
    labels.push_back("detected");
  }
  if (r.traffic_ms >= 0) {
    marks.push_back(r.fault_ms + r.traffic_ms);
    labels.push_back("replacement has traffic");
  }
  if (restart_ms >= 0) {
    marks.push_back(r.fault_ms + restart_ms);
    labels.push_back("new frontend listening");
  }
  if (r.back_full_ms > 0) {
    marks.push_back(r.fault_ms + r.back_full_ms);
    labels.push_back("back to >= 90%");
  }
  if (Status p = Plot(r, rep, marks, labels); !p.ok()) {
    std::printf("[recovery] %s: no plot: %s\n", fault.c_str(), p.ToString().c_str());
  }
  (void)unix0;
  for (const auto& e : c->Stop(Millis(3000))) {
    if (e.find("exit 0") == std::string::npos && e.find("signal 9") == std::string::npos) {
      std::printf("[recovery] %s: %s\n", fault.c_str(), e.c_str());
    }
  }
  return r;
}

Status RecoveryBench::Plot(const FaultResult& r, const LoadReport& rep,
                           const std::vector<double>& marks_ms,
                           const std::vector<std::string>& labels) {
  const std::string term = GnuplotPngTerminal();
  if (term.empty()) return UnavailableError("gnuplot not found");
  static const char* const kColors[] = {"red", "orange", "dark-green", "blue", "purple"};
  std::string arrows;
  for (size_t i = 0; i < marks_ms.size(); ++i) {
    arrows += Fmt("set arrow from %.3f, graph 0 to %.3f, graph 1 nohead lw 2 dt 2 lc rgb '%s'\n"
                  "set label '%s' at %.3f, graph %.2f left offset 0.3,0 tc rgb '%s' font ',9'\n",
                  marks_ms[i] / 1000, marks_ms[i] / 1000, kColors[i % 5], labels[i].c_str(),
                  marks_ms[i] / 1000, 0.95 - 0.06 * static_cast<double>(i), kColors[i % 5]);
  }
  (void)rep;
  const std::string gp = Fmt(
      "# Generated by archi-bench recovery; regenerate with: gnuplot recovery_%s.gp\n"
      "set terminal %s size 900,420\nset output 'recovery_%s.png'\nset datafile separator ','\n"
      "set title \"%s\\n(%s load; throughput per %.0f ms)\" font ',10'\n"
      "set xlabel 'seconds since the load started'\nset ylabel 'answers per second'\n"
      "set grid\nset key bottom right\nset yrange [0:*]\n%s"
      "plot 'recovery_%s.csv' every ::1 using ($1+%.3f):4 with steps lw 2 lc rgb '#1f77b4' title "
      "'OK', \\\n     '' every ::1 using ($1+%.3f):($3*%.1f) with steps lw 1 lc rgb 'red' title "
      "'errors'\n",
      r.fault.c_str(), term.c_str(), r.fault.c_str(), r.description.c_str(), r.load.c_str(),
      kPlotBinMs, arrows.c_str(), r.fault.c_str(), kPlotBinMs / 2000, kPlotBinMs / 2000,
      1000 / kPlotBinMs);
  const std::string path = o_.out_dir + "/recovery_" + r.fault + ".gp";
  ARCHI_RETURN_IF_ERROR(WriteFile(path, gp));
  ARCHI_RETURN_IF_ERROR(RunGnuplot(path));
  plots_.push_back(o_.out_dir + "/recovery_" + r.fault + ".png");
  return Status::Ok();
}

}  // namespace

int RunRecovery(RecoveryOptions o) {
  ::signal(SIGPIPE, SIG_IGN);
  if (o.faults.empty()) o.faults = {"kill", "stop", "frontend", "partition", "slow"};
  if (o.frontend_bin.empty()) o.frontend_bin = harness::DefaultFrontendBinary();
  if (o.worker_bin.empty()) o.worker_bin = harness::DefaultWorkerBinary();
  if (o.frontend_bin.empty() || o.worker_bin.empty()) {
    std::fprintf(stderr, "archi-bench recovery: archi-frontend/archi-worker not found; build them "
                         "or pass --frontend-bin/--worker-bin\n");
    return 1;
  }
  if (o.fault_at_s + 1 >= o.duration_s) {
    std::fprintf(stderr, "archi-bench recovery: --fault-at-s must be at least 1 s before the end "
                         "of --duration-s\n");
    return 2;
  }
  char tmpl[] = "/tmp/archi-recovery-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("archi-bench recovery: mkdtemp");
    return 1;
  }
  const std::string run_dir = tmpl;
  auto fail = [&](const Status& s) {
    std::fprintf(stderr, "archi-bench recovery: %s\n(process logs kept in %s)\n",
                 s.ToString().c_str(), run_dir.c_str());
    return 1;
  };
  if (Status s = MakeDirs(o.out_dir); !s.ok()) return fail(s);
  auto w = MakeWorkload(o, run_dir);
  if (!w.ok()) return fail(w.status());
  const auto t0 = Clock::now();
  const std::string load_before = LoadAverage1();
  std::printf("[recovery] model: %s; faults: %zu; %.0f s of load each, fault at %.1f s\n",
              w->description.c_str(), o.faults.size(), o.duration_s, o.fault_at_s);
  RecoveryBench bench(o, run_dir, *w);
  std::vector<FaultResult> results;
  bool lost_any = false;
  for (const std::string& f : o.faults) {
    auto r = bench.Run(f);
    if (!r.ok()) return fail(r.status());
    lost_any = lost_any || r->lost > 0;
    results.push_back(*r);
  }

  MarkdownTable t({"fault", "load", "detection ms", "cause", "replacement has traffic ms",
                   "back to full throughput ms", "req/s: pre-fault median / lowest bin / last 2 s", "sent",
                   "lost", "failed (codes)", "p99 before ms", "p99 during recovery ms (n)"},
                  {false, false, true, false, true, true, true, true, true, false, true, true});
  std::string csv =
      "fault,load,detect_ms,replacement_ready_ms,traffic_restored_ms,back_full_ms,serve_again_ms,"
      "reassigned_ms,pre_median_per_s,dip_min_per_s,end_median_per_s,sent,ok,lost,failed,p99_before_ms,"
      "p99_during_ms,n_during,skipped\n";
  std::string notes;
  for (const auto& r : results) {
    if (r.skipped) {
      t.AddRow({r.fault, "-", "-", "skipped: " + r.skip_reason, "-", "-", "-", "-", "-", "-", "-",
                "-"});
      csv += r.fault + ",,,,,,,,,,,,,,,,,,1\n";
      continue;
    }
    std::string cause = r.cause.empty() ? (r.fault == "frontend" ? "(coordinator restarted)"
                                                                 : "(nobody declared dead)")
                                        : r.cause;
    if (cause.size() > 60) cause = cause.substr(0, 57) + "...";
    t.AddRow({r.fault, r.load, Ms(r.detect_ms), cause, Ms(r.traffic_ms),
              r.back_full_ms < 0 ? "not within the run" : Ms(r.back_full_ms),
              Fmt("%.0f / %.0f / %.0f", r.pre_median, r.dip_min, r.end_median),
              std::to_string(r.sent),
              std::to_string(r.lost),
              std::to_string(r.failed) + (r.codes.empty() ? "" : " (" + r.codes + ")"),
              Fmt("%.1f", r.p99_before), Fmt("%.1f (%lld)", r.p99_during, (long long)r.n_during)});
    csv += Fmt("%s,%s,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.1f,%.1f,%.1f,%lld,%lld,%lld,%lld,%.2f,%.2f,%lld,0\n",
               r.fault.c_str(), r.load.c_str(), r.detect_ms, r.ready_ms, r.traffic_ms,
               r.back_full_ms, r.serve_again_ms, r.reassigned_ms, r.pre_median, r.dip_min,
               r.end_median,
               (long long)r.sent, (long long)r.ok, (long long)r.lost, (long long)r.failed,
               r.p99_before, r.p99_during, (long long)r.n_during);
    notes += "- " + r.fault + ": " + r.description;
    if (r.fault == "frontend") {
      notes += Fmt("; the first request sent after the kill answered OK %s ms after it; every "
                   "stage re-assigned by the new coordinator %s ms after it; %lld request(s) "
                   "retried by their clients, %lld answered from executions the new frontend "
                   "recovered from its admission log",
                   Ms(r.serve_again_ms).c_str(), Ms(r.reassigned_ms).c_str(),
                   static_cast<long long>(r.retried), static_cast<long long>(r.recovered));
      if (!r.timeline.empty()) notes += "; the new coordinator's events (after the kill): " + r.timeline;
    }
    if (r.ready_ms >= 0) notes += Fmt("; replacement ready %s ms after the fault", Ms(r.ready_ms).c_str());
    notes += "\n";
  }
  std::string md = "## archi-bench recovery\n\n";
  md += Fmt("Generated by `%s` on %s (%.0f s).\n\n", JoinArgs(o.command).c_str(), NowUtc().c_str(),
            MsSince(t0) / 1000);
  md += t.ToString() + "\n" + notes;
  md += Fmt("\n- model: %s; 3 stages, replicas 1-2-1 + 1 idle worker; max_batch %d; "
            "--extra-compute-ms %lld per micro-batch; heartbeat interval %d ms, timeout %d ms\n",
            w->description.c_str(), o.batch, static_cast<long long>(o.extra_compute_ms),
            o.heartbeat_interval_ms, o.heartbeat_timeout_ms);
  md += Fmt("- each fault on a fresh cluster; %.0f s of load after a %.1f s warm-up; fault at "
            "%.1f s; throughput bins of 500 ms; pre-fault median = the bins of the 2 s before the "
            "fault; back to full throughput = end of the first bin at >= 90%% of the pre-fault "
            "median after the throughput first fell below it (0: it never did); p99 during recovery = OK requests in flight between the fault and that "
            "point (1 s when there was no dip); lost = no answer by deadline + grace, failed = "
            "an error answer\n",
            o.duration_s, kWarmupS, o.fault_at_s);
  md += Fmt("- machine: %s; load average %s at the start, %s at the end\n",
            DescribeMachine(GetMachineInfo()).c_str(), load_before.c_str(),
            LoadAverage1().c_str());
  for (const auto& p : bench.plots()) {
    md += "\n![" + fs::path(p).stem().string() + "](bench/" + fs::path(p).filename().string() + ")\n";
  }
  std::printf("\n%s", md.c_str());
  if (Status s = WriteFile(o.out_dir + "/recovery.md", md); !s.ok()) return fail(s);
  if (Status s = WriteFile(o.out_dir + "/recovery.csv", csv); !s.ok()) return fail(s);
  std::printf("\n[recovery] wrote %s/recovery.{md,csv}, recovery_<fault>.{csv,png,gp}, "
              "recovery_<fault>_requests.csv (%.0f s)\n",
              o.out_dir.c_str(), MsSince(t0) / 1000);
  if (!o.keep_logs) {
    std::error_code ec;
    fs::remove_all(run_dir, ec);
  } else {
    std::printf("[recovery] process logs: %s\n", run_dir.c_str());
  }
  return 0;
}

}  // namespace archi::bench
