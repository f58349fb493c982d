// `archi-bench control-plane`: how the coordinator scales with the number of workers (issue 5,
// item 8; targets: 10,000 heartbeating workers < 1 core, a scaling decision < 50 ms).
//
// For each N: archi-coordinator runs as a child process (--heartbeat-interval-ms 1000
// --heartbeat-timeout-ms 3000) with a 3-stage plan of `replicas_per_stage` replicas each, the
// other workers idle; or (--assign-all) a plan of S = max(3, ceil((N - idle) / 250)) stages (a
// generated model with S layers; the coordinator allows at most 256 replicas per stage) whose
// targets add up to N - idle. This process simulates the N workers: each registers (async unary
// Register) and holds one Session stream (a grpc::ClientBidiReactor per worker, spread over a
// few channels; no thread per worker), heartbeats once a second (phases spread over the second),
// answers an Assignment with an immediate "ready" heartbeat and a Release with "idle". Measured:
//
//   - time until all N registered, and until every assignment arrived and every stage reports
//     its target of ready replicas in CoordinatorAdmin.Status;
//   - the coordinator's CPU over a steady window (utime + stime of /proc/PID/stat), in cores;
//   - Status RPC latency (and response size) during that window;
//   - scaling decision latency: admin Scale(stage 0, +1) -> the Assignment arriving at one of the
//     simulated idle workers (repeated);
//   - the reactive policy's Decide at N workers (in this process, on a synthetic ClusterState
//     with every stage overloaded so it plans an action).
//
// Output (OUT): control_plane.md, control_plane.csv. Timings are reported, never asserted.
#pragma once

#include <string>
#include <vector>

namespace archi::bench {

struct ControlPlaneOptions {
  std::string out_dir = "docs/bench";
  std::vector<int> workers = {2000};  // N, one run each
  // Default: a 3-stage pipeline with `replicas_per_stage` replicas each; every other worker
  // stays in the idle pool (heartbeating). assign_all: S = max(3, ceil((N - idle) / 250))
  // stages filled with N - idle workers (each replica links with every replica of the
  // neighbouring stages, so assignments carry O(replicas) worlds each).
  int replicas_per_stage = 4;
  bool assign_all = false;
  int idle = 10;              // assign_all: left in the idle pool (the scale trials take from them)
  double register_rate = 1000;  // registrations per second (a fleet joining, not a storm)
  int channels = 8;           // gRPC channels the sessions are spread over
  double window_s = 8;        // steady window for the CPU measurement
  int scale_trials = 5;
  int heartbeat_interval_ms = 1000;
  int heartbeat_timeout_ms = 3000;
  std::string coordinator_bin;  // empty: the build's archi-coordinator
  std::string log_level = "warn";
  bool keep_logs = false;
  std::vector<std::string> command;
};

int RunControlPlane(ControlPlaneOptions options);

}  // namespace archi::bench
