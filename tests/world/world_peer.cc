// Test helper process: joins the given worlds (as a non-zero rank) through a gRPC store and echoes
// every message it receives back to rank 0, bit for bit. The first float of a message is a
// command: >= 0 echo, -1 leave the world and exit when no world is left, -2 leave the world and
// join it again (a process that leaves and rejoins).
//
//   world_peer --store ADDR --world NAME:RANK:SIZE:ELEMS [--world ...] [--heartbeat-timeout-ms N]
//
// Prints "READY <pid>" on stdout once every world is ready, "REJOINED <name>" after a rejoin.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <sstream>
#include <thread>
#include <vector>

#include "world/store_client.h"
#include "world/world_manager.h"

namespace {
struct Spec {
  std::string name;
  int rank = 1;
  int size = 2;
  int64_t elems = 1;
};

archi::Status Join(archi::WorldManager& mgr, const Spec& s, std::shared_ptr<archi::Store> store,
                   const archi::WorldOptions& o) {
  archi::Status st;
  for (int attempt = 0; attempt < 20; ++attempt) {
    st = mgr.InitializeWorld(s.name, s.rank, s.size, store, o);
    if (st.ok() || st.code() == archi::StatusCode::kInvalidArgument) return st;
  }
  return st;
}
}  // namespace

int main(int argc, char** argv) {
  std::string store_addr;
  std::vector<std::string> world_args;
  int64_t hb_timeout_ms = 10'000;
  CLI::App app{"world_peer: echo peer for the world fault tests"};
  app.add_option("--store", store_addr, "store address")->required();
  app.add_option("--world", world_args, "NAME:RANK:SIZE:ELEMS")->required();
  app.add_option("--heartbeat-timeout-ms", hb_timeout_ms, "hung-peer timeout");
  CLI11_PARSE(app, argc, argv);

  std::vector<Spec> specs;
  for (const auto& arg : world_args) {
    Spec s;
    std::string w = arg;
    std::replace(w.begin(), w.end(), ':', ' ');
    std::istringstream in(w);
    in >> s.name >> s.rank >> s.size >> s.elems;
    if (!in || s.elems < 1) {
      std::fprintf(stderr, "bad --world %s (want NAME:RANK:SIZE:ELEMS)\n", arg.c_str());
      return 2;
    }
    specs.push_back(s);
  }
  auto client = archi::StoreClient::Connect(store_addr, archi::Deadline::AfterMs(5000));
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 3;
  }
  std::shared_ptr<archi::Store> store = *client;
  archi::WorldManager mgr;
  auto o = archi::WorldOptions::FromEnv();
  o.heartbeat_timeout_ms = hb_timeout_ms;
  o.init_timeout_ms = 5000;

  // Join every world concurrently.
  std::vector<archi::Status> results(specs.size());
  {
    std::vector<std::jthread> ts;
    for (size_t i = 0; i < specs.size(); ++i) {
      ts.emplace_back([&, i] { results[i] = Join(mgr, specs[i], store, o); });
    }
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    if (!results[i].ok()) {
      std::fprintf(stderr, "join %s: %s\n", specs[i].name.c_str(), results[i].ToString().c_str());
      return 4;
    }
  }
  std::printf("READY %d\n", ::getpid());
  std::fflush(stdout);

  std::vector<std::jthread> loops;
  for (const auto& s : specs) {
    loops.emplace_back([&, s] {
      auto buf = archi::Tensor::Empty({s.elems}, archi::DType::kF32).value();
      for (;;) {
        archi::OpOptions idle;
        idle.timeout_ms = 120'000;
        auto st = mgr.Recv(s.name, buf, 0, 0, idle)->Wait(archi::Deadline::AfterMs(121'000));
        if (!st.ok()) return;  // world broken: the test decides what happens next
        float cmd = buf.data_as<float>()[0];
        if (cmd == -1.0f) {
          mgr.RemoveWorld(s.name).IgnoreError();
          return;
        }
        if (cmd == -2.0f) {
          mgr.RemoveWorld(s.name).IgnoreError();
          if (!Join(mgr, s, store, o).ok()) return;
          std::printf("REJOINED %s\n", s.name.c_str());
          std::fflush(stdout);
          continue;
        }
        if (!mgr.Send(s.name, buf, 0)->Wait(archi::Deadline::AfterMs(30'000)).ok()) return;
      }
    });
  }
  loops.clear();
  return 0;
}
