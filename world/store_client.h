// StoreClient: the Store interface (runtime/core/store.h) over gRPC, talking to a StoreServer
// (embedded or the `archi-store` binary).
//
// Every call carries a gRPC deadline taken from its Deadline argument; Deadline::Infinite() is
// capped at kMaxCallDuration so that no RPC can hang forever; a call whose deadline has already
// passed returns kDeadlineExceeded without being sent. gRPC status codes map 1:1 onto
// archi::StatusCode (same numbers) and messages are prefixed with "store ADDR: ", with one
// exception: the client never cancels its own calls, so a CANCELLED can only come from a server
// that is going away, and is reported as kUnavailable like every other transport failure.
// Calls fail fast: when the server is unreachable they return kUnavailable at once (they do not
// wait for it to come back; retrying is the caller's decision), and a Wait in flight when the
// server dies ends with kUnavailable.
//
// Ownership: one gRPC channel per client, shared by all its calls, and one thread that waits on
// the channel's state so that its reconnections are polled (without it, a fail-fast client
// reconnected only at gRPC's 5 s backup-poller ticks); the client may outlive the server.
// Thread safety: every method is thread-safe and may be called concurrently.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "runtime/core/store.h"

namespace archi {

class StoreClient final : public Store {
 public:
  // The longest any single call may last (the cap applied to Deadline::Infinite()).
  static constexpr std::chrono::hours kMaxCallDuration{1};

  // Creates the channel and waits until it is connected or `connect_deadline` passes; then
  // kUnavailable "store at ADDR unreachable: ...". kInvalidArgument for an empty address.
  // `credential` (non-empty) is sent as the "x-archi-member" metadata of every call, for a
  // server with an authorizer (StoreServer::SetAuthorizer; the coordinator's member credentials).
  static Result<std::shared_ptr<StoreClient>> Connect(const std::string& address,
                                                      Deadline connect_deadline,
                                                      std::string credential = "");

  ~StoreClient() override;
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  const std::string& address() const;

  Status Set(const std::string& key, const std::string& value, Deadline deadline) override;
  Result<std::string> Get(const std::string& key, Deadline deadline) override;
  Result<int64_t> Add(const std::string& key, int64_t delta, Deadline deadline) override;
  Result<std::string> CompareSet(const std::string& key, const std::string& expected,
                                 const std::string& desired, Deadline deadline) override;
  Result<bool> Delete(const std::string& key, Deadline deadline) override;
  Status Wait(const std::vector<std::string>& keys, Deadline deadline) override;
  Result<KeyValues> List(const std::string& prefix, Deadline deadline) override;
  Result<int64_t> DeletePrefix(const std::string& prefix, Deadline deadline) override;

 private:
  struct Impl;
  explicit StoreClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi
