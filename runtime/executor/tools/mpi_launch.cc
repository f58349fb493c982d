#include "runtime/executor/tools/mpi_launch.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "archi/config.h"
#include "proto/inference.grpc.pb.h"
#include "runtime/core/logging.h"
#include "runtime/executor/ready_file.h"
#include "runtime/executor/tools/worker_process.h"
#include "runtime/frontend/frontend.h"

#if ARCHI_HAVE_MPI
#include <mpi.h>
#endif

namespace archi::executor {

Result<std::vector<int>> AssignStages(int num_workers, int num_stages,
                                      const std::vector<int>& replicas) {
  if (num_workers < 0 || num_stages < 1) return InvalidArgumentError("no stages");
  std::vector<int> stages;
  if (replicas.empty()) {
    for (int k = 0; k < num_workers; ++k) stages.push_back(k % num_stages);
    return stages;
  }
  if (static_cast<int>(replicas.size()) != num_stages) {
    return InvalidArgumentError("--replicas gives " + std::to_string(replicas.size()) +
                                " counts; the plan has " + std::to_string(num_stages) + " stages");
  }
  for (int s = 0; s < num_stages; ++s) {
    if (replicas[static_cast<size_t>(s)] < 0) {
      return InvalidArgumentError("--replicas: negative count for stage " + std::to_string(s));
    }
    for (int r = 0; r < replicas[static_cast<size_t>(s)]; ++r) stages.push_back(s);
  }
  if (static_cast<int>(stages.size()) != num_workers) {
    return InvalidArgumentError("--replicas sums to " + std::to_string(stages.size()) +
                                " workers; the job has " + std::to_string(num_workers) +
                                " worker ranks (mpirun -np minus 1)");
  }
  return stages;
}

#if ARCHI_HAVE_MPI
namespace {

namespace pb = archi::proto;

// What rank 0 broadcasts: "ok\n<store>\n<pipeline>\n<num_stages>\n" or "error\n<message>".
constexpr size_t kBootstrapBytes = 4096;

struct Bootstrap {
  int rank = 0;
  int size = 1;
  int local_rank = 0;   // on its node
  int device = 0;       // GPU of a worker: its index among the worker ranks of its node
  std::string payload;  // rank 0's broadcast
};

// MPI_Init, then rank 0 runs `start` (which starts the frontend and returns the payload), then the
// broadcast, then MPI_Finalize: after this returns nothing depends on MPI.
template <typename StartFn>
Bootstrap BootstrapThroughMpi(int* argc, char*** argv, StartFn&& start) {
  Bootstrap b;
  MPI_Init(argc, argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &b.size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, b.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &b.local_rank);
  // Rank 0 (the frontend, no GPU) is local rank 0 of its node: the workers there count from 0.
  int first_on_node = b.rank;
  MPI_Bcast(&first_on_node, 1, MPI_INT, 0, node);
  b.device = first_on_node == 0 ? b.local_rank - 1 : b.local_rank;
  MPI_Comm_free(&node);
  std::vector<char> buf(kBootstrapBytes, '\0');
  if (b.rank == 0) {
    std::string p = start(b);
    if (p.size() >= kBootstrapBytes) p = "error\nbootstrap message too long";
    std::copy(p.begin(), p.end(), buf.begin());
  }
  MPI_Bcast(buf.data(), static_cast<int>(buf.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
  b.payload = buf.data();
  // From here on nothing depends on MPI: a dead rank cannot take the others down.
  MPI_Finalize();
  return b;
}

void PrintExit(int rank, int code) {
  std::printf("archi-worker rank %d: exit %d\n", rank, code);
  std::fflush(stdout);
}

Status WriteReadyFile(const std::string& path, const nlohmann::json& j) {
  return WriteFileAtomically(path, j.dump());
}

// Drains every worker, stage 0 first (so what is in flight flows out through stages still
// serving), waiting for each stage's members to leave the registry. Bounded by `deadline`.
void DrainAll(const std::string& grpc_address, int num_stages, Deadline deadline) {
  auto stub =
      pb::Admin::NewStub(grpc::CreateChannel(grpc_address, grpc::InsecureChannelCredentials()));
  auto status = [&](pb::StatusResponse* r) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    return stub->Status(&ctx, pb::StatusRequest{}, r);
  };
  for (int s = 0; s < num_stages && !deadline.Expired(); ++s) {
    std::vector<std::string> asked;
    while (!deadline.Expired()) {
      pb::StatusResponse r;
      if (!status(&r).ok()) break;
      bool left = false;
      for (const auto& m : r.members()) {
        // A member declared gone (its neighbours saw it die) never leaves by itself.
        if (m.stage() != s) continue;
        if (m.state() == "gone") continue;
        left = true;
        if (m.state() == "draining" ||
            std::find(asked.begin(), asked.end(), m.id()) != asked.end()) {
          continue;
        }
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        pb::DrainRequest req;
        req.set_worker_id(m.id());
        pb::DrainResponse resp;
        grpc::Status st = stub->Drain(&ctx, req, &resp);
        ARCHI_LOG_INFO("mpi launch: drain {} (stage {}): {}", m.id(), s,
                       st.ok() ? resp.state() : st.error_message());
        asked.push_back(m.id());
      }
      if (!left) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (deadline.Expired()) ARCHI_LOG_WARN("mpi launch: drain timed out; shutting down anyway");
}

int RunFrontendRank(const MpiLaunchOptions& o, std::unique_ptr<frontend::Frontend> fe,
                    int num_stages, int size, const sigset_t& signals) {
  const std::string grpc_addr = fe->address();
  const std::string store_addr = fe->store_address();
  if (!o.frontend_ready_file.empty()) {
    nlohmann::json j = {{"grpc", grpc_addr},
                        {"store", store_addr},
                        {"pid", getpid()},
                        {"pipeline", fe->pipeline()},
                        {"ranks", size}};
    if (Status st = WriteReadyFile(o.frontend_ready_file, j); !st.ok()) {
      std::fprintf(stderr, "archi-worker: %s\n", st.ToString().c_str());
      fe->Shutdown();
      return 1;
    }
  }
  std::printf("frontend ready grpc=%s store=%s\n", grpc_addr.c_str(), store_addr.c_str());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  while (true) {
    if (o.duration_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >=
            o.duration_s) {
      ARCHI_LOG_INFO("mpi launch: --duration-s {} elapsed: ending the job", o.duration_s);
      break;
    }
    timespec ts{0, 100'000'000};
    const int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig > 0) {
      ARCHI_LOG_INFO("mpi launch: signal {}: ending the job", sig);
      break;
    }
  }
  DrainAll(grpc_addr, num_stages, Deadline::AfterMs(o.drain_timeout_ms));
  fe->Shutdown();
  return 0;
}

}  // namespace
#endif  // ARCHI_HAVE_MPI

int RunMpiLaunch(const MpiLaunchOptions& o, int* argc, char*** argv) {
#if !ARCHI_HAVE_MPI
  (void)argc;
  (void)argv;
  std::fprintf(stderr,
               "archi-worker: --config (mpirun launch) needs MPI, but this archi-worker was built "
               "without MPI (configure with Open MPI installed, ARCHI_WITH_MPI=AUTO|ON); start the "
               "frontend and workers separately instead (--store/--pipeline/--stage)\n");
  return 2;
#else
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);

  std::unique_ptr<frontend::Frontend> fe;
  Bootstrap b = BootstrapThroughMpi(argc, argv, [&](const Bootstrap& self) -> std::string {
    frontend::FrontendOptions fo;
    fo.plan_path = o.config;
    fo.listen = o.listen;
    fo.store_listen = o.store_listen;
    auto started = frontend::Frontend::Start(fo);
    if (!started.ok()) return "error\nfrontend: " + started.status().ToString();
    fe = std::move(*started);
    // The plan as the frontend published it (validated against the model) gives the stages.
    auto parsed = PipelinePlan::FromYamlFile(o.config);
    if (!parsed.ok()) return "error\n" + parsed.status().ToString();
    const int num_stages = parsed->num_stages();
    auto stages = AssignStages(self.size - 1, num_stages, o.replicas);
    if (!stages.ok()) return "error\n" + stages.status().ToString();
    return "ok\n" + fe->store_address() + "\n" + fe->pipeline() + "\n" +
           std::to_string(num_stages) + "\n";
  });
  const std::string tag =
      "[mpi rank " + std::to_string(b.rank) + "/" + std::to_string(b.size) + "]";

  std::istringstream in(b.payload);
  std::string kind, store, pipeline, stages_text;
  std::getline(in, kind);
  if (kind != "ok") {
    std::string why;
    std::getline(in, why, '\0');
    if (b.rank == 0) std::fprintf(stderr, "archi-worker: %s\n", why.c_str());
    if (fe) fe->Shutdown();
    PrintExit(b.rank, 1);
    return 1;
  }
  std::getline(in, store);
  std::getline(in, pipeline);
  std::getline(in, stages_text);
  const int num_stages = std::stoi(stages_text);

  if (b.rank == 0) {
    ARCHI_LOG_INFO("{} frontend of pipeline '{}' ({} stages), store {}, {} worker ranks", tag,
                   pipeline, num_stages, store, b.size - 1);
    if (b.size - 1 < num_stages) {
      ARCHI_LOG_WARN(
          "{} {} worker ranks for {} stages: the stages without a replica wait for "
          "workers started outside MPI",
          tag, b.size - 1, num_stages);
    }
    const int code = RunFrontendRank(o, std::move(fe), num_stages, b.size, signals);
    PrintExit(b.rank, code);
    return code;
  }

  auto stages = AssignStages(b.size - 1, num_stages, o.replicas);
  if (!stages.ok()) {  // rank 0 checked the same arguments; only a differing argv gets here
    std::fprintf(stderr, "archi-worker: %s\n", stages.status().ToString().c_str());
    PrintExit(b.rank, 2);
    return 2;
  }
  WorkerOptions w;
  w.store_address = store;
  w.pipeline = pipeline;
  w.stage = (*stages)[static_cast<size_t>(b.rank - 1)];
  w.id = "s" + std::to_string(w.stage) + "-rank" + std::to_string(b.rank);
  w.threads = o.threads;
  w.extra_compute_ms = o.extra_compute_ms;
  w.plan_wait_ms = o.plan_wait_ms;
  ARCHI_LOG_INFO(
      "{} stage {} as member {}, pid {}, device cuda:{} (local rank {}; the CPU path "
      "ignores it), store {}",
      tag, w.stage, w.id, getpid(), b.device, b.local_rank, store);
  // Should rank 0 be gone for good, a worker still ends: it drains itself a while after the job's
  // end (rank 0 normally drains it first).
  int64_t self_drain_ms = 0;
  if (o.duration_s > 0) {
    self_drain_ms = static_cast<int64_t>(o.duration_s * 1000) + o.drain_timeout_ms + 30'000;
  }
  const int code = RunWorkerProcess(w, signals, self_drain_ms);
  PrintExit(b.rank, code);
  return code;
#endif
}

}  // namespace archi::executor
