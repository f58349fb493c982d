// `archi-bench p2p`: the MultiWorld overhead experiment.
//
// Two MPI ranks (mpirun -np 2). Rank 1 sends float32 tensors to rank 0 of 3^0 .. 3^11 elements
// and of 1, 4 and 16 MiB, and for each size measures one-way latency (ping-pong with an echo of
// the same size, latency = round trip / 2) and bandwidth (a stream of windows of back-to-back
// messages closed by one 4-byte ack) over three variants, interleaved per size:
//   1 world   the two ranks share one world of a WorldManager (Gloo TCP on loopback);
//   4 worlds  the same world and traffic while both ranks also belong to 3 idle worlds of the
//             same WorldManager (heartbeats and peer watches running);
//   MPI       Open MPI send/recv between the same two processes: the same-host reference.
// Output (rank 0): a markdown table on stdout and in OUT/p2p.md, OUT/p2p.csv (one row per size),
// OUT/p2p_raw.csv (every repetition), OUT/p2p.png and OUT/p2p_latency.png (gnuplot, log-log).
// Timings are reported, never asserted.
//
// --backend nccl: the worlds run on NCCL with the tensors on the GPU (device = the rank's local
// rank on its node), variants `1 world` and `4 worlds` only (no shared-memory or MPI column:
// Open MPI here moves host memory). Without a usable GPU it prints one "skipped" line, exit 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace archi::bench {

struct P2POptions {
  std::string out_dir = "docs/bench";
  // "gloo" (CPU tensors) or "nccl" (GPU tensors).
  std::string backend = "gloo";
  // A smoke run: 3 sizes, 1 repetition, a few iterations.
  bool quick = false;
  // Message sizes in bytes (rounded down to whole float32, at least one); empty: the default
  // sweep (3^0 .. 3^11 floats, 1, 4, 16 MiB).
  std::vector<int64_t> sizes;
  // pingpong (the default: latency and one-way streams, 2 ranks), bidir (both ranks send at once,
  // 2 ranks) or chain (rank 0 -> rank 1 -> rank 2, 3 ranks); see p2p_patterns.h.
  std::string pattern = "pingpong";
  // Time one measurement (one variant, one size, latency or bandwidth) aims at.
  double target_s = 0.25;
  int min_iters = 20;
  int max_iters = 2000;
  // Repetitions of every measurement; the median is reported.
  int reps = 3;
  // Idle worlds of the multi-world variant.
  int idle_worlds = 3;
  // Wait limit of every world op (a hang is reported, not waited out).
  int64_t wait_timeout_ms = 30'000;
  std::string log_level = "error";
  // The command line, for the record in p2p.md.
  std::vector<std::string> command;
};

// Runs the benchmark; returns the process exit code. Initialises and finalises MPI.
int RunP2P(P2POptions options, int* argc, char*** argv);

}  // namespace archi::bench
