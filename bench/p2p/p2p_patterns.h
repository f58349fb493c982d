// `archi-bench p2p --pattern bidir|chain`: the two traffic shapes of issue 7 beside the ping-pong
// of p2p_bench.h, each over three transports measured in the same run, interleaved per size and
// repetition:
//   gloo   a world of the WorldManager on Gloo TCP (WorldOptions::shm = kOff);
//   shm    the same world API over the same-host shared-memory fast path (kOn);
//   MPI    Open MPI send/recv between the same processes (the same-host reference).
//
// bidir (mpirun -np 2): both ranks send at once.
//   latency  both ranks post a receive and a send of the size, wait for both; time per exchange;
//   GB/s     both ranks stream windows of W messages to each other (each window: W receives and
//            W sends posted, then waited for), closed by a 4-byte exchange; bytes moved in both
//            directions / the slower rank's time.
// chain (mpirun -np 3): rank 0 -> rank 1 -> rank 2, a 3-stage pipeline.
//   latency  rank 0 sends, rank 1 receives and sends the buffer on, rank 2 receives and returns a
//            4-byte notice straight to rank 0; time per message at rank 0 (two hops of the size
//            plus one 4-byte hop);
//   GB/s     rank 0 streams windows of W messages, rank 1 forwards each message as soon as it
//            arrived (receives of the window posted up front), rank 2 receives; one 4-byte ack
//            from rank 2 to rank 0 closes the stream; bytes delivered at rank 2 / time at rank 0.
// Output (rank 0): a markdown table on stdout and in OUT/p2p_<pattern>.md, OUT/p2p_<pattern>.csv,
// OUT/p2p_<pattern>.png (gnuplot, GB/s vs bytes). Timings are reported, never asserted.
#pragma once

#include "bench/p2p/mpi_job.h"
#include "bench/p2p/p2p_bench.h"

namespace archi::bench {

// Runs `options.pattern` ("bidir" or "chain") on `job` (Gloo only); returns the exit code.
int RunP2PPattern(const P2POptions& options, MpiJob& job);

}  // namespace archi::bench
