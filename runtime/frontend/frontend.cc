#include "runtime/frontend/frontend.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "proto/inference.grpc.pb.h"
#include "runtime/core/logging.h"
#include "runtime/policy/policy.h"
#include "runtime/executor/metrics.h"
#include "runtime/executor/node.h"
#include "runtime/executor/plan.h"
#include "runtime/executor/wire.h"
#include "runtime/model/model.h"
#include "runtime/model/wordpiece.h"
#include "world/store_client.h"
#include "world/store_server.h"

namespace archi::frontend {

namespace ex = archi::executor;
namespace pb = archi::proto;
using Clock = std::chrono::steady_clock;

namespace {
constexpr size_t kMaxTextBytes = 64 * 1024;

grpc::Status ToGrpc(const Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace

struct Frontend::Impl {
  FrontendOptions options;
  ex::PipelinePlan plan;
  model::ModelConfig config;
  std::unique_ptr<model::WordPieceTokenizer> tokenizer;
  std::unique_ptr<StoreServer> store_server;
  std::shared_ptr<Store> store;
  std::unique_ptr<ex::PipelineNode> node;
  std::unique_ptr<coordinator::Coordinator> coord;  // outlives `server` (declared before it)
  std::unique_ptr<grpc::Server> server;
  std::string bound_address;
  std::unique_ptr<pb::Inference::CallbackService> inference_service;
  std::unique_ptr<pb::Admin::CallbackService> admin_service;

  struct Pending {
    grpc::ServerUnaryReactor* reactor = nullptr;
    pb::EmbedResponse* response = nullptr;
    std::vector<int32_t> ids;
    Clock::time_point admitted;
    Clock::time_point dispatched;
    int64_t deadline_unix_ms = 0;
    bool is_dispatched = false;
  };

  std::mutex mu;
  std::condition_variable batch_cv;
  std::condition_variable deadline_cv;
  std::unordered_map<uint64_t, Pending> pending;
  std::deque<uint64_t> queue;                  // admitted, not yet in a micro-batch
  std::multimap<int64_t, uint64_t> deadlines;  // unix ms -> request id
  uint64_t next_request_id = 1;
  uint64_t next_batch_id = 1;
  bool stopping = false;
  // Counters (guarded by mu).
  uint64_t admitted = 0, completed = 0, failed = 0, deadline_exceeded = 0, rejected = 0,
           duplicates = 0;
  // Recent answers (unix ms, latency ms) for the coordinator's policy: the last 5 s.
  std::deque<std::pair<int64_t, double>> recent;
  policy::FrontendMetrics RecentMetrics();
  std::jthread batcher, deadline_thread;

  // Prometheus (a disabled Metrics when --metrics-listen is not given).
  std::unique_ptr<ex::Metrics> metrics = ex::Metrics::Disabled();
  std::map<grpc::StatusCode, ex::Counter> requests_by_code;  // built in Init, read-only after
  ex::Histogram latency_seconds, queue_seconds, batch_size;
  ex::Gauge pending_gauge;
  ex::Counter duplicates_counter, batches_counter;
  void Count(grpc::StatusCode code) {
    auto it = requests_by_code.find(code);
    if (it != requests_by_code.end()) it->second.Increment();
  }
  void InitMetrics();

  using Finish = std::pair<grpc::ServerUnaryReactor*, grpc::Status>;

  static void FinishAll(std::vector<Finish>& done) {
    for (auto& [r, s] : done) r->Finish(s);
    done.clear();
  }

  Status Init();
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx, const pb::EmbedRequest* req,
                                  pb::EmbedResponse* resp);
  Result<std::vector<int32_t>> InputIds(const pb::EmbedRequest& req) const;
  void BatchLoop(std::stop_token st);
  void DeadlineLoop(std::stop_token st);
  void OnResult(ex::Batch&& batch, ex::Origin origin);
  grpc::Status GetStatus(pb::StatusResponse* resp);
  grpc::Status Drain(const std::string& id, pb::DrainResponse* resp);
  void Shutdown();
};

class InferenceImpl final : public pb::Inference::CallbackService {
 public:
  explicit InferenceImpl(Frontend::Impl* f) : f_(f) {}
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx, const pb::EmbedRequest* req,
                                  pb::EmbedResponse* resp) override {
    return f_->Embed(ctx, req, resp);
  }

