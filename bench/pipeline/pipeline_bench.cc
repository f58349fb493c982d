#include "bench/pipeline/pipeline_bench.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "bench/harness/coordinated_cluster.h"
#include "bench/harness/load_generator.h"
#include "bench/harness/local_cluster.h"
#include "runtime/core/deadline.h"
#include "runtime/core/params.h"
#include "runtime/model/bert.h"
#include "runtime/model/model.h"
#include "runtime/model/wordpiece.h"

#ifndef ARCHI_MINILM_DEFAULT_DIR
#define ARCHI_MINILM_DEFAULT_DIR ""
#endif
#ifndef ARCHI_SOURCE_DIR
#define ARCHI_SOURCE_DIR ""
#endif

namespace archi::bench {
namespace {

namespace fs = std::filesystem;
using harness::LoadGenerator;
using harness::LoadInput;
using harness::LoadOptions;
using harness::LoadReport;
using harness::LocalCluster;
using harness::LocalClusterOptions;

const char* const kTexts[] = {
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner while people walk by.",
    "How do I reset my password if I no longer have access to my email account?",
    "The restaurant near the station serves excellent pasta but the service is slow.",
    "Scientists have discovered a new species of frog in the rainforests of Peru.",
    "Please send me the quarterly report before the meeting on Thursday.",
    "The train to Berlin was delayed by forty minutes because of a signal failure.",
    "She finished the marathon in under four hours despite the heat.",
    "Which programming language should I learn first for data analysis?",
    "The museum will be closed for renovation until the end of next year.",
    "Heavy rain is expected across the northern regions this weekend.",
    "My laptop battery drains quickly even when the screen brightness is low.",
    "The committee approved the new budget after a long debate.",
    "Children were playing football in the park until the sun went down.",
    "Can you recommend a good book about the history of mathematics?",
    "The company announced record profits and a plan to hire more engineers.",
};

// The model a run serves, and the requests it sends.
struct Workload {
  std::string model_dir;
  std::string description;  // for the report
  int64_t num_layers = 0;
  std::vector<LoadInput> inputs;          // what the load generator sends
  std::vector<std::vector<int32_t>> ids;  // the same requests as token ids (reference)
};

Result<Workload> MakeWorkload(const PipelineOptions& o, const std::string& run_dir) {
  Workload w;
  std::string dir = o.model_dir;
  if (dir.empty() && !o.gen_model) {
    for (const std::string& cand : {std::string(ARCHI_MINILM_DEFAULT_DIR),
                                    std::string(ARCHI_SOURCE_DIR) + "/build/models/minilm"}) {
      if (!cand.empty() && fs::exists(cand + "/model.safetensors")) {
        dir = cand;
        break;
      }
    }
  }
  if (dir.empty()) {
    // A generated model with MiniLM's shape (smaller for --quick); requests are token ids.
    model::ModelConfig c;
    c.vocab_size = 1000;
    c.hidden_size = o.quick ? 64 : 384;
    c.num_layers = 6;
    c.num_heads = o.quick ? 4 : 12;
    c.num_kv_heads = c.num_heads;
    c.intermediate_size = o.quick ? 256 : 1536;
    c.max_positions = 128;
    c.type_vocab_size = 2;
    dir = run_dir + "/gen_model";
    ARCHI_RETURN_IF_ERROR(model::WriteRandomModel(dir, c, 7));
    w.description = "generated BERT model (" + std::to_string(c.num_layers) +
                    " layers, H=" + std::to_string(c.hidden_size) +
                    ", token-id requests of 10..24 ids)";
    std::mt19937 rng(11);
    for (int i = 0; i < 16; ++i) {
      std::vector<int32_t> seq(static_cast<size_t>(10 + (i * 7) % 15));
      for (int32_t& id : seq) id = static_cast<int32_t>(rng() % 999 + 1);
      w.ids.push_back(seq);
      w.inputs.push_back(LoadInput::Ids(seq));
    }
  } else {
    const bool has_vocab = fs::exists(dir + "/vocab.txt");
    if (has_vocab) {
      ARCHI_ASSIGN_OR_RETURN(auto tok, model::WordPieceTokenizer::Load(dir + "/vocab.txt"));
      for (const char* t : kTexts) {
        ARCHI_ASSIGN_OR_RETURN(auto ids, tok->Encode(t));
        w.ids.push_back(std::move(ids));
        w.inputs.push_back(LoadInput::Text(t));
      }
      w.description = fs::path(dir).filename().string() + " (" + dir +
                      "), text requests (16 sentences, tokenised by the frontend)";
    } else {
      for (int i = 0; i < 16; ++i) {
        std::vector<int32_t> seq(static_cast<size_t>(10 + i));
        for (size_t k = 0; k < seq.size(); ++k)
          seq[k] = static_cast<int32_t>(1 + (i * 31 + k) % 90);
        w.ids.push_back(seq);
        w.inputs.push_back(LoadInput::Ids(seq));
      }
      w.description = dir + " (no vocab.txt: token-id requests)";
    }
  }
  w.model_dir = fs::absolute(dir).string();
  ARCHI_ASSIGN_OR_RETURN(auto m, model::Model::Load(w.model_dir, {0, 0 + 1}));
  w.num_layers = m->config().num_layers;
  return w;
}

// Consecutive layer ranges, as even as integer boundaries allow.
std::vector<std::pair<int64_t, int64_t>> SplitLayers(int64_t layers, int stages) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int s = 0; s < stages; ++s) out.emplace_back(layers * s / stages, layers * (s + 1) / stages);
  return out;
}

Result<std::string> WritePlan(const std::string& dir, const std::string& name, const Workload& w,
                              int stages, int batch, int64_t deadline_ms) {
  std::string yaml = "pipeline: " + name + "\nmodel: " + w.model_dir + "\nstages:\n";
  for (auto [b, e] : SplitLayers(w.num_layers, stages)) {
    yaml += Fmt("  - layers: [%lld, %lld]\n", static_cast<long long>(b), static_cast<long long>(e));
  }
  yaml +=
      Fmt("batching:\n  max_batch: %d\n  max_wait_ms: 5\nrequest:\n  default_timeout_ms: %lld\n",
          batch, static_cast<long long>(deadline_ms));
  const std::string path = dir + "/" + name + ".yaml";
  ARCHI_RETURN_IF_ERROR(WriteFile(path, yaml));
  return path;
}

std::string Layout(int stages, const std::vector<int>& replicas) {
  std::string s;
  for (int i = 0; i < stages; ++i)
    s += (i ? "-" : "") + std::to_string(replicas[static_cast<size_t>(i)]);
  return s;
}

// ---- in-process reference ----

