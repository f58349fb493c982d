#include "world/store_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include "proto/store.grpc.pb.h"

namespace archi {
namespace {

namespace pb = ::archi::store::v1;
using SystemClock = std::chrono::system_clock;

// The call's deadline on gRPC's clock, with Deadline::Infinite() (and anything later than the cap)
// capped at StoreClient::kMaxCallDuration from now.
SystemClock::time_point GrpcDeadline(Deadline d) {
  const Clock::duration cap = StoreClient::kMaxCallDuration;
  const Clock::duration left = d.infinite() ? cap : std::min(d.Remaining(), cap);
  return SystemClock::now() + std::chrono::duration_cast<SystemClock::duration>(left);
}

const char* StateName(grpc_connectivity_state s) {
  switch (s) {
    case GRPC_CHANNEL_IDLE:
      return "IDLE";
    case GRPC_CHANNEL_CONNECTING:
      return "CONNECTING";
    case GRPC_CHANNEL_READY:
      return "READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return "TRANSIENT_FAILURE";
    case GRPC_CHANNEL_SHUTDOWN:
      return "SHUTDOWN";
  }
  return "?";
}

// Keeps a thread waiting on the channel's state, so that its connection attempts are polled.
// Calls fail fast, so while the store is unreachable no call waits on the channel, and nothing
// but gRPC's client-channel backup poller (every 5 s, GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS)
// handled a reconnection's TCP connect and handshake: after a store restart the channel came back
// only at one of those ticks (3.5-9 s after a coordinator restart; 3.9 s after the store was up
// again in archi-store-reconnect, docs/coordinator.md), and attempts cut by their deadline before
// that showed as "tcp handshaker shutdown". WaitForStateChange polls the channel's connections
// (its completion queue joins the channel's pollset set) and returns at each state change or
// after 100 ms; when READY the thread only sleeps in that poll.
void PollConnection(std::stop_token stop, const std::shared_ptr<grpc::Channel>& channel) {
  while (!stop.stop_requested()) {
    const grpc_connectivity_state s = channel->GetState(false);
    if (s == GRPC_CHANNEL_SHUTDOWN) return;
    channel->WaitForStateChange(s, SystemClock::now() + std::chrono::milliseconds(100));
  }
}

}  // namespace

struct StoreClient::Impl {
  std::string address;
  std::string credential;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Store::Stub> stub;
  std::jthread poller;  // PollConnection; declared last: stopped and joined first

  // Maps a gRPC status onto a Status with the same code whose message names the store and the call.
  // One exception: CANCELLED. A StoreClient never cancels its own calls, so CANCELLED can only come
  // from the server side (a server that shuts down cancels the calls it has not answered, e.g. one
  // that arrived while it was stopping); for the caller that is the store going away, which the
  // Store contract reports as kUnavailable (retry).
  Status FromGrpc(const grpc::Status& s, const char* call) const {
    if (s.ok()) return Status::Ok();
    int code = static_cast<int>(s.error_code());
    if (code < 0 || code > static_cast<int>(StatusCode::kUnauthenticated)) {
      code = static_cast<int>(StatusCode::kUnknown);
    }
    std::string msg = "store " + address + ": " + call + ": " + s.error_message();
    if (code == static_cast<int>(StatusCode::kCancelled)) {
      code = static_cast<int>(StatusCode::kUnavailable);
      msg += " (cancelled by the server)";
    }
    return Status(static_cast<StatusCode>(code), std::move(msg));
  }