 private:
  Frontend::Impl* f_;
};

class AdminImpl final : public pb::Admin::CallbackService {
 public:
  explicit AdminImpl(Frontend::Impl* f) : f_(f) {}
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const pb::StatusRequest*,
                                   pb::StatusResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    r->Finish(f_->GetStatus(resp));
    return r;
  }
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx, const pb::DrainRequest* req,
                                  pb::DrainResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    r->Finish(f_->Drain(req->worker_id(), resp));
    return r;
  }

 private:
  Frontend::Impl* f_;
};

void Frontend::Impl::InitMetrics() {
  const ex::Labels l = {{"pipeline", plan.name}};
  for (auto [code, name] : std::initializer_list<std::pair<grpc::StatusCode, const char*>>{
           {grpc::StatusCode::OK, "OK"},
           {grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
           {grpc::StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
           {grpc::StatusCode::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
           {grpc::StatusCode::UNAVAILABLE, "UNAVAILABLE"}}) {
    ex::Labels lc = l;
    lc["code"] = name;
    requests_by_code[code] =
        metrics->AddCounter("archi_frontend_requests_total", "requests answered, by gRPC code", lc);
  }
  latency_seconds =
      metrics->AddHistogram("archi_frontend_request_seconds", "admission to answer of OK requests",
                            ex::Metrics::LatencyBuckets(), l);
  queue_seconds =
      metrics->AddHistogram("archi_frontend_queue_seconds", "admission to micro-batch dispatch",
                            ex::Metrics::LatencyBuckets(), l);
  batch_size = metrics->AddHistogram("archi_frontend_batch_size", "requests per micro-batch",
                                     {1, 2, 4, 8, 16, 32, 64}, l);
  pending_gauge =
      metrics->AddGauge("archi_frontend_pending_requests", "admitted requests not yet answered", l);
  duplicates_counter = metrics->AddCounter("archi_frontend_duplicates_dropped_total",
                                           "late copies of answered requests dropped", l);
  batches_counter =
      metrics->AddCounter("archi_frontend_batches_total", "micro-batches sent into stage 0", l);
}

Status Frontend::Impl::Init() {
  if (!options.metrics_listen.empty()) {
    ARCHI_ASSIGN_OR_RETURN(metrics, ex::Metrics::Serve(options.metrics_listen));
  }
  ARCHI_ASSIGN_OR_RETURN(auto serving, ex::LoadServingPlan(options.plan_path));
  plan = std::move(serving.plan);
  config = serving.config;
  InitMetrics();
  const std::string vocab = plan.model_dir + "/vocab.txt";
  if (std::filesystem::exists(vocab)) {
    model::WordPieceTokenizer::Options to;
    to.max_length = plan.max_tokens;
    ARCHI_ASSIGN_OR_RETURN(tokenizer, model::WordPieceTokenizer::Load(vocab, to));
  }

  if (options.store_address.empty()) {
    StoreServerOptions so;
    so.address = options.store_listen;
    ARCHI_ASSIGN_OR_RETURN(store_server, StoreServer::Start(so));
    store = store_server->store();
  } else {
    // With a token, a store guarded by a standalone coordinator admits this frontend by the
    // credential derived from the token (runtime/coordinator/auth.h).
    const std::string& token = options.coordinator_options.token;
    ARCHI_ASSIGN_OR_RETURN(
        auto client,
        StoreClient::Connect(options.store_address, Deadline::AfterMs(10'000),
                             token.empty() ? std::string()
                                           : coordinator::FrontendStoreCredential(token, plan.name)));
    store = client;
  }
  // A fresh pipeline incarnation: forget members of a previous frontend with this name.
  (store->DeletePrefix(ex::MembersPrefix(plan.name), Deadline::AfterMs(5000)).status())
      .IgnoreError();
  ARCHI_RETURN_IF_ERROR(store->Set(ex::PlanKey(plan.name), plan.ToJson(), Deadline::AfterMs(5000)));

  std::random_device rd;
  next_request_id = (static_cast<uint64_t>(rd()) << 24) | 1;  // distinct across restarts
  next_batch_id = next_request_id;

  ex::NodeOptions no;
  no.pipeline = plan.name;
  no.id = "frontend";
  no.stage = -1;
  no.num_stages = plan.num_stages();
  no.max_inflight_per_link = plan.max_inflight_per_link;
  no.store = store;
  node = std::make_unique<ex::PipelineNode>(
      no, [this](ex::Batch&& b, ex::Origin o) { OnResult(std::move(b), std::move(o)); });
  ARCHI_RETURN_IF_ERROR(node->Start());

  if (options.coordinator) {
    const std::string store_addr =
        store_server ? store_server->address() : options.store_address;
    ARCHI_ASSIGN_OR_RETURN(coord, coordinator::Coordinator::Create(options.coordinator_options,
                                                                   plan, store, store_addr));
    coord->SetFrontendMetrics([this] { return RecentMetrics(); });
    coord->SetMetrics(metrics.get());  // a disabled registry unless --metrics-listen
    // With a token, the embedded store admits members only with their assignment's credential.
    if (store_server) store_server->SetAuthorizer(coord->store_authorizer());
  }
  inference_service = std::make_unique<InferenceImpl>(this);
  admin_service = std::make_unique<AdminImpl>(this);
  grpc::ServerBuilder builder;
  int port = 0;
  ARCHI_ASSIGN_OR_RETURN(auto creds, coordinator::MakeServerCredentials(options.tls));
  builder.AddListeningPort(options.listen, creds, &port);
  builder.RegisterService(inference_service.get());
  builder.RegisterService(admin_service.get());
  if (coord) {
    for (grpc::Service* svc : coord->services()) builder.RegisterService(svc);
  }
  builder.SetMaxReceiveMessageSize(1 << 20);
  server = builder.BuildAndStart();
  if (!server || port == 0) {
    return UnavailableError("cannot listen on " + options.listen);
  }
  bound_address = options.listen.substr(0, options.listen.rfind(':')) + ":" + std::to_string(port);
  batcher = std::jthread([this](std::stop_token st) { BatchLoop(st); });
  deadline_thread = std::jthread([this](std::stop_token st) { DeadlineLoop(st); });
  ARCHI_LOG_INFO("frontend: pipeline {} ({} stages, model {}) serving on {}, store {}", plan.name,
                 plan.num_stages(), plan.model_dir, bound_address,
                 store_server ? store_server->address() : options.store_address);
  return Status::Ok();
}

Result<std::vector<int32_t>> Frontend::Impl::InputIds(const pb::EmbedRequest& req) const {
  if (!req.model().empty() && req.model() != plan.name) {
    return InvalidArgumentError("unknown model '" + req.model() + "'; this frontend serves '" +
                                plan.name + "'");
  }
  std::vector<int32_t> ids;
  switch (req.input_case()) {
    case pb::EmbedRequest::kText: {
      if (!tokenizer) {
        return InvalidArgumentError("model '" + plan.name +
                                    "' has no tokenizer (no vocab.txt): send token ids");
      }
      if (req.text().empty()) return InvalidArgumentError("empty text");
      if (req.text().size() > kMaxTextBytes) {
        return InvalidArgumentError("text of " + std::to_string(req.text().size()) +
                                    " bytes; at most " + std::to_string(kMaxTextBytes));
      }
      ARCHI_ASSIGN_OR_RETURN(ids, tokenizer->Encode(req.text()));
      break;
    }
    case pb::EmbedRequest::kIds: {
      const auto& in = req.ids().ids();
      if (in.empty()) return InvalidArgumentError("empty token id list");
      if (in.size() > plan.max_tokens) {
        return InvalidArgumentError(std::to_string(in.size()) + " token ids; at most " +
                                    std::to_string(plan.max_tokens));
      }
      for (int i = 0; i < in.size(); ++i) {
        if (in[i] < 0 || in[i] >= config.vocab_size) {
          return InvalidArgumentError("token id " + std::to_string(in[i]) + " at position " +
                                      std::to_string(i) + " outside the vocabulary [0, " +
                                      std::to_string(config.vocab_size) + ")");
        }
      }
      ids.assign(in.begin(), in.end());
      break;
    }
    default:
      return InvalidArgumentError("request has neither text nor ids");
  }
  if (ids.empty()) return InvalidArgumentError("input tokenised to no ids");
  return ids;
}

grpc::ServerUnaryReactor* Frontend::Impl::Embed(grpc::CallbackServerContext* ctx,
                                                const pb::EmbedRequest* req,
                                                pb::EmbedResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto ids = InputIds(*req);
  if (!ids.ok()) {
    {
      std::lock_guard lock(mu);
      ++rejected;
    }
    Count(static_cast<grpc::StatusCode>(ids.status().code()));
    reactor->Finish(ToGrpc(ids.status()));
    return reactor;
  }
  const int64_t now = ex::UnixMillis();
  int64_t deadline = now + plan.default_timeout_ms;
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline =
        std::chrono::duration_cast<std::chrono::milliseconds>(ctx->deadline().time_since_epoch())
            .count();
  }
  if (deadline <= now) {
    {
      std::lock_guard lock(mu);
      ++deadline_exceeded;
    }
    Count(grpc::StatusCode::DEADLINE_EXCEEDED);
    reactor->Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline already passed"));
    return reactor;
  }
  {
    std::lock_guard lock(mu);
    if (stopping) {
      Count(grpc::StatusCode::UNAVAILABLE);
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "frontend is shutting down"));
      return reactor;
    }
    if (pending.size() >= static_cast<size_t>(plan.max_queue)) {
      ++rejected;
      reactor->Finish(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          "admission queue full (" + std::to_string(plan.max_queue) + " requests pending)"));
      return reactor;
    }
    const uint64_t id = next_request_id++;
    resp->set_request_id(id);
    resp->set_client_tag(req->client_tag());
    resp->set_num_tokens(static_cast<int32_t>(ids->size()));
    Pending p;
    p.reactor = reactor;
    p.response = resp;
    p.ids = std::move(*ids);
    p.admitted = Clock::now();
    p.deadline_unix_ms = deadline;
    pending.emplace(id, std::move(p));
    queue.push_back(id);
    deadlines.emplace(deadline, id);
    ++admitted;
    pending_gauge.Set(static_cast<double>(pending.size()));
  }
  batch_cv.notify_one();
  deadline_cv.notify_one();
  return reactor;
}

