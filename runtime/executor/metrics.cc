#include "runtime/executor/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

namespace archi::executor {

void Counter::Increment(double v) { impl->Increment(v); }
void Gauge::Set(double v) { impl->Set(v); }
void Histogram::Observe(double v) { impl->Observe(v); }

// The HTTP side is ours, not prometheus-cpp-pull's Exposer: its civetweb creates threads with a
// small compile-time stack size, and in our binaries, which link the CUDA libraries (static TLS:
// cuBLASLt 92 KiB, NCCL 12 KiB), its pthread_create failed before any clone (seen here). This
// serves GET /metrics (HTTP/1.0, one connection at a time, 1 s I/O timeouts) from one thread;
// the metric model and the text format are prometheus-cpp's (Registry, TextSerializer).
struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::string address;
  int listen_fd = -1;
  std::jthread server;
  std::mutex mu;  // families are created under it (prometheus-cpp's Add is not meant to race)

  ~Impl() {
    server.request_stop();
    if (server.joinable()) server.join();
    if (listen_fd >= 0) close(listen_fd);
  }

  void Serve(std::stop_token st) {
    while (!st.stop_requested()) {
      pollfd p{listen_fd, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      timeval tv{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      std::string request;
      char buf[1024];
      while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
        const ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      std::string status = "404 Not Found", type = "text/plain", body = "not found; try /metrics\n";
      if (request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?")) {
        status = "200 OK";
        type = "text/plain; version=0.0.4; charset=utf-8";
        body = prometheus::TextSerializer().Serialize(registry->Collect());
      } else if (!request.starts_with("GET ")) {
        status = "405 Method Not Allowed";
        body = "only GET\n";
      }
      const std::string head = "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
                               "\r\nContent-Length: " + std::to_string(body.size()) +
                               "\r\nConnection: close\r\n\r\n";
      const std::string out = head + body;
      size_t sent = 0;
      while (sent < out.size()) {
        const ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
      close(fd);
    }
  }
};

Metrics::Metrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Metrics::~Metrics() = default;

std::unique_ptr<Metrics> Metrics::Disabled() {
  return std::unique_ptr<Metrics>(new Metrics(std::make_unique<Impl>()));
}

Result<std::unique_ptr<Metrics>> Metrics::Serve(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return InvalidArgumentError("metrics address '" + address + "' is not host:port");
  }
  const std::string host = address.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    return InvalidArgumentError("metrics address '" + address + "': bad port");
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return InvalidArgumentError("metrics address '" + address + "': host must be an IPv4 address");
  }
  auto impl = std::make_unique<Impl>();
  impl->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(impl->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = sizeof(a);
  if (impl->listen_fd < 0 ||
      bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(impl->listen_fd, 16) != 0 ||
      getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return UnavailableError("cannot serve metrics on " + address + ": " + std::strerror(errno));
  }
  impl->address = host + ":" + std::to_string(ntohs(a.sin_port));
  Impl* raw = impl.get();
  impl->server = std::jthread([raw](std::stop_token st) { raw->Serve(st); });
  return std::unique_ptr<Metrics>(new Metrics(std::move(impl)));
}

std::string Metrics::address() const { return impl_->address; }

Counter Metrics::AddCounter(const std::string& name, const std::string& help,
                            const Labels& labels) {
  std::lock_guard lock(impl_->mu);
  auto& family = prometheus::BuildCounter().Name(name).Help(help).Register(*impl_->registry);
  return Counter{&family.Add(labels)};
}

Gauge Metrics::AddGauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(impl_->mu);
  auto& family = prometheus::BuildGauge().Name(name).Help(help).Register(*impl_->registry);
  return Gauge{&family.Add(labels)};
}

Histogram Metrics::AddHistogram(const std::string& name, const std::string& help,
                                std::vector<double> buckets, const Labels& labels) {
  std::lock_guard lock(impl_->mu);
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(*impl_->registry);
  return Histogram{
      &family.Add(labels, prometheus::Histogram::BucketBoundaries(std::move(buckets)))};
}

std::vector<double> Metrics::LatencyBuckets() {
  std::vector<double> b;
  for (double v = 0.001; v < 20; v *= 2) b.push_back(v);
  return b;
}

}  // namespace archi::executor
