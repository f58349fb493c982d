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
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "proto/inference.grpc.pb.h"
#include "runtime/coordinator/wal.h"
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
constexpr size_t kMaxRequestIdBytes = 128;
// The admission log is compacted (a snapshot of the open admissions) after this many records.
constexpr uint64_t kAdmissionSnapshotEvery = 20'000;

// FNV-1a of the request's input as sent: a retry must carry the same one.
uint64_t Fingerprint(const pb::EmbedRequest& req) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t n) {
    const auto* b = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  };
  mix(req.model().data(), req.model().size());
  const int c = static_cast<int>(req.input_case());
  mix(&c, sizeof(c));
  if (req.input_case() == pb::EmbedRequest::kText) mix(req.text().data(), req.text().size());
  if (req.input_case() == pb::EmbedRequest::kIds) {
    mix(req.ids().ids().data(), static_cast<size_t>(req.ids().ids_size()) * sizeof(int32_t));
  }
  return h;
}

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

  // A caller waiting for a request: the first one, and retries of a keyed request attached to it.
  struct Waiter {
    grpc::ServerUnaryReactor* reactor = nullptr;
    pb::EmbedResponse* response = nullptr;
    bool replayed = false;
  };
  struct Pending {
    std::vector<Waiter> waiters;  // empty for a recovered request until a retry attaches
    std::vector<int32_t> ids;
    Clock::time_point admitted;
    Clock::time_point dispatched;
    int64_t deadline_unix_ms = 0;
    bool is_dispatched = false;
    std::string key;  // EmbedRequest.request_id ("": none)
    uint64_t fingerprint = 0;
    bool recovered = false;
    std::string client_tag;
  };
  // A keyed request's result, kept for retries until expires_unix_ms.
  struct Kept {
    std::vector<float> embedding;
    uint64_t fingerprint = 0;
    uint64_t request_id = 0;
    int32_t num_tokens = 0;
    uint32_t attempts = 0;
    bool recovered = false;
    int64_t expires_unix_ms = 0;
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
  // Keyed requests (guarded by mu).
  std::unordered_map<std::string, uint64_t> by_key;  // request_id -> its running execution
  std::unordered_map<std::string, Kept> kept;
  std::deque<std::pair<int64_t, std::string>> kept_order;  // (expiry, key), oldest first
  uint64_t recovered = 0, retries_attached = 0, retries_kept = 0, executions = 0;
  // Admission log (options.state_dir; appended under mu so that records follow the map's order).
  std::unique_ptr<coordinator::WriteAheadLog> admission_log;
  std::optional<std::pair<uint64_t, std::string>> snapshot_due;  // (lsn, payload) to write
  std::condition_variable sync_cv;
  std::jthread sync_thread;
  Status OpenAdmissionLog();
  Status AppendLocked(const pb::AdmissionRecord& rec);
  std::string OpenAdmissionsLocked() const;
  void SyncLoop(std::stop_token st);
  void KeepLocked(const Pending& p, uint64_t request_id, const float* row, int64_t h,
                  uint32_t attempts);
  static void FillFromKept(const Kept& k, pb::EmbedResponse* resp) {
    resp->mutable_embedding()->Assign(k.embedding.begin(), k.embedding.end());
    resp->set_request_id(k.request_id);
    resp->set_num_tokens(k.num_tokens);
    resp->set_attempts(k.attempts);
    resp->set_recovered(k.recovered);
    resp->set_replayed(true);
  }
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
  if (!options.state_dir.empty()) {
    ARCHI_RETURN_IF_ERROR(OpenAdmissionLog());
    sync_thread = std::jthread([this](std::stop_token st) { SyncLoop(st); });
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
  if (ids.ok() && req->request_id().size() > kMaxRequestIdBytes) {
    ids = InvalidArgumentError("request_id of " + std::to_string(req->request_id().size()) +
                               " bytes; at most " + std::to_string(kMaxRequestIdBytes));
  }
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
  const std::string& key = req->request_id();
  const uint64_t fingerprint = key.empty() ? 0 : Fingerprint(*req);
  auto reused = [&](const std::string& what) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "request_id '" + key + "' was already used with a different input (" +
                            what + "); a retry must resend the same request");
  };
  {
    std::lock_guard lock(mu);
    if (stopping) {
      Count(grpc::StatusCode::UNAVAILABLE);
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "frontend is shutting down"));
      return reactor;
    }
    if (!key.empty()) {
      // A retry: attach to the execution still running, or answer from its kept result.
      if (auto run = by_key.find(key); run != by_key.end()) {
        Pending& p = pending.at(run->second);
        if (p.fingerprint != fingerprint) {
          ++rejected;
          Count(grpc::StatusCode::INVALID_ARGUMENT);
          reactor->Finish(reused("still running"));
          return reactor;
        }
        p.waiters.push_back({reactor, resp, /*replayed=*/true});
        if (deadline > p.deadline_unix_ms) {
          p.deadline_unix_ms = deadline;
          deadlines.emplace(deadline, run->second);
        }
        ++retries_attached;
        return reactor;
      }
      if (auto k = kept.find(key); k != kept.end() && k->second.expires_unix_ms > now) {
        if (k->second.fingerprint != fingerprint) {
          ++rejected;
          Count(grpc::StatusCode::INVALID_ARGUMENT);
          reactor->Finish(reused("answered"));
          return reactor;
        }
        FillFromKept(k->second, resp);
        resp->set_client_tag(req->client_tag());
        ++retries_kept;
        Count(grpc::StatusCode::OK);
        reactor->Finish(grpc::Status::OK);
        return reactor;
      }
    }
    if (pending.size() >= static_cast<size_t>(plan.max_queue)) {
      ++rejected;
      reactor->Finish(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          "admission queue full (" + std::to_string(plan.max_queue) + " requests pending)"));
      return reactor;
    }
    const uint64_t id = next_request_id++;
    Pending p;
    p.waiters.push_back({reactor, resp, false});
    p.ids = std::move(*ids);
    p.admitted = Clock::now();
    p.deadline_unix_ms = deadline;
    p.key = key;
    p.fingerprint = fingerprint;
    p.client_tag = req->client_tag();
    // Built before the request is queued; appended after it is in the maps (below).
    pb::AdmissionRecord rec;
    if (!key.empty() && admission_log) {
      auto* a = rec.add_admitted();
      a->set_request_id(key);
      a->mutable_ids()->Assign(p.ids.begin(), p.ids.end());
      a->set_fingerprint(fingerprint);
      a->set_deadline_unix_ms(deadline);
      a->set_admitted_unix_ms(now);
      a->set_client_tag(p.client_tag);
    }
    pending.emplace(id, std::move(p));
    if (!key.empty()) {
      by_key[key] = id;  // before the append: a snapshot it starts lists this request
      if (admission_log) {
        // Logged before it can be dispatched: a frontend killed from here on re-dispatches it.
        if (Status st = AppendLocked(rec); !st.ok()) {
          by_key.erase(key);
          pending.erase(id);
          Count(grpc::StatusCode::UNAVAILABLE);
          reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                       "cannot log the admission: " + st.ToString()));
          return reactor;
        }
      }
      ++executions;
    }
    queue.push_back(id);
    deadlines.emplace(deadline, id);
    ++admitted;
    pending_gauge.Set(static_cast<double>(pending.size()));
  }
  batch_cv.notify_one();
  deadline_cv.notify_one();
  return reactor;
}

