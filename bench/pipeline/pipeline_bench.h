// `archi-bench pipeline`: pipeline-parallel serving with real processes (archi-frontend and
// archi-worker, driven by bench/harness/).
//
// Scenarios:
//   sweep     for 1..4 stages (the model's layers split evenly) and 1 or 2 replicas of every
//             middle stage: closed-loop load (max_batch 8). Throughput load (8 x (workers + 1)
//             outstanding) gives requests/s, p50/p99; low load (8 outstanding, one micro-batch in
//             flight) gives the latency. Reference measured in the same run: the whole model in
//             this process (BertEncoder::Encode, batch 8, the workers' thread count). Reported:
//             the ratio to the reference and the latency each stage boundary adds, as % of the
//             in-process batch latency.
//   timeline  3 stages, 2 replicas of the middle one, steady closed-loop load for T seconds;
//             kill -9 one middle replica at T/3, start a new one at 2T/3. Throughput per 100 ms
//             (CSV + PNG), recovery time, requests lost.
//   demo      (make demo) the pipeline planned by its coordinator: 1-2-1 replicas and one idle
//             worker, requests with ids (clients retry with the same id); under steady load the
//             frontend is killed with SIGKILL at T/4 and restarted on its port and --state-dir
//             (admission log re-dispatched, workers re-planned), a stage-1 replica is killed with
//             SIGKILL at T/2 (the coordinator detects it, the idle worker replaces it), a new
//             worker joins at 3T/4 and stage 1 is scaled to 3 with the `archi` CLI; one line per
//             500 ms with the coordinator's events, then its event timeline, the recovery steps
//             and the frontend's time to serve again; exit 1 when a request was lost.
//   demo-static  the timeline scenario printing one line per 500 ms (workers placed by hand,
//             no coordinator).
// Output (OUT): pipeline.md, pipeline_sweep.csv, pipeline_sweep.png, pipeline_timeline.csv,
// pipeline_requests.csv, pipeline_timeline.png (+ the .gp scripts). Timings are reported, never
// asserted; the process logs of a run stay in a temporary directory when something failed.
#pragma once

#include <string>
#include <vector>

namespace archi::bench {

struct PipelineOptions {
  std::string out_dir = "docs/bench";
  std::string scenario = "all";    // sweep | timeline | all | demo | demo-static
  std::string model_dir;           // empty: the real model if present, else a generated one
  bool gen_model = false;          // force a generated model (no tokenizer: token-id requests)
  double duration_s = 0;           // 0: per scenario (sweep 4 s per load, timeline/demo 15 s)
  bool quick = false;              // smoke run: small sweep, short loads
  int rounds = 0;                  // sweep rounds, best kept per cell (0: 2, --quick 1)
  int batch = 8;                   // plan max_batch and the low-load concurrency
  int worker_threads = 1;          // archi-worker --threads (and the reference's threads)
  int64_t deadline_ms = 10'000;    // per request
  std::string frontend_bin;        // empty: the build's archi-frontend
  std::string worker_bin;          // empty: the build's archi-worker
  std::string log_level = "warn";  // ARCHI_LOG_LEVEL of the spawned processes
  bool keep_logs = false;          // keep the run directory (process logs, plans)
  std::vector<std::string> command;
};

// Runs the scenario(s); returns the process exit code.
int RunPipeline(PipelineOptions options);

}  // namespace archi::bench