struct Reference {
  double batch_ms_p50 = 0;  // one Encode of `batch` sequences
  double per_s = 0;         // sequences per second
  int iters = 0;
};

Result<Reference> MeasureReference(const Workload& w, int batch, int threads, double seconds) {
  ARCHI_ASSIGN_OR_RETURN(auto model, model::Model::Load(w.model_dir));
  ARCHI_ASSIGN_OR_RETURN(auto enc, model::BertEncoder::Create(model, {.num_threads = threads}));
  std::vector<std::vector<std::vector<int32_t>>> batches;
  for (size_t i = 0; i < w.ids.size(); i += static_cast<size_t>(batch)) {
    std::vector<std::vector<int32_t>> b;
    for (int j = 0; j < batch; ++j) b.push_back(w.ids[(i + static_cast<size_t>(j)) % w.ids.size()]);
    batches.push_back(std::move(b));
  }
  for (int i = 0; i < 2; ++i) ARCHI_RETURN_IF_ERROR(enc->Encode(batches[0]).status());  // warm-up
  std::vector<double> ms;
  const auto t0 = Clock::now();
  while (MsSince(t0) < seconds * 1000.0 || ms.size() < 3) {
    const auto t = Clock::now();
    ARCHI_RETURN_IF_ERROR(enc->Encode(batches[ms.size() % batches.size()]).status());
    ms.push_back(MsSince(t));
  }
  Reference r;
  r.iters = static_cast<int>(ms.size());
  r.batch_ms_p50 = harness::Percentile(ms, 50);
  r.per_s = static_cast<double>(ms.size()) * batch / (MsSince(t0) / 1000.0);
  return r;
}

// ---- running load against a cluster ----

LoadOptions BaseLoad(const std::string& target, const Workload& w, const PipelineOptions& o) {
  LoadOptions l;
  l.target = target;
  l.inputs = w.inputs;
  l.deadline_ms = o.deadline_ms;
  l.grace_ms = 2'000;
  l.mode = LoadOptions::Mode::kClosed;
  return l;
}

Result<LoadReport> RunClosed(const std::string& target, const Workload& w, const PipelineOptions& o,
                             int concurrency, double seconds) {
  LoadOptions l = BaseLoad(target, w, o);
  l.concurrency = concurrency;
  {  // warm-up, not recorded: connections, first batches, page faults in the workers
    LoadOptions warm = l;
    warm.max_requests = 2 * concurrency;
    ARCHI_ASSIGN_OR_RETURN(auto g, LoadGenerator::Create(warm));
    ARCHI_RETURN_IF_ERROR(g->Run().status());
  }
  l.duration_s = seconds;
  ARCHI_ASSIGN_OR_RETURN(auto g, LoadGenerator::Create(l));
  return g->Run();
}

LocalClusterOptions ClusterOptions(const PipelineOptions& o, const std::string& plan,
                                   const std::string& work_dir, std::vector<int> replicas) {
  LocalClusterOptions c;
  c.frontend_bin = o.frontend_bin;
  c.worker_bin = o.worker_bin;
  c.plan_path = plan;
  c.work_dir = work_dir;
  c.replicas = std::move(replicas);
  c.worker_threads = o.worker_threads;
  c.env = {{"ARCHI_LOG_LEVEL", o.log_level}};
  c.start_timeout_ms = 60'000;
  return c;
}

std::string ExitsSummary(const std::vector<std::string>& exits, bool* all_clean) {
  std::string s;
  for (const std::string& e : exits) {
    s += (s.empty() ? "" : "; ") + e;
    // Killed replicas end with signal 9 on purpose; everything else must exit 0 on SIGTERM.
    if (e.find("exit 0") == std::string::npos && e.find("signal 9") == std::string::npos) {
      *all_clean = false;
    }
  }
  return s;
}

// ---- sweep ----

struct SweepRow {
  int stages = 0;
  int mid_replicas = 0;
  std::string layout;
  harness::LoadSummary tp;   // throughput load
  harness::LoadSummary lat;  // low load
  int concurrency = 0;
  std::string exits;
  int64_t lost_all = -1, errors_all = 0;  // over every round
};

class PipelineBench {
 public:
  PipelineBench(PipelineOptions o, std::string run_dir, Workload w)
      : o_(std::move(o)), run_dir_(std::move(run_dir)), w_(std::move(w)) {}

  Status Sweep(std::string* md);
  Status Timeline(bool live, std::string* md, bool* lost_any);
  // The coordinator's repair, live: see pipeline_bench.h ("demo").
  Status CoordinatedDemo(bool* lost_any);

  bool processes_clean() const { return processes_clean_; }

 private:
  const PipelineOptions o_;
  const std::string run_dir_;
  const Workload w_;
  bool processes_clean_ = true;
};