// ---- Admission log (options.state_dir) ----

std::string Frontend::Impl::OpenAdmissionsLocked() const {
  pb::AdmissionRecord open;
  for (const auto& [key, id] : by_key) {
    const Pending& p = pending.at(id);
    auto* a = open.add_admitted();
    a->set_request_id(key);
    a->mutable_ids()->Assign(p.ids.begin(), p.ids.end());
    a->set_fingerprint(p.fingerprint);
    a->set_deadline_unix_ms(p.deadline_unix_ms);
    a->set_client_tag(p.client_tag);
  }
  return open.SerializeAsString();
}

Status Frontend::Impl::AppendLocked(const pb::AdmissionRecord& rec) {
  if (!admission_log) return Status::Ok();
  ARCHI_RETURN_IF_ERROR(admission_log->Append(rec.SerializeAsString()).status());
  // Compaction: the open admissions as a snapshot (cheap here; written by the sync thread).
  if (!snapshot_due && admission_log->records_since_snapshot() >= kAdmissionSnapshotEvery) {
    auto lsn = admission_log->BeginSnapshot();
    if (lsn.ok()) {
      snapshot_due.emplace(*lsn, OpenAdmissionsLocked());
      sync_cv.notify_all();
    }
  }
  return Status::Ok();
}

// Group commit: one fdatasync per admission_sync_ms for every record appended meanwhile; writes
// the snapshots AppendLocked started.
void Frontend::Impl::SyncLoop(std::stop_token st) {
  const auto period = std::chrono::milliseconds(
      options.admission_sync_ms > 0 ? options.admission_sync_ms : 100);
  while (!st.stop_requested()) {
    std::optional<std::pair<uint64_t, std::string>> snap;
    {
      std::unique_lock lock(mu);
      sync_cv.wait_for(lock, period, [&] { return snapshot_due || st.stop_requested(); });
      snap.swap(snapshot_due);
    }
    if (options.admission_sync_ms > 0 && admission_log->synced_lsn() < admission_log->last_lsn()) {
      if (Status s = admission_log->Sync(); !s.ok()) {
        ARCHI_LOG_WARN("frontend: admission log sync: {}", s.ToString());
      }
    }
    if (snap) {
      if (Status s = admission_log->WriteSnapshot(snap->first, snap->second); !s.ok()) {
        ARCHI_LOG_WARN("frontend: admission log snapshot: {}", s.ToString());
      }
    }
  }
}

