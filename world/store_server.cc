#include "world/store_server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "proto/store.grpc.pb.h"
#include "runtime/core/logging.h"

namespace archi {
namespace {

namespace pb = ::archi::store::v1;
using SystemClock = std::chrono::system_clock;

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status Invalid(std::string msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
}

// The steady-clock Deadline matching a gRPC (system clock) deadline; max() means none.
Deadline FromSystem(SystemClock::time_point t) {
  if (t == SystemClock::time_point::max()) return Deadline::Infinite();
  const auto left = t - SystemClock::now();
  if (left <= SystemClock::duration::zero()) return Deadline::Past();
  return Deadline::After(std::chrono::duration_cast<Clock::duration>(left));
}

SystemClock::time_point ToSystem(Deadline d) {
  return SystemClock::now() + std::chrono::duration_cast<SystemClock::duration>(d.Remaining());
}

// "key 'abc…'" for error messages: keys may be binary or long, so only a printable prefix.
std::string Quote(const std::string& key) {
  constexpr size_t kMax = 64;
  std::string out = "'";
  for (size_t i = 0; i < key.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (key.size() > kMax) out += "...";
  return out + "'";
}

class StoreService final : public pb::Store::CallbackService {
 public:
  StoreService(std::shared_ptr<InMemoryStore> store, const StoreServerOptions& options)
      : store_(std::move(store)), options_(options) {}

  void BeginShutdown() { shutting_down_.store(true, std::memory_order_release); }

  void SetAuthorizer(StoreAuthorizer a) {
    std::lock_guard lock(auth_mu_);
    authorizer_ = a ? std::make_shared<const StoreAuthorizer>(std::move(a)) : nullptr;
  }

  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx, const pb::SetRequest* req,
                                pb::SetResponse*) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckKey(req->key()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kWrite, req->key()); !st.ok()) return st;
      if (auto st = CheckValue(req->value(), "value"); !st.ok()) return st;
      return ToGrpc(store_->Set(req->key(), req->value(), Deadline::Infinite()));
    });
  }

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const pb::GetRequest* req,
                                pb::GetResponse* resp) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckKey(req->key()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kRead, req->key()); !st.ok()) return st;
      auto r = store_->Get(req->key(), Deadline::Infinite());
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kNotFound) {
          return grpc::Status(grpc::StatusCode::NOT_FOUND,
                              "key " + Quote(req->key()) + " not found");
        }
        return ToGrpc(r.status());
      }
      resp->set_value(std::move(*r));
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* ctx, const pb::AddRequest* req,
                                pb::AddResponse* resp) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckKey(req->key()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kWrite, req->key()); !st.ok()) return st;
      auto r = store_->Add(req->key(), req->delta(), Deadline::Infinite());
      if (!r.ok()) return ToGrpc(r.status());
      resp->set_value(*r);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* CompareSet(grpc::CallbackServerContext* ctx,
                                       const pb::CompareSetRequest* req,
                                       pb::CompareSetResponse* resp) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckKey(req->key()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kWrite, req->key()); !st.ok()) return st;
      if (auto st = CheckValue(req->expected(), "expected value"); !st.ok()) return st;
      if (auto st = CheckValue(req->desired(), "desired value"); !st.ok()) return st;
      auto r =
          store_->CompareSet(req->key(), req->expected(), req->desired(), Deadline::Infinite());
      if (!r.ok()) return ToGrpc(r.status());
      resp->set_value(std::move(*r));
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const pb::DeleteRequest* req,
                                   pb::DeleteResponse* resp) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckKey(req->key()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kWrite, req->key()); !st.ok()) return st;
      auto r = store_->Delete(req->key(), Deadline::Infinite());
      if (!r.ok()) return ToGrpc(r.status());
      resp->set_existed(*r);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const pb::ListRequest* req,
                                 pb::ListResponse* resp) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckPrefix(req->prefix()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kRead, req->prefix()); !st.ok()) return st;
      auto r = store_->List(req->prefix(), Deadline::Infinite());
      if (!r.ok()) return ToGrpc(r.status());
      resp->mutable_items()->Reserve(static_cast<int>(r->size()));
      for (auto& [k, v] : *r) {
        pb::KeyValue* kv = resp->add_items();
        kv->set_key(std::move(k));
        kv->set_value(std::move(v));
      }
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* DeletePrefix(grpc::CallbackServerContext* ctx,
                                         const pb::DeletePrefixRequest* req,
                                         pb::DeletePrefixResponse* resp) override {
    return Unary(ctx, [&]() -> grpc::Status {
      if (auto st = CheckPrefix(req->prefix()); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kWrite, req->prefix()); !st.ok()) return st;
      auto r = store_->DeletePrefix(req->prefix(), Deadline::Infinite());
      if (!r.ok()) return ToGrpc(r.status());
      resp->set_deleted(*r);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* Wait(grpc::CallbackServerContext* ctx, const pb::WaitRequest* req,
                                 pb::WaitResponse*) override;

 private:
  class WaitReactor;

  // Runs `body` (which must not block) and finishes the RPC with its status. Exceptions (e.g.
  // bad_alloc) stop here: they must not unwind into gRPC's threads.
  template <typename Body>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, Body&& body) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(Guarded(std::forward<Body>(body)));
    return reactor;
  }

  template <typename Body>
  grpc::Status Guarded(Body&& body) {
    if (shutting_down_.load(std::memory_order_acquire)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "store server is shutting down");
    }
    try {
      return body();
    } catch (const std::bad_alloc&) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "store server out of memory");
    } catch (const std::exception& e) {
      return grpc::Status(grpc::StatusCode::INTERNAL, std::string("store server: ") + e.what());
    }
  }

  // The authorizer's verdict on (access, key) for this call's credential metadata.
  grpc::Status CheckAuth(grpc::CallbackServerContext* ctx, StoreAccess access,
                         const std::string& key) const {
    std::shared_ptr<const StoreAuthorizer> a;
    {
      std::lock_guard lock(auth_mu_);
      a = authorizer_;
    }
    if (!a) return grpc::Status::OK;
    std::string credential;
    const auto& md = ctx->client_metadata();
    if (auto it = md.find("x-archi-member"); it != md.end()) {
      credential.assign(it->second.data(), it->second.size());
    }
    return ToGrpc((*a)(access, key, credential));
  }

  grpc::Status CheckKey(const std::string& key) const {
    if (key.empty()) return Invalid("empty key");
    if (key.size() > options_.max_key_bytes) {
      return Invalid("key " + Quote(key) + " is " + std::to_string(key.size()) + " bytes (limit " +
                     std::to_string(options_.max_key_bytes) + ")");
    }
    return grpc::Status::OK;
  }
  grpc::Status CheckPrefix(const std::string& prefix) const {
    if (prefix.size() > options_.max_key_bytes) {
      return Invalid("prefix is " + std::to_string(prefix.size()) + " bytes (limit " +
                     std::to_string(options_.max_key_bytes) + ")");
    }
    return grpc::Status::OK;
  }
  grpc::Status CheckValue(const std::string& value, const char* what) const {
    if (value.size() > options_.max_value_bytes) {
      return Invalid(std::string(what) + " is " + std::to_string(value.size()) + " bytes (limit " +
                     std::to_string(options_.max_value_bytes) + ")");
    }
    return grpc::Status::OK;
  }

  std::shared_ptr<InMemoryStore> store_;
  const StoreServerOptions options_;
  std::atomic<bool> shutting_down_{false};
  mutable std::mutex auth_mu_;
  std::shared_ptr<const StoreAuthorizer> authorizer_;  // guarded by auth_mu_
};

