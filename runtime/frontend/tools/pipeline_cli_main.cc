// archi-pipeline: a command-line client of a frontend.
//
//   archi-pipeline --addr HOST:PORT status            live members, states and counters
//   archi-pipeline --addr HOST:PORT drain WORKER_ID   drain a worker (it exits when done)
//   archi-pipeline --addr HOST:PORT embed TEXT...     embed texts (or --ids 101,2023,102)
//                  [--request-id ID] [--retry]       idempotency key (ID, or ID-<i> for several);
//                                                    --retry: resend UNAVAILABLE with the same id
//                                                    (backoff 100 ms..1 s) until --timeout-ms
//
// Exit codes: 0 on success, 1 when the frontend answers with an error (printed with its gRPC
// code), 2 for bad arguments.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <thread>

#include "proto/inference.grpc.pb.h"

namespace pb = archi::proto;

namespace {
int Fail(const grpc::Status& s) {
  std::fprintf(stderr, "archi-pipeline: %d (%s): %s\n", static_cast<int>(s.error_code()),
               s.error_code() == grpc::StatusCode::INVALID_ARGUMENT    ? "INVALID_ARGUMENT"
               : s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? "DEADLINE_EXCEEDED"
               : s.error_code() == grpc::StatusCode::UNAVAILABLE       ? "UNAVAILABLE"
               : s.error_code() == grpc::StatusCode::NOT_FOUND         ? "NOT_FOUND"
                                                                       : "error",
               s.error_message().c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  std::string addr;
  int64_t timeout_ms = 10'000;
  CLI::App app{"archi-pipeline: client of an Archipelago frontend (status, drain, embed)"};
  app.add_option("--addr", addr, "frontend gRPC address host:port")->required();
  app.add_option("--timeout-ms", timeout_ms, "deadline of each call")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}))
      ->capture_default_str();
  app.require_subcommand(1);
  auto* status_cmd = app.add_subcommand("status", "print members, their states and counters");
  std::string drain_id;
  auto* drain_cmd = app.add_subcommand("drain", "drain a worker: it finishes its work and exits");
  drain_cmd->add_option("worker_id", drain_id, "member id")->required();
  std::vector<std::string> texts;
  std::string ids_csv;
  std::string model;
  auto* embed_cmd = app.add_subcommand("embed", "embed texts; prints the first values and norms");
  embed_cmd->add_option("text", texts, "texts to embed");
  embed_cmd->add_option("--ids", ids_csv, "comma-separated token ids instead of text");
  embed_cmd->add_option("--model", model, "model (pipeline) name; default: the one served");
  std::string request_id;
  bool retry = false;
  embed_cmd->add_option("--request-id", request_id,
                        "idempotency key (at most 128 bytes; ID-<i> when several inputs are given)");
  embed_cmd->add_flag("--retry", retry,
                      "resend after UNAVAILABLE (e.g. a restarting frontend) with the same "
                      "request id, backoff 100 ms..1 s, until --timeout-ms has passed");
  CLI11_PARSE(app, argc, argv);

  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto deadline = [&] {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms);
  };
  if (status_cmd->parsed()) {
    auto stub = pb::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    pb::StatusResponse r;
    auto s = stub->Status(&ctx, pb::StatusRequest{}, &r);
    if (!s.ok()) return Fail(s);
    std::printf(
        "pipeline %s: %d stages; admitted %lu completed %lu deadline_exceeded %lu "
        "rejected %lu pending %lu resent_batches %lu duplicates_dropped %lu\n",
        r.pipeline().c_str(), r.num_stages(), r.admitted(), r.completed(), r.deadline_exceeded(),
        r.rejected(), r.pending(), r.resent_batches(), r.duplicates_dropped());
    std::printf("%-24s %5s %-9s %8s %10s %8s\n", "member", "stage", "state", "pid", "batches",
                "routed");
    for (const auto& m : r.members()) {
      std::printf("%-24s %5d %-9s %8d %10lu %8lu\n", m.id().c_str(), m.stage(), m.state().c_str(),
                  m.pid(), m.batches_processed(), m.batches_routed());
    }
    return 0;
  }
  if (drain_cmd->parsed()) {
    auto stub = pb::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    pb::DrainRequest req;
    req.set_worker_id(drain_id);
    pb::DrainResponse r;
    auto s = stub->Drain(&ctx, req, &r);
    if (!s.ok()) return Fail(s);
    std::printf("%s: %s\n", drain_id.c_str(), r.state().c_str());
    return 0;
  }
  auto stub = pb::Inference::NewStub(channel);
  std::vector<pb::EmbedRequest> reqs;
  if (!ids_csv.empty()) {
    pb::EmbedRequest req;
    std::stringstream ss(ids_csv);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
      try {
        req.mutable_ids()->add_ids(std::stoi(tok));
      } catch (const std::exception&) {
        std::fprintf(stderr, "archi-pipeline: --ids: '%s' is not an integer\n", tok.c_str());
        return 2;
      }
    }
    reqs.push_back(req);
  }
  for (const auto& t : texts) {
    pb::EmbedRequest req;
    req.set_text(t);
    reqs.push_back(req);
  }
  if (reqs.empty()) {
    std::fprintf(stderr, "archi-pipeline embed: give texts or --ids\n");
    return 2;
  }
  int rc = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    pb::EmbedRequest& req = reqs[i];
    req.set_model(model);
    if (!request_id.empty()) {
      req.set_request_id(reqs.size() == 1 ? request_id : request_id + "-" + std::to_string(i));
    }
    // One overall deadline per input; each attempt carries what is left of it.
    const auto until = deadline();
    int64_t backoff_ms = 100;
    pb::EmbedResponse r;
    grpc::Status s;
    while (true) {
      grpc::ClientContext ctx;
      ctx.set_deadline(until);
      r.Clear();
      s = stub->Embed(&ctx, req, &r);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || !retry ||
          std::chrono::system_clock::now() + std::chrono::milliseconds(backoff_ms) >= until) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      backoff_ms = std::min<int64_t>(backoff_ms * 2, 1000);
    }
    if (!s.ok()) {
      rc = Fail(s);
      continue;
    }
    double norm = 0;
    for (float v : r.embedding()) norm += static_cast<double>(v) * v;
    std::printf("request %lu: %d tokens, dim %d, norm %.6f, attempts %u, %.2f ms%s%s:",
                r.request_id(), r.num_tokens(), r.embedding_size(), std::sqrt(norm), r.attempts(),
                r.total_ms(), r.replayed() ? ", replayed" : "", r.recovered() ? ", recovered" : "");
    for (int i = 0; i < std::min(6, r.embedding_size()); ++i) std::printf(" %.6f", r.embedding(i));
    std::printf(" ...\n");
  }
  return rc;
}
