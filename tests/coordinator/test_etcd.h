// TestEtcd: a private etcd server for one test (Debian's etcd-server, installed by
// scripts/setup.sh): its own data dir, client and peer ports picked free on 127.0.0.1, killed
// (SIGKILL) and reaped when the object goes. Binary(): $ARCHI_ETCD_BIN, else /usr/bin/etcd or
// /usr/local/bin/etcd; "" when none exists (tests GTEST_SKIP then).
//
// Spawn it from the test body's thread (harness::Process: the child dies with that thread).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "bench/harness/process.h"
#include "runtime/coordinator/etcd_client.h"

namespace archi::testing_etcd {

inline std::string EtcdBinary() {
  if (const char* e = std::getenv("ARCHI_ETCD_BIN"); e != nullptr && *e != '\0') return e;
  for (const char* p : {"/usr/bin/etcd", "/usr/local/bin/etcd"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// A port nobody listens on now (bound to 0 and closed: another process may take it meanwhile,
// which start-up then reports).
// True once something accepts TCP connections on 127.0.0.1:port.
inline bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

class TestEtcd {
 public:
  // Starts etcd in `dir` (created) and waits until it answers a Range (up to `deadline`).
  static Result<std::unique_ptr<TestEtcd>> Start(const std::string& dir, Deadline deadline) {
    const std::string bin = EtcdBinary();
    if (bin.empty()) return NotFoundError("no etcd binary (apt-get install etcd-server)");
    std::filesystem::create_directories(dir);
    Status last = UnavailableError("not started");
    for (int attempt = 0; attempt < 3; ++attempt) {  // a port taken meanwhile: pick others
      auto e = std::unique_ptr<TestEtcd>(new TestEtcd);
      const int client_port = FreePort(), peer_port = FreePort();
      e->endpoint_ = "127.0.0.1:" + std::to_string(client_port);
      const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
      const std::string data = dir + "/data" + std::to_string(attempt);
      ARCHI_ASSIGN_OR_RETURN(
          e->process_,
          harness::Process::Spawn(
              {.binary = bin,
               .args = {"--name", "archi-test", "--data-dir", data, "--listen-client-urls",
                        "http://" + e->endpoint_, "--advertise-client-urls",
                        "http://" + e->endpoint_, "--listen-peer-urls", peer,
                        "--initial-advertise-peer-urls", peer, "--initial-cluster",
                        "archi-test=" + peer, "--log-level", "warn"},
               .log_path = dir + "/etcd.log"}));
      // Wait for the port first: a gRPC channel whose first connection is refused backs off
      // for seconds before it tries again.
      while (!deadline.Expired() && e->process_->Running() && !Accepts(client_port)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ARCHI_ASSIGN_OR_RETURN(e->client_, coordinator::EtcdClient::Create(e->endpoint_));
      while (!deadline.Expired() && e->process_->Running()) {
        etcdserverpb::RangeRequest r;
        r.set_key("/probe");
        auto got = e->client_->Range(r, Deadline::AfterMs(500));
        if (got.ok()) return e;
        last = got.status();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (deadline.Expired()) break;
      last = UnavailableError("etcd exited: " + e->process_->LogTail(1000));
    }
    return Status(last.code(), "etcd did not start: " + last.ToString());
  }

  const std::string& endpoint() const { return endpoint_; }
  coordinator::EtcdClient& client() { return *client_; }
  harness::Process& process() { return *process_; }

 private:
  TestEtcd() = default;
  std::string endpoint_;
  std::unique_ptr<harness::Process> process_;
  std::unique_ptr<coordinator::EtcdClient> client_;
};

}  // namespace archi::testing_etcd
