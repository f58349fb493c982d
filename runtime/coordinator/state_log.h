// StateLog: where the coordinator keeps its durable state (runtime/coordinator/state_journal.h):
// an ordered log of opaque records plus one snapshot that covers a prefix of it. Two backends:
//   WriteAheadLog (wal.h)     files in a local directory (--state-dir);
//   EtcdStateLog (etcd_state_log.h)  keys in etcd, every write fenced by an etcd leadership
//                             (--state-etcd), for a highly-available pair of coordinators.
// The coordinator (coordinator.cc) only sees this interface. Loading happens when a backend is
// opened (it fills a WalContents); the coordinator then appends, syncs and snapshots.
//
// Thread safety: every method is thread-safe. Append, BeginSnapshot and Writable never block on
// I/O (they may be called under the caller's lock); Sync, SyncTo and WriteSnapshot do, each
// within the backend's deadline.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace archi::coordinator {

// What an opened log held.
struct WalContents {
  std::optional<std::string> snapshot;  // the snapshot's payload, if there is one
  uint64_t snapshot_lsn = 0;            // the last record the snapshot covers
  std::vector<std::string> records;     // payloads of records snapshot_lsn + 1, ... in order
  uint64_t last_lsn = 0;                // the last valid record (snapshot_lsn when none follow)
  std::string torn;                     // "file at offset N: why" when a torn tail was dropped
};

class StateLog {
 public:
  virtual ~StateLog() = default;

  // Appends one record (no flush, no network); returns its lsn (sequence number, from 1).
  virtual Result<uint64_t> Append(std::string_view payload) = 0;
  // Makes every record appended so far durable (one flush for all of them: group commit).
  virtual Status Sync() = 0;
  // Returns once record `lsn` is durable (a Sync unless another call already covered it).
  virtual Status SyncTo(uint64_t lsn) = 0;

  virtual uint64_t last_lsn() const = 0;
  virtual uint64_t records_since_snapshot() const = 0;  // appended after the last BeginSnapshot

  // Step 1 (cheap): the snapshot to be written will cover every record up to the returned lsn.
  // kFailedPrecondition while a snapshot is in progress.
  virtual Result<uint64_t> BeginSnapshot() = 0;
  // Step 2 (slow): writes `payload` as the snapshot covering `lsn` (from BeginSnapshot) and drops
  // the records it covers. On error the old snapshot and records stay valid.
  virtual Status WriteSnapshot(uint64_t lsn, std::string_view payload) = 0;

  // OK while this process may write the state; kFailedPrecondition once it lost that right for
  // good (etcd: its leadership ended; a WAL: never). Cheap, no I/O.
  virtual Status Writable() const { return Status::Ok(); }
  // Where the state lives, for messages ("state dir /x", "etcd 127.0.0.1:2379 /archi/p").
  virtual std::string Describe() const = 0;
};

}  // namespace archi::coordinator
