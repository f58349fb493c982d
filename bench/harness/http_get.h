// A tiny HTTP/1.0 GET over a plain socket for tests and benchmarks that scrape /metrics
// (Prometheus text) of the serving binaries on loopback. No dependency beyond POSIX sockets.
// Thread safety: free functions without shared state.
#pragma once

#include <string>
#include <vector>

namespace archi::harness {

// GET http://addr/path ("127.0.0.1:PORT"); the whole response (status line, headers, body), or
// "" when the connection fails. Reads time out after 5 s.
std::string HttpGet(const std::string& addr, const std::string& path);

// The value of the first sample of metric `name` in Prometheus text whose labels contain every
// entry of `labels` (each written `key="value"`); -1 when there is none.
double PrometheusSample(const std::string& text, const std::string& name,
                        const std::vector<std::string>& labels = {});

}  // namespace archi::harness