Status Frontend::Impl::OpenAdmissionLog() {
  const std::string dir = options.state_dir + "/admission";
  coordinator::WalContents c;
  ARCHI_ASSIGN_OR_RETURN(admission_log, coordinator::WriteAheadLog::Open(dir, &c));
  if (!c.torn.empty()) ARCHI_LOG_WARN("frontend: admission log: dropped a torn tail ({})", c.torn);
  // Replay: the snapshot's open admissions, then every record after it.
  std::map<std::string, pb::AdmissionRecord::Admitted> open;
  auto apply = [&](const std::string& payload, const char* what) -> Status {
    pb::AdmissionRecord rec;
    if (!rec.ParseFromString(payload)) {
      return Status(StatusCode::kDataLoss, "admission log in " + dir + ": unreadable " + what);
    }
    for (auto& a : *rec.mutable_admitted()) open[a.request_id()] = std::move(a);
    for (const auto& d : rec.done()) open.erase(d);
    return Status::Ok();
  };
  if (c.snapshot) ARCHI_RETURN_IF_ERROR(apply(*c.snapshot, "snapshot"));
  for (const auto& r : c.records) ARCHI_RETURN_IF_ERROR(apply(r, "record"));
  const int64_t now = ex::UnixMillis();
  int64_t expired = 0;
  std::lock_guard lock(mu);
  for (auto& [key, a] : open) {
    // A plan or model changed between the runs may not take the logged input: dropped like an
    // expired one (never fed to the model: an id outside its vocabulary is out of bounds).
    const bool fits = !a.ids().empty() && a.ids_size() <= static_cast<int>(plan.max_tokens) &&
                      std::all_of(a.ids().begin(), a.ids().end(), [&](int32_t t) {
                        return t >= 0 && t < config.vocab_size;
                      });
    if (a.deadline_unix_ms() <= now || !fits) {
      ++expired;  // nobody waits for it any more, or it does not fit this plan
      continue;
    }
    const uint64_t id = next_request_id++;
    Pending p;
    p.ids.assign(a.ids().begin(), a.ids().end());
    p.admitted = Clock::now();
    p.deadline_unix_ms = a.deadline_unix_ms();
    p.key = key;
    p.fingerprint = a.fingerprint();
    p.recovered = true;
    p.client_tag = a.client_tag();
    pending.emplace(id, std::move(p));
    queue.push_back(id);
    deadlines.emplace(a.deadline_unix_ms(), id);
    by_key[key] = id;
    ++recovered;
    ++executions;
    ++admitted;
  }
  // Compact at once: the new log starts from the admissions re-dispatched now.
  ARCHI_ASSIGN_OR_RETURN(const uint64_t lsn, admission_log->BeginSnapshot());
  ARCHI_RETURN_IF_ERROR(admission_log->WriteSnapshot(lsn, OpenAdmissionsLocked()));
  ARCHI_LOG_INFO("frontend: admission log {}: {} admitted request(s) not answered before the "
                 "restart re-dispatched, {} past their deadline (or not fitting this plan) dropped",
                 dir, recovered, expired);
  return Status::Ok();
}

