// archi-coordinator: the control plane of a pipeline, standalone, with the rendezvous store.
//
//   archi-coordinator --plan pipeline.yaml [--listen 127.0.0.1:0] [--store-listen 127.0.0.1:0]
//                     [--replicas 1,2,1] [--token T] [--policy reactive] [--ready-file F]
//                     [--state-dir DIR] [--store HOST:PORT]
//                     [--state-etcd HOST:PORT[,HOST:PORT...] [--state-prefix /archi/<pipeline>]]
//
// Then: archi-frontend --plan pipeline.yaml --store <store> --no-coordinator, and workers with
// archi-worker --coordinator <grpc>. (By default the frontend embeds the coordinator instead and
// this binary is not needed.) Prints "coordinator ready grpc=HOST:PORT store=HOST:PORT" and writes
// the same as JSON to --ready-file. SIGINT/SIGTERM: ends the worker sessions and exits 0 (workers
// keep serving and reconnect to the next coordinator). Exit 1 on a start-up error, 2 on bad
// arguments.
//
// High availability (--state-etcd, with --store): every archi-coordinator of the pipeline
// campaigns for the leadership in etcd (runtime/coordinator/etcd_state_log.h). The leader loads
// the state from etcd and serves; the others listen on their address as standbys, answering
// every RPC UNAVAILABLE with the leader's identity, and take over (load the state, serve on the
// same address) when the leader's lease ends. A leader that finds its leadership lost (paused
// past its lease, cut off from etcd, fenced off by a newer leader) stops serving at once and
// becomes a standby again. Prints "coordinator standby grpc=..." / "coordinator leader grpc=..."
// and rewrites --ready-file (with "role") on each change; SIGINT/SIGTERM: a leader resigns (its
// lease is revoked: a standby takes over at once) and exits 0.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>
#include <nlohmann/json.hpp>

#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/etcd_state_log.h"
#include "runtime/coordinator/standby.h"
#include "runtime/coordinator/tools/policy_flags.h"
#include "runtime/policy/registry.h"
#include "runtime/core/logging.h"
#include "runtime/executor/metrics.h"
#include "runtime/executor/node.h"
#include "runtime/executor/plan.h"
#include "runtime/executor/ready_file.h"
#include "world/store_client.h"
#include "world/store_server.h"

