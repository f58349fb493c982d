// mpirun launch of a whole pipeline from one command:
//
//   mpirun -np N archi-worker --config pipeline.yaml [--replicas 1,2,1] [--duration-s S]
//
// Rank 0 runs the frontend in-process (Frontend::Start: gRPC Inference + Admin, embedded
// rendezvous store); ranks 1..N-1 are stage workers (StageWorker). MPI only starts the processes
// and carries one broadcast from rank 0 (store address, pipeline name, number of stages); every
// rank then calls MPI_Finalize, so nothing later depends on MPI: a rank that dies does not take the
// job down (with mpirun's --enable-recovery), and workers started later outside MPI
// (`archi-worker --store ... --pipeline ... --stage ...`) join through the store as usual.
//
// Ranks to stages: worker k = rank - 1 (0-based) of W = N - 1 gets stage k % S (round-robin), or,
// with --replicas R0,R1,...,R(S-1) (summing to W), contiguous blocks: the first R0 workers stage 0,
// the next R1 stage 1, and so on. GPU device = the worker's index among the worker ranks
// of its node: its local rank, minus one on rank 0's node (rank 0, the frontend, takes no GPU);
// logged, and ignored by the CPU path. Member ids are "s<stage>-rank<rank>".
//
// Ending: SIGINT/SIGTERM on rank 0, or --duration-s elapsing, drains the workers stage by stage
// (Admin.Drain, stage 0 first so work in flight flows out), waits for them to leave (bounded by
// drain_timeout_ms), then shuts the frontend down (anything still pending gets UNAVAILABLE). A
// worker rank exits 0 once drained. Each rank prints "archi-worker rank R: exit C" on stdout.
//
// Threads: RunMpiLaunch is called once from main, before any thread is started.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace archi::executor {

struct MpiLaunchOptions {
  std::string config;                        // pipeline plan (YAML), read by rank 0
  std::string listen = "127.0.0.1:0";        // rank 0: gRPC Inference + Admin
  std::string store_listen = "127.0.0.1:0";  // rank 0: the embedded store (must be routable)
  std::vector<int> replicas;                 // per stage; empty: round-robin
  double duration_s = 0;                     // > 0: rank 0 ends the job after this long
  int64_t drain_timeout_ms = 30'000;         // how long the end waits for drained workers
  std::string frontend_ready_file;  // rank 0 writes {"grpc","store","pid","pipeline","ranks"}
  int threads = 1;                  // workers: kernel threads
  int64_t extra_compute_ms = 0;     // workers: test knob
  int64_t plan_wait_ms = 30'000;    // workers
};

// Stage of each of `num_workers` workers (index = rank - 1). kInvalidArgument when `replicas` is
// given with the wrong length, a negative count, or a sum other than num_workers.
Result<std::vector<int>> AssignStages(int num_workers, int num_stages,
                                      const std::vector<int>& replicas);

// Runs this rank's part of the job; returns the process exit code (0: clean; 1: start-up error;
// 2: bad arguments or built without MPI; 3: a worker fenced by its neighbours).
int RunMpiLaunch(const MpiLaunchOptions& options, int* argc, char*** argv);

}  // namespace archi::executor
