// EtcdClient: a minimal client of etcd's v3 gRPC API (proto/etcd_rpc.proto: KV Range/Put/
// DeleteRange/Txn, Lease Grant/Revoke/KeepAlive), for the coordinator's etcd state store
// (etcd_state_log.h). A backend header: it exposes the etcd protobuf messages.
//
// Endpoints: "HOST:PORT[,HOST:PORT...]" (plaintext). A call goes to the endpoint that answered
// last; when it is unavailable the call moves on to the next endpoint while its deadline lasts.
// Every call takes a deadline; failures are Status: kUnavailable (etcd unreachable, retry),
// kDeadlineExceeded, kInvalidArgument (refused request), kNotFound (a lease that is gone).
//
// Thread safety: every method is thread-safe; every call blocks at most until its deadline.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proto/etcd_rpc.pb.h"
#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::coordinator {

class EtcdClient {
 public:
  // Parses the endpoints and creates the channels (connects lazily). kInvalidArgument for an
  // empty or malformed list.
  static Result<std::unique_ptr<EtcdClient>> Create(const std::string& endpoints);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  Result<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& req,
                                            Deadline deadline);
  Result<etcdserverpb::PutResponse> Put(const etcdserverpb::PutRequest& req, Deadline deadline);
  Result<etcdserverpb::DeleteRangeResponse> DeleteRange(const etcdserverpb::DeleteRangeRequest& req,
                                                        Deadline deadline);
  Result<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req, Deadline deadline);
  // A lease of `ttl_s` seconds (etcd may raise it to its minimum); returns (id, ttl).
  Result<std::pair<int64_t, int64_t>> LeaseGrant(int64_t ttl_s, Deadline deadline);
  Status LeaseRevoke(int64_t id, Deadline deadline);
  // One keep-alive round trip (a short LeaseKeepAlive stream); returns the lease's new TTL in
  // seconds. kNotFound when the lease expired or was revoked.
  Result<int64_t> LeaseKeepAlive(int64_t id, Deadline deadline);

  const std::string& endpoints() const { return endpoints_; }

  // The end of the key range holding every key that starts with `prefix` (etcd's prefix rule:
  // the prefix with its last byte incremented).
  static std::string PrefixEnd(const std::string& prefix);

  struct Impl;

 private:
  explicit EtcdClient(std::unique_ptr<Impl> impl, std::string endpoints);
  std::unique_ptr<Impl> impl_;
  std::string endpoints_;
};

}  // namespace archi::coordinator
