// Frontend: request intake of a pipeline. Serves the gRPC Inference API (proto/inference.proto),
// tokenises text when the model has a tokenizer (vocab.txt beside it), admits requests into a
// bounded queue, forms micro-batches (up to max_batch, waiting at most max_wait_ms for company),
// sends them into stage 0 through its PipelineNode (stage -1: the source of stage 0 and the sink of
// the last stage) and answers every admitted request exactly once: with its embedding, with
// DEADLINE_EXCEEDED when its deadline passes first (a late result is then dropped), or with
// UNAVAILABLE when the frontend shuts down. It also hosts the rendezvous store (by default) and
// the Admin service (Status, Drain) and, by default, the coordinator (runtime/coordinator).
//
// Input errors (INVALID_ARGUMENT, with the reason): no input, empty text or id list, text over
// 64 KiB, more ids than the plan's max_tokens, ids outside the vocabulary, text for a model without
// tokenizer, unknown model name, a request_id over 128 bytes or reused with a different input. A
// full admission queue gives RESOURCE_EXHAUSTED.
//
// Requests with a request_id (idempotency key): a retry with the same id attaches to the
// execution still running (one execution, every caller gets its answer) or, within
// kept_results_ttl_ms of its end, gets the kept result. With state_dir, every keyed request is
// appended to an admission log (state_dir/admission) before it is dispatched and marked done once
// answered; a frontend started on the same state_dir re-dispatches the admitted-but-unanswered
// ones and keeps their results for the clients' retries (docs/coordinator.md, "Durable
// admission"). Requests without an id are neither logged nor kept.
#pragma once

#include <memory>
#include <string>

#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/core/status.h"

namespace archi::frontend {

struct FrontendOptions {
  std::string plan_path;
  std::string listen = "127.0.0.1:0";        // gRPC Inference + Admin
  std::string store_listen = "127.0.0.1:0";  // embedded rendezvous store
  std::string store_address;                 // use an external store instead (host:port)
  int threads = 0;                           // kernel threads (unused by the frontend itself)
  std::string metrics_listen;                // host:port of /metrics (Prometheus); empty: off
  // The embedded coordinator (runtime/coordinator), served on the same gRPC address: workers
  // started with `archi-worker --coordinator <listen>` are assigned stages by it. Off: workers
  // join by stage (archi-worker --store --stage) or a standalone archi-coordinator plans them.
  bool coordinator = true;
  // TLS of the gRPC address (Inference, Admin, coordinator): cert + key; ca: require client
  // certificates signed by it (mutual TLS). Empty: plaintext.
  coordinator::TlsFiles tls;
  coordinator::CoordinatorOptions coordinator_options;
  // Durable admission of keyed requests (empty: none). Records are write(2)n before the request is
  // dispatched (a kill -9 loses none); fdatasync runs every admission_sync_ms for all of them (a
  // machine crash loses at most that window; 0: never).
  std::string state_dir;
  int64_t admission_sync_ms = 50;
  // Results of keyed requests kept for retries: this long after the answer, at most this many
  // (the oldest go first).
  int64_t kept_results_ttl_ms = 60'000;
  size_t kept_results_max = 20'000;
};

class Frontend {
 public:
  static Result<std::unique_ptr<Frontend>> Start(FrontendOptions options);
  ~Frontend();  // Shutdown()

  std::string address() const;        // bound gRPC address
  std::string store_address() const;  // the store workers should use
  std::string pipeline() const;
  std::string metrics_address() const;  // empty when metrics are off
  // Stops intake, answers everything pending with UNAVAILABLE, leaves the pipeline.
  void Shutdown();

  struct Impl;

 private:
  explicit Frontend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::frontend