  // Runs one unary RPC with the call's deadline. `rpc(ctx)` issues it on the stub. The Status is
  // returned as is (no file:line trail) so that its message starts with "store ADDR: ".
  template <typename Rpc>
  Status Call(const char* name, Deadline deadline, Rpc&& rpc) const {
    if (deadline.Expired()) {
      // gRPC may still send a call whose deadline is "now"; the Store contract says it must not.
      return DeadlineExceededError("store " + address + ": " + name +
                                   ": deadline passed before the call");
    }
    try {
      grpc::ClientContext ctx;
      ctx.set_deadline(GrpcDeadline(deadline));
      if (!credential.empty()) ctx.AddMetadata("x-archi-member", credential);
      return FromGrpc(rpc(&ctx), name);
    } catch (const std::exception& e) {  // protobuf / allocation failures stop at this boundary
      return InternalError("store " + address + ": " + name + ": " + e.what());
    }
  }
};

StoreClient::StoreClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StoreClient::~StoreClient() = default;

Result<std::shared_ptr<StoreClient>> StoreClient::Connect(const std::string& address,
                                                          Deadline connect_deadline,
                                                          std::string credential) {
  if (address.empty()) return InvalidArgumentError("store address is empty");
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  impl->credential = std::move(credential);
  try {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    // Reconnect quickly after the store restarts (gRPC's defaults back off up to 120 s, during
    // which every fail-fast call would return UNAVAILABLE): attempts 100 ms apart, x1.6, at most
    // 500 ms (a refused connect costs nothing; 2 s added up to 2 s after a longer outage).
    // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is the least time one attempt gets before it is
    // abandoned (its deadline is max(it, the current backoff)); 100 ms keeps a stuck attempt
    // from blocking the next one (5 s: 6.9 s to recover instead of 1.9 s in
    // archi-store-reconnect).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    // Store calls are not idempotent (Add) and their failures are reported, not retried.
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    impl->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    impl->stub = pb::Store::NewStub(impl->channel);
  } catch (const std::exception& e) {
    return InternalError("store at " + address + ": " + e.what());
  }
  if (!impl->channel->WaitForConnected(GrpcDeadline(connect_deadline))) {
    return UnavailableError("store at " + address + " unreachable: not connected before the " +
                            "deadline (channel " + StateName(impl->channel->GetState(false)) + ")");
  }
  impl->poller = std::jthread(
      [channel = impl->channel](std::stop_token stop) { PollConnection(stop, channel); });
  return std::shared_ptr<StoreClient>(new StoreClient(std::move(impl)));
}

const std::string& StoreClient::address() const { return impl_->address; }

Status StoreClient::Set(const std::string& key, const std::string& value, Deadline deadline) {
  pb::SetRequest req;
  req.set_key(key);
  req.set_value(value);
  pb::SetResponse resp;
  return impl_->Call("Set", deadline,
                     [&](grpc::ClientContext* ctx) { return impl_->stub->Set(ctx, req, &resp); });
}

Result<std::string> StoreClient::Get(const std::string& key, Deadline deadline) {
  pb::GetRequest req;
  req.set_key(key);
  pb::GetResponse resp;
  if (Status st =
          impl_->Call("Get", deadline,
                      [&](grpc::ClientContext* ctx) { return impl_->stub->Get(ctx, req, &resp); });
      !st.ok()) {
    return st;
  }
  return std::move(*resp.mutable_value());
}

Result<int64_t> StoreClient::Add(const std::string& key, int64_t delta, Deadline deadline) {
  pb::AddRequest req;
  req.set_key(key);
  req.set_delta(delta);
  pb::AddResponse resp;
  if (Status st =
          impl_->Call("Add", deadline,
                      [&](grpc::ClientContext* ctx) { return impl_->stub->Add(ctx, req, &resp); });
      !st.ok()) {
    return st;
  }
  return static_cast<int64_t>(resp.value());
}

Result<std::string> StoreClient::CompareSet(const std::string& key, const std::string& expected,
                                            const std::string& desired, Deadline deadline) {
  pb::CompareSetRequest req;
  req.set_key(key);
  req.set_expected(expected);
  req.set_desired(desired);
  pb::CompareSetResponse resp;
  if (Status st = impl_->Call(
          "CompareSet", deadline,
          [&](grpc::ClientContext* ctx) { return impl_->stub->CompareSet(ctx, req, &resp); });
      !st.ok()) {
    return st;
  }
  return std::move(*resp.mutable_value());
}

Result<bool> StoreClient::Delete(const std::string& key, Deadline deadline) {
  pb::DeleteRequest req;
  req.set_key(key);
  pb::DeleteResponse resp;
  if (Status st = impl_->Call(
          "Delete", deadline,
          [&](grpc::ClientContext* ctx) { return impl_->stub->Delete(ctx, req, &resp); });
      !st.ok()) {
    return st;
  }
  return resp.existed();
}

Status StoreClient::Wait(const std::vector<std::string>& keys, Deadline deadline) {
  pb::WaitRequest req;
  for (const auto& k : keys) req.add_keys(k);
  // The server ends the wait itself at timeout_ms (with a message naming the missing keys); the RPC
  // deadline is the same instant and covers a server that stops answering.
  const auto left =
      deadline.infinite()
          ? std::chrono::duration_cast<Millis>(kMaxCallDuration)
          : std::min(deadline.RemainingMs(), std::chrono::duration_cast<Millis>(kMaxCallDuration));
  req.set_timeout_ms(std::max<int64_t>(left.count(), 1));
  pb::WaitResponse resp;
  return impl_->Call("Wait", deadline,
                     [&](grpc::ClientContext* ctx) { return impl_->stub->Wait(ctx, req, &resp); });
}

Result<KeyValues> StoreClient::List(const std::string& prefix, Deadline deadline) {
  pb::ListRequest req;
  req.set_prefix(prefix);
  pb::ListResponse resp;
  if (Status st =
          impl_->Call("List", deadline,
                      [&](grpc::ClientContext* ctx) { return impl_->stub->List(ctx, req, &resp); });
      !st.ok()) {
    return st;
  }
  KeyValues out;
  out.reserve(resp.items_size());
  for (auto& kv : *resp.mutable_items()) {
    out.emplace_back(std::move(*kv.mutable_key()), std::move(*kv.mutable_value()));
  }
  return out;
}

Result<int64_t> StoreClient::DeletePrefix(const std::string& prefix, Deadline deadline) {
  pb::DeletePrefixRequest req;
  req.set_prefix(prefix);
  pb::DeletePrefixResponse resp;
  if (Status st = impl_->Call(
          "DeletePrefix", deadline,
          [&](grpc::ClientContext* ctx) { return impl_->stub->DeletePrefix(ctx, req, &resp); });
      !st.ok()) {
    return st;
  }
  return static_cast<int64_t>(resp.deleted());
}

}  // namespace archi
