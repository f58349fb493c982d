// `archi-bench faults`: world lifecycle and fault-detection timings with real processes.
//
// The benchmark process hosts the rendezvous store and a WorldManager (rank 0 of every world);
// for each trial it starts a peer process (this binary, hidden subcommand `faults-peer`) that
// joins a 2-rank world as rank 1 over loopback. Measured:
//   - world creation: InitializeWorld on both ranks after a store barrier, create/remove cycles
//     (median of N), and RemoveWorld of the healthy world;
//   - SIGKILL of an idle peer at a known instant: time until the world turns BROKEN (state
//     callback; also the manager's own broken_at) and RemoveWorld of the broken world;
//   - SIGKILL with a Recv from the peer pending: time until that Recv fails, plus the above;
//   - SIGSTOP (hung peer): time until BROKEN, compared with the configured heartbeat timeout.
// Output: a markdown table (stdout and OUT/faults.md), OUT/faults.csv (summary),
// OUT/faults_raw.csv (every trial) and OUT/faults.png. Timings are reported, never asserted.
// Needs no MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace archi::bench {

struct FaultsOptions {
  std::string out_dir = "docs/bench";
  // A smoke run: few cycles and trials, a short heartbeat timeout.
  bool quick = false;
  int create_cycles = 20;
  // SIGKILL trials per variant (idle peer, peer with a pending Recv).
  int kill_trials = 10;
  int stop_trials = 5;
  // <= 0: WorldOptions::FromEnv() (ARCHI_HEARTBEAT_INTERVAL_MS / ARCHI_HEARTBEAT_TIMEOUT_MS).
  int64_t hb_interval_ms = 0;
  int64_t hb_timeout_ms = 0;
  std::string log_level = "error";
  std::vector<std::string> command;
};

// Runs the benchmark; returns the process exit code.
int RunFaults(FaultsOptions options);

// The peer side (hidden subcommand `faults-peer`).
struct FaultsPeerOptions {
  std::string store;   // HOST:PORT of the benchmark's store
  std::string world;   // mode hold: the world to join as rank 1
  std::string mode;    // "hold" or "cycle"
  int cycles = 0;      // mode cycle
  int64_t hb_interval_ms = 0;
  int64_t hb_timeout_ms = 0;
  std::string log_level = "error";
};
int RunFaultsPeer(const FaultsPeerOptions& options);

}  // namespace archi::bench