Status PipelineBench::Sweep(std::string* md) {
  const double secs = o_.duration_s > 0 ? o_.duration_s : (o_.quick ? 1.0 : 4.0);
  std::vector<std::pair<int, int>> configs;  // (stages, middle replicas)
  const int max_stages = static_cast<int>(std::min<int64_t>(4, w_.num_layers));
  for (int s = 1; s <= max_stages; ++s) {
    configs.emplace_back(s, 1);
    if (s >= 3) configs.emplace_back(s, 2);
  }
  if (o_.quick) configs = {{1, 1}, {3, 2}};

  // Rounds: every configuration (and the reference) once per round; each cell keeps its best
  // round (other processes on a shared machine only ever slow a run down).
  const int rounds = o_.rounds > 0 ? o_.rounds : (o_.quick ? 1 : 2);
  Reference ref, ref_all;
  int ref_all_threads = 0;
  std::vector<SweepRow> rows;
  for (int round = 0; round < rounds; ++round) {
    ARCHI_ASSIGN_OR_RETURN(Reference r,
                           MeasureReference(w_, o_.batch, o_.worker_threads, o_.quick ? 0.5 : 3.0));
    std::printf(
        "[pipeline] round %d reference (whole model in this process, %d thread%s): %.1f "
        "requests/s, a batch of %d in %.2f ms (p50 of %d)\n",
        round + 1, o_.worker_threads, o_.worker_threads == 1 ? "" : "s", r.per_s, o_.batch,
        r.batch_ms_p50, r.iters);
    std::fflush(stdout);
    // The same process with every core: what one process makes of this machine.
    const int all = GetMachineInfo().nproc;
    if (all > o_.worker_threads) {
      ARCHI_ASSIGN_OR_RETURN(Reference ra,
                             MeasureReference(w_, o_.batch, all, o_.quick ? 0.5 : 3.0));
      std::printf(
          "[pipeline] round %d reference with %d threads: %.1f requests/s, a batch of %d "
          "in %.2f ms\n",
          round + 1, all, ra.per_s, o_.batch, ra.batch_ms_p50);
      ref_all.per_s = std::max(ref_all.per_s, ra.per_s);
      if (round == 0 || ra.batch_ms_p50 < ref_all.batch_ms_p50)
        ref_all.batch_ms_p50 = ra.batch_ms_p50;
      ref_all_threads = all;
    }
    if (round == 0 || r.per_s > ref.per_s) ref.per_s = r.per_s;
    if (round == 0 || r.batch_ms_p50 < ref.batch_ms_p50) ref.batch_ms_p50 = r.batch_ms_p50;
    ref.iters += r.iters;
    for (size_t c = 0; c < configs.size(); ++c) {
      const auto [stages, mid] = configs[c];
      std::vector<int> replicas(static_cast<size_t>(stages), 1);
      for (int s = 1; s + 1 < stages; ++s) replicas[static_cast<size_t>(s)] = mid;
      int workers = 0;
      for (int n : replicas) workers += n;
      SweepRow row;
      row.stages = stages;
      row.mid_replicas = stages >= 3 ? mid : 0;
      row.layout = Layout(stages, replicas);
      row.concurrency = o_.batch * (workers + 1);
      const std::string name = Fmt("sweep%d-%d-r%d", stages, mid, round + 1);
      ARCHI_ASSIGN_OR_RETURN(std::string plan,
                             WritePlan(run_dir_, name, w_, stages, o_.batch, o_.deadline_ms));
      ARCHI_ASSIGN_OR_RETURN(auto cluster, LocalCluster::Start(ClusterOptions(
                                               o_, plan, run_dir_ + "/" + name, replicas)));
      ARCHI_ASSIGN_OR_RETURN(LoadReport tp,
                             RunClosed(cluster->frontend_address(), w_, o_, row.concurrency, secs));
      ARCHI_ASSIGN_OR_RETURN(LoadReport lat,
                             RunClosed(cluster->frontend_address(), w_, o_, o_.batch, secs));
      row.tp = tp.summary;
      row.lat = lat.summary;
      row.exits = ExitsSummary(cluster->Stop(), &processes_clean_);
      std::printf("[pipeline] round %d, %d stage%s (workers per stage %s): %s | low load: %s\n",
                  round + 1, stages, stages == 1 ? "" : "s", row.layout.c_str(),
                  row.tp.ToString().c_str(), row.lat.ToString().c_str());
      std::fflush(stdout);
      if (round == 0) {
        rows.push_back(std::move(row));
        continue;
      }
      SweepRow& best = rows[c];
      const int64_t lost = best.tp.lost + best.lat.lost + row.tp.lost + row.lat.lost;
      const int64_t errors = (best.tp.sent - best.tp.ok - best.tp.lost) +
                             (best.lat.sent - best.lat.ok - best.lat.lost) +
                             (row.tp.sent - row.tp.ok - row.tp.lost) +
                             (row.lat.sent - row.lat.ok - row.lat.lost);
      if (row.tp.throughput > best.tp.throughput) best.tp = row.tp;
      if (row.lat.ok > 0 && (best.lat.ok == 0 || row.lat.p50_ms < best.lat.p50_ms))
        best.lat = row.lat;
      best.lost_all = lost;
      best.errors_all = errors;
    }
  }
  for (SweepRow& r : rows) {
    if (r.lost_all < 0) {  // one round: the counts of that round
      r.lost_all = r.tp.lost + r.lat.lost;
      r.errors_all = (r.tp.sent - r.tp.ok - r.tp.lost) + (r.lat.sent - r.lat.ok - r.lat.lost);
    }
  }

  // The 1-stage low-load latency is the base of the per-boundary cost.
  double base_p50 = 0;
  for (const SweepRow& r : rows) {
    if (r.stages == 1) base_p50 = r.lat.p50_ms;
  }
  MarkdownTable t({"stages", "workers per stage", "outstanding", "requests/s", "x in-process",
                   "p50 ms", "p99 ms", "low-load p50 ms", "low-load p99 ms", "added vs in-process",
                   "per boundary", "lost", "errors"},
                  {true, false, true, true, true, true, true, true, true, true, true, true, true});
  std::string csv =
      "stages,workers_per_stage,concurrency,requests_per_s,ratio_in_process,p50_ms,p99_ms,"
      "lowload_p50_ms,lowload_p99_ms,added_pct,per_boundary_pct,lost,errors,"
      "ref_requests_per_s,ref_batch_ms,ref_all_cores_requests_per_s\n";
  for (const SweepRow& r : rows) {
    const double added = (r.lat.p50_ms - ref.batch_ms_p50) / ref.batch_ms_p50 * 100.0;
    const bool has_boundary = r.stages > 1 && base_p50 > 0;
    const double per_boundary =
        has_boundary ? (r.lat.p50_ms - base_p50) / (r.stages - 1) / ref.batch_ms_p50 * 100.0 : 0;
    const int64_t errors = r.errors_all;
    t.AddRow({std::to_string(r.stages), r.layout, std::to_string(r.concurrency),
              Fmt("%.1f", r.tp.throughput), Fmt("%.2f", r.tp.throughput / ref.per_s),
              Fmt("%.1f", r.tp.p50_ms), Fmt("%.1f", r.tp.p99_ms), Fmt("%.1f", r.lat.p50_ms),
              Fmt("%.1f", r.lat.p99_ms), Fmt("%+.0f%%", added),
              has_boundary ? Fmt("%+.1f%%", per_boundary) : "-", std::to_string(r.lost_all),
              std::to_string(errors)});
    csv += Fmt("%d,%s,%d,%.2f,%.3f,%.2f,%.2f,%.2f,%.2f,%.1f,%.2f,%lld,%lld,%.2f,%.3f,%.2f\n",
               r.stages, r.layout.c_str(), r.concurrency, r.tp.throughput,
               r.tp.throughput / ref.per_s, r.tp.p50_ms, r.tp.p99_ms, r.lat.p50_ms, r.lat.p99_ms,
               added, per_boundary, static_cast<long long>(r.lost_all),
               static_cast<long long>(errors), ref.per_s, ref.batch_ms_p50, ref_all.per_s);
  }
  const MachineInfo mi = GetMachineInfo();
  *md += "### Sweep: stages x replicas vs the whole model in one process\n\n";
  *md += Fmt("- model: %s; max_batch %d, max_wait_ms 5; %d thread per worker; closed loop\n",
             w_.description.c_str(), o_.batch, o_.worker_threads);
  *md +=
      Fmt("- %d round%s; each cell is its best round (highest requests/s, lowest low-load p50); "
          "lost and errors count every round\n",
          rounds, rounds == 1 ? "" : "s");
  *md += Fmt(
      "- reference (same run, this process, %d thread%s): %.1f requests/s, a batch of %d "
      "in %.2f ms (p50)\n",
      o_.worker_threads, o_.worker_threads == 1 ? "" : "s", ref.per_s, o_.batch, ref.batch_ms_p50);
  if (ref_all_threads > 0) {
    *md +=
        Fmt("- the same process with all %d threads (not the ratio's base; what one process makes "
            "of every core): %.1f requests/s, a batch of %d in %.2f ms\n",
            ref_all_threads, ref_all.per_s, o_.batch, ref_all.batch_ms_p50);
  }
  *md +=
      Fmt("- throughput load: 8 x (workers + 1) requests outstanding for %.1f s; low load: %d "
          "outstanding (one micro-batch in flight) for %.1f s\n",
          secs, o_.batch, secs);
  *md +=
      "- added vs in-process: low-load p50 over the in-process batch latency; per boundary: "
      "(low-load p50 - the 1-stage low-load p50) / (stages - 1), as % of the in-process batch "
      "latency\n";
  *md += Fmt("- machine: %s; load average %s\n\n", DescribeMachine(mi).c_str(),
             LoadAverage1().c_str());
  *md += t.ToString() + "\n";
  std::printf("\n%s\n", t.ToString().c_str());

  ARCHI_RETURN_IF_ERROR(WriteFile(o_.out_dir + "/pipeline_sweep.csv", csv));
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  const std::string gp =
      Fmt("# Generated by archi-bench pipeline; regenerate with: gnuplot pipeline_sweep.gp\n"
          "set terminal %s size 900,520\n"
          "set output 'pipeline_sweep.png'\n"
          "set datafile separator ','\n"
          "set style data histograms\n"
          "set style fill solid 0.8 border -1\n"
          "set boxwidth 0.7\n"
          "set grid ytics\n"
          "set key top right\n"
          "set yrange [0:*]\n"
          "set xlabel 'workers per stage'\n"
          "set ylabel 'requests/s'\n"
          "set title \"archi-bench pipeline sweep (%s, nproc=%d)\" noenhanced\n"
          "plot 'pipeline_sweep.csv' every ::1 using 4:xtic(2) title 'pipeline (closed loop)', \\\n"
          "     '' every ::1 using 14 with lines lw 2 lc rgb 'red' title 'whole model in one "
          "process, %d thread%s'%s\n",
          term.c_str(), mi.cpu_model.c_str(), mi.nproc, o_.worker_threads,
          o_.worker_threads == 1 ? "" : "s",
          ref_all_threads > 0
              ? Fmt(", \\\n     '' every ::1 using 16 with lines lw 2 dt 2 lc rgb 'black' title "
                    "'whole model in one process, %d threads'",
                    ref_all_threads)
                    .c_str()
              : "");
  if (WriteFile(o_.out_dir + "/pipeline_sweep.gp", gp).ok()) {
    if (Status s = RunGnuplot(o_.out_dir + "/pipeline_sweep.gp"); !s.ok()) {
      std::fprintf(stderr, "archi-bench pipeline: %s\n", s.ToString().c_str());
    }
  }
  return Status::Ok();
}

