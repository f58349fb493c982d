#include "runtime/coordinator/etcd_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <mutex>

#include "proto/etcd_rpc.grpc.pb.h"

namespace archi::coordinator {

namespace epb = etcdserverpb;

namespace {

Status FromGrpc(const grpc::Status& s, const std::string& endpoint, const char* what) {
  StatusCode code = static_cast<StatusCode>(s.error_code());
  // etcd answers a lease that is gone with NOT_FOUND ("requested lease not found").
  return Status(code, std::string("etcd ") + endpoint + " " + what + ": " + s.error_message());
}

bool MoveOn(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

struct EtcdClient::Impl {
  struct Endpoint {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<epb::KV::Stub> kv;
    std::unique_ptr<epb::Lease::Stub> lease;
  };
  std::vector<Endpoint> endpoints;
  std::atomic<size_t> current{0};

  // Runs `call(endpoint, ctx)` on the current endpoint, then the next ones while the endpoint
  // is unavailable and the deadline lasts. Each try gets its share of what is left so a black
  // hole does not eat the whole deadline when others exist.
  template <typename F>
  Status Call(Deadline deadline, const char* what, F&& call) {
    const size_t n = endpoints.size();
    const size_t first = current.load();
    Status last = UnavailableError(std::string("etcd ") + what + ": no endpoint");
    for (size_t i = 0; i < n; ++i) {
      if (deadline.Expired()) break;
      const size_t idx = (first + i) % n;
      Endpoint& e = endpoints[idx];
      grpc::ClientContext ctx;
      auto left = deadline.Remaining();
      if (n > 1 && i + 1 < n) left = left / static_cast<int64_t>(n - i);
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(left));
      grpc::Status s = call(e, ctx);
      if (s.ok()) {
        current.store(idx);
        return Status::Ok();
      }
      last = FromGrpc(s, e.address, what);
      if (!MoveOn(s)) return last;
    }
    if (last.code() == StatusCode::kDeadlineExceeded) return last;
    return Status(last.code() == StatusCode::kOk ? StatusCode::kUnavailable : last.code(),
                  std::string(last.message()));
  }
};

Result<std::unique_ptr<EtcdClient>> EtcdClient::Create(const std::string& endpoints) {
  auto impl = std::make_unique<Impl>();
  size_t start = 0;
  while (start <= endpoints.size()) {
    size_t comma = endpoints.find(',', start);
    if (comma == std::string::npos) comma = endpoints.size();
    std::string ep = endpoints.substr(start, comma - start);
    start = comma + 1;
    if (ep.starts_with("http://")) ep = ep.substr(7);
    if (ep.empty()) continue;
    const size_t colon = ep.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == ep.size() ||
        ep.find_first_not_of("0123456789", colon + 1) != std::string::npos || ep.size() > 256) {
      return InvalidArgumentError("etcd endpoint '" + ep + "' is not HOST:PORT");
    }
    Impl::Endpoint e;
    e.address = ep;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    e.channel = grpc::CreateCustomChannel(ep, grpc::InsecureChannelCredentials(), args);
    e.kv = epb::KV::NewStub(e.channel);
    e.lease = epb::Lease::NewStub(e.channel);
    impl->endpoints.push_back(std::move(e));
  }
  if (impl->endpoints.empty()) {
    return InvalidArgumentError("no etcd endpoint in '" + endpoints + "'");
  }
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(impl), endpoints));
}

EtcdClient::EtcdClient(std::unique_ptr<Impl> impl, std::string endpoints)
    : impl_(std::move(impl)), endpoints_(std::move(endpoints)) {}
EtcdClient::~EtcdClient() = default;

Result<epb::RangeResponse> EtcdClient::Range(const epb::RangeRequest& req, Deadline deadline) {
  epb::RangeResponse resp;
  ARCHI_RETURN_IF_ERROR(impl_->Call(
      deadline, "Range", [&](auto& e, auto& ctx) { return e.kv->Range(&ctx, req, &resp); }));
  return resp;
}

Result<epb::PutResponse> EtcdClient::Put(const epb::PutRequest& req, Deadline deadline) {
  epb::PutResponse resp;
  ARCHI_RETURN_IF_ERROR(impl_->Call(
      deadline, "Put", [&](auto& e, auto& ctx) { return e.kv->Put(&ctx, req, &resp); }));
  return resp;
}

Result<epb::DeleteRangeResponse> EtcdClient::DeleteRange(const epb::DeleteRangeRequest& req,
                                                         Deadline deadline) {
  epb::DeleteRangeResponse resp;
  ARCHI_RETURN_IF_ERROR(impl_->Call(deadline, "DeleteRange", [&](auto& e, auto& ctx) {
    return e.kv->DeleteRange(&ctx, req, &resp);
  }));
  return resp;
}

Result<epb::TxnResponse> EtcdClient::Txn(const epb::TxnRequest& req, Deadline deadline) {
  epb::TxnResponse resp;
  ARCHI_RETURN_IF_ERROR(impl_->Call(
      deadline, "Txn", [&](auto& e, auto& ctx) { return e.kv->Txn(&ctx, req, &resp); }));
  return resp;
}

Result<std::pair<int64_t, int64_t>> EtcdClient::LeaseGrant(int64_t ttl_s, Deadline deadline) {
  epb::LeaseGrantRequest req;
  req.set_ttl(ttl_s);
  epb::LeaseGrantResponse resp;
  ARCHI_RETURN_IF_ERROR(impl_->Call(deadline, "LeaseGrant", [&](auto& e, auto& ctx) {
    return e.lease->LeaseGrant(&ctx, req, &resp);
  }));
  if (!resp.error().empty()) return UnavailableError("etcd LeaseGrant: " + resp.error());
  return std::make_pair(static_cast<int64_t>(resp.id()), static_cast<int64_t>(resp.ttl()));
}

Status EtcdClient::LeaseRevoke(int64_t id, Deadline deadline) {
  epb::LeaseRevokeRequest req;
  req.set_id(id);
  epb::LeaseRevokeResponse resp;
  return impl_->Call(deadline, "LeaseRevoke",
                     [&](auto& e, auto& ctx) { return e.lease->LeaseRevoke(&ctx, req, &resp); });
}

Result<int64_t> EtcdClient::LeaseKeepAlive(int64_t id, Deadline deadline) {
  epb::LeaseKeepAliveResponse resp;
  ARCHI_RETURN_IF_ERROR(impl_->Call(deadline, "LeaseKeepAlive", [&](auto& e, auto& ctx) {
    auto stream = e.lease->LeaseKeepAlive(&ctx);
    epb::LeaseKeepAliveRequest req;
    req.set_id(id);
    if (!stream->Write(req)) return stream->Finish();
    const bool got = stream->Read(&resp);
    stream->WritesDone();
    if (!got) {
      grpc::Status s = stream->Finish();
      return s.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed") : s;
    }
    ctx.TryCancel();  // the stream stays open on etcd's side otherwise
    stream->Finish().ok();
    return grpc::Status::OK;
  }));
  if (resp.ttl() <= 0) {
    return NotFoundError("etcd lease " + std::to_string(id) + " is gone (expired or revoked)");
  }
  return static_cast<int64_t>(resp.ttl());
}

std::string EtcdClient::PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

}  // namespace archi::coordinator
