// The coordinator's durable state in etcd, for a highly-available pair (or more) of
// archi-coordinator processes sharing one etcd (`archi-coordinator --state-etcd`).
//
// EtcdLeadership: leader election. Each candidate holds an etcd lease (TTL seconds, kept alive
// every TTL/3) and tries a Txn "if PREFIX/leader does not exist (create_revision == 0), put it
// with my lease". The winner is the leader until its lease ends: it stops being renewed (the
// process died, hung or lost etcd) or is revoked (Resign). Valid() is the leader's own view,
// with no I/O: true while the last renewal was sent less than 0.8 x TTL ago and nothing showed
// the leadership lost. A paused process (SIGSTOP) therefore finds itself invalid the moment it
// wakes up, before it could act on stale state.
//
// EtcdStateLog (a StateLog, state_log.h): the records and the snapshot under PREFIX:
//   PREFIX/leader                 the leader's identity ("grpc=HOST:PORT pid=N"), on its lease
//   PREFIX/log/<20-digit lsn>     one record
//   PREFIX/snapshot               "<lsn> <parts> <bytes> <crc32>" of the current snapshot
//   PREFIX/snap/<lsn>/<6 digits>  its payload in parts of <= 1 MB (etcd refuses requests over
//                                 1.5 MiB by default)
// Fencing: every write is a Txn guarded by "PREFIX/leader's create_revision is still the one
// this leader created"; a guard that fails marks the leadership lost (kFailedPrecondition) and
// writes nothing. A new leader creates the key afresh (a larger revision), so an old leader that
// wakes up or reconnects can never write again.
// Append only buffers (no I/O under the coordinator's lock); Sync writes the buffered records
// in as few Txns as etcd allows (<= 100 operations, <= 1 MB each). What a kill -9 can lose:
// records appended since the last Sync (the coordinator syncs every 20 ms, and before a
// Register answers: a handed-out epoch is always in etcd). After a failed Sync (etcd
// unreachable) the next tries wait 1 s, so the caller keeps serving from memory; records stay
// buffered and are written when etcd is back.
//
// Thread safety: every method of both classes is thread-safe. Campaign blocks (bounded by its
// deadline and `stop`); Sync, SyncTo, WriteSnapshot block for at most a few etcd calls, each
// with a deadline of call_timeout_ms.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "runtime/coordinator/etcd_client.h"
#include "runtime/coordinator/state_log.h"
#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::coordinator {

struct EtcdLeadershipOptions {
  std::string prefix;    // e.g. "/archi/<pipeline>" (no trailing slash)
  std::string identity;  // the leader key's value: who leads (shown to standbys and clients)
  int64_t ttl_s = 5;     // lease TTL (etcd raises values below its minimum, ~2 s)
  int64_t call_timeout_ms = 2000;
  int64_t retry_ms = 200;  // a standby's interval between tries
};

class EtcdLeadership {
 public:
  // Runs for the leadership until it is won (returned), `stop` becomes true (kCancelled) or the
  // deadline passes (kDeadlineExceeded). `on_standby(leader)` is called whenever another
  // leader's identity is seen (or changes), from the calling thread. etcd unreachable: retried.
  static Result<std::unique_ptr<EtcdLeadership>> Campaign(
      std::shared_ptr<EtcdClient> client, EtcdLeadershipOptions options,
      const std::atomic<bool>& stop, const std::function<void(const std::string&)>& on_standby,
      Deadline deadline);
  ~EtcdLeadership();  // stops the keep-alive thread; does not resign
  EtcdLeadership(const EtcdLeadership&) = delete;
  EtcdLeadership& operator=(const EtcdLeadership&) = delete;

  // OK while this process leads; kFailedPrecondition (why) once the leadership is (or may be)
  // lost. No I/O.
  Status Valid() const;
  // Records that the leadership is lost (a fenced write failed its guard).
  void MarkLost(const std::string& why);
  // Blocks up to `timeout` for the loss; true when lost.
  bool WaitLost(Millis timeout) const;
  // Revokes the lease (the leader key goes with it: a standby takes over at once) and marks the
  // leadership lost. Bounded by call_timeout_ms.
  void Resign();

  const std::string& leader_key() const;
  int64_t create_revision() const;  // of the leader key this process created
  int64_t lease_id() const;
  int64_t ttl_s() const;
  const EtcdLeadershipOptions& options() const;
  EtcdClient& client();

  // Reads who leads now (the leader key's value; "" when nobody). For a standby's messages.
  static Result<std::string> CurrentLeader(EtcdClient& client, const std::string& prefix,
                                           Deadline deadline);

  struct Impl;

 private:
  explicit EtcdLeadership(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct EtcdStateLogOptions {
  int64_t call_timeout_ms = 2000;
  int64_t retry_after_error_ms = 1000;
  size_t max_txn_ops = 100;          // etcd's --max-txn-ops defaults to 128
  size_t max_txn_bytes = 1'000'000;  // etcd's --max-request-bytes defaults to 1.5 MiB
};

class EtcdStateLog final : public StateLog {
 public:
  // Loads the snapshot and the records after it (into `contents`) as the holder of
  // `leadership`, which must be valid. kDataLoss for a gap or a corrupt snapshot, kUnavailable
  // when etcd cannot be read.
  static Result<std::unique_ptr<EtcdStateLog>> Open(std::shared_ptr<EtcdClient> client,
                                                    std::shared_ptr<EtcdLeadership> leadership,
                                                    WalContents* contents,
                                                    EtcdStateLogOptions options = {});
  ~EtcdStateLog() override;

  Result<uint64_t> Append(std::string_view payload) override;
  Status Sync() override;
  Status SyncTo(uint64_t lsn) override;
  uint64_t last_lsn() const override;
  uint64_t records_since_snapshot() const override;
  Result<uint64_t> BeginSnapshot() override;
  Status WriteSnapshot(uint64_t lsn, std::string_view payload) override;
  Status Writable() const override;
  std::string Describe() const override;

  uint64_t synced_lsn() const;
  // Txns written so far (records, snapshot parts and commits), for benchmarks.
  uint64_t txns() const;

  struct Impl;

 private:
  explicit EtcdStateLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::coordinator