// ---- timeline / demo ----

double Median(std::vector<int64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[v.size() / 2]);
}

Status PipelineBench::Timeline(bool live, std::string* md, bool* lost_any) {
  const double T = o_.duration_s > 0 ? o_.duration_s : (o_.quick ? 4.5 : 15.0);
  const std::vector<int> replicas = {1, 2, 1};
  const int concurrency = o_.batch * 5;
  const std::string name = live ? "demo" : "timeline";
  ARCHI_ASSIGN_OR_RETURN(std::string plan,
                         WritePlan(run_dir_, name, w_, 3, o_.batch, o_.deadline_ms));
  std::printf(
      "[pipeline] %s: starting archi-frontend and 4 workers (3 stages, layers %s; 2 "
      "replicas of stage 1)...\n",
      name.c_str(),
      [&] {
        std::string s;
        for (auto [b, e] : SplitLayers(w_.num_layers, 3))
          s += Fmt("%s[%lld,%lld)", s.empty() ? "" : " ", static_cast<long long>(b),
                   static_cast<long long>(e));
        return s;
      }()
          .c_str());
  std::fflush(stdout);
  const auto start_t = Clock::now();
  ARCHI_ASSIGN_OR_RETURN(
      auto cluster, LocalCluster::Start(ClusterOptions(o_, plan, run_dir_ + "/" + name, replicas)));
  std::printf("[pipeline] serving in %.0f ms: frontend %s (store %s), workers %s\n",
              MsSince(start_t), cluster->frontend_address().c_str(),
              cluster->store_address().c_str(),
              [&] {
                std::string s;
                for (const auto& id : cluster->worker_ids()) s += (s.empty() ? "" : " ") + id;
                return s;
              }()
                  .c_str());
  std::printf(
      "[pipeline] closed-loop load, %d outstanding, %.1f s; kill -9 s1-r0 at %.1f s, "
      "new stage-1 replica at %.1f s\n",
      concurrency, T, T / 3, 2 * T / 3);
  std::fflush(stdout);

  LoadOptions l = BaseLoad(cluster->frontend_address(), w_, o_);
  l.concurrency = concurrency;
  {
    // Warm-up, not recorded: the first seconds of a fresh pipeline run slower (first batches,
    // page faults, thread start-up); the levels before the kill must be steady.
    LoadOptions warm = l;
    warm.duration_s = o_.quick ? 0.5 : 3.0;
    ARCHI_ASSIGN_OR_RETURN(auto g, LoadGenerator::Create(warm));
    ARCHI_ASSIGN_OR_RETURN(LoadReport wr, g->Run());
    std::printf("[pipeline] warm-up %.1f s: %s\n", warm.duration_s, wr.summary.ToString().c_str());
    std::fflush(stdout);
  }
  l.duration_s = T;
  ARCHI_ASSIGN_OR_RETURN(auto gen, LoadGenerator::Create(l));
  ARCHI_RETURN_IF_ERROR(gen->Start());
  const auto t0 = gen->start_time();
  auto elapsed_ms = [&] { return MsSince(t0); };

  const std::string victim = "s1-r0";
  double kill_ms = -1, gone_ms = -1, add_ms = -1, ready_ms = -1;
  std::string added_id;
  double next_print = 500;
  int64_t last_ok = 0;
  std::string events;  // printed with the next live line
  while (elapsed_ms() < T * 1000.0) {
    std::this_thread::sleep_for(Millis(50));
    const double now = elapsed_ms();
    if (kill_ms < 0 && now >= T * 1000.0 / 3) {
      harness::Process* p = cluster->process(victim);
      const int pid = p ? p->Pid() : -1;
      ARCHI_RETURN_IF_ERROR(cluster->Kill(victim, SIGKILL));
      kill_ms = elapsed_ms();
      events += Fmt("  << kill -9 %s (pid %d)", victim.c_str(), pid);
    }
    if (kill_ms >= 0 && gone_ms < 0) {
      auto st = cluster->GetStatus(Deadline::AfterMs(200));
      if (st.ok()) {
        const harness::MemberInfo* m = st->Find(victim);
        if (m == nullptr || m->state == "gone") {
          gone_ms = elapsed_ms();
          events += Fmt("  << frontend: %s gone (%.0f ms after the kill)", victim.c_str(),
                        gone_ms - kill_ms);
        }
      }
    }
    if (add_ms < 0 && now >= 2 * T * 1000.0 / 3) {
      ARCHI_ASSIGN_OR_RETURN(added_id, cluster->SpawnWorker(1));
      add_ms = elapsed_ms();
      events += "  << started " + added_id + " (stage 1)";
    }
    if (add_ms >= 0 && ready_ms < 0) {
      auto st = cluster->GetStatus(Deadline::AfterMs(200));
      if (st.ok()) {
        const harness::MemberInfo* m = st->Find(added_id);
        if (m != nullptr && m->state == "ready") {
          ready_ms = elapsed_ms();
          events +=
              Fmt("  << %s ready (%.0f ms after its start)", added_id.c_str(), ready_ms - add_ms);
        }
      }
      if (harness::Process* p = cluster->process(added_id); p != nullptr) {
        if (auto e = p->TryWait()) {
          return UnavailableError("new replica " + added_id + " ended with " + e->ToString() +
                                  "; log tail:\n" + p->LogTail(3000));
        }
      }
    }
    if (live && elapsed_ms() >= next_print) {
      const auto p = gen->GetProgress();
      std::printf("t=%5.1fs  %6.1f req/s  ok %6lld  errors %lld  outstanding %3lld%s\n",
                  next_print / 1000.0, static_cast<double>(p.ok - last_ok) * 2.0,
                  static_cast<long long>(p.ok), static_cast<long long>(p.errors),
                  static_cast<long long>(p.outstanding), events.c_str());
      std::fflush(stdout);
      events.clear();
      last_ok = p.ok;
      next_print += 500;
    } else if (!live && !events.empty()) {
      std::printf("[pipeline] t=%.2fs%s\n", elapsed_ms() / 1000.0, events.c_str());
      std::fflush(stdout);
      events.clear();
    }
  }
  gen->Stop();
  ARCHI_ASSIGN_OR_RETURN(LoadReport rep,
                         gen->Wait(Deadline::AfterMs(o_.deadline_ms + l.grace_ms + 10'000)));
  if (ready_ms < 0 && !added_id.empty()) {
    // Not ready within the run: wait a little longer so the report says how long it took.
    if (cluster->WaitMemberState(added_id, "ready", Deadline::AfterMs(20'000)).ok()) {
      ready_ms = elapsed_ms();
    }
  }
  auto final_status = cluster->GetStatus();
  const std::vector<std::string> exits = cluster->Stop();
  bool clean = true;
  const std::string exits_s = ExitsSummary(exits, &clean);
  processes_clean_ = processes_clean_ && clean;

  // Throughput per 100 ms and the levels around the events.
  const std::vector<int64_t> bins = rep.Timeline(100);
  auto bins_in = [&](double from_ms, double to_ms) {
    std::vector<int64_t> v;
    for (size_t i = 0; i < bins.size(); ++i) {
      const double b = static_cast<double>(i) * 100;
      if (b >= from_ms && b + 100 <= to_ms) v.push_back(bins[i]);
    }
    return v;
  };
  const double T_ms = T * 1000.0;
  const double pre = Median(bins_in(T_ms / 6, kill_ms)) * 10;
  const double post = Median(bins_in((kill_ms + add_ms) / 2, add_ms)) * 10;
  const double after = ready_ms >= 0 ? Median(bins_in(ready_ms + 500, T_ms)) * 10 : 0;
  // Recovery: from the kill to the end of the first 100 ms bin (starting at or after the kill)
  // that is back at >= 90% of the post-failure steady level.
  double recovery_ms = -1, min_after_kill = 1e18;
  for (size_t i = static_cast<size_t>(std::ceil(kill_ms / 100)); i < bins.size(); ++i) {
    const double b = static_cast<double>(i) * 100;
    if (b >= add_ms) break;
    min_after_kill = std::min(min_after_kill, static_cast<double>(bins[i]) * 10);
    if (recovery_ms < 0 && static_cast<double>(bins[i]) * 10 >= 0.9 * post) {
      recovery_ms = b + 100 - kill_ms;
    }
  }
  const harness::LoadSummary& s = rep.summary;
  *lost_any = s.lost > 0;

  std::string sum;
  sum += Fmt("- requests: %lld sent, %lld OK, lost %lld; by code:", static_cast<long long>(s.sent),
             static_cast<long long>(s.ok), static_cast<long long>(s.lost));
  for (const auto& [code, n] : s.by_code)
    sum += Fmt(" %s=%lld", code.c_str(), static_cast<long long>(n));
  sum +=
      Fmt("\n- latency (OK requests): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; "
          "%lld answered after a re-send\n",
          s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, static_cast<long long>(s.resent));
  sum +=
      Fmt("- throughput: %.1f requests/s overall; steady levels (median of 100 ms bins): "
          "%.0f/s before the kill, %.0f/s after it (one stage-1 replica), %.0f/s with the new "
          "replica\n",
          s.throughput, pre, post, after);
  sum +=
      Fmt("- kill -9 %s at %.2f s: lowest 100 ms bin before the new replica %.0f/s; recovery "
          "(kill to the first bin back at >= 90%% of the post-failure level): %s\n",
          victim.c_str(), kill_ms / 1000, min_after_kill >= 1e17 ? 0.0 : min_after_kill,
          recovery_ms < 0 ? "not reached" : Fmt("%.0f ms", recovery_ms).c_str());
  sum += Fmt("- frontend marked %s gone: %s\n", victim.c_str(),
             gone_ms < 0 ? "not seen during the run"
                         : Fmt("%.0f ms after the kill", gone_ms - kill_ms).c_str());
  sum += Fmt("- new replica %s started at %.2f s, ready %s\n", added_id.c_str(), add_ms / 1000,
             ready_ms < 0 ? "never" : Fmt("%.0f ms later", ready_ms - add_ms).c_str());
  if (final_status.ok()) {
    sum +=
        Fmt("- frontend counters: admitted %llu, completed %llu, failed %llu, "
            "deadline_exceeded %llu, rejected %llu, resent_batches %llu, duplicates_dropped "
            "%llu, pending %llu\n",
            static_cast<unsigned long long>(final_status->admitted),
            static_cast<unsigned long long>(final_status->completed),
            static_cast<unsigned long long>(final_status->failed),
            static_cast<unsigned long long>(final_status->deadline_exceeded),
            static_cast<unsigned long long>(final_status->rejected),
            static_cast<unsigned long long>(final_status->resent_batches),
            static_cast<unsigned long long>(final_status->duplicates_dropped),
            static_cast<unsigned long long>(final_status->pending));
  }
  sum += "- process exits after SIGTERM: " + exits_s + "\n";

  std::printf("\n== %s summary ==\n%s", name.c_str(), sum.c_str());
  std::fflush(stdout);

  if (!live) {
    const MachineInfo mi = GetMachineInfo();
    *md += "### Timeline: kill -9 a middle replica, then add one\n\n";
    *md +=
        Fmt("- model: %s; 3 stages, workers per stage 1-2-1; closed loop, %d outstanding, "
            "%.1f s; machine: %s; load average %s\n",
            w_.description.c_str(), concurrency, T, DescribeMachine(mi).c_str(),
            LoadAverage1().c_str());
    *md += sum + "\n![pipeline timeline](pipeline_timeline.png)\n\n";
    ARCHI_RETURN_IF_ERROR(WriteFile(o_.out_dir + "/pipeline_timeline.csv", rep.TimelineCsv(100)));
    ARCHI_RETURN_IF_ERROR(WriteFile(o_.out_dir + "/pipeline_requests.csv", rep.RecordsCsv()));
    std::string term = GnuplotPngTerminal();
    if (term.empty()) term = "png";
    std::string arrows;
    auto vline = [&](double ms, const std::string& label, const char* color, double y) {
      if (ms < 0) return;
      arrows +=
          Fmt("set arrow from %.3f, graph 0 to %.3f, graph 1 nohead lw 2 dt 2 lc rgb '%s'\n"
              "set label \"%s\" at %.3f, graph %.2f offset 0.5,0 tc rgb '%s' noenhanced\n",
              ms / 1000, ms / 1000, color, label.c_str(), ms / 1000, y, color);
    };
    vline(kill_ms, "kill -9 " + victim, "red", 0.96);
    vline(add_ms, "start " + added_id, "dark-green", 0.96);
    vline(ready_ms, added_id + " ready", "blue", 0.89);
    const std::string gp = Fmt(
        "# Generated by archi-bench pipeline; regenerate with: gnuplot pipeline_timeline.gp\n"
        "set terminal %s size 1100,520\n"
        "set output 'pipeline_timeline.png'\n"
        "set datafile separator ','\n"
        "set grid ytics\n"
        "set key bottom right\n"
        "set xlabel 'seconds since the load started'\n"
        "set ylabel 'completed requests/s (100 ms bins)'\n"
        "set yrange [0:*]\n"
        "set title \"archi-bench pipeline: 3 stages (1-2-1 workers), kill -9 one middle replica, "
        "then add one (%s, nproc=%d)\" noenhanced\n"
        "%s"
        "plot 'pipeline_timeline.csv' every ::1 using 1:4 with steps lw 2 lc rgb "
        "'#1f77b4' title 'OK answers/s', \\\n"
        "     '' every ::1 using ($1+0.05):($3*10) with impulses lw 3 lc rgb 'red' title "
        "'errors/s'\n",
        term.c_str(), mi.cpu_model.c_str(), mi.nproc, arrows.c_str());
    if (WriteFile(o_.out_dir + "/pipeline_timeline.gp", gp).ok()) {
      if (Status st = RunGnuplot(o_.out_dir + "/pipeline_timeline.gp"); !st.ok()) {
        std::fprintf(stderr, "archi-bench pipeline: %s\n", st.ToString().c_str());
      }
    }
  }
  return Status::Ok();
}


// ---- demo: the coordinator plans and repairs ----

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ClockMs(int64_t unix_ms) {
  const time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  return Fmt("%02d:%02d:%02d.%03d", t.tm_hour, t.tm_min, t.tm_sec,
             static_cast<int>(unix_ms % 1000));
}

Status PipelineBench::CoordinatedDemo(bool* lost_any) {
  const double T = o_.duration_s > 0 ? o_.duration_s : 12.0;
  const int concurrency = o_.batch * 5;
  ARCHI_ASSIGN_OR_RETURN(std::string plan,
                         WritePlan(run_dir_, "demo", w_, 3, o_.batch, o_.deadline_ms));
  harness::CoordinatedClusterOptions co;
  co.frontend_bin = o_.frontend_bin;
  co.worker_bin = o_.worker_bin;
  co.plan_path = plan;
  co.work_dir = run_dir_ + "/demo";
  co.replicas = {1, 2, 1};
  co.idle = 1;
  co.token = "demo-token";
  co.worker_threads = o_.worker_threads;
  co.env = {{"ARCHI_LOG_LEVEL", o_.log_level}};
  // The admission log: requests with an id survive a kill -9 of the frontend.
  // A fresh log each run: ids of an earlier run's requests must not meet this run's inputs.
  std::error_code ec;
  fs::remove_all(run_dir_ + "/demo/frontend-state", ec);
  co.extra_frontend_args = {"--state-dir", run_dir_ + "/demo/frontend-state"};
  std::printf(
      "[demo] archi-frontend (embedded coordinator, --state-dir) + 5 archi-worker --coordinator "
      "processes; the coordinator assigns 1-2-1 replicas to the 3 stages and keeps one idle\n");
  std::fflush(stdout);
  const auto start_t = Clock::now();
  ARCHI_ASSIGN_OR_RETURN(auto cluster, harness::CoordinatedCluster::Start(co));
  ARCHI_ASSIGN_OR_RETURN(auto st0, cluster->GetStatus(Deadline::AfterMs(5000)));
  std::string layout;
  for (const auto& w : st0.workers()) {
    layout += Fmt("%s%s=%s", layout.empty() ? "" : " ", w.worker_id().c_str(),
                  w.stage() >= 0 ? ("s" + std::to_string(w.stage())).c_str() : "idle");
  }
  std::printf("[demo] planned in %.0f ms: %s (coordinator at %s)\n", MsSince(start_t),
              layout.c_str(), cluster->frontend_address().c_str());
  std::printf(
      "[demo] closed-loop load with request ids (clients retry UNAVAILABLE with the same id), %d "
      "outstanding, %.1f s; kill -9 of the frontend at %.1f s (restarted on the same port and "
      "state dir); kill -9 of a stage-1 replica at %.1f s; at %.1f s a new worker joins and "
      "stage 1 is scaled to 3 (archi scale 1 3)\n",
      concurrency, T, T / 4, T / 2, 3 * T / 4);
  std::fflush(stdout);
  const int64_t t_start_unix = UnixMs();

  LoadOptions l = BaseLoad(cluster->frontend_address(), w_, o_);
  l.concurrency = concurrency;
  l.request_id_prefix = "demo-";
  l.max_attempts = 1000;  // bounded by each request's deadline
  l.retry_backoff_ms = 50;
  l.max_retry_backoff_ms = 500;
  l.max_reconnect_backoff_ms = 250;
  {
    LoadOptions warm = l;
    warm.request_id_prefix = "warm-";
    warm.duration_s = 2.0;
    ARCHI_ASSIGN_OR_RETURN(auto g, LoadGenerator::Create(warm));
    ARCHI_ASSIGN_OR_RETURN(LoadReport wr, g->Run());
    std::printf("[demo] warm-up %.1f s: %s\n", warm.duration_s, wr.summary.ToString().c_str());
  }
  l.duration_s = T;
  ARCHI_ASSIGN_OR_RETURN(auto gen, LoadGenerator::Create(l));
  ARCHI_RETURN_IF_ERROR(gen->Start());
  const auto t0 = gen->start_time();
  auto elapsed_ms = [&] { return MsSince(t0); };
  double kill_ms = -1, scale_ms = -1, fe_kill_ms = -1, fe_serving_ms = -1, next_print = 500;
  int64_t last_ok = 0, kill_unix = 0, fe_ok_at_restart = -1;
  std::string events, victim;
  int64_t seen_events_until = UnixMs();
  // The embedded coordinator's events before the frontend's kill die with it: kept here.
  proto::EventsResponse before_fe_kill;
  while (elapsed_ms() < T * 1000.0) {
    std::this_thread::sleep_for(Millis(50));
    if (fe_kill_ms < 0 && elapsed_ms() >= T * 1000.0 / 4) {
      if (auto ev = cluster->GetEvents(Deadline::AfterMs(2000), t_start_unix); ev.ok()) {
        before_fe_kill = std::move(*ev);
      }
      ARCHI_RETURN_IF_ERROR(cluster->Kill("frontend", SIGKILL));
      fe_kill_ms = elapsed_ms();
      ARCHI_RETURN_IF_ERROR(cluster->RestartFrontend(Deadline::AfterMs(30'000)));
      fe_ok_at_restart = gen->GetProgress().ok;
      seen_events_until = 0;  // a new coordinator: its events start afresh
      events += Fmt("  << kill -9 frontend; restarted in %.0f ms", elapsed_ms() - fe_kill_ms);
    }
    if (fe_serving_ms < 0 && fe_ok_at_restart >= 0 && gen->GetProgress().ok > fe_ok_at_restart) {
      fe_serving_ms = elapsed_ms() - fe_kill_ms;
      events += Fmt("  [serving again %.0f ms after the kill]", fe_serving_ms);
    }
    if (kill_ms < 0 && elapsed_ms() >= T * 1000.0 / 2) {
      // The restarted coordinator planned afresh: pick the victim from its current plan.
      ARCHI_ASSIGN_OR_RETURN(auto now_st, cluster->GetStatus(Deadline::AfterMs(5000)));
      for (const auto& w : now_st.workers()) {
        if (victim.empty() && w.stage() == 1 && w.state() == "ready") victim = w.worker_id();
      }
      if (victim.empty()) return UnavailableError("no ready stage-1 replica to kill");
      ARCHI_RETURN_IF_ERROR(cluster->Kill(victim, SIGKILL));
      kill_ms = elapsed_ms();
      kill_unix = UnixMs();
      events += "  << kill -9 " + victim;
    }
    if (scale_ms < 0 && elapsed_ms() >= 3 * T * 1000.0 / 4) {
      ARCHI_ASSIGN_OR_RETURN(std::string id, cluster->SpawnWorker());
      // archi scale 1 3, as the CLI does it.
      harness::Process* p = nullptr;
      std::string cli = o_.frontend_bin;
      cli = cli.substr(0, cli.rfind("/runtime/frontend/")) + "/runtime/coordinator/archi";
      ARCHI_ASSIGN_OR_RETURN(
          auto proc, harness::Process::Spawn({.binary = cli,
                                              .args = {"--coordinator", cluster->frontend_address(),
                                                       "--token", "demo-token", "scale", "1", "3"},
                                              .log_path = run_dir_ + "/demo/archi-scale.log"}));
      p = proc.get();
      ARCHI_ASSIGN_OR_RETURN(harness::ExitInfo e, p->WaitExit(Deadline::AfterMs(10'000)));
      if (!e.ok()) return UnavailableError("archi scale 1 3: " + e.ToString() + ": " + p->LogTail());
      scale_ms = elapsed_ms();
      events += "  << " + id + " started; archi scale 1 3";
    }
    // The coordinator's own events, as they happen.
    if (auto ev = cluster->GetEvents(Deadline::AfterMs(200), seen_events_until + 1); ev.ok()) {
      for (const auto& e : ev->events()) {
        seen_events_until = std::max(seen_events_until, e.unix_ms());
        if (e.kind() == "dead" || e.kind() == "assigned" || e.kind() == "ready" ||
            e.kind() == "traffic_restored" || e.kind() == "worlds_removed") {
          events += Fmt("  [coordinator: %s %s]", e.kind().c_str(), e.worker_id().c_str());
        }
      }
    }
    if (elapsed_ms() >= next_print) {
      const auto p = gen->GetProgress();
      std::printf("t=%5.1fs  %6.1f req/s  ok %6lld  errors %lld  outstanding %3lld%s\n",
                  next_print / 1000.0, static_cast<double>(p.ok - last_ok) * 2.0,
                  static_cast<long long>(p.ok), static_cast<long long>(p.errors),
                  static_cast<long long>(p.outstanding), events.c_str());
      std::fflush(stdout);
      events.clear();
      last_ok = p.ok;
      next_print += 500;
    }
  }
  gen->Stop();
  ARCHI_ASSIGN_OR_RETURN(LoadReport rep,
                         gen->Wait(Deadline::AfterMs(o_.deadline_ms + l.grace_ms + 10'000)));
  ARCHI_ASSIGN_OR_RETURN(auto fin, cluster->GetStatus(Deadline::AfterMs(5000)));
  ARCHI_ASSIGN_OR_RETURN(auto evs, cluster->GetEvents(Deadline::AfterMs(5000), t_start_unix));
  cluster->Stop();

  std::printf("\n== the coordinator's event timeline (UTC) ==\n");
  auto print_events = [](const proto::EventsResponse& r) {
    for (const auto& e : r.events()) {
      if (e.kind() == "world_broken") continue;  // one per neighbour; summarised by worlds_removed
      std::printf("%s  %-17s %-5s %-4s %s\n", ClockMs(e.unix_ms()).c_str(), e.kind().c_str(),
                  e.worker_id().empty() ? "-" : e.worker_id().c_str(),
                  e.stage() >= 0 ? ("s" + std::to_string(e.stage())).c_str() : "-",
                  e.detail().c_str());
    }
  };
  print_events(before_fe_kill);
  std::printf("--------------  kill -9 of the frontend: its embedded coordinator restarts and "
              "re-plans the workers that re-register\n");
  print_events(evs);
  std::printf("\n== recovery of %s ==\n", victim.c_str());
  for (const auto& r : fin.recoveries()) {
    if (r.worker_id() != victim) continue;
    auto after = [&](int64_t t) {
      return t == 0 ? std::string("not reached") : Fmt("+%lld ms", static_cast<long long>(t - r.detected_unix_ms()));
    };
    std::printf(
        "kill -9 at %s; detected at %s (%lld ms after the kill: %s)\n"
        "  replacement %s chosen %s, survivors' worlds to it removed %s, replacement ready %s, "
        "its first micro-batch %s\n",
        ClockMs(kill_unix).c_str(), ClockMs(r.detected_unix_ms()).c_str(),
        static_cast<long long>(r.detected_unix_ms() - kill_unix), r.cause().c_str(),
        r.replacement().c_str(), after(r.decided_unix_ms()).c_str(),
        after(r.worlds_removed_unix_ms()).c_str(), after(r.replacement_ready_unix_ms()).c_str(),
        after(r.traffic_restored_unix_ms()).c_str());
  }
  std::printf("stage 1 now: %d ready of target %d\n", fin.stages(1).ready_replicas(),
              fin.stages(1).target_replicas());
  const harness::LoadSummary& s = rep.summary;
  std::printf("\n== kill -9 of the frontend ==\nserving again %s after the kill; %lld requests "
              "retried by their clients with the same id, %lld answered from executions the "
              "restarted frontend re-dispatched from its admission log\n",
              fe_serving_ms < 0 ? "never" : Fmt("%.0f ms", fe_serving_ms).c_str(),
              static_cast<long long>(s.retried), static_cast<long long>(s.recovered));
  std::printf("\nrequests: %lld sent, %lld ok, %lld LOST; p50 %.1f ms, p99 %.1f ms, %lld re-sent "
              "inside the pipeline after the worker's kill\n",
              static_cast<long long>(s.sent), static_cast<long long>(s.ok),
              static_cast<long long>(s.lost), s.p50_ms, s.p99_ms,
              static_cast<long long>(s.resent));
  *lost_any = s.lost > 0 || s.ok != s.sent;
  return Status::Ok();
}

}  // namespace

int RunPipeline(PipelineOptions o) {
  ::signal(SIGPIPE, SIG_IGN);
  const bool coordinated_demo = o.scenario == "demo";
  const bool demo = coordinated_demo || o.scenario == "demo-static";
  const bool sweep = o.scenario == "sweep" || o.scenario == "all";
  const bool timeline = o.scenario == "timeline" || o.scenario == "all";
  if (!demo && !sweep && !timeline) {
    std::fprintf(stderr, "archi-bench pipeline: unknown scenario '%s'\n", o.scenario.c_str());
    return 2;
  }
  if (o.frontend_bin.empty()) o.frontend_bin = harness::DefaultFrontendBinary();
  if (o.worker_bin.empty()) o.worker_bin = harness::DefaultWorkerBinary();
  if (o.frontend_bin.empty() || o.worker_bin.empty()) {
    std::fprintf(stderr,
                 "archi-bench pipeline: archi-frontend/archi-worker not found; build them "
                 "(cmake --build BUILD --target archi-frontend archi-worker) or pass "
                 "--frontend-bin/--worker-bin\n");
    return 1;
  }
  char tmpl[] = "/tmp/archi-pipeline-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("archi-bench pipeline: mkdtemp");
    return 1;
  }
  const std::string run_dir = tmpl;
  auto fail = [&](const Status& s) {
    std::fprintf(stderr, "archi-bench pipeline: %s\n(process logs and plans kept in %s)\n",
                 s.ToString().c_str(), run_dir.c_str());
    return 1;
  };
  auto w = MakeWorkload(o, run_dir);
  if (!w.ok()) return fail(w.status());
  std::printf("[pipeline] model: %s\n[pipeline] binaries: %s, %s\n", w->description.c_str(),
              o.frontend_bin.c_str(), o.worker_bin.c_str());
  if (!demo) {
    if (Status s = MakeDirs(o.out_dir); !s.ok()) return fail(s);
  }
  PipelineBench bench(o, run_dir, *w);
  std::string md = "## archi-bench pipeline\n\n";
  md += Fmt("Generated by `%s` on %s.\n\n", JoinArgs(o.command).c_str(), NowUtc().c_str());
  bool lost_any = false;
  if (coordinated_demo) {
    if (Status s = bench.CoordinatedDemo(&lost_any); !s.ok()) return fail(s);
  } else if (demo) {
    if (Status s = bench.Timeline(/*live=*/true, &md, &lost_any); !s.ok()) return fail(s);
  } else {
    if (sweep) {
      if (Status s = bench.Sweep(&md); !s.ok()) return fail(s);
    }
    if (timeline) {
      if (Status s = bench.Timeline(/*live=*/false, &md, &lost_any); !s.ok()) return fail(s);
    }
    if (Status s = WriteFile(o.out_dir + "/pipeline.md", md); !s.ok()) return fail(s);
    std::printf("\n[pipeline] wrote %s/pipeline.md%s%s\n", o.out_dir.c_str(),
                sweep ? ", pipeline_sweep.{csv,gp,png}" : "",
                timeline ? ", pipeline_timeline.{csv,gp,png}, pipeline_requests.csv" : "");
  }
  int rc = 0;
  if (lost_any) {
    std::fprintf(stderr, "archi-bench pipeline: requests were LOST (see the summary)\n");
    rc = 1;
  }
  if (!bench.processes_clean() && !demo) {
    std::fprintf(
        stderr, "archi-bench pipeline: a process did not exit 0 after SIGTERM (see the summary)\n");
    rc = rc ? rc : 3;
  }
  if (rc == 0 && !o.keep_logs) {
    std::error_code ec;
    fs::remove_all(run_dir, ec);
  } else {
    std::printf("[pipeline] process logs and plans: %s\n", run_dir.c_str());
  }
  return rc;
}

}  // namespace archi::bench
