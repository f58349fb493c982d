#include "runtime/coordinator/wal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

namespace archi::coordinator {

namespace fs = std::filesystem;

namespace {

constexpr char kSnapshotMagic[8] = {'A', 'R', 'C', 'H', 'I', 'S', 'N', 'P'};
constexpr size_t kRecordHeader = 16;    // u32 length, u32 crc, u64 lsn
constexpr size_t kSnapshotHeader = 24;  // magic, u64 lsn, u32 length, u32 crc
constexpr char kSnapshotName[] = "snapshot";
constexpr char kSnapshotTmpName[] = "snapshot.tmp";

Status IoError(const std::string& what, const std::string& path) {
  return UnavailableError(what + " " + path + ": " + std::strerror(errno));
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

uint32_t Crc(std::string_view a, std::string_view b = {}) {
  uLong c = crc32(0L, Z_NULL, 0);
  // (zlib returns 0 for a null buffer, whatever the running value: skip empty parts.)
  if (!a.empty()) c = crc32_z(c, reinterpret_cast<const Bytef*>(a.data()), a.size());
  if (!b.empty()) c = crc32_z(c, reinterpret_cast<const Bytef*>(b.data()), b.size());
  return static_cast<uint32_t>(c);
}

std::string SegmentName(uint64_t first_lsn) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "wal-%020llu.log", static_cast<unsigned long long>(first_lsn));
  return buf;
}

// "wal-<digits>.log" -> first lsn.
std::optional<uint64_t> ParseSegmentName(const std::string& name) {
  if (name.size() != 28 || !name.starts_with("wal-") || !name.ends_with(".log")) {
    return std::nullopt;
  }
  uint64_t v = 0;
  for (size_t i = 4; i < 24; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return v;
}

Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError("cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return IoError("cannot read", path);
  return ss.str();
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("cannot write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return IoError("cannot fsync directory", dir);
  return Status::Ok();
}

// An open file descriptor, shared so a Sync outside the lock survives a rotation.
struct File {
  int fd = -1;
  std::string path;
  ~File() {
    if (fd >= 0) ::close(fd);
  }
};

Result<std::shared_ptr<File>> OpenAppend(const std::string& path) {
  auto f = std::make_shared<File>();
  f->path = path;
  f->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (f->fd < 0) return IoError("cannot open", path);
  return f;
}

}  // namespace

struct WriteAheadLog::Impl {
  std::string dir;
  WalOptions options;
  int lock_fd = -1;

  mutable std::mutex mu;
  std::shared_ptr<File> current;                // the segment appends go to
  std::vector<std::shared_ptr<File>> retired;    // earlier segments not yet known durable
  uint64_t last_lsn = 0;
  uint64_t synced_lsn = 0;
  uint64_t since_snapshot = 0;
  bool snapshot_in_progress = false;

  std::mutex sync_mu;  // one fdatasync at a time (later callers find their lsn covered)

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);
  }

  std::string Path(const std::string& name) const { return (fs::path(dir) / name).string(); }

  Status LoadSnapshot(WalContents* c) {
    const std::string path = Path(kSnapshotName);
    std::error_code ec;
    if (!fs::exists(path, ec)) return Status::Ok();
    ARCHI_ASSIGN_OR_RETURN(std::string data, ReadWholeFile(path));
    if (data.size() < kSnapshotHeader ||
        std::memcmp(data.data(), kSnapshotMagic, sizeof(kSnapshotMagic)) != 0) {
      return Status(StatusCode::kDataLoss, "WAL: " + path + " at offset 0: not a snapshot");
    }
    const uint64_t lsn = GetU64(data.data() + 8);
    const uint32_t len = GetU32(data.data() + 16);
    const uint32_t crc = GetU32(data.data() + 20);
    if (data.size() != kSnapshotHeader + len) {
      return Status(StatusCode::kDataLoss,
                    "WAL: " + path + " at offset " + std::to_string(kSnapshotHeader) + ": " +
                        std::to_string(data.size() - kSnapshotHeader) + " payload bytes, " +
                        std::to_string(len) + " expected");
    }
    std::string_view payload(data.data() + kSnapshotHeader, len);
    if (Crc(payload) != crc) {
      return Status(StatusCode::kDataLoss, "WAL: " + path + " at offset " +
                                               std::to_string(kSnapshotHeader) +
                                               ": checksum mismatch");
    }
    c->snapshot = std::string(payload);
    c->snapshot_lsn = lsn;
    c->last_lsn = lsn;
    return Status::Ok();
  }

