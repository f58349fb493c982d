// StageWorker: a pipeline stage replica process. Reads the plan from the rendezvous store, loads
// its stage's layers, joins the pipeline (PipelineNode), and runs micro-batches: a reader thread
// per upstream link receives, a compute thread runs the stage, sends go out asynchronously, so a
// stage computes one micro-batch while the next is in flight.
//
// Leaving: Drain (admin call through the frontend, or SIGTERM via RequestDrain) stops upstreams
// from routing to it; it finishes everything it holds, waits for the acknowledgements, removes
// its worlds and returns from Run. A worker fenced by its neighbours (they saw its worlds break)
// stops at once: its micro-batches are already being re-sent elsewhere.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/core/status.h"
#include "runtime/executor/metrics.h"
#include "runtime/executor/node.h"
#include "runtime/executor/plan.h"
#include "runtime/executor/stage_model.h"

namespace archi::executor {

struct WorkerOptions {
  std::string store_address;  // host:port of the rendezvous store (the frontend's)
  std::string pipeline;
  int stage = 0;
  std::string id;                 // empty: "s<stage>-<pid>"
  int threads = 1;                // kernel threads of the compute
  int64_t extra_compute_ms = 0;   // test/benchmark knob: added to every micro-batch's compute
  int64_t plan_wait_ms = 30'000;  // how long to wait for the frontend to publish the plan
  std::string ready_file;         // written (JSON) once the worker is ready
  std::string metrics_listen;     // host:port of /metrics (Prometheus); empty: no metrics server
};

class StageWorker {
 public:
  explicit StageWorker(WorkerOptions options);
  ~StageWorker();

  // Runs until drained, stopped or fenced. OK after a drain or Stop; kAborted when fenced.
  Status Run();
  // Async-signal-unsafe; call from a normal thread (the binary's signal thread).
  void RequestDrain();
  void Stop();

 private:
  void OnBatch(Batch&& batch, Origin origin);
  void ComputeLoop(std::stop_token st);

  WorkerOptions options_;
  PipelinePlan plan_;
  std::unique_ptr<StageModel> model_;
  std::unique_ptr<PipelineNode> node_;
  std::unique_ptr<Metrics> metrics_ = Metrics::Disabled();
  struct {
    Counter batches, expired, failed, resent, links_broken;
    Histogram compute_seconds;
    Gauge queue_depth, inflight, pending, links;
  } m_;
  NodeStats last_stats_;
  void InitMetrics();
  void UpdateMetrics();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Batch, Origin>> queue_;
  bool busy_ = false;
  std::atomic<bool> drain_requested_{false};
  std::atomic<bool> stop_requested_{false};
  uint64_t processed_ = 0;
  uint64_t expired_ = 0;
};

}  // namespace archi::executor
