// archi-coordinator: the control plane of a pipeline, standalone, with the rendezvous store.
//
//   archi-coordinator --plan pipeline.yaml [--listen 127.0.0.1:0] [--store-listen 127.0.0.1:0]
//                     [--replicas 1,2,1] [--token T] [--policy reactive] [--ready-file F]
//                     [--state-dir DIR] [--store HOST:PORT]
//
// Then: archi-frontend --plan pipeline.yaml --store <store> --no-coordinator, and workers with
// archi-worker --coordinator <grpc>. (By default the frontend embeds the coordinator instead and
// this binary is not needed.) Prints "coordinator ready grpc=HOST:PORT store=HOST:PORT" and writes
// the same as JSON to --ready-file. SIGINT/SIGTERM: ends the worker sessions and exits 0 (workers
// keep serving and reconnect to the next coordinator). Exit 1 on a start-up error, 2 on bad
// arguments.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/policy/registry.h"
#include "runtime/core/logging.h"
#include "runtime/executor/metrics.h"
#include "runtime/executor/node.h"
#include "runtime/executor/plan.h"
#include "runtime/executor/ready_file.h"
#include "world/store_client.h"
#include "world/store_server.h"

int main(int argc, char** argv) {
  namespace co = archi::coordinator;
  std::string plan_path, listen = "127.0.0.1:0", store_listen = "127.0.0.1:0", ready_file, token;
  co::CoordinatorOptions o;
  CLI::App app{"archi-coordinator: control plane (and rendezvous store) of an Archipelago pipeline"};
  app.add_option("--plan", plan_path, "pipeline plan (YAML, see docs/config.md)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--listen", listen, "gRPC address (Coordinator + CoordinatorAdmin)")
      ->capture_default_str();
  app.add_option("--store-listen", store_listen, "address of the rendezvous store it hosts")
      ->capture_default_str();
  app.add_option("--replicas", o.replicas, "target replicas per stage, e.g. 1,2,1 (default 1 each)")
      ->delimiter(',');
  app.add_option("--token", token, "shared token (default: $ARCHI_TOKEN; none: no authentication)");
  std::vector<std::string> policies = archi::policy::PolicyNames();
  policies.insert(policies.begin(), "none");
  app.add_option("--policy", o.policy,
                 "scaling policy (none | " + archi::policy::PolicyNamesJoined() + ")")
      ->check(CLI::IsMember(policies))
      ->capture_default_str();
  app.add_option("--slo-p99-ms", o.slo_p99_ms, "end-to-end p99 target for the policy")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--heartbeat-timeout-ms", o.heartbeat_timeout_ms,
                 "declare a worker dead after this long without a heartbeat")
      ->check(CLI::Range(20, 600'000))
      ->capture_default_str();
  app.add_option("--heartbeat-interval-ms", o.heartbeat_interval_ms, "how often workers heartbeat")
      ->check(CLI::Range(10, 60'000))
      ->capture_default_str();
  app.add_option("--ready-file", ready_file, "write {grpc, store, pid, pipeline} JSON here");
  std::string external_store;
  app.add_option("--store", external_store,
                 "use this external store (HOST:PORT, e.g. archi-store) instead of hosting one; a "
                 "restart of the coordinator then leaves the data plane's store running");
  app.add_option("--state-dir", o.state_dir,
                 "keep the durable state (write-ahead log + snapshot) here; a restart on it resumes "
                 "every worker (default: none, a restart forgets every worker)");
  co::TlsFiles tls;
  app.add_option("--tls-cert", tls.cert, "serve TLS with this certificate (PEM; needs --tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls.key, "key of --tls-cert (PEM)")->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", tls.ca,
                 "mutual TLS: require client certificates signed by this CA (PEM)")
      ->check(CLI::ExistingFile);
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one)");
  CLI11_PARSE(app, argc, argv);
  o.token = co::TokenFromFlagOrEnv(token);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto fail = [](const archi::Status& s) {
    std::fprintf(stderr, "archi-coordinator: %s\n", s.ToString().c_str());
    return 1;
  };
  auto serving = archi::executor::LoadServingPlan(plan_path);
  if (!serving.ok()) return fail(serving.status());
  const auto& plan = serving->plan;
  // The store: hosted here, or an external one (--store, e.g. archi-store) that a restart of this
  // process leaves running, with the members' registry and the worlds' keys in it.
  std::unique_ptr<archi::StoreServer> store_server;
  std::shared_ptr<archi::Store> store;
  std::string store_address = external_store;
  if (external_store.empty()) {
    archi::StoreServerOptions so;
    so.address = store_listen;
    auto started = archi::StoreServer::Start(so);
    if (!started.ok()) return fail(started.status());
    store_server = std::move(*started);
    store = store_server->store();
    store_address = store_server->address();
  } else {
    auto client = archi::StoreClient::Connect(external_store, archi::Deadline::AfterMs(10'000));
    if (!client.ok()) return fail(client.status());
    store = *client;
  }
  if (auto s = store->Set(archi::executor::PlanKey(plan.name), plan.ToJson(),
                          archi::Deadline::AfterMs(5000));
      !s.ok()) {
    return fail(s);
  }
  std::unique_ptr<archi::executor::Metrics> metrics = archi::executor::Metrics::Disabled();
  if (!metrics_listen.empty()) {
    auto served = archi::executor::Metrics::Serve(metrics_listen);
    if (!served.ok()) return fail(served.status());
    metrics = std::move(*served);
  }
  auto creds = co::MakeServerCredentials(tls);
  if (!creds.ok()) return fail(creds.status());
  auto coord = co::Coordinator::Create(o, plan, store, store_address);
  if (!coord.ok()) return fail(coord.status());
  (*coord)->SetMetrics(metrics.get());
  if (store_server) {
    store_server->SetAuthorizer((*coord)->store_authorizer());  // member credentials (token)
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *creds, &port);
  for (grpc::Service* svc : (*coord)->services()) builder.RegisterService(svc);
  builder.SetMaxReceiveMessageSize(1 << 20);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) return fail(archi::UnavailableError("cannot listen on " + listen));
  const std::string addr = listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port);
  if (!ready_file.empty()) {
    nlohmann::json j = {{"grpc", addr},
                        {"store", store_address},
                        {"pid", getpid()},
                        {"pipeline", plan.name},
                        {"metrics", metrics->address()}};
    if (auto s = archi::executor::WriteFileAtomically(ready_file, j.dump()); !s.ok()) {
      return fail(s);
    }
  }
  std::printf("coordinator ready grpc=%s store=%s\n", addr.c_str(), store_address.c_str());
  std::fflush(stdout);
  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  ARCHI_LOG_INFO("archi-coordinator: signal {}: shutting down", sig);
  (*coord)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (store_server) store_server->Shutdown(archi::Deadline::AfterMs(1000));
  return 0;
}
