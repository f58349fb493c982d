// archi-worker: one replica of one pipeline stage, or (under mpirun) a whole pipeline.
//
//   archi-worker --coordinator 127.0.0.1:PORT [--id w1] [--token T]   (assigned by the coordinator)
//   archi-worker --store 127.0.0.1:PORT --pipeline demo --stage 1 [--id w1] [--threads 1]
//   mpirun -np N archi-worker --config pipeline.yaml [--replicas 1,2,1] [--duration-s S]
//
// Coordinator launch: registers with the coordinator, waits in its idle pool, serves the stage it
// is assigned, goes back to idle when released; SIGTERM drains and exits 0, exit 1 when the
// coordinator refuses it (bad token, id in use) or is unreachable for 30 s at start.
//
// Plain launch: reads the plan the frontend published in the store, loads its stage's layers,
// links with the replicas of the neighbouring stages and serves until drained. SIGTERM or SIGINT
// drains (finish everything held, then exit 0); a second signal stops at once. Exit codes: 0 after
// a drain or stop, 1 on a start-up error (bad plan, model, store), 2 for bad arguments, 3 when
// fenced (its neighbours declared it dead; its work was re-sent elsewhere).
//
// mpirun launch (--config): rank 0 runs the frontend, the other ranks are stage workers; see
// tools/mpi_launch.h. Needs an archi-worker built with MPI (exit 2 otherwise).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "runtime/coordinator/agent.h"
#include "runtime/coordinator/auth.h"
#include "runtime/executor/tools/mpi_launch.h"
#include "runtime/executor/tools/worker_process.h"
#include "runtime/executor/worker.h"

int main(int argc, char** argv) {
  archi::executor::WorkerOptions o;
  archi::executor::MpiLaunchOptions m;
  CLI::App app{
      "archi-worker: a replica of one Archipelago pipeline stage (or, with --config "
      "under mpirun, a whole pipeline)"};
  auto* store_opt =
      app.add_option("--store", o.store_address, "rendezvous store host:port (the frontend's)");
  auto* pipeline_opt =
      app.add_option("--pipeline", o.pipeline, "pipeline name (the plan's `pipeline`)");
  auto* stage_opt =
      app.add_option("--stage", o.stage, "stage index, 0-based")->check(CLI::NonNegativeNumber);
  app.add_option("--id", o.id, "member id, [A-Za-z0-9_-]{1,24}; default s<stage>-<pid>");
  app.add_option("--threads", o.threads, "kernel threads for this stage's compute")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--extra-compute-ms", o.extra_compute_ms,
                 "test knob: sleep this long after each micro-batch's compute")
      ->check(CLI::Range(0, 60'000));
  app.add_option("--plan-wait-ms", o.plan_wait_ms, "how long to wait for the plan in the store")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
  app.add_option("--ready-file", o.ready_file, "write {id, pid, stage} JSON here once ready");
  app.add_option("--metrics-listen", o.metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one)");
  // mpirun launch.
  auto* config_opt = app.add_option(
      "--config", m.config, "mpirun launch: the pipeline plan (YAML); rank 0 runs the frontend");
  config_opt->check(CLI::ExistingFile)->excludes(store_opt, pipeline_opt, stage_opt);
  app.add_option("--replicas", m.replicas,
                 "mpirun launch: workers per stage, e.g. 1,2,1 (sum = ranks - 1); default: rank r "
                 "serves stage (r-1) % stages")
      ->delimiter(',')
      ->needs(config_opt);
  app.add_option("--duration-s", m.duration_s,
                 "mpirun launch: rank 0 drains the workers and ends the job after this long")
      ->check(CLI::Range(0.0, 31'536'000.0))
      ->needs(config_opt);
  app.add_option("--drain-timeout-ms", m.drain_timeout_ms,
                 "mpirun launch: how long the end of the job waits for the drained workers")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str()
      ->needs(config_opt);
  app.add_option("--listen", m.listen, "mpirun launch: rank 0's gRPC address (Inference + Admin)")
      ->capture_default_str()
      ->needs(config_opt);
  app.add_option("--store-listen", m.store_listen,
                 "mpirun launch: rank 0's store address (routable from every node)")
      ->capture_default_str()
      ->needs(config_opt);
  app.add_option("--frontend-ready-file", m.frontend_ready_file,
                 "mpirun launch: rank 0 writes {grpc, store, pid, pipeline, ranks} JSON here")
      ->needs(config_opt);
  // Coordinator mode.
  archi::coordinator::AgentOptions a;
  std::string token;
  auto* coord_opt = app.add_option(
      "--coordinator", a.coordinator,
      "join the idle pool of this coordinator (host:port; the frontend's gRPC address by "
      "default) and serve whatever stage it assigns");
  coord_opt->excludes(store_opt, pipeline_opt, stage_opt, config_opt);
  app.add_option("--token", token, "coordinator: shared token (default: $ARCHI_TOKEN)")
      ->needs(coord_opt);
  app.add_option("--capacity", a.capacity, "coordinator: relative throughput of this worker")
      ->check(CLI::Range(0.001, 1e6))
      ->capture_default_str()
      ->needs(coord_opt);
  app.add_option("--price-per-hour", a.price_per_hour, "coordinator: what this worker costs")
      ->check(CLI::Range(0.0, 1e9))
      ->needs(coord_opt);
  app.add_option("--kind", a.kind, "coordinator: unit kind (e.g. cpu-2)")->needs(coord_opt);
  app.add_option("--devices", a.devices, "coordinator: accelerators this worker can use")
      ->check(CLI::Range(0, 4096))
      ->needs(coord_opt);
  app.add_option("--tls-ca", a.tls.ca, "coordinator: verify its TLS certificate against this CA (PEM)")
      ->check(CLI::ExistingFile)
      ->needs(coord_opt);
  app.add_option("--tls-cert", a.tls.cert, "coordinator: client certificate for mutual TLS (PEM)")
      ->check(CLI::ExistingFile)
      ->needs(coord_opt);
  app.add_option("--tls-key", a.tls.key, "coordinator: key of --tls-cert (PEM)")
      ->check(CLI::ExistingFile)
      ->needs(coord_opt);
  app.add_option("--status-file", a.status_file,
                 "coordinator: write {id, pid, epoch, state, stage} JSON here on every change")
      ->needs(coord_opt);
  CLI11_PARSE(app, argc, argv);

  // Blocked before any thread starts (MPI's and gRPC's included), so every thread inherits it and
  // only the signal threads take SIGINT/SIGTERM.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (!m.config.empty()) {
    m.threads = o.threads;
    m.extra_compute_ms = o.extra_compute_ms;
    m.plan_wait_ms = o.plan_wait_ms;
    return archi::executor::RunMpiLaunch(m, &argc, &argv);
  }
  if (!a.coordinator.empty()) {
    a.token = archi::coordinator::TokenFromFlagOrEnv(token);
    a.worker_id = o.id;
    a.threads = o.threads;
    a.extra_compute_ms = o.extra_compute_ms;
    a.metrics_listen = o.metrics_listen;
    return archi::coordinator::RunAgentProcess(a, signals);
  }
  if (o.store_address.empty() || o.pipeline.empty() || stage_opt->count() == 0) {
    std::fprintf(stderr,
                 "archi-worker: give --store, --pipeline and --stage (or --config under mpirun)\n"
                 "Run with --help for more information.\n");
    return 2;
  }
  return archi::executor::RunWorkerProcess(o, signals);
}
