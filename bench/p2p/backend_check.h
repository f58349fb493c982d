// Which backend an MPI-launched benchmark (`p2p`, `coll`) runs on, and whether it can run here.
// NCCL needs the backend compiled in and a usable CUDA device per rank (device = local rank);
// without one the benchmark prints one "skipped" line and exits 0 (docs/benchmarks.md).
// Threads: call from the MPI thread; AgreeOnSkip is collective over the job.
#pragma once

#include <string>

#include "bench/p2p/mpi_job.h"
#include "collectives/communicator.h"
#include "runtime/core/tensor.h"

namespace archi::bench {

// Empty when `kind` can run on CUDA device `device` (ignored for Gloo) in this process, else why
// not, e.g. "cudaErrorNoDevice: no CUDA-capable device is detected".
std::string BackendUnavailableReason(BackendKind kind, int device);

// Collective: every rank passes its own reason (empty = fine); returns the reason of the lowest
// rank that has one (prefixed "rank R: " when R != 0), or empty when every rank can run.
std::string AgreeOnSkip(MpiJob& job, const std::string& reason);

// The line printed (by rank 0) when the benchmark is skipped.
std::string SkipLine(const std::string& bench, const std::string& reason);

// Where the benchmark's tensors live: the CPU for Gloo, CUDA device `device` for NCCL.
inline Device BenchDevice(BackendKind kind, int device) {
  return kind == BackendKind::kNccl ? Device::Cuda(device) : Device::Cpu();
}

}  // namespace archi::bench
