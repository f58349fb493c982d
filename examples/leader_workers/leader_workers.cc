// Leader with N workers, one world per (leader, worker) pair.
//
//   mpirun --allow-run-as-root --oversubscribe --enable-recovery
//          --mca orte_abort_on_non_zero_status 0 -np 4 archi-leader-workers --duration-s 10
//   (one command line)
//
// MPI only starts the processes and hands rank 0's store address to the others; it is finalised
// right after, so a dying worker never takes the job down. Rank 0 is the leader: it hosts the
// rendezvous store and, for each worker k, a world "w<k>" of size 2 (leader rank 0, worker rank 1).
// It sends request tensors to every worker and checks each reply (reply = 2 * request + 1).
// When a worker dies, only its world breaks; the leader keeps serving the others, removes the
// broken world and re-creates it under the same name, which a restarted worker joins:
//
//   archi-leader-workers --role worker --id 2 --store 127.0.0.1:PORT
//
// Without mpirun, --role leader/worker with --store pick the roles explicitly.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "archi/config.h"
#include "runtime/core/logging.h"
#include "world/store_client.h"
#include "world/store_server.h"
#include "world/world_manager.h"

#if ARCHI_HAVE_MPI
#include <mpi.h>
#endif

namespace {

using archi::Clock;
using archi::Deadline;

constexpr float kStop = -1.0f;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Config {
  std::string role;  // leader | worker | "" (from MPI rank)
  int id = 0;
  int workers = 3;
  std::string store;
  std::string address_file;
  double duration_s = 10;
  int64_t elems = 4096;
  int64_t op_timeout_ms = 5000;
  int64_t heartbeat_timeout_ms = 1000;
};

struct WorkerStats {
  std::atomic<int64_t> delivered{0};
  std::atomic<int64_t> corrupted{0};
  std::atomic<int> breaks{0};
  std::atomic<int> builds{0};
  std::atomic<uint64_t> epoch{0};
  std::atomic<int64_t> broken_wall_ms{0};
  std::atomic<int64_t> ready_wall_ms{0};
  std::atomic<int64_t> remove_us{0};
  std::mutex mu;
  std::string last_error;
};

archi::WorldOptions Options(const Config& c, int64_t init_ms) {
  auto o = archi::WorldOptions::FromEnv();
  o.init_timeout_ms = init_ms;
  o.op_timeout_ms = c.op_timeout_ms;
  o.heartbeat_timeout_ms = c.heartbeat_timeout_ms;
  return o;
}

int RunLeader(const Config& c, std::unique_ptr<archi::StoreServer> server) {
  auto store = server->store();
  archi::WorldManager mgr;
  std::vector<WorkerStats> stats(c.workers + 1);
  mgr.AddStateCallback([&](const archi::WorldInfo& info) {
    int k = std::atoi(info.name.c_str() + 1);
    if (k < 1 || k > c.workers) return;
    if (info.state == archi::WorldState::kBroken) {
      stats[k].broken_wall_ms = WallMs();
      std::lock_guard<std::mutex> lock(stats[k].mu);
      stats[k].last_error = std::string(info.error.message());
    }
  });
  std::atomic<bool> stop{false};
  std::vector<std::jthread> threads;
  for (int k = 1; k <= c.workers; ++k) {
    threads.emplace_back([&, k] {
      const std::string name = "w" + std::to_string(k);
      auto& s = stats[k];
      auto req = archi::Tensor::Empty({c.elems}, archi::DType::kF32).value();
      auto rep = archi::Tensor::Empty({c.elems}, archi::DType::kF32).value();
      bool ready = false;
      int64_t seq = 0;
      while (!stop) {
        if (!ready) {
          auto st = mgr.InitializeWorld(name, 0, 2, store, Options(c, 1000));
          if (!st.ok()) continue;  // worker not (yet) there: a new epoch is opened next try
          ready = true;
          s.builds++;
          s.epoch = mgr.GetWorld(name)->epoch;
          s.ready_wall_ms = WallMs();
          continue;
        }
        ++seq;
        float* q = req.data_as<float>();
        q[0] = static_cast<float>(seq % 1000000);
        for (int64_t i = 1; i < c.elems; ++i) q[i] = static_cast<float>((seq + i) % 1024);
        auto sw = mgr.Send(name, req, 1);
        auto rw = mgr.Recv(name, rep, 1);
        auto d = Deadline::AfterMs(c.op_timeout_ms + 1000);
        archi::Status st = sw->Wait(d);
        archi::Status st2 = rw->Wait(d);
        if (!st.ok() || !st2.ok()) {
          s.breaks++;
          auto t0 = Clock::now();
          mgr.RemoveWorld(name).IgnoreError();
          s.remove_us = static_cast<int64_t>(archi::MsSince(t0) * 1000);
          ready = false;
          continue;
        }
        const float* r = rep.data_as<float>();
        bool good = true;
        for (int64_t i = 0; i < c.elems; ++i) good &= r[i] == 2 * q[i] + 1;
        (good ? s.delivered : s.corrupted)++;
      }
      if (ready) {
        auto t = archi::Tensor::Zeros({c.elems}, archi::DType::kF32).value();
        t.data_as<float>()[0] = kStop;
        mgr.Send(name, t, 1)->Wait(Deadline::AfterMs(2000)).IgnoreError();
        mgr.RemoveWorld(name).IgnoreError();
      }
    });
  }
  auto t0 = Clock::now();
  int tick = 0;
  while (archi::MsSince(t0) < c.duration_s * 1000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (++tick % 10 != 0) continue;
    std::string line = "[leader] t=" + std::to_string(tick / 10) + "s";
    for (int k = 1; k <= c.workers; ++k) {
      auto info = mgr.GetWorld("w" + std::to_string(k));
      std::string state = info.ok() ? std::string(archi::WorldStateName(info->state)) : "DOWN";
      line += "  w" + std::to_string(k) + ":" + state + " e" + std::to_string(stats[k].epoch) +
              " msgs=" + std::to_string(stats[k].delivered.load());
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  stop = true;
  threads.clear();

  std::printf("\n%-6s %-8s %-6s %-10s %-9s %-7s %-7s %-12s %s\n", "world", "state", "epoch",
              "delivered", "corrupted", "breaks", "builds", "remove_ms", "last error");
  int64_t total = 0, corrupted = 0;
  for (int k = 1; k <= c.workers; ++k) {
    auto& s = stats[k];
    total += s.delivered;
    corrupted += s.corrupted;
    std::lock_guard<std::mutex> lock(s.mu);
    std::printf("w%-5d %-8s %-6lu %-10ld %-9ld %-7d %-7d %-12.2f %s\n", k, "REMOVED",
                static_cast<unsigned long>(s.epoch.load()), static_cast<long>(s.delivered.load()),
                static_cast<long>(s.corrupted.load()), s.breaks.load(), s.builds.load(),
                s.remove_us / 1000.0, s.last_error.empty() ? "-" : s.last_error.c_str());
    if (s.broken_wall_ms) {
      std::printf("BROKEN_AT w%d %ld\nREBUILT_AT w%d %ld\n", k, static_cast<long>(s.broken_wall_ms.load()),
                  k, static_cast<long>(s.ready_wall_ms.load()));
    }
  }
  std::printf("\nleader: %ld replies verified, %ld corrupted\n", static_cast<long>(total),
              static_cast<long>(corrupted));
  return corrupted == 0 ? 0 : 1;
}

int RunWorker(const Config& c) {
  auto client = archi::StoreClient::Connect(c.store, Deadline::AfterMs(10'000));
  if (!client.ok()) {
    std::fprintf(stderr, "worker %d: %s\n", c.id, client.status().ToString().c_str());
    return 2;
  }
  std::shared_ptr<archi::Store> store = *client;
  archi::WorldManager mgr;
  const std::string name = "w" + std::to_string(c.id);
  auto req = archi::Tensor::Empty({c.elems}, archi::DType::kF32).value();
  auto rep = archi::Tensor::Empty({c.elems}, archi::DType::kF32).value();
  std::printf("[worker %d] pid %d joining world %s\n", c.id, ::getpid(), name.c_str());
  std::fflush(stdout);
  auto give_up = Deadline::AfterMs(static_cast<int64_t>(c.duration_s * 1000) + 30'000);
  while (!give_up.Expired()) {
    auto st = mgr.InitializeWorld(name, 1, 2, store, Options(c, 5000));
    if (!st.ok()) {
      if (st.code() == archi::StatusCode::kUnavailable) {
        std::fprintf(stderr, "[worker %d] store gone: %s\n", c.id, st.ToString().c_str());
        return 0;
      }
      continue;
    }
    std::printf("[worker %d] world %s ready (epoch %lu)\n", c.id, name.c_str(),
                static_cast<unsigned long>(mgr.GetWorld(name)->epoch));
    std::fflush(stdout);
    for (;;) {
      archi::OpOptions idle;
      idle.timeout_ms = 60'000;  // the leader may pause; a dead leader is seen at once anyway
      auto st2 = mgr.Recv(name, req, 0, 0, idle)->Wait(Deadline::AfterMs(61'000));
      if (!st2.ok()) break;
      const float* q = req.data_as<float>();
      if (q[0] == kStop) {
        mgr.RemoveWorld(name).IgnoreError();
        std::printf("[worker %d] stopped by the leader\n", c.id);
        return 0;
      }
      float* r = rep.data_as<float>();
      for (int64_t i = 0; i < c.elems; ++i) r[i] = 2 * q[i] + 1;
      if (!mgr.Send(name, rep, 0)->Wait(Deadline::AfterMs(c.op_timeout_ms + 1000)).ok()) break;
    }
    mgr.RemoveWorld(name).IgnoreError();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{"Archipelago example: a leader with N workers, one world per (leader, worker) pair"};
  app.add_option("--role", c.role, "leader or worker (default: from the MPI rank: 0 = leader)")
      ->check(CLI::IsMember({"leader", "worker"}));
  app.add_option("--id", c.id, "worker id k >= 1 (world 'w<k>'); default: the MPI rank");
  app.add_option("--workers", c.workers, "number of workers the leader serves (default: MPI size - 1)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--store", c.store, "store address HOST:PORT (workers started outside mpirun)");
  app.add_option("--address-file", c.address_file, "leader writes its store address here");
  app.add_option("--duration-s", c.duration_s, "how long the leader serves")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--elems", c.elems, "float32 elements per request")->check(CLI::Range(1, 1 << 26));
  app.add_option("--op-timeout-ms", c.op_timeout_ms, "deadline of each send/recv")->check(CLI::Range(10, 3'600'000));
  app.add_option("--heartbeat-timeout-ms", c.heartbeat_timeout_ms, "hung-peer detection")
      ->check(CLI::Range(50, 3'600'000));
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);

  int mpi_rank = -1, mpi_size = 0;
  std::string address;
#if ARCHI_HAVE_MPI
  if (c.role.empty() && std::getenv("OMPI_COMM_WORLD_RANK") != nullptr) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  }
#endif
  if (c.role.empty()) {
    if (mpi_rank < 0) {
      std::fprintf(stderr, "error: give --role leader|worker (or launch with mpirun)\n");
      return 2;
    }
    c.role = mpi_rank == 0 ? "leader" : "worker";
    if (c.role == "worker") c.id = mpi_rank;
    c.workers = std::max(1, mpi_size - 1);
  }
  std::unique_ptr<archi::StoreServer> server;
  if (c.role == "leader") {
    archi::StoreServerOptions so;
    auto s = archi::StoreServer::Start(so);
    if (!s.ok()) {
      std::fprintf(stderr, "leader: cannot start the store: %s\n", s.status().ToString().c_str());
#if ARCHI_HAVE_MPI
      if (mpi_rank >= 0) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
      return 1;
    }
    server = std::move(*s);
    address = server->address();
    std::printf("[leader] pid %d, store at %s, serving %d workers\n", ::getpid(), address.c_str(), c.workers);
    std::fflush(stdout);
    if (!c.address_file.empty()) std::ofstream(c.address_file) << address << "\n";
  }
#if ARCHI_HAVE_MPI
  if (mpi_rank >= 0) {
    char buf[256] = {0};
    std::snprintf(buf, sizeof(buf), "%s", address.c_str());
    MPI_Bcast(buf, sizeof(buf), MPI_CHAR, 0, MPI_COMM_WORLD);
    if (c.role == "worker") c.store = buf;
    // From here on nothing depends on MPI: a dead rank cannot take the others down.
    MPI_Finalize();
  }
#endif
  if (c.role == "leader") return RunLeader(c, std::move(server));
  if (c.id < 1 || c.store.empty()) {
    std::fprintf(stderr, "error: a worker needs --id >= 1 and --store HOST:PORT\n");
    return 2;
  }
  return RunWorker(c);
}
