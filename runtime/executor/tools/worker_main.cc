// archi-worker: one replica of one pipeline stage.
//
//   archi-worker --store 127.0.0.1:PORT --pipeline demo --stage 1 [--id w1] [--threads 1]
//
// Reads the plan the frontend published in the store, loads its stage's layers, links with the
// replicas of the neighbouring stages and serves until drained. SIGTERM or SIGINT drains (finish
// everything held, then exit 0); a second signal stops at once. Exit codes: 0 after a drain or
// stop, 1 on a start-up error (bad plan, model, store), 2 for bad arguments, 3 when fenced (its
// neighbours declared it dead; its work was re-sent elsewhere).
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>

#include "runtime/core/logging.h"
#include "runtime/executor/worker.h"

int main(int argc, char** argv) {
  archi::executor::WorkerOptions o;
  CLI::App app{"archi-worker: a replica of one Archipelago pipeline stage"};
  app.add_option("--store", o.store_address, "rendezvous store host:port (the frontend's)")
      ->required();
  app.add_option("--pipeline", o.pipeline, "pipeline name (the plan's `pipeline`)")->required();
  app.add_option("--stage", o.stage, "stage index, 0-based")
      ->required()
      ->check(CLI::NonNegativeNumber);
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
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // every thread started below inherits it

  archi::executor::StageWorker worker(o);
  std::jthread sig_thread([&](std::stop_token st) {
    int count = 0;
    while (!st.stop_requested()) {
      timespec ts{0, 100'000'000};
      const int sig = sigtimedwait(&signals, nullptr, &ts);
      if (sig <= 0) continue;
      if (++count == 1) {
        ARCHI_LOG_INFO("archi-worker: signal {}: draining", sig);
        worker.RequestDrain();
      } else {
        ARCHI_LOG_WARN("archi-worker: second signal: stopping now");
        worker.Stop();
      }
    }
  });
  const archi::Status st = worker.Run();
  sig_thread.request_stop();
  if (st.ok()) return 0;
  std::fprintf(stderr, "archi-worker: %s\n", st.ToString().c_str());
  return st.code() == archi::StatusCode::kAborted ? 3 : 1;
}
