// `archi-bench coll`: collective bandwidth of one world of all MPI ranks.
//
// Run under mpirun (any number of ranks; the store address is bootstrapped through MPI as in
// `p2p`). For all_reduce (sum), all_gather, reduce_scatter (sum) and broadcast (root 0) over a size
// sweep (8 B .. 64 MiB by factors of 4, float32), it reports time per op, algorithm bandwidth and
// bus bandwidth as nccl-tests defines them (size = the larger buffer: all_gather's output,
// reduce_scatter's input):
//   algbw = size / time;  busbw = algbw * 2(n-1)/n (all_reduce), * (n-1)/n (all_gather,
//   reduce_scatter), * 1 (broadcast).
// Each (op, size) runs warm-up ops (the first one's result is checked), then `reps` timed
// repetitions of `iters` back-to-back ops, each waited for before the next is issued; the time of
// a repetition is the slowest rank's; the median is reported.
// --backend gloo: CPU tensors. --backend nccl: GPU tensors on the local rank's device; without a
// usable GPU it prints one "skipped" line and exits 0.
// Output (rank 0): markdown on stdout and OUT/coll.md (OUT/coll_nccl.md for NCCL), coll.csv,
// coll.png (busbw vs size, gnuplot). Timings are reported, never asserted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace archi::bench {

struct CollOptions {
  std::string out_dir = "docs/bench";
  std::string backend = "gloo";
  // Smoke run: 8 B .. 2 KiB, 2 repetitions, few iterations.
  bool quick = false;
  size_t min_bytes = 8;
  size_t max_bytes = size_t{64} << 20;
  int warmup = 3;
  int reps = 5;
  // Seconds one timed repetition aims at (sets its iteration count).
  double target_s = 0.05;
  int min_iters = 1;
  int max_iters = 1000;
  // Subset of all_reduce, all_gather, reduce_scatter, broadcast (empty: all).
  std::vector<std::string> ops;
  int64_t wait_timeout_ms = 120'000;
  std::string log_level = "error";
  std::vector<std::string> command;
};

// Runs the benchmark; returns the process exit code. Initialises and finalises MPI.
int RunColl(CollOptions options, int* argc, char*** argv);

}  // namespace archi::bench
