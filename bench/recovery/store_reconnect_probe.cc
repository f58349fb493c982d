// archi-store-reconnect: how long a client's gRPC channel to the rendezvous store takes to work
// again after the store process is killed and restarted on the same port (issue 5: a
// coordinator-hosted store restarted with the coordinator; workers took 3.5-9 s to reach it).
//
// Each trial: archi-store on a fixed port; a client channel (one of the variants below) polls
// Get every 20 ms with a 200 ms deadline (what members polling the registry do); kill -9 the
// store; after --down-ms restart it on the same port and SIGSTOP it at once for --stall-ms (a
// process that is still starting on a loaded host: the kernel accepts the TCP connection, the
// HTTP/2 handshake is not answered); SIGCONT. Measured: from SIGCONT to the client's first
// successful Get. Variants (--variants, comma-separated):
//   defaults:        a channel without reconnect arguments (initial backoff 1 s, x1.6, max
//                    120 s, minimum connect timeout 20 s);
//   I/M/X:           a channel with GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS = I,
//                    GRPC_ARG_MIN_RECONNECT_BACKOFF_MS = M (gRPC uses it as the least time one
//                    connection attempt gets before it is abandoned), GRPC_ARG_MAX_RECONNECT_
//                    BACKOFF_MS = X; 100/100/2000 is what StoreClient used before issue 5;
//   client:          the real StoreClient (world/store_client.cc) as built.
// Prints a markdown table; a timing, never a pass/fail.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness/process.h"
#include "proto/store.grpc.pb.h"
#include "world/store_client.h"

#ifndef ARCHI_STORE_BIN
#define ARCHI_STORE_BIN ""
#endif

namespace {

namespace spb = ::archi::store::v1;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// One Get with a 200 ms deadline: true when it succeeded (a missing key is NOT_FOUND: reached).
using Probe = std::function<bool()>;

struct Variant {
  std::string name;
  std::function<Probe(const std::string& address)> make;
};

// initial/min/max <= 0: gRPC's defaults.
Probe RawChannel(const std::string& address, int initial, int min, int max) {
  grpc::ChannelArguments args;
  if (initial > 0) args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial);
  if (min > 0) args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, min);
  if (max > 0) args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = std::shared_ptr<spb::Store::Stub>(spb::Store::NewStub(channel));
  return [channel, stub] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    spb::GetRequest req;
    req.set_key("probe");
    spb::GetResponse resp;
    const grpc::Status s = stub->Get(&ctx, req, &resp);
    return s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND;
  };
}

Probe RealClient(const std::string& address) {
  auto c = archi::StoreClient::Connect(address, archi::Deadline::AfterMs(5000));
  if (!c.ok()) {
    std::fprintf(stderr, "StoreClient::Connect: %s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  std::shared_ptr<archi::StoreClient> client = *c;
  return [client] {
    auto r = client->Get("probe", archi::Deadline::AfterMs(200));
    return r.ok() || r.status().code() == archi::StatusCode::kNotFound;
  };
}

std::unique_ptr<archi::harness::Process> StartStore(const std::string& bin, int port) {
  auto p = archi::harness::Process::Spawn(
      {.binary = bin, .args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  if (!p.ok()) {
    std::fprintf(stderr, "spawn %s: %s\n", bin.c_str(), p.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*p);
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  int trials = 5, down_ms = 1500, stall_ms = 1500, port = 0;
  std::string bin = ARCHI_STORE_BIN;
  std::string names = "defaults,100/100/2000,client";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--trials") trials = std::atoi(argv[i + 1]);
    if (a == "--down-ms") down_ms = std::atoi(argv[i + 1]);
    if (a == "--stall-ms") stall_ms = std::atoi(argv[i + 1]);
    if (a == "--port") port = std::atoi(argv[i + 1]);
    if (a == "--store-bin") bin = argv[i + 1];
    if (a == "--variants") names = argv[i + 1];
  }
  if (bin.empty()) {
    std::fprintf(stderr, "archi-store not found: pass --store-bin\n");
    return 2;
  }
  if (port == 0) port = 20000 + static_cast<int>(::getpid() % 20000);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  std::vector<Variant> variants;
  for (size_t b = 0; b <= names.size();) {
    size_t e = names.find(',', b);
    if (e == std::string::npos) e = names.size();
    const std::string n = names.substr(b, e - b);
    b = e + 1;
    if (n == "client") {
      variants.push_back({"StoreClient (as built)", RealClient});
    } else if (n == "defaults") {
      variants.push_back(
          {"gRPC defaults", [](const std::string& a) { return RawChannel(a, 0, 0, 0); }});
    } else {
      int i = 0, m = 0, x = 0;
      if (std::sscanf(n.c_str(), "%d/%d/%d", &i, &m, &x) != 3) {
        std::fprintf(stderr, "bad variant '%s' (defaults | client | I/M/X)\n", n.c_str());
        return 2;
      }
      variants.push_back({"initial/min/max " + n + " ms",
                          [i, m, x](const std::string& a) { return RawChannel(a, i, m, x); }});
    }
  }
  std::printf("| variant | trials | recovered after SIGCONT: median / max ms | not recovered in 30 s |\n"
              "| --- | ---: | ---: | ---: |\n");
  for (const auto& v : variants) {
    std::vector<double> ms;
    int lost = 0;
    for (int t = 0; t < trials; ++t) {
      auto store = StartStore(bin, port);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      Probe probe = v.make(address);
      const auto ready_by = Clock::now() + std::chrono::seconds(10);
      while (!probe() && Clock::now() < ready_by) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      // Poll while the store is killed, down and stalled (the failures drive the backoff).
      (void)store->Signal(SIGKILL);
      (void)store->WaitExit(archi::Deadline::AfterMs(5000));
      const auto down_until = Clock::now() + std::chrono::milliseconds(down_ms);
      while (Clock::now() < down_until) {
        probe();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      store = StartStore(bin, port);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // listening
      (void)store->Signal(SIGSTOP);
      const auto stall_until = Clock::now() + std::chrono::milliseconds(stall_ms);
      while (Clock::now() < stall_until) {
        probe();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      (void)store->Signal(SIGCONT);
      const auto resumed = Clock::now();
      bool ok = false;
      while (MsSince(resumed) < 30'000) {
        if (probe()) {
          ok = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (ok) {
        ms.push_back(MsSince(resumed));
      } else {
        ++lost;
      }
      store->Terminate(std::chrono::milliseconds(2000));
      std::fflush(stdout);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("| %s | %d | %.0f / %.0f | %d |\n", v.name.c_str(), trials,
                ms.empty() ? -1.0 : ms[ms.size() / 2], ms.empty() ? -1.0 : ms.back(), lost);
    std::fflush(stdout);
  }
  std::printf("\narchi-store restarted on %s after %d ms down, then SIGSTOPped for %d ms; a Get "
              "(200 ms deadline) every 20 ms throughout\n",
              address.c_str(), down_ms, stall_ms);
  return 0;
}