  // Reads one segment; `last` allows a torn tail (cut off the file here).
  Status LoadSegment(const std::string& path, bool last, WalContents* c) {
    ARCHI_ASSIGN_OR_RETURN(std::string data, ReadWholeFile(path));
    size_t off = 0;
    auto corrupt = [&](const std::string& why) {
      return Status(StatusCode::kDataLoss,
                    "WAL: corrupt record in " + path + " at offset " + std::to_string(off) + ": " +
                        why + " (the log is not replayed past a damaged record; restore the "
                              "directory or remove it to start without state)");
    };
    auto torn = [&](const std::string& why) -> Status {
      if (!last) return corrupt(why + ", and later segments follow");
      c->torn = path + " at offset " + std::to_string(off) + ": " + why;
      if (::truncate(path.c_str(), static_cast<off_t>(off)) != 0) {
        return IoError("cannot cut the torn tail of", path);
      }
      return Status::Ok();
    };
    auto zeros_from = [&](size_t from) {
      return std::all_of(data.begin() + static_cast<std::ptrdiff_t>(from), data.end(),
                         [](char ch) { return ch == 0; });
    };
    while (off < data.size()) {
      const size_t left = data.size() - off;
      if (left < kRecordHeader) return torn("the file ends inside a record header");
      const uint32_t len = GetU32(data.data() + off);
      const uint32_t crc = GetU32(data.data() + off + 4);
      const uint64_t lsn = GetU64(data.data() + off + 8);
      if (len > options.max_record_bytes) {
        if (zeros_from(off)) return torn("zero bytes to the end");
        return corrupt("length " + std::to_string(len) + " over the limit");
      }
      if (left < kRecordHeader + len) return torn("the file ends inside a record");
      std::string_view lsn_bytes(data.data() + off + 8, 8);
      std::string_view payload(data.data() + off + kRecordHeader, len);
      const size_t end = off + kRecordHeader + len;
      if (Crc(lsn_bytes, payload) != crc) {
        if (end == data.size() || zeros_from(off)) return torn("checksum mismatch");
        return corrupt("checksum mismatch");
      }
      if (lsn <= c->snapshot_lsn) {  // covered by the snapshot (crash before segment deletion)
        off = end;
        continue;
      }
      if (lsn != c->last_lsn + 1) {
        return corrupt("sequence number " + std::to_string(lsn) + " where " +
                       std::to_string(c->last_lsn + 1) + " was expected");
      }
      c->records.emplace_back(payload);
      c->last_lsn = lsn;
      off = end;
    }
    return Status::Ok();
  }
};

WriteAheadLog::WriteAheadLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WriteAheadLog::~WriteAheadLog() = default;

Result<std::unique_ptr<WriteAheadLog>> WriteAheadLog::Open(const std::string& dir,
                                                           WalContents* contents,
                                                           WalOptions options) {
  if (dir.empty()) return InvalidArgumentError("WAL: empty directory");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("WAL: cannot create " + dir + ": " + ec.message());
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->options = options;
  const std::string lock_path = impl->Path("LOCK");
  impl->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (impl->lock_fd < 0) return IoError("WAL: cannot open", lock_path);
  if (::flock(impl->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return FailedPreconditionError("WAL: state directory " + dir +
                                   " is in use by another process (" + lock_path + " is locked)");
  }
  *contents = WalContents{};
  ARCHI_RETURN_IF_ERROR(impl->LoadSnapshot(contents));
  std::vector<std::pair<uint64_t, std::string>> segments;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (auto first = ParseSegmentName(e.path().filename().string())) {
      segments.emplace_back(*first, e.path().string());
    }
  }
  if (ec) return UnavailableError("WAL: cannot list " + dir + ": " + ec.message());
  std::sort(segments.begin(), segments.end());
  for (size_t i = 0; i < segments.size(); ++i) {
    ARCHI_RETURN_IF_ERROR(
        impl->LoadSegment(segments[i].second, i + 1 == segments.size(), contents));
  }
  impl->last_lsn = contents->last_lsn;
  impl->synced_lsn = contents->last_lsn;
  impl->since_snapshot = contents->records.size();
  // Appends go to a new segment; the loaded ones stay until the next snapshot covers them.
  ARCHI_ASSIGN_OR_RETURN(impl->current,
                         OpenAppend(impl->Path(SegmentName(impl->last_lsn + 1))));
  ARCHI_RETURN_IF_ERROR(FsyncDir(dir));
  return std::unique_ptr<WriteAheadLog>(new WriteAheadLog(std::move(impl)));
}