// One pending Wait. It registers an InMemoryStore watch and finishes the RPC from the watch's
// callback, so no thread is held while it waits.
//
// Lifetime and races. Start() runs inside the method handler, before gRPC binds the reactor, so a
// Finish() issued during Start() (the watch completed at once) is queued by gRPC and OnDone()
// cannot run before Start() returns. Afterwards two things can happen concurrently: the watch
// callback (any thread: a writer, the store's timer, Shutdown) and OnCancel() (client gone or its
// deadline passed). The store runs the watch callback exactly once, and that callback is the only
// caller of Finish(), so the RPC is finished exactly once. OnCancel() only asks the store to cancel
// the watch (a no-op when it already completed; otherwise the callback then runs with kCancelled).
// gRPC runs OnDone() (which deletes the reactor) only after Finish() and after OnCancel() has
// returned; the callback touches no member after calling Finish().
class StoreService::WaitReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit WaitReactor(std::shared_ptr<InMemoryStore> store) : store_(std::move(store)) {}

  void Start(std::vector<std::string> keys, Deadline deadline) {
    keys_ = keys;  // kept to name the missing keys on timeout
    watch_id_ =
        store_->WatchAll(std::move(keys), deadline, [this](Status s) { Complete(std::move(s)); });
  }

  void OnCancel() override { store_->CancelWatch(watch_id_); }
  void OnDone() override { delete this; }

 private:
  // Must always reach Finish(): an exception escaping here would leave the RPC unfinished.
  void Complete(Status s) noexcept {
    grpc::Status out;
    try {
      out = Translate(s);
    } catch (...) {
      out = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "");
    }
    Finish(std::move(out));  // `this` may be deleted from here on
  }

  grpc::Status Translate(const Status& s) const {
    if (s.ok()) return grpc::Status::OK;
    if (s.code() == StatusCode::kDeadlineExceeded) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "timed out waiting for keys: " + MissingKeys());
    }
    if (s.code() == StatusCode::kCancelled) {
      // The store shut down (the server is stopping) or the client went away (then nobody reads
      // this status). For a client the server going away is transient: UNAVAILABLE.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "store server is shutting down");
    }
    return ToGrpc(s);
  }

  std::string MissingKeys() const {
    constexpr int kMaxNamed = 8;
    std::string out;
    int named = 0, missing = 0;
    for (const auto& k : keys_) {
      if (store_->Get(k, Deadline::Infinite()).ok()) continue;
      if (named < kMaxNamed) {
        out += (named ? ", " : "") + Quote(k);
        ++named;
      }
      ++missing;
    }
    if (missing > named) out += " and " + std::to_string(missing - named) + " more";
    return missing ? out : "(all present now)";
  }

  std::shared_ptr<InMemoryStore> store_;
  std::vector<std::string> keys_;
  uint64_t watch_id_ = 0;
};

