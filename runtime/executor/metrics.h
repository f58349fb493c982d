// Metrics: Prometheus metrics of a process, served over HTTP at /metrics (prometheus-cpp, Debian
// prometheus-cpp-dev). prometheus-cpp types stay out of this header.
//
//   ARCHI_ASSIGN_OR_RETURN(auto m, Metrics::Serve("127.0.0.1:0"));
//   Counter done = m->AddCounter("archi_worker_batches_total", "micro-batches computed");
//   done.Increment();
//
// A Metrics object without a server (Metrics::Disabled()) hands out working handles that nobody
// scrapes, so callers never branch on whether metrics are on. Handles stay valid for the life of
// the Metrics object that made them. Every method and handle is thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace archi::executor {

using Labels = std::map<std::string, std::string>;

class Counter {
 public:
  void Increment(double v = 1.0);
  prometheus::Counter* impl = nullptr;
};
class Gauge {
 public:
  void Set(double v);
  prometheus::Gauge* impl = nullptr;
};
class Histogram {
 public:
  void Observe(double v);
  prometheus::Histogram* impl = nullptr;
};

class Metrics {
 public:
  // Serves /metrics on `address` ("host:port", port 0 picks one). kUnavailable when it cannot
  // bind, kInvalidArgument for a malformed address.
  static Result<std::unique_ptr<Metrics>> Serve(const std::string& address);
  static std::unique_ptr<Metrics> Disabled();
  ~Metrics();

  // "host:port" actually bound; empty when disabled.
  std::string address() const;

  Counter AddCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge AddGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram AddHistogram(const std::string& name, const std::string& help,
                         std::vector<double> buckets, const Labels& labels = {});

  // Seconds buckets from 1 ms to ~16 s (powers of two), for latencies.
  static std::vector<double> LatencyBuckets();

  struct Impl;

 private:
  explicit Metrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::executor
