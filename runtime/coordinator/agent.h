// WorkerAgent: the worker side of the coordinator protocol (proto/coordinator.proto).
//
// Registers with the coordinator (getting a fencing epoch), holds the session stream, heartbeats
// every heartbeat_interval_ms with its state and load, and serves whatever it is assigned: an
// Assignment starts a StageWorker (runtime/executor/worker.h) for that stage with the epoch as
// its member incarnation; a Release drains it and the agent goes back to the idle pool; a
// WorldDirective removes the worlds to peers the coordinator declared dead at once. Links that
// break are reported (WorldBroken).
//
// Coordinator loss: when the stream breaks or no answer came for 3 heartbeat timeouts, the agent
// reconnects with backoff and resumes its epoch (the data plane keeps serving meanwhile). When
// the coordinator refuses the epoch (it declared this worker dead: e.g. the process was stopped
// and its work re-sent elsewhere), the agent stops what it served and registers afresh as a new,
// idle worker.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/coordinator/auth.h"
#include "runtime/core/status.h"

namespace archi::coordinator {

struct AgentOptions {
  std::string coordinator;  // host:port
  std::string token;        // shared token ("" : none)
  TlsFiles tls;             // ca (+ cert, key for mutual TLS); empty: plaintext
  std::string worker_id;    // default "w<pid>"
  std::string host;         // default gethostname()
  std::string kind;
  int devices = 0;
  double capacity = 1.0;
  double price_per_hour = 0;
  int threads = 1;               // kernel threads of the stage compute
  int64_t extra_compute_ms = 0;  // test knob (see WorkerOptions)
  std::string metrics_listen;    // per assignment (see WorkerOptions)
  // Written (JSON: id, pid, epoch, state) whenever the registration or the served stage changes,
  // atomically; the harness waits on it.
  std::string status_file;
  int64_t register_timeout_ms = 30'000;  // first registration; later reconnects retry forever
};

class WorkerAgent {
 public:
  explicit WorkerAgent(AgentOptions options);
  ~WorkerAgent();

  // Runs until Stop() or a finished drain (RequestDrain). OK then; an error when the first
  // registration failed (bad token: kUnauthenticated, bad input, no coordinator in time).
  Status Run();
  // Finish the current assignment (drain), then return from Run. Idle: return at once.
  void RequestDrain();
  void Stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The life of an `archi-worker --coordinator` process: a signal thread turns the first
// SIGINT/SIGTERM into a drain and a second into a stop. `signals` must already be blocked in
// every thread. Returns the exit code: 0 after a drain or stop, 1 when registration failed.
int RunAgentProcess(const AgentOptions& options, const sigset_t& signals);

}  // namespace archi::coordinator
