// archi: admin client of the coordinator.
//
//   archi --coordinator HOST:PORT status            live topology: stages, workers, recoveries
//   archi --coordinator HOST:PORT events [--since-ms T] [--limit N]
//   archi --coordinator HOST:PORT scale STAGE REPLICAS
//   archi --coordinator HOST:PORT drain WORKER      release it and never assign it again
//   archi --coordinator HOST:PORT policy NAME [--slo-p99-ms X]
//
// --token (or $ARCHI_TOKEN) authenticates; --tls-ca (+ --tls-cert/--tls-key) for a TLS coordinator. Exit 0 on success, 1 when the coordinator refused or
// was unreachable (the gRPC status is printed), 2 on bad arguments. --json prints the response as
// JSON instead of a table.
#include <grpcpp/grpcpp.h>
#include <google/protobuf/util/json_util.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "proto/coordinator.grpc.pb.h"
#include "runtime/coordinator/auth.h"
#include "runtime/policy/registry.h"

namespace pb = archi::proto;

namespace {

std::string Clock(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  const time_t s = static_cast<time_t>(unix_ms / 1000);
  tm t{};
  gmtime_r(&s, &t);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d", t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

std::string Since(int64_t t, int64_t from) {
  return t == 0 ? "-" : std::to_string(t - from) + " ms";
}

template <typename M>
void PrintJson(const M& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  std::printf("%s\n", out.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string address = "127.0.0.1:50051", token;
  bool json = false;
  int64_t deadline_ms = 5000;
  CLI::App app{"archi: admin client of an Archipelago coordinator"};
  app.add_option("--coordinator", address,
                 "coordinator gRPC address (the frontend's by default); A,B,...: every "
                 "coordinator of a highly-available pair (--state-etcd), the one that serves "
                 "(not a standby) is used")
      ->capture_default_str();
  app.add_option("--token", token, "shared token (default: $ARCHI_TOKEN)");
  app.add_flag("--json", json, "print the response as JSON");
  archi::coordinator::TlsFiles tls;
  app.add_option("--tls-ca", tls.ca, "verify the coordinator's TLS certificate against this CA")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", tls.cert, "client certificate for mutual TLS (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls.key, "key of --tls-cert (PEM)")->check(CLI::ExistingFile);
  app.add_option("--timeout-ms", deadline_ms, "RPC deadline")
      ->check(CLI::Range(1, 600'000))
      ->capture_default_str();
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "live topology: stages, workers, recoveries");
  auto* events = app.add_subcommand("events", "event timeline");
  int64_t since = 0;
  int limit = 0;
  events->add_option("--since-ms", since, "only events at or after this unix time (ms)");
  events->add_option("--limit", limit, "at most this many (default 1000)")
      ->check(CLI::Range(0, 1'000'000));
  auto* scale = app.add_subcommand("scale", "set a stage's target replica count");
  int stage = 0, replicas = 0;
  scale->add_option("stage", stage, "stage index")->required()->check(CLI::NonNegativeNumber);
  scale->add_option("replicas", replicas, "target replicas")->required()->check(CLI::Range(0, 256));
  auto* drain = app.add_subcommand("drain", "release a worker and never assign it again");
  std::string worker;
  drain->add_option("worker", worker, "worker id")->required();
  auto* pol = app.add_subcommand("policy", "set the scaling policy");
  std::string policy;
  double slo = 0;
  pol->add_option("name", policy,
                  "none | " + archi::policy::PolicyNamesJoined() + " (the coordinator checks)")
      ->required();
  pol->add_option("--slo-p99-ms", slo, "end-to-end p99 target")->check(CLI::Range(0.0, 1e7));
  CLI11_PARSE(app, argc, argv);

  token = archi::coordinator::TokenFromFlagOrEnv(token);
  auto creds = archi::coordinator::MakeChannelCredentials(tls);
  if (!creds.ok()) {
    std::fprintf(stderr, "archi: %s\n", creds.status().ToString().c_str());
    return 2;
  }
  // Several addresses: the first that is not unavailable (a standby answers UNAVAILABLE naming
  // the leader) within its share of the deadline.
  if (address.find(',') != std::string::npos) {
    std::vector<std::string> all;
    for (size_t b = 0; b <= address.size();) {
      size_t e = address.find(',', b);
      if (e == std::string::npos) e = address.size();
      if (e > b) all.push_back(address.substr(b, e - b));
      b = e + 1;
    }
    std::string why;
    std::string chosen;
    for (const auto& a : all) {
      auto probe = pb::CoordinatorAdmin::NewStub(grpc::CreateChannel(a, *creds));
      grpc::ClientContext pc;
      pc.set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(std::max<int64_t>(
                          100, deadline_ms / static_cast<int64_t>(all.size()))));
      archi::coordinator::AddToken(pc, token);
      pb::EventsRequest q;
      q.set_limit(1);
      pb::EventsResponse r;
      grpc::Status ps = probe->Events(&pc, q, &r);
      if (ps.error_code() != grpc::StatusCode::UNAVAILABLE &&
          ps.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        chosen = a;
        break;
      }
      why += "\n  " + a + ": " + ps.error_message();
    }
    if (chosen.empty()) {
      std::fprintf(stderr, "archi: no coordinator of %s serves:%s\n", address.c_str(), why.c_str());
      return 1;
    }
    address = chosen;
  }
  auto stub = pb::CoordinatorAdmin::NewStub(grpc::CreateChannel(address, *creds));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  archi::coordinator::AddToken(ctx, token);
  grpc::Status s;
  auto failed = [&] {
    std::fprintf(stderr, "archi: %s: %s\n", address.c_str(), s.error_message().c_str());
    return 1;
  };
  if (*status) {
    pb::CoordinatorStatusResponse r;
    s = stub->Status(&ctx, {}, &r);
    if (!s.ok()) return failed();
    if (json) {
      PrintJson(r);
      return 0;
    }
    std::printf("pipeline %s, policy %s\n\n%-6s %-10s %-7s %-6s\n", r.pipeline().c_str(),
                r.policy().c_str(), "stage", "layers", "target", "ready");
    for (const auto& st : r.stages()) {
      std::printf("%-6d [%d, %d)%*s %-7d %-6d\n", st.stage(), st.layer_begin(), st.layer_end(),
                  static_cast<int>(6 - std::to_string(st.layer_begin()).size() -
                                   std::to_string(st.layer_end()).size()),
                  "", st.target_replicas(), st.ready_replicas());
    }
    std::printf("\n%-14s %-9s %-6s %-18s %-8s %-9s %-9s %-6s %s\n", "worker", "state", "stage",
                "epoch", "pid", "hb ago", "batches", "queue", "links / why dead");
    for (const auto& w : r.workers()) {
      std::string links;
      for (const auto& l : w.links()) links += (links.empty() ? "" : " ") + l;
      std::printf("%-14s %-9s %-6d %-18llu %-8d %-9s %-9llu %-6.0f %s\n", w.worker_id().c_str(),
                  w.state().c_str(), w.stage(), static_cast<unsigned long long>(w.epoch()),
                  w.pid(), (std::to_string(w.last_heartbeat_ms_ago()) + " ms").c_str(),
                  static_cast<unsigned long long>(w.load().batches_processed()),
                  w.load().queue_depth(),
                  w.state() == "dead" ? w.dead_reason().c_str() : links.c_str());
    }
    if (r.recoveries_size() > 0) {
      std::printf("\nrecoveries (times after detection)\n%-14s %-6s %-13s %-9s %-9s %-9s %-9s "
                  "%-14s %s\n",
                  "worker", "stage", "detected", "hb->det", "decided", "worlds", "ready",
                  "replacement", "traffic");
      for (const auto& rc : r.recoveries()) {
        const int64_t d = rc.detected_unix_ms();
        std::printf("%-14s %-6d %-13s %-9s %-9s %-9s %-9s %-14s %s\n", rc.worker_id().c_str(),
                    rc.stage(), Clock(d).c_str(),
                    Since(d, rc.last_heartbeat_unix_ms()).c_str(),
                    Since(rc.decided_unix_ms(), d).c_str(),
                    Since(rc.worlds_removed_unix_ms(), d).c_str(),
                    Since(rc.replacement_ready_unix_ms(), d).c_str(),
                    rc.replacement().empty() ? "-" : rc.replacement().c_str(),
                    Since(rc.traffic_restored_unix_ms(), d).c_str());
        std::printf("    cause: %s\n", rc.cause().c_str());
      }
    }
    return 0;
  }
  if (*events) {
    pb::EventsRequest q;
    q.set_since_unix_ms(since);
    q.set_limit(limit);
    pb::EventsResponse r;
    s = stub->Events(&ctx, q, &r);
    if (!s.ok()) return failed();
    if (json) {
      PrintJson(r);
      return 0;
    }
    for (const auto& e : r.events()) {
      std::printf("%s  %-17s %-14s %-6s %s\n", Clock(e.unix_ms()).c_str(), e.kind().c_str(),
                  e.worker_id().empty() ? "-" : e.worker_id().c_str(),
                  e.stage() >= 0 ? ("s" + std::to_string(e.stage())).c_str() : "-",
                  e.detail().c_str());
    }
    return 0;
  }
  if (*scale) {
    pb::ScaleRequest q;
    q.set_stage(stage);
    q.set_replicas(replicas);
    pb::ScaleResponse r;
    s = stub->Scale(&ctx, q, &r);
    if (!s.ok()) return failed();
    std::printf("stage %d: %d -> %d replicas\n", stage, r.previous(), replicas);
    return 0;
  }
  if (*drain) {
    pb::DrainWorkerRequest q;
    q.set_worker_id(worker);
    pb::DrainWorkerResponse r;
    s = stub->Drain(&ctx, q, &r);
    if (!s.ok()) return failed();
    std::printf("%s: %s\n", worker.c_str(), r.state().c_str());
    return 0;
  }
  pb::SetPolicyRequest q;
  q.set_policy(policy);
  q.set_slo_p99_ms(slo);
  pb::SetPolicyResponse r;
  s = stub->SetPolicy(&ctx, q, &r);
  if (!s.ok()) return failed();
  std::printf("policy: %s -> %s\n", r.previous().c_str(), policy.c_str());
  return 0;
}
