// WriteAheadLog: an append-only log of opaque records plus one snapshot, kept in a directory: the
// local backend of StateLog (state_log.h).
// The coordinator's durable state (runtime/coordinator/state_journal.h) is written through it;
// nothing here knows what the records mean.
//
// Files in the directory:
//   LOCK                     flock(2)ed while open: a second process on the same directory is
//                            refused (kFailedPrecondition); the kernel drops it when we die.
//   snapshot                 "ARCHISNP" | u64 lsn | u32 length | u32 crc | payload (little endian)
//   wal-<first lsn>.log      records lsn, lsn+1, ...: u32 length | u32 crc | u64 lsn | payload
// crc: zlib crc32 of the 8 lsn bytes followed by the payload (records), of the payload (snapshot).
// Sequence numbers (lsn) start at 1 and grow by one per record across segments and snapshots.
//
// Durability: Append() write(2)s the record at once, so a killed process (kill -9) loses
// nothing it appended; Sync()/SyncTo() fdatasync(2) it, so a machine crash loses nothing synced.
// Sync is a group commit: one fdatasync covers every record appended before it.
//
// Snapshots in two steps, so a caller's own lock covers only the cheap one: BeginSnapshot()
// (cheap: starts a new segment; the snapshot covers every record appended before it) and
// WriteSnapshot() (slow: writes snapshot.tmp, fdatasync, rename over snapshot, fsync of the
// directory, then deletes the segments the snapshot covers). A crash at any point leaves either
// the old snapshot with every segment, or the new one with records it covers, which loading skips.
//
// Loading (Open): the snapshot, then every record after it, in lsn order. A torn last record (the
// file ends inside it, its checksum fails and nothing follows it, or only zero bytes follow) is
// what a crash in the middle of a write leaves: it is dropped (and cut off the file) and reported
// in WalContents::torn. Anything else that fails to check (a record with data after it, a gap in
// the sequence numbers, a bad snapshot) is kDataLoss naming the file and the offset: the log is
// not silently shortened.
//
// Thread safety: every method is thread-safe. Append and BeginSnapshot never block on disk
// flushes (they may be called under a caller's lock); Sync, SyncTo and WriteSnapshot do.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/coordinator/state_log.h"
#include "runtime/core/status.h"

namespace archi::coordinator {

struct WalOptions {
  size_t max_record_bytes = size_t{64} << 20;  // larger is refused (Append) or corrupt (Open)
};

class WriteAheadLog final : public StateLog {
 public:
  // Opens `dir` (created if missing), locks it, loads what is there into `contents` and starts a
  // new segment for appends. kFailedPrecondition when another process holds the directory,
  // kDataLoss (file and offset) for a corrupt record, kUnavailable for I/O errors.
  static Result<std::unique_ptr<WriteAheadLog>> Open(const std::string& dir, WalContents* contents,
                                                     WalOptions options = {});
  ~WriteAheadLog() override;
  WriteAheadLog(const WriteAheadLog&) = delete;
  WriteAheadLog& operator=(const WriteAheadLog&) = delete;

  // Appends one record (write(2), no flush); returns its lsn.
  Result<uint64_t> Append(std::string_view payload) override;
  // Makes every record appended so far durable (one fdatasync for all of them).
  Status Sync() override;
  // Returns once record `lsn` is durable (a Sync unless another call already covered it).
  Status SyncTo(uint64_t lsn) override;

  uint64_t last_lsn() const override;
  uint64_t synced_lsn() const;
  uint64_t records_since_snapshot() const override;  // since the last BeginSnapshot (or Open)
  const std::string& dir() const;
  std::string Describe() const override { return "state dir " + dir(); }

  // Step 1 (cheap): the snapshot to be written will cover every record up to the returned lsn;
  // later appends go to a new segment. kFailedPrecondition while a snapshot is in progress.
  Result<uint64_t> BeginSnapshot() override;
  // Step 2 (slow): writes `payload` as the snapshot covering `lsn` (from BeginSnapshot) and
  // deletes the segments it covers. On error the old files stay valid (nothing is lost).
  Status WriteSnapshot(uint64_t lsn, std::string_view payload) override;

  struct Impl;

 private:
  explicit WriteAheadLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::coordinator