void Frontend::Impl::BatchLoop(std::stop_token st) {
  while (!st.stop_requested()) {
    ex::Batch batch;
    {
      std::unique_lock lock(mu);
      batch_cv.wait_for(lock, std::chrono::milliseconds(100),
                        [&] { return !queue.empty() || st.stop_requested(); });
      if (st.stop_requested()) return;
      // Drop ids already answered (deadline) from the head.
      while (!queue.empty() && !pending.contains(queue.front())) queue.pop_front();
      if (queue.empty()) continue;
      const auto until =
          pending[queue.front()].admitted + std::chrono::milliseconds(plan.max_wait_ms);
      batch_cv.wait_until(lock, until, [&] {
        return queue.size() >= static_cast<size_t>(plan.max_batch) || st.stop_requested();
      });
      if (st.stop_requested()) return;
      std::vector<uint64_t> take;
      int64_t seq = 0, deadline = 0;
      while (!queue.empty() && take.size() < static_cast<size_t>(plan.max_batch)) {
        const uint64_t id = queue.front();
        queue.pop_front();
        auto it = pending.find(id);
        if (it == pending.end()) continue;
        take.push_back(id);
        seq = std::max<int64_t>(seq, static_cast<int64_t>(it->second.ids.size()));
        deadline = std::max(deadline, it->second.deadline_unix_ms);
      }
      if (take.empty()) continue;
      const auto b = static_cast<int64_t>(take.size());
      auto ids = Tensor::Zeros({b, seq}, DType::kI32);
      if (!ids.ok()) {
        ARCHI_LOG_ERROR("frontend: cannot allocate a micro-batch: {}", ids.status().ToString());
        for (auto id : take) queue.push_front(id);
        continue;
      }
      const auto now = Clock::now();
      for (int64_t i = 0; i < b; ++i) {
        Pending& p = pending[take[static_cast<size_t>(i)]];
        std::memcpy(ids->data_as<int32_t>() + i * seq, p.ids.data(),
                    p.ids.size() * sizeof(int32_t));
        batch.request_ids.push_back(take[static_cast<size_t>(i)]);
        batch.lengths.push_back(static_cast<int32_t>(p.ids.size()));
        p.dispatched = now;
        p.is_dispatched = true;
        queue_seconds.Observe(std::chrono::duration<double>(now - p.admitted).count());
      }
      batch.batch_id = next_batch_id++;
      batch.attempt = 1;
      batch.stage = 0;
      batch.deadline_unix_ms = deadline;
      batch.kind = ex::PayloadKind::kTokenIds;
      batch.payload = std::move(*ids);
      batch_size.Observe(static_cast<double>(b));
      batches_counter.Increment();
    }
    node->Forward(std::move(batch), ex::Origin{});
  }
}