grpc::ServerUnaryReactor* StoreService::Wait(grpc::CallbackServerContext* ctx,
                                             const pb::WaitRequest* req, pb::WaitResponse*) {
  grpc::Status bad = Guarded([&]() -> grpc::Status {
    if (static_cast<size_t>(req->keys_size()) > options_.max_wait_keys) {
      return Invalid("Wait for " + std::to_string(req->keys_size()) + " keys (limit " +
                     std::to_string(options_.max_wait_keys) + ")");
    }
    for (const auto& k : req->keys()) {
      if (auto st = CheckKey(k); !st.ok()) return st;
      if (auto st = CheckAuth(ctx, StoreAccess::kRead, k); !st.ok()) return st;
    }
    return grpc::Status::OK;
  });
  if (!bad.ok()) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(std::move(bad));
    return reactor;
  }

  // The earlier of the client's deadline and timeout_ms (clamped: a huge value would overflow
  // the clock arithmetic).
  constexpr int64_t kMaxTimeoutMs = int64_t{30} * 24 * 3600 * 1000;
  Deadline deadline = FromSystem(ctx->deadline());
  if (req->timeout_ms() > 0) {
    deadline =
        Deadline::Min(deadline, Deadline::AfterMs(std::min(req->timeout_ms(), kMaxTimeoutMs)));
  }

  auto* reactor = new WaitReactor(store_);
  try {
    reactor->Start({req->keys().begin(), req->keys().end()}, deadline);
  } catch (const std::bad_alloc&) {
    // Thrown while copying the keys or registering the watch, so no callback will finish the
    // RPC (a callback run inside Start() cannot throw: Complete() is noexcept).
    reactor->Finish(
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "store server out of memory"));
  }
  return reactor;
}

std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

struct StoreServer::Impl {
  StoreServerOptions options;
  std::shared_ptr<InMemoryStore> store;
  std::unique_ptr<StoreService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::once_flag shutdown_once;
};

StoreServer::StoreServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<StoreServer>> StoreServer::Start(StoreServerOptions options) {
  const std::string& addr = options.address;
  const size_t colon = addr.rfind(':');
  if (addr.empty() || colon == std::string::npos || colon + 1 == addr.size()) {
    return InvalidArgumentError("store server address '" + addr + "' is not HOST:PORT");
  }
  if (options.max_key_bytes == 0 || options.max_message_bytes <= 0) {
    return InvalidArgumentError("store server limits must be positive");
  }

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->store = std::make_shared<InMemoryStore>();
  impl->service = std::make_unique<StoreService>(impl->store, options);

  try {
    grpc::ServerBuilder builder;
    // gRPC sets SO_REUSEPORT by default, which lets a second server "bind" a port that is in use
    // and silently split the traffic. A rendezvous store must own its port.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.SetMaxReceiveMessageSize(options.max_message_bytes);
    builder.SetMaxSendMessageSize(options.max_message_bytes);
    builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &impl->port);
    builder.RegisterService(impl->service.get());
    impl->server = builder.BuildAndStart();
  } catch (const std::exception& e) {
    return InternalError("store server on " + addr + ": " + e.what());
  }
  if (!impl->server || impl->port <= 0) {
    if (impl->server) impl->server->Shutdown(SystemClock::now());
    return UnavailableError("store server cannot listen on " + addr +
                            " (address in use or not local to this host)");
  }
  ARCHI_LOG_DEBUG("store server listening on {}:{}", HostOf(addr), impl->port);
  return std::unique_ptr<StoreServer>(new StoreServer(std::move(impl)));
}

StoreServer::~StoreServer() { Shutdown(Deadline::AfterMs(impl_->options.shutdown_grace_ms)); }

std::string StoreServer::address() const {
  return HostOf(impl_->options.address) + ":" + std::to_string(impl_->port);
}

int StoreServer::port() const { return impl_->port; }

std::shared_ptr<InMemoryStore> StoreServer::store() const { return impl_->store; }

void StoreServer::SetAuthorizer(StoreAuthorizer authorizer) {
  impl_->service->SetAuthorizer(std::move(authorizer));
}

void StoreServer::Shutdown(Deadline deadline) {
  std::call_once(impl_->shutdown_once, [&] {
    // Order matters: fail new RPCs, then complete every pending Wait (their watches end with
    // kCancelled and the reactors finish), so that the server shutdown has nothing left to wait
    // for; any RPC still running at `deadline` is cancelled by gRPC.
    impl_->service->BeginShutdown();
    impl_->store->Shutdown();
    impl_->server->Shutdown(ToSystem(deadline));
    impl_->server->Wait();
    ARCHI_LOG_DEBUG("store server on {} stopped", address());
  });
}

}  // namespace archi