namespace {

namespace co = archi::coordinator;

std::unique_ptr<grpc::Server> Listen(const std::string& at,
                                     const std::shared_ptr<grpc::ServerCredentials>& creds,
                                     const std::vector<grpc::Service*>& services, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(at, creds, port);
  for (grpc::Service* svc : services) builder.RegisterService(svc);
  builder.SetMaxReceiveMessageSize(1 << 20);
  return builder.BuildAndStart();
}

struct EtcdRun {
  std::string endpoints, prefix, listen, ready_file, store_address;
  int64_t lease_s = 5;
  int64_t call_timeout_ms = 2000;
};

// --state-etcd: campaign, serve as the leader, step down when the leadership ends; until a signal.
int RunWithEtcd(const EtcdRun& r, co::CoordinatorOptions o,
                const archi::executor::PipelinePlan& plan, std::shared_ptr<archi::Store> store,
                archi::executor::Metrics* metrics,
                const std::shared_ptr<grpc::ServerCredentials>& creds, const sigset_t& signals) {
  auto fail = [](const archi::Status& s) {
    std::fprintf(stderr, "archi-coordinator: %s\n", s.ToString().c_str());
    return 1;
  };
  auto made = co::EtcdClient::Create(r.endpoints);
  if (!made.ok()) return fail(made.status());
  std::shared_ptr<co::EtcdClient> client = std::move(*made);
  // Listen at once (as a standby): the address stays the same across roles.
  co::StandbyServices standby;
  int port = 0;
  auto server = Listen(r.listen, creds, standby.services(), &port);
  if (!server || port == 0) return fail(archi::UnavailableError("cannot listen on " + r.listen));
  const std::string addr = r.listen.substr(0, r.listen.rfind(':')) + ":" + std::to_string(port);
  auto ready = [&](const char* role) {
    if (r.ready_file.empty()) return archi::Status::Ok();
    nlohmann::json j = {{"grpc", addr},         {"store", r.store_address}, {"pid", getpid()},
                        {"pipeline", plan.name}, {"metrics", metrics->address()},
                        {"role", role}};
    return archi::executor::WriteFileAtomically(r.ready_file, j.dump());
  };
  std::atomic<bool> stop{false};
  std::jthread signal_thread([&](std::stop_token st) {
    while (!st.stop_requested() && !stop) {
      timespec ts{0, 100'000'000};
      const int sig = sigtimedwait(&signals, nullptr, &ts);
      if (sig > 0) {
        ARCHI_LOG_INFO("archi-coordinator: signal {}: shutting down", sig);
        stop = true;
      }
    }
  });
  co::EtcdLeadershipOptions lo;
  lo.prefix = r.prefix;
  lo.identity = "grpc=" + addr + " pid=" + std::to_string(getpid());
  lo.ttl_s = r.lease_s;
  lo.call_timeout_ms = r.call_timeout_ms;
  while (!stop) {
    bool announced = false;
    auto won = co::EtcdLeadership::Campaign(
        client, lo, stop,
        [&](const std::string& leader) {
          standby.SetLeader(leader);
          if (announced) return;
          announced = true;
          if (auto s = ready("standby"); !s.ok()) ARCHI_LOG_WARN("{}", s.ToString());
          std::printf("coordinator standby grpc=%s store=%s leader=%s\n", addr.c_str(),
                      r.store_address.c_str(), leader.c_str());
          std::fflush(stdout);
        },
        archi::Deadline::Infinite());
    if (!won.ok()) {
      if (stop) break;
      return fail(won.status());
    }
    std::shared_ptr<co::EtcdLeadership> lead = std::move(*won);
    const int64_t timeout_ms = r.call_timeout_ms;
    o.state_log = [client, lead, timeout_ms](co::WalContents* c)
        -> archi::Result<std::unique_ptr<co::StateLog>> {
      co::EtcdStateLogOptions so;
      so.call_timeout_ms = timeout_ms;
      ARCHI_ASSIGN_OR_RETURN(auto log, co::EtcdStateLog::Open(client, lead, c, so));
      return std::unique_ptr<co::StateLog>(std::move(log));
    };
    const auto t0 = std::chrono::steady_clock::now();
    auto coord = co::Coordinator::Create(o, plan, store, r.store_address);
    if (!coord.ok()) {
      lead->Resign();
      const auto code = coord.status().code();
      if (code != archi::StatusCode::kUnavailable &&
          code != archi::StatusCode::kDeadlineExceeded &&
          code != archi::StatusCode::kFailedPrecondition) {
        return fail(coord.status());
      }
      ARCHI_LOG_ERROR("archi-coordinator: cannot take over: {}; campaigning again",
                      coord.status().ToString());
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    (*coord)->SetMetrics(metrics);
    // The standby's server gives the address to the coordinator's (gRPC sets SO_REUSEPORT).
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    server.reset();
    int p2 = 0;
    for (int i = 0; i < 50 && !server; ++i) {
      server = Listen(addr, creds, (*coord)->services(), &p2);
      if (!server) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!server) {
      lead->Resign();
      (*coord)->Shutdown();
      return fail(archi::UnavailableError("cannot listen on " + addr + " again"));
    }
    const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - t0)
                             .count();
    ARCHI_LOG_INFO("archi-coordinator: leading {} from {} ({} ms to load the state and serve)",
                   r.prefix, addr, took_ms);
    if (auto s = ready("leader"); !s.ok()) return fail(s);
    std::printf("coordinator leader grpc=%s store=%s\n", addr.c_str(), r.store_address.c_str());
    std::fflush(stdout);
    while (!stop && !lead->WaitLost(std::chrono::milliseconds(100))) {
    }
    if (stop) {
      (*coord)->Shutdown();
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
      lead->Resign();
      return 0;
    }
    ARCHI_LOG_ERROR("archi-coordinator: {}; stepping down to standby", lead->Valid().ToString());
    (*coord)->Shutdown();
    lead->Resign();  // our lease may still live in etcd (a lapse by our clock): free the key now
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    server.reset();
    coord->reset();
    lead.reset();
    o.state_log = nullptr;
    standby.SetLeader("");
    for (int i = 0; i < 50 && !server; ++i) {
      server = Listen(addr, creds, standby.services(), &p2);
      if (!server) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!server) return fail(archi::UnavailableError("cannot listen on " + addr + " again"));
  }
  if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
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
  archi::coordinator::CoordinatorPolicyFlags policy_flags;
  archi::coordinator::AddCoordinatorPolicyFlags(app, o, policy_flags, "");
  app.add_option("--ready-file", ready_file, "write {grpc, store, pid, pipeline} JSON here");
  std::string external_store;
  app.add_option("--store", external_store,
                 "use this external store (HOST:PORT, e.g. archi-store) instead of hosting one; a "
                 "restart of the coordinator then leaves the data plane's store running");
  app.add_option("--state-dir", o.state_dir,
                 "keep the durable state (write-ahead log + snapshot) here; a restart on it resumes "
                 "every worker (default: none, a restart forgets every worker)");
  EtcdRun etcd;
  auto* etcd_opt =
      app.add_option("--state-etcd", etcd.endpoints,
                     "keep the durable state in etcd (HOST:PORT[,HOST:PORT...]) instead of "
                     "--state-dir; several archi-coordinator processes with the same etcd and "
                     "prefix elect one leader, the others stand by (needs --store)");
  app.add_option("--state-prefix", etcd.prefix,
                 "etcd key prefix of this pipeline's state (default /archi/<pipeline>)")
      ->needs(etcd_opt);
  app.add_option("--state-lease-s", etcd.lease_s,
                 "etcd leader lease (s): a standby takes over this long after the leader died")
      ->check(CLI::Range(1, 600))
      ->capture_default_str()
      ->needs(etcd_opt);
  etcd_opt->excludes("--state-dir");
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
  if (!archi::coordinator::ApplyCoordinatorPolicyFlags(policy_flags, o, argv[0])) return 2;
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
  if (!etcd.endpoints.empty()) {
    if (external_store.empty()) {
      return fail(archi::InvalidArgumentError(
          "--state-etcd needs --store HOST:PORT (e.g. archi-store): a store hosted by the "
          "coordinator would die with the leader"));
    }
    if (etcd.prefix.empty()) etcd.prefix = "/archi/" + plan.name;
    while (etcd.prefix.size() > 1 && etcd.prefix.back() == '/') etcd.prefix.pop_back();
    etcd.listen = listen;
    etcd.ready_file = ready_file;
    etcd.store_address = store_address;
    return RunWithEtcd(etcd, o, plan, store, metrics.get(), *creds, signals);
  }
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