void Frontend::Impl::DeadlineLoop(std::stop_token st) {
  std::vector<Finish> done;
  while (!st.stop_requested()) {
    {
      std::unique_lock lock(mu);
      const int64_t now = ex::UnixMillis();
      int64_t wait_ms = 100;
      if (!deadlines.empty()) wait_ms = std::clamp<int64_t>(deadlines.begin()->first - now, 0, 100);
      if (wait_ms > 0) {
        deadline_cv.wait_for(lock, std::chrono::milliseconds(wait_ms));
      }
      const int64_t t = ex::UnixMillis();
      while (!deadlines.empty() && deadlines.begin()->first <= t) {
        const uint64_t id = deadlines.begin()->second;
        deadlines.erase(deadlines.begin());
        auto it = pending.find(id);
        if (it == pending.end()) continue;
        const bool in_pipeline = it->second.is_dispatched;
        done.emplace_back(it->second.reactor,
                          grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                       in_pipeline ? "deadline exceeded while in the pipeline"
                                                   : "deadline exceeded while queued for a batch"));
        pending.erase(it);
        ++deadline_exceeded;
        Count(grpc::StatusCode::DEADLINE_EXCEEDED);
        pending_gauge.Set(static_cast<double>(pending.size()));
      }
    }
    FinishAll(done);
  }
}

