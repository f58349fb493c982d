// The life of an archi-worker process around a StageWorker, shared by the plain launch and the
// mpirun launch: a signal thread turns the first SIGINT/SIGTERM into a drain and a second one into
// an immediate stop.
//
// Threads: call from main with SIGINT and SIGTERM in `signals` already blocked in every thread
// (block them before starting any thread, MPI's included). Blocks until the worker ends.
#pragma once

#include <signal.h>

#include <cstdint>

#include "runtime/executor/worker.h"

namespace archi::executor {

// Runs the worker; returns the exit code: 0 after a drain or stop, 1 on a start-up error, 3 when
// fenced. `self_drain_after_ms` > 0: drain by itself after that long (then stop 10 s later), as if
// signalled.
int RunWorkerProcess(const WorkerOptions& options, const sigset_t& signals,
                     int64_t self_drain_after_ms = 0);

}  // namespace archi::executor
