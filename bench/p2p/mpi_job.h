// MpiJob: the MPI side of `archi-bench p2p`. It owns MPI_Init/MPI_Finalize for the whole run and
// gives (a) the control plane the benchmark ranks use to agree on iteration counts and exchange
// results (barrier, broadcast), and (b) the Open MPI send/recv transport that is the same-host
// reference. No MPI type appears here: the implementation is in mpi_job.cc, compiled with or
// without MPI (ARCHI_HAVE_MPI).
//
// Ownership: Init() returns the sole owner; destroying it finalises MPI (MPI cannot be
// initialised again in the same process). Threads: call everything from the thread that called
// Init() (MPI_THREAD_FUNNELED).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "bench/p2p/p2p_transport.h"
#include "runtime/core/status.h"
#include "runtime/core/store.h"
#include "world/store_server.h"

namespace archi::bench {

class MpiJob {
 public:
  // MPI_Init_thread. kUnimplemented when Archipelago was built without MPI.
  static Result<std::unique_ptr<MpiJob>> Init(int* argc, char*** argv);
  virtual ~MpiJob() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "Open MPI v4.1.4, ..." (first line of MPI_Get_library_version).
  virtual std::string library_version() const = 0;
  // This rank's index among the ranks on its node (MPI_COMM_TYPE_SHARED): its GPU.
  virtual int local_rank() const = 0;

  virtual void Barrier() = 0;
  // Copies `bytes` bytes at `data` from rank `root` to every rank.
  virtual void Broadcast(void* data, size_t bytes, int root) = 0;
  // The largest `value` over all ranks (MPI_Allreduce with MPI_MAX), on every rank.
  virtual double Max(double value) = 0;
  // Ends the whole job (every rank) after a fatal error.
  [[noreturn]] virtual void Abort(int code) = 0;

  // MPI_Send/MPI_Recv (MPI_Isend/MPI_Irecv + MPI_Waitall for batches) on MPI_COMM_WORLD, with
  // the payload sent as MPI_BYTE. Valid while the job lives.
  virtual std::unique_ptr<P2PTransport> Transport() = 0;
};

// The rendezvous store of an MPI-launched benchmark: rank 0 starts a StoreServer (kept in
// *server), broadcasts its address, and the other ranks connect to it (10 s deadline).
Result<std::shared_ptr<Store>> JobStore(MpiJob& job, std::unique_ptr<StoreServer>* server);

}  // namespace archi::bench