void Frontend::Impl::KeepLocked(const Pending& p, uint64_t request_id, const float* row,
                                int64_t h, uint32_t attempts) {
  if (p.key.empty() || options.kept_results_ttl_ms <= 0 || options.kept_results_max == 0) return;
  Kept k;
  k.embedding.assign(row, row + h);
  k.fingerprint = p.fingerprint;
  k.request_id = request_id;
  k.num_tokens = static_cast<int32_t>(p.ids.size());
  k.attempts = attempts;
  k.recovered = p.recovered;
  k.expires_unix_ms = ex::UnixMillis() + options.kept_results_ttl_ms;
  kept_order.emplace_back(k.expires_unix_ms, p.key);
  kept[p.key] = std::move(k);
  while (kept.size() > options.kept_results_max && !kept_order.empty()) {
    // The oldest first (an entry refreshed since has a later expiry and stays).
    auto [t, key] = kept_order.front();
    kept_order.pop_front();
    auto it = kept.find(key);
    if (it != kept.end() && it->second.expires_unix_ms == t) kept.erase(it);
  }
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
      pb::AdmissionRecord finished;
      while (!deadlines.empty() && deadlines.begin()->first <= t) {
        const uint64_t id = deadlines.begin()->second;
        deadlines.erase(deadlines.begin());
        auto it = pending.find(id);
        if (it == pending.end()) continue;
        if (it->second.deadline_unix_ms > t) continue;  // extended by a retry (its own entry)
        const bool in_pipeline = it->second.is_dispatched;
        for (const Waiter& w : it->second.waiters) {
          done.emplace_back(w.reactor,
                            grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                         in_pipeline ? "deadline exceeded while in the pipeline"
                                                     : "deadline exceeded while queued for a batch"));
          Count(grpc::StatusCode::DEADLINE_EXCEEDED);
        }
        if (!it->second.key.empty()) {
          by_key.erase(it->second.key);
          finished.add_done(it->second.key);
        }
        pending.erase(it);
        ++deadline_exceeded;
        pending_gauge.Set(static_cast<double>(pending.size()));
      }
      if (finished.done_size() > 0) {
        if (Status st = AppendLocked(finished); !st.ok()) {
          ARCHI_LOG_WARN("frontend: admission log: {}", st.ToString());
        }
      }
      while (!kept_order.empty() && kept_order.front().first <= t) {
        auto k = kept.find(kept_order.front().second);
        if (k != kept.end() && k->second.expires_unix_ms <= t) kept.erase(k);
        kept_order.pop_front();
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
    pb::AdmissionRecord finished;
    for (size_t i = 0; i < batch.request_ids.size(); ++i) {
      const uint64_t id = batch.request_ids[i];
      auto it = pending.find(id);
      if (it == pending.end()) {
        ++duplicates;  // answered already (an earlier copy, or its deadline)
        duplicates_counter.Increment();
        continue;
      }
      Pending& p = it->second;
      const float* row = batch.payload.data_as<float>() + static_cast<int64_t>(i) * h;
      for (const Waiter& w : p.waiters) {
        pb::EmbedResponse* r = w.response;
        r->mutable_embedding()->Assign(row, row + h);
        r->set_request_id(id);
        r->set_client_tag(p.client_tag);
        r->set_num_tokens(static_cast<int32_t>(p.ids.size()));
        r->set_attempts(batch.attempt);
        r->set_queue_ms(
            std::chrono::duration<double, std::milli>(p.dispatched - p.admitted).count());
        r->set_total_ms(std::chrono::duration<double, std::milli>(now - p.admitted).count());
        r->set_replayed(w.replayed);
        r->set_recovered(p.recovered);
        done.emplace_back(w.reactor, grpc::Status::OK);
        Count(grpc::StatusCode::OK);
      }
      latency_seconds.Observe(std::chrono::duration<double>(now - p.admitted).count());
      recent.emplace_back(ex::UnixMillis(),
                          std::chrono::duration<double, std::milli>(now - p.admitted).count());
      if (recent.size() > 100'000) recent.pop_front();
      if (!p.key.empty()) {
        KeepLocked(p, id, row, h, batch.attempt);
        by_key.erase(p.key);
        finished.add_done(p.key);
      }
      pending.erase(it);
      ++completed;
    }
    if (finished.done_size() > 0) {
      if (Status st = AppendLocked(finished); !st.ok()) {
        ARCHI_LOG_WARN("frontend: admission log: {}", st.ToString());
      }
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
  resp->set_recovered(recovered);
  resp->set_retries_attached(retries_attached);
  resp->set_retries_kept(retries_kept);
  resp->set_kept_results(kept.size());
  resp->set_executions(executions);
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
    // Keyed requests stay open in the admission log: a frontend started on the same state dir
    // re-dispatches them.
    for (auto& [id, p] : pending) {
      for (const Waiter& w : p.waiters) {
        Count(grpc::StatusCode::UNAVAILABLE);
        done.emplace_back(w.reactor,
                          grpc::Status(grpc::StatusCode::UNAVAILABLE, "frontend is shutting down"));
      }
    }
    pending.clear();
    by_key.clear();
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
  sync_thread.request_stop();
  sync_cv.notify_all();
  if (sync_thread.joinable()) sync_thread.join();
  if (admission_log) (admission_log->Sync()).IgnoreError();
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
