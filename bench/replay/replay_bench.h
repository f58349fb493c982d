// `archi-bench replay`: live trace replay (issue 8, item 4). The real coordinator (embedded in
// archi-frontend) and archi-worker processes on this host follow a node trace, time-compressed
// by `speedup`: the trace's adds become worker starts, its removes a CoordinatorAdmin.Drain
// `warning_ms` before a kill -9. Requests are sent open-loop at the (equally compressed) times of
// an arrival trace, or Poisson at a constant rate. Output (OUT) in archi-sim's formats, so one
// plot shows simulated and measured curves together (docs/simulator.md, docs/benchmarks.md):
//
//   sim_timeline.csv  sim_summary.csv  sim_events.csv   the same columns as archi-sim
//   replay_trace.csv      the scaled, compressed node trace (event log; archi-sim --trace)
//   replay_arrivals.txt   the compressed arrival times (SpotServe format; archi-sim --arrivals)
//   replay_calibration.csv  unloaded latencies measured before the replay (archi-sim --perf fit:)
//   replay_requests.csv   every request (LoadReport::RecordsCsv)
//   replay.md, replay.png (+ .gp); with archi-sim: sim/ (its run on the same files) and
//   replay_vs_sim.png, the error of its throughput and p99 against the live run.
//
// Scaling the trace down: only `max_workers` workers run at once. The trace's node count over the
// window [start_s, start_s + duration_s * speedup) is divided by f = ceil(peak / max_workers) and
// rounded up (count' = ceil(count / f)); the count steps become add/remove events with
// sim::EventsFromCounts (a fall removes the most recently added node). With f = 1 the trace's own
// events and node names are kept. Times: t' = (t - start) / speedup.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace archi::bench {

struct ReplayOptions {
  std::string trace;           // node trace (any format sim::LoadNodeTrace reads)
  bool tolerate_quirks = false;
  std::string arrivals;        // SpotServe query file; empty: Poisson at `rate`
  double rate = 0;             // req/s of the replay (after compression); rescales `arrivals`
  double speedup = 60;         // trace seconds per replay second
  double start_s = 0;          // trace window start (trace seconds)
  double duration_s = 60;      // replay seconds (at most; the trace may end earlier)
  int max_workers = 4;         // concurrent workers at the trace's peak
  int64_t warning_ms = 500;    // replay ms between the drain and the kill
  std::string policy = "none";  // coordinator policy: none | reactive
  int stages = 2;
  int batch = 4;               // plan max_batch
  int64_t extra_compute_ms = 20;  // archi-worker --extra-compute-ms per micro-batch
  int64_t timeout_ms = 5000;   // per-request deadline
  double slo_ms = 0;           // 0: the timeout
  int64_t interval_ms = 1000;  // timeline rows
  int heartbeat_timeout_ms = 5000;  // coordinator: a kill -9 is seen at once (connection loss)
  double price_per_hour = 1.0;
  double calibrate_s = 2;      // closed-loop (1 outstanding) calibration before the replay; 0: none
  // archi-sim's stage service times: "run" (the workers' own compute timings sampled during the
  // replay; the calibration gives the overhead outside the stages) or "calibration".
  std::string stage_times = "run";
  uint64_t seed = 1;
  std::string out_dir = "replay_out";
  std::string frontend_bin, worker_bin, sim_bin;  // empty: the built ones
  bool no_sim = false;         // do not run archi-sim on the same files afterwards
  std::string log_level = "warn";
  bool keep_logs = false;
  std::vector<std::string> command;
};

int RunReplay(ReplayOptions options);

// Adds `replay` to `app`; the returned function, called after parsing, runs it when chosen.
std::function<std::optional<int>(const std::vector<std::string>&)> AddReplayCommand(CLI::App& app);

}  // namespace archi::bench
