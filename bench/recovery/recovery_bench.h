// `archi-bench recovery`: faults injected into a pipeline planned by its coordinator, one fault
// kind per fresh cluster, under steady load (issue 5, item 8).
//
// Every run: archi-frontend (embedded coordinator) and archi-worker agents on this host
// (bench/harness/coordinated_cluster.h), a 3-stage plan with replicas 1-2-1 and one idle worker;
// the generated model (or --model DIR, e.g. MiniLM); closed-loop load (`concurrency` requests
// outstanding), a warm-up first. At `fault_at_s` one fault:
//
//   kill       kill -9 of a stage-1 replica (its session breaks: detection by connection loss)
//   stop       SIGSTOP of a stage-1 replica, SIGCONT `stop_s` later (missed heartbeats)
//   frontend   kill -9 of the frontend, which embeds the coordinator and the store; a new one is
//              started at once on the same address and the workers reconnect. Requests in flight
//              at the frontend survive: it runs with --state-dir (admission log) and the clients
//              send request ids and retry UNAVAILABLE with the same id (backoff 50..500 ms, within
//              the 20 s deadline); the new frontend re-dispatches them and answers the retries
//              (--frontend-no-ids: neither, the old behaviour). Open-loop load (a fixed rate: a
//              closed loop would spin on the immediate UNAVAILABLE answers); the clients reconnect
//              with a short backoff.
//   partition  a stage-1 replica inside a network namespace (veth pair; bench/harness/netns.h)
//              loses its link (missed heartbeats); healed after the load
//   slow       the same replica's link gets tc netem delay (or, where the kernel has no netem, a
//              tbf rate limit: said in the output)
//
// The namespace faults need CAP_NET_ADMIN (`ip netns add`); without it they are skipped with the
// reason printed.
//
// Reported per fault: detection (fault -> the coordinator's detected_unix_ms), back to full
// throughput (the end of the first 500 ms bin at >= 90% of the pre-fault median after the
// throughput first fell below it; 0 when it never did), requests lost (no answer) and failed
// (an error answer), p99 before the fault and during the recovery. Output (OUT): recovery.md,
// recovery.csv, recovery_<fault>.csv (throughput per 200 ms), recovery_<fault>.png (+ .gp),
// recovery_<fault>_requests.csv. Timings are reported, never asserted.
//
// `archi-bench control-plane`: see control_plane_bench.h.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace archi::bench {

struct RecoveryOptions {
  std::string out_dir = "docs/bench";
  std::vector<std::string> faults;  // empty: kill stop frontend partition slow
  std::string model_dir;            // empty: a generated model
  double duration_s = 9;            // load per fault (after the warm-up)
  double fault_at_s = 3;            // into the load
  double stop_s = 3;                // SIGSTOP length
  int concurrency = 16;
  int batch = 8;
  int64_t extra_compute_ms = 4;   // archi-worker --extra-compute-ms (0 with --model)
  int worker_threads = 1;
  int heartbeat_timeout_ms = 1000;
  int heartbeat_interval_ms = 250;
  int delay_ms = 50;                // slow: netem delay each way
  std::string slow_rate = "20mbit";  // slow without netem: tbf rate each way
  double frontend_rate = 0.5;       // frontend: open-loop rate as a fraction of the warm-up's
  // frontend: no request ids, no retries, no --state-dir (the behaviour before durable admission)
  bool frontend_no_ids = false;
  std::string frontend_bin, worker_bin;
  std::string log_level = "warn";
  bool keep_logs = false;
  std::vector<std::string> command;
};

int RunRecovery(RecoveryOptions options);

// Adds the `recovery` and `control-plane` subcommands to `app`. The returned function, called
// after parsing, runs the one that was chosen (with the full command line, for the report) and
// returns its exit code, or std::nullopt when neither was.
std::function<std::optional<int>(const std::vector<std::string>&)> AddRecoveryCommands(
    CLI::App& app);

}  // namespace archi::bench
