// archi-frontend: the request intake of a pipeline (gRPC Inference + Admin) and, by default, its
// rendezvous store.
//
//   archi-frontend --plan pipeline.yaml [--listen 127.0.0.1:0] [--store-listen 127.0.0.1:0]
//                  [--ready-file F] [--replicas 1,2,1] [--token T] [--policy reactive]
//
// The coordinator is embedded and served on --listen: start workers with
// `archi-worker --coordinator <grpc address>` and it assigns them to stages (--no-coordinator:
// workers pick their stage with --store/--stage).
//
// Once serving it prints "frontend ready grpc=HOST:PORT store=HOST:PORT" on stdout and writes the
// same as JSON {"grpc", "store", "pid", "pipeline"} to --ready-file (atomically). SIGINT/SIGTERM:
// answers pending requests UNAVAILABLE and exits 0. Exit 1 on a start-up error (bad plan, model,
// port in use), 2 for bad arguments.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/tools/policy_flags.h"
#include "runtime/core/logging.h"
#include "runtime/executor/ready_file.h"
#include "runtime/frontend/frontend.h"
#include "runtime/policy/registry.h"

int main(int argc, char** argv) {
  archi::frontend::FrontendOptions o;
  std::string ready_file;
  CLI::App app{"archi-frontend: request intake, batching and admin of an Archipelago pipeline"};
  app.add_option("--plan", o.plan_path, "pipeline plan (YAML, see docs/config.md)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--listen", o.listen, "gRPC address (Inference + Admin); port 0 picks one")
      ->capture_default_str();
  app.add_option("--store-listen", o.store_listen, "address of the embedded rendezvous store")
      ->capture_default_str();
  app.add_option("--store", o.store_address,
                 "use this external store (host:port) instead of embedding one");
  app.add_option("--ready-file", ready_file, "write {grpc, store, pid, pipeline} JSON here");
  app.add_option("--metrics-listen", o.metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one)");
  // Embedded coordinator.
  auto& co = o.coordinator_options;
  bool no_coordinator = false;
  std::string token;
  app.add_flag("--no-coordinator", no_coordinator,
               "do not embed the coordinator (workers join with --stage, or a standalone "
               "archi-coordinator plans them)");
  app.add_option("--replicas", co.replicas,
                 "coordinator: target replicas per stage, e.g. 1,2,1 (default 1 each)")
      ->delimiter(',');
  app.add_option("--token", token,
                 "coordinator: shared token workers and admin clients must present (default: "
                 "$ARCHI_TOKEN; none: no authentication)");
  archi::coordinator::CoordinatorPolicyFlags policy_flags;
  archi::coordinator::AddCoordinatorPolicyFlags(app, co, policy_flags, "coordinator: ");
  std::string state_dir;
  app.add_option("--state-dir", state_dir,
                 "durable state: the admission log of requests with a request_id (DIR/admission: "
                 "a restart on it re-dispatches the unanswered ones) and, with --store, the "
                 "coordinator's write-ahead log + snapshot (a restart resumes every worker) "
                 "(default: none)");
  app.add_option("--admission-sync-ms", o.admission_sync_ms,
                 "fdatasync the admission log this often (group commit; 0: never)")
      ->check(CLI::Range(0, 60'000))
      ->capture_default_str();
  app.add_option("--kept-results-ttl-ms", o.kept_results_ttl_ms,
                 "keep the result of a request with a request_id this long for its retries")
      ->check(CLI::Range(0, 86'400'000))
      ->capture_default_str();
  app.add_option("--kept-results", o.kept_results_max,
                 "keep at most this many results for retries (the oldest go first)")
      ->check(CLI::Range(0, 10'000'000))
      ->capture_default_str();
  app.add_option("--tls-cert", o.tls.cert,
                 "serve TLS on --listen with this certificate (PEM; needs --tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", o.tls.key, "key of --tls-cert (PEM)")->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", o.tls.ca,
                 "mutual TLS: require client certificates signed by this CA (PEM)")
      ->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  if (!archi::coordinator::ApplyCoordinatorPolicyFlags(policy_flags, co, argv[0])) return 2;
  o.coordinator = !no_coordinator;
  o.state_dir = state_dir;
  // The coordinator's state names the rendezvous store of every assignment: worth keeping only
  // when that store outlives this process. The embedded store dies with it, so a restart lets the
  // workers register afresh instead (their resumed assignments would point at a store that is
  // gone).
  if (!o.store_address.empty()) co.state_dir = state_dir;
  co.token = archi::coordinator::TokenFromFlagOrEnv(token);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto fe = archi::frontend::Frontend::Start(o);
  if (!fe.ok()) {
    std::fprintf(stderr, "archi-frontend: %s\n", fe.status().ToString().c_str());
    return 1;
  }
  const std::string grpc_addr = (*fe)->address();
  const std::string store_addr = (*fe)->store_address();
  if (!ready_file.empty()) {
    nlohmann::json j = {{"grpc", grpc_addr},
                        {"store", store_addr},
                        {"pid", getpid()},
                        {"pipeline", (*fe)->pipeline()},
                        {"metrics", (*fe)->metrics_address()}};
    if (archi::Status st = archi::executor::WriteFileAtomically(ready_file, j.dump()); !st.ok()) {
      std::fprintf(stderr, "archi-frontend: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  std::printf(
      "frontend ready grpc=%s store=%s%s%s\n", grpc_addr.c_str(), store_addr.c_str(),
      (*fe)->metrics_address().empty() ? "" : " metrics=", (*fe)->metrics_address().c_str());
  std::fflush(stdout);
  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  ARCHI_LOG_INFO("archi-frontend: signal {}: shutting down", sig);
  (*fe)->Shutdown();
  return 0;
}
