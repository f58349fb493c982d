// LoadGenerator: drives archi.proto.Inference/Embed (proto/inference.proto) over gRPC and records
// every request.
//
//   closed loop: `concurrency` requests outstanding at all times (a new one is sent from the
//                completion of the previous one);
//   open loop:   requests sent at `rate_per_s` (Poisson or evenly spaced arrivals), however many
//                are outstanding.
// It stops sending after `max_requests` or `duration_s` (whichever comes first), then waits for
// the outstanding ones. Inputs are taken round-robin from `inputs` (text or token ids).
//
// Every request gets its own gRPC deadline (`deadline_ms`). A request is *lost* when it got no
// proper answer: no completion at all by deadline + grace (then it is cancelled), or a
// DEADLINE_EXCEEDED that gRPC produced on the client ("Deadline Exceeded") because the server
// never answered. A DEADLINE_EXCEEDED sent by the server is a proper answer (counted, not lost).
//
// Threads: uses gRPC's callback API, so a couple of gRPC threads drive any number of outstanding
// requests; open loop adds one pacing thread. Start/Stop/Wait/Progress are thread-safe. The
// destructor cancels whatever is still outstanding and waits for it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::harness {

struct LoadInput {
  std::string text;          // used when ids is empty
  std::vector<int32_t> ids;  // token ids of a whole sequence ([CLS] ... [SEP])
  static LoadInput Text(std::string t) { return {std::move(t), {}}; }
  static LoadInput Ids(std::vector<int32_t> i) { return {"", std::move(i)}; }
};

struct LoadOptions {
  std::string target;  // HOST:PORT of the frontend
  std::string model;   // EmbedRequest.model ("" = the only model served)
  enum class Mode { kClosed, kOpen } mode = Mode::kClosed;
  int concurrency = 8;      // closed loop
  double rate_per_s = 100;  // open loop
  bool poisson = true;      // open loop: exponential gaps (else constant)
  std::vector<LoadInput> inputs;
  int64_t deadline_ms = 10'000;  // per request (gRPC deadline)
  int64_t grace_ms = 2'000;      // beyond the deadline before a request counts as lost
  int64_t max_requests = 0;      // 0: no limit
  double duration_s = 0;         // 0: no limit (one of the two limits is required)
  int max_attempts = 1;          // > 1: resend after UNAVAILABLE while the deadline allows
  // Backoff before a resend: retry_backoff_ms after the first UNAVAILABLE, doubling up to
  // max_retry_backoff_ms, each with +-25% jitter, always within the request's deadline (its
  // overall deadline: every attempt carries what is left of it). 0: resend at once.
  int64_t retry_backoff_ms = 0;
  int64_t max_retry_backoff_ms = 1'000;
  // Non-empty: request i carries EmbedRequest.request_id = prefix + i (an idempotency key), the
  // same on every attempt, so a restarted frontend answers a retry from the execution it
  // recovered or kept (docs/coordinator.md, "Durable admission").
  std::string request_id_prefix;
  bool keep_embeddings = false;  // RequestRecord::embedding of OK answers
  int channels = 1;              // gRPC channels (connections) the requests are spread over
  uint64_t seed = 1;             // open loop arrivals
  // Open loop: when not empty, request i is sent at send_times_ms[i] (ms after Start, ascending)
  // instead of at rate_per_s; max_requests defaults to its size (archi-bench replay).
  std::vector<double> send_times_ms;
  // > 0: reconnect to a server that went away after at most this long (gRPC's channel backoff:
  // 100 ms first, growing to this); 0: gRPC's defaults (1 s first, growing to 120 s).
  int64_t max_reconnect_backoff_ms = 0;
};

// One request. Times are ms since the generator started.
struct RequestRecord {
  int64_t index = 0;
  int input = 0;                 // index into LoadOptions::inputs
  double send_ms = 0;            // first attempt sent
  double finish_ms = -1;         // final answer (-1: none)
  int code = -1;                 // grpc::StatusCode of the final answer (-1: none)
  std::string message;           // error message (empty when OK)
  int attempts = 0;              // RPCs sent for it (client side)
  uint32_t server_attempts = 0;  // EmbedResponse.attempts (frontend re-sends + 1)
  double server_total_ms = 0;    // EmbedResponse.total_ms
  uint64_t server_request_id = 0;  // EmbedResponse.request_id (the frontend's execution)
  bool replayed = false;           // EmbedResponse.replayed
  bool recovered = false;          // EmbedResponse.recovered
  std::vector<float> embedding;    // with LoadOptions::keep_embeddings
  bool lost = false;
  double latency_ms() const { return finish_ms >= 0 ? finish_ms - send_ms : -1; }
};

struct LoadSummary {
  int64_t sent = 0;
  int64_t ok = 0;
  int64_t lost = 0;
  int64_t deadline_exceeded = 0;           // all DEADLINE_EXCEEDED (server- and client-made)
  std::map<std::string, int64_t> by_code;  // "OK", "UNAVAILABLE", ... (lost ones under "LOST")
  double wall_s = 0;                       // first send to last answer
  double throughput = 0;                   // OK answers per second of wall_s
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, mean_ms = 0, max_ms = 0;  // OK requests
  int64_t resent = 0;            // OK answers with server_attempts > 1 or attempts > 1
  int64_t retried = 0;           // requests sent more than once by the client
  int64_t recovered = 0;         // OK answers from an execution a restarted frontend recovered
  std::string ToString() const;  // one line
};

struct LoadReport {
  std::vector<RequestRecord> records;  // by index
  LoadSummary summary;

  // OK completions per bin of `bin_ms` by finish time, from 0 to the last answer.
  std::vector<int64_t> Timeline(double bin_ms = 100) const;
  // Non-OK answers (lost included, at deadline + grace) per bin.
  std::vector<int64_t> ErrorTimeline(double bin_ms = 100) const;
  // index,input,send_ms,finish_ms,latency_ms,code,attempts,server_attempts,server_total_ms,lost
  std::string RecordsCsv() const;
  // bin_start_s,ok,errors,ok_per_s
  std::string TimelineCsv(double bin_ms = 100) const;
};

// Computes the summary of `records` (used by LoadGenerator, exposed for tests).
LoadSummary Summarize(const std::vector<RequestRecord>& records);
// Nearest-rank percentile (p in [0, 100]) of unsorted values; 0 for none.
double Percentile(std::vector<double> values, double p);
// "OK", "DEADLINE_EXCEEDED", ... for a grpc::StatusCode value; "LOST" for -1.
std::string GrpcCodeName(int code);

class LoadGenerator {
 public:
  // kInvalidArgument for options that cannot run (no inputs, no limit, bad numbers).
  static Result<std::unique_ptr<LoadGenerator>> Create(LoadOptions options);
  ~LoadGenerator();

  // Starts sending (returns at once). kFailedPrecondition when already started.
  Status Start();
  // Sends no new request (outstanding ones go on). Idempotent.
  void Stop();
  // Waits until the sending stopped (limit reached or Stop) and every request is answered or
  // lost; then returns the report. kDeadlineExceeded if that has not happened by `deadline`
  // (the run goes on; call again).
  Result<LoadReport> Wait(Deadline deadline);
  // Start + Wait(Infinite): bounded anyway by the limits, the request deadlines and the grace.
  Result<LoadReport> Run();

  struct Progress {
    int64_t sent = 0, ok = 0, errors = 0, outstanding = 0;
    double elapsed_ms = 0;
  };
  Progress GetProgress() const;
  // The instant Start was called: RequestRecord times are ms since then.
  Clock::time_point start_time() const;

  class Impl;

 private:
  explicit LoadGenerator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::harness