void Frontend::Impl::OnResult(ex::Batch&& batch, ex::Origin origin) {
  std::vector<Finish> done;
  const auto& shape = batch.payload.shape();
  const bool ok = batch.kind == ex::PayloadKind::kEmbeddings &&
                  batch.payload.dtype() == DType::kF32 && shape.size() == 2 &&
                  shape[1] == config.hidden_size &&
                  shape[0] == static_cast<int64_t>(batch.request_ids.size());
  if (!ok) {
    ARCHI_LOG_ERROR("frontend: micro-batch {} came back as a {} of the wrong shape; ignored",
                    batch.batch_id, ex::PayloadKindName(batch.kind));
  } else {
    const int64_t h = shape[1];
    std::lock_guard lock(mu);
    const auto now = Clock::now();
    for (size_t i = 0; i < batch.request_ids.size(); ++i) {
      auto it = pending.find(batch.request_ids[i]);
      if (it == pending.end()) {
        ++duplicates;  // answered already (an earlier copy, or its deadline)
        duplicates_counter.Increment();
        continue;
      }
      Pending& p = it->second;
      const float* row = batch.payload.data_as<float>() + static_cast<int64_t>(i) * h;
      p.response->mutable_embedding()->Assign(row, row + h);
      p.response->set_attempts(batch.attempt);
      p.response->set_queue_ms(
          std::chrono::duration<double, std::milli>(p.dispatched - p.admitted).count());
      p.response->set_total_ms(std::chrono::duration<double, std::milli>(now - p.admitted).count());
      done.emplace_back(p.reactor, grpc::Status::OK);
      latency_seconds.Observe(std::chrono::duration<double>(now - p.admitted).count());
      recent.emplace_back(ex::UnixMillis(),
                          std::chrono::duration<double, std::milli>(now - p.admitted).count());
      if (recent.size() > 100'000) recent.pop_front();
      Count(grpc::StatusCode::OK);
      pending.erase(it);
      ++completed;
    }
    pending_gauge.Set(static_cast<double>(pending.size()));
  }
  FinishAll(done);
  node->Ack(origin);
}

policy::FrontendMetrics Frontend::Impl::RecentMetrics() {
  constexpr int64_t kWindowMs = 5000;
  const int64_t now = ex::UnixMillis();
  std::vector<double> lat;
  {
    std::lock_guard lock(mu);
    while (!recent.empty() && recent.front().first < now - kWindowMs) recent.pop_front();
    lat.reserve(recent.size());
    for (const auto& r : recent) lat.push_back(r.second);
  }
  policy::FrontendMetrics m;
  m.admitted_rps = static_cast<double>(lat.size()) * 1000.0 / kWindowMs;
  if (!lat.empty()) {
    const size_t k = std::min(lat.size() - 1, lat.size() * 99 / 100);
    std::nth_element(lat.begin(), lat.begin() + static_cast<std::ptrdiff_t>(k), lat.end());
    m.p99_ms = lat[k];
  }
  return m;
}

grpc::Status Frontend::Impl::GetStatus(pb::StatusResponse* resp) {
  resp->set_pipeline(plan.name);
  resp->set_num_stages(plan.num_stages());
  auto list = store->List(ex::MembersPrefix(plan.name), Deadline::AfterMs(2000));
  if (!list.ok()) return ToGrpc(list.status());
  const auto links = node->links();
  uint64_t resent_by_workers = 0;
  for (const auto& [key, value] : *list) {
    auto m = ex::MemberInfo::FromJson(value);
    if (!m.ok()) continue;
    if (m->stage >= 0) resent_by_workers += m->resent;
    auto* ms = resp->add_members();
    ms->set_id(m->id);
    ms->set_stage(m->stage);
    ms->set_state(m->state);
    ms->set_incarnation(m->incarnation);
    ms->set_batches_processed(m->batches);
    ms->set_ready_unix_ms(m->ready_unix_ms);
    ms->set_first_batch_unix_ms(m->first_batch_unix_ms);
    ms->set_pid(m->pid);
    for (const auto& l : links) {
      if (l.downstream && l.peer_id == m->id) {
        ms->set_batches_routed(l.batches_sent);
        ms->set_outstanding(l.outstanding);
      }
    }
  }
  const auto ns = node->stats();
  std::lock_guard lock(mu);
  resp->set_admitted(admitted);
  resp->set_completed(completed);
  resp->set_failed(failed);
  resp->set_deadline_exceeded(deadline_exceeded);
  resp->set_rejected(rejected);
  resp->set_duplicates_dropped(duplicates);
  resp->set_resent_batches(ns.batches_resent + resent_by_workers);
  resp->set_pending(pending.size());
  return grpc::Status::OK;
}

grpc::Status Frontend::Impl::Drain(const std::string& id, pb::DrainResponse* resp) {
  if (Status v = ex::ValidateMemberId(id); !v.ok()) return ToGrpc(v);
  if (id == "frontend") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the frontend cannot be drained");
  }
  const std::string key = ex::MembersPrefix(plan.name) + id;
  for (int tries = 0; tries < 8; ++tries) {
    auto cur = store->Get(key, Deadline::AfterMs(2000));
    if (!cur.ok()) {
      if (cur.status().code() == StatusCode::kNotFound) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "no member '" + id + "' in pipeline '" + plan.name + "'");
      }
      return ToGrpc(cur.status());
    }
    auto m = ex::MemberInfo::FromJson(*cur);
    if (!m.ok()) return ToGrpc(m.status());
    if (m->state == "draining") {
      resp->set_state("draining");
      return grpc::Status::OK;
    }
    if (m->state == "gone") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "member '" + id + "' is gone");
    }
    ex::MemberInfo next = *m;
    next.state = "draining";
    auto got = store->CompareSet(key, *cur, next.ToJson(), Deadline::AfterMs(2000));
    if (!got.ok()) return ToGrpc(got.status());
    if (*got == next.ToJson()) {
      ARCHI_LOG_INFO("frontend: draining member {} (stage {})", id, m->stage);
      resp->set_state("draining");
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::ABORTED, "member entry kept changing; retry");
}

