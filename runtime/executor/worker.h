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
#include <functional>
#include <vector>
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
  std::string kind;               // worker kind in the registry (routing weights are per kind)
  int threads = 1;                // kernel threads of the compute
  int64_t extra_compute_ms = 0;   // test/benchmark knob: added to every micro-batch's compute
  int64_t plan_wait_ms = 30'000;  // how long to wait for the frontend to publish the plan
  std::string ready_file;         // written (JSON) once the worker is ready
  std::string metrics_listen;     // host:port of /metrics (Prometheus); empty: no metrics server
  // Set by the coordinator's worker agent: the member incarnation (its fencing epoch) and a
  // callback for links that break (see NodeOptions). Empty: random incarnation, no callback.
  std::string incarnation;
  // Sent with every store call (StoreClient::Connect): the coordinator's member credential,
  // without which a store guarded by the coordinator refuses this member.
  std::string store_credential;
  std::function<void(const std::string& world, const MemberInfo& peer, const Status& why)>
      on_link_broken;
};

// What a worker reports about itself (the coordinator's heartbeat); cumulative counters, the
// caller takes differences between two snapshots for rates.
struct WorkerSnapshot {
  std::string state;  // loading | joining | ready | draining | stopped
  size_t queue_depth = 0;
  uint64_t processed = 0;  // micro-batches taken from the queue (computed, expired or failed)
  uint64_t resent = 0;
  size_t inflight = 0;
  double busy_seconds = 0;  // total compute time
  double compute_p50_ms = 0, compute_p99_ms = 0;  // over the last 256 micro-batches
  std::vector<std::string> links;                 // "<peer id>.<peer incarnation>"
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
  // Thread-safe; cheap (no I/O).
  WorkerSnapshot Snapshot() const;
  // Breaks the links to a neighbour the coordinator declared dead (PipelineNode::DropPeer).
  void DropPeer(const std::string& id, const std::string& incarnation, const std::string& why);

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

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> node_started_{false};
  std::vector<double> compute_ms_ring_;  // guarded by mu_
  size_t ring_next_ = 0;
  double busy_seconds_ = 0;
  std::deque<std::pair<Batch, Origin>> queue_;
  bool busy_ = false;
  std::atomic<bool> drain_requested_{false};
  std::atomic<bool> stop_requested_{false};
  uint64_t processed_ = 0;
  uint64_t expired_ = 0;
};

}  // namespace archi::executor