Result<uint64_t> WriteAheadLog::Append(std::string_view payload) {
  if (payload.size() > impl_->options.max_record_bytes) {
    return InvalidArgumentError("WAL: record of " + std::to_string(payload.size()) +
                                " bytes over the limit");
  }
  std::lock_guard lock(impl_->mu);
  const uint64_t lsn = impl_->last_lsn + 1;
  std::string frame;
  frame.reserve(kRecordHeader + payload.size());
  std::string lsn_bytes;
  PutU64(lsn_bytes, lsn);
  PutU32(frame, static_cast<uint32_t>(payload.size()));
  PutU32(frame, Crc(lsn_bytes, payload));
  frame += lsn_bytes;
  frame.append(payload);
  ARCHI_RETURN_IF_ERROR(WriteAll(impl_->current->fd, frame, impl_->current->path));
  impl_->last_lsn = lsn;
  ++impl_->since_snapshot;
  return lsn;
}

Status WriteAheadLog::Sync() { return SyncTo(last_lsn()); }

Status WriteAheadLog::SyncTo(uint64_t lsn) {
  {
    std::lock_guard lock(impl_->mu);
    if (lsn <= impl_->synced_lsn) return Status::Ok();
  }
  // Group commit: a caller that waited here usually finds its record covered by the flush that
  // held the lock before it.
  std::lock_guard sync_lock(impl_->sync_mu);
  std::vector<std::shared_ptr<File>> files;
  uint64_t target;
  {
    std::lock_guard lock(impl_->mu);
    if (lsn <= impl_->synced_lsn) return Status::Ok();
    target = impl_->last_lsn;
    files = impl_->retired;
    files.push_back(impl_->current);
  }
  // Outside mu: appends go on while the disk flushes.
  for (const auto& f : files) {
    if (::fdatasync(f->fd) != 0) return IoError("WAL: cannot fdatasync", f->path);
  }
  std::lock_guard lock(impl_->mu);
  impl_->synced_lsn = std::max(impl_->synced_lsn, target);
  std::erase_if(impl_->retired, [&](const std::shared_ptr<File>& f) {
    return std::find(files.begin(), files.end(), f) != files.end();
  });
  return Status::Ok();
}

uint64_t WriteAheadLog::last_lsn() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_lsn;
}
uint64_t WriteAheadLog::synced_lsn() const {
  std::lock_guard lock(impl_->mu);
  return impl_->synced_lsn;
}
uint64_t WriteAheadLog::records_since_snapshot() const {
  std::lock_guard lock(impl_->mu);
  return impl_->since_snapshot;
}
const std::string& WriteAheadLog::dir() const { return impl_->dir; }

Result<uint64_t> WriteAheadLog::BeginSnapshot() {
  std::lock_guard lock(impl_->mu);
  if (impl_->snapshot_in_progress) {
    return FailedPreconditionError("WAL: a snapshot is already in progress");
  }
  ARCHI_ASSIGN_OR_RETURN(auto next, OpenAppend(impl_->Path(SegmentName(impl_->last_lsn + 1))));
  impl_->retired.push_back(std::move(impl_->current));
  impl_->current = std::move(next);
  impl_->since_snapshot = 0;
  impl_->snapshot_in_progress = true;
  return impl_->last_lsn;
}

Status WriteAheadLog::WriteSnapshot(uint64_t lsn, std::string_view payload) {
  auto write = [&]() -> Status {
    std::string data(kSnapshotMagic, sizeof(kSnapshotMagic));
    PutU64(data, lsn);
    PutU32(data, static_cast<uint32_t>(payload.size()));
    PutU32(data, Crc(payload));
    data.append(payload);
    const std::string tmp = impl_->Path(kSnapshotTmpName);
    File f;
    f.path = tmp;
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f.fd < 0) return IoError("WAL: cannot open", tmp);
    ARCHI_RETURN_IF_ERROR(WriteAll(f.fd, data, tmp));
    if (::fdatasync(f.fd) != 0) return IoError("WAL: cannot fdatasync", tmp);
    const std::string path = impl_->Path(kSnapshotName);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return IoError("WAL: cannot rename", tmp);
    ARCHI_RETURN_IF_ERROR(FsyncDir(impl_->dir));
    // The snapshot is durable: the segments it covers can go (every one older than the
    // current segment, whose first lsn is > lsn).
    std::string current;
    {
      std::lock_guard lock(impl_->mu);
      current = impl_->current->path;
      impl_->retired.clear();  // covered by the snapshot: no need to flush them any more
    }
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(impl_->dir, ec)) {
      auto first = ParseSegmentName(e.path().filename().string());
      if (first && *first <= lsn && e.path().string() != current) fs::remove(e.path(), ec);
    }
    return Status::Ok();
  };
  Status s = write();
  std::lock_guard lock(impl_->mu);
  impl_->snapshot_in_progress = false;
  return s;
}

}  // namespace archi::coordinator