void Frontend::Impl::Shutdown() {
  std::vector<Finish> done;
  {
    std::lock_guard lock(mu);
    if (stopping) return;
    stopping = true;
    for (auto& [id, p] : pending) {
      Count(grpc::StatusCode::UNAVAILABLE);
      done.emplace_back(p.reactor,
                        grpc::Status(grpc::StatusCode::UNAVAILABLE, "frontend is shutting down"));
    }
    pending.clear();
    queue.clear();
    deadlines.clear();
  }
  FinishAll(done);
  batcher.request_stop();
  deadline_thread.request_stop();
  batch_cv.notify_all();
  deadline_cv.notify_all();
  if (batcher.joinable()) batcher.join();
  if (deadline_thread.joinable()) deadline_thread.join();
  if (coord) coord->Shutdown();  // ends the worker sessions, so the server need not wait for them
  if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (node) node->Stop();
  if (store_server) store_server->Shutdown(Deadline::AfterMs(1000));
}

Frontend::Frontend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Frontend::~Frontend() { Shutdown(); }

Result<std::unique_ptr<Frontend>> Frontend::Start(FrontendOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  Status st = impl->Init();
  if (!st.ok()) {
    impl->Shutdown();
    return st;
  }
  return std::unique_ptr<Frontend>(new Frontend(std::move(impl)));
}

std::string Frontend::address() const { return impl_->bound_address; }
std::string Frontend::store_address() const {
  return impl_->store_server ? impl_->store_server->address() : impl_->options.store_address;
}
std::string Frontend::pipeline() const { return impl_->plan.name; }
std::string Frontend::metrics_address() const { return impl_->metrics->address(); }
void Frontend::Shutdown() { impl_->Shutdown(); }

}  // namespace archi::frontend
