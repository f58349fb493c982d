#include "collectives/cpu/shm_communicator.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "collectives/cpu/gloo_communicator.h"
#include "runtime/core/logging.h"
#include "runtime/core/params.h"

namespace archi {
namespace {

using std::chrono::microseconds;

// Built-in default of the fast path (ARCHI_SHM and CommOptions::shm override it).
constexpr bool kShmDefaultOn = true;

constexpr uint64_t kSegMagic = 0x31484d5349484352ull;  // "RCHISMH1"
constexpr uint32_t kSegVersion = 3;  // 3: per-record ready stamps, 64-byte records, no head word
constexpr uint64_t kRingBytes = 2ull << 20;    // per direction
constexpr uint64_t kEagerMax = 64ull << 10;    // inline payloads up to this size
constexpr uint64_t kChunkBytes = 256ull << 10;  // streamed chunks (no CMA)
constexpr uint32_t kMaxTag = 1u << 20;
constexpr int kMaxRecordsPerStep = 256;
constexpr microseconds kWaitSpin{200};  // Work::Wait drives progress this long before sleeping
constexpr microseconds kBgSpin{20};     // the progress thread spins this long after work
constexpr int kSpinBeforeYield = 256;   // idle polls (~10 us) before a Wait starts to yield
constexpr uint64_t kRecAlign = 64;      // records start on a cache line (a 16-byte message: one line)
constexpr uint64_t kCmaProbeMagic = 0x45424f5250414d43ull;  // "CMAPROBE"
alignas(8) const volatile uint64_t g_cma_probe = kCmaProbeMagic;

enum RecKind : uint32_t { kEager = 1, kRts = 2, kCts = 3, kChunk = 4, kAck = 5, kPad = 6 };
constexpr uint8_t kAckOk = 0;
constexpr uint8_t kAckMismatch = 1;

// One record in a ring: this header, then `len` payload bytes, padded to kRecAlign bytes.
// `stamp` is the record's ready flag: the producer writes everything else, then stores
// stamp = (its position in the producer's byte stream) + 1 with release; the consumer polls the
// stamp at its own position (no separate head word: a small message is one cache line moving).
// A stale value (an older lap, payload bytes of an older record, the zero the producer writes
// just past every record it publishes) never equals the position the consumer expects.
struct Rec {
  uint64_t stamp = 0;
  uint32_t kind = 0;
  uint32_t len = 0;
  uint8_t dtype = 0;
  uint8_t status = 0;
  uint8_t recv_dtype = 0;
  uint8_t pad = 0;
  uint32_t tag = 0;
  uint64_t seq = 0;
  uint64_t nbytes = 0;  // message bytes (EAGER/RTS/ACK)
  uint64_t aux = 0;     // RTS: sender address; CHUNK: offset; ACK: receiver's bytes
};
static_assert(sizeof(Rec) == 48);
constexpr size_t kRecBody = sizeof(Rec) - sizeof(uint64_t);  // the bytes after the stamp

constexpr uint64_t AlignRec(uint64_t n) { return (n + kRecAlign - 1) & ~(kRecAlign - 1); }

inline std::atomic_ref<uint64_t> StampAt(char* ring, uint64_t pos) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(ring + pos));
}

// Per side of a segment: what the other side needs to wake this one. One cache line, written
// rarely (`sleeping` changes only when the progress thread enters or leaves its long sleep), so
// the producer's check on every record it writes reads a line that stays in its cache.
struct alignas(64) SideCtl {
  std::atomic<uint32_t> doorbell{0};  // futex word
  // The progress thread is (about to be) in its long FUTEX_WAIT and nobody on this side polls:
  // a producer must ring the doorbell. Clear while a Work::Wait polls or its lease runs.
  std::atomic<uint32_t> sleeping{0};
  std::atomic<uint32_t> closed{0};    // this side broke or was destroyed (like a closed socket)
  int32_t pid = 0;
};

struct alignas(64) RingCtl {
  alignas(64) std::atomic<uint64_t> tail{0};  // bytes consumed (consumer); read by the producer
                                              // only when short of space
};

struct SegHeader {
  uint64_t magic = 0;
  uint32_t version = 0;
  uint32_t pad = 0;
  uint64_t ring_bytes = 0;
  SideCtl side[2];
  RingCtl ring[2];  // ring[i] is written by side i
};
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);

constexpr uint64_t kDataOffset = AlignRec(sizeof(SegHeader));
constexpr uint64_t kSegBytes = kDataOffset + 2 * kRingBytes;

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, microseconds timeout) {
  timespec ts{};
  ts.tv_sec = timeout.count() / 1'000'000;
  ts.tv_nsec = (timeout.count() % 1'000'000) * 1000;
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr,
            nullptr, 0);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// The lease: while a Work::Wait polls, or one completed within the progress thread's last
// kLeaseSleep, the thread sleeps with SideCtl::sleeping clear and this timeout (the peer writes
// records without ringing; a record nobody polls for waits at most ~2 x kLeaseSleep). When a
// sleep passes without a Wait, the thread sets `sleeping` and sleeps until the doorbell rings.
constexpr microseconds kLeaseSleep{200};

// Rings the doorbell of the peer's `side` if its progress thread is in its long sleep. Reads one
// word of a line the peer writes only when its thread goes to or leaves that sleep.
void Notify(SideCtl* side) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (side->sleeping.load(std::memory_order_seq_cst) != 0) {
    side->doorbell.fetch_add(1, std::memory_order_seq_cst);
    FutexWakeAll(&side->doorbell);
  }
}

// Always rings (Break: the peer must see `closed`; stop).
void Kick(SideCtl* side) {
  side->doorbell.fetch_add(1, std::memory_order_seq_cst);
  FutexWakeAll(&side->doorbell);
}

std::string ReadFirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string ReadLinkOr(const char* path) {
  char buf[256];
  const ssize_t n = ::readlink(path, buf, sizeof(buf) - 1);
  if (n <= 0) return "?";
  return std::string(buf, static_cast<size_t>(n));
}

// Same kernel boot, same pid namespace (pidfds, process_vm_readv), same mount namespace (/dev/shm).
std::string HostIdentity() {
  static const std::string id = [] {
    std::string boot = ReadFirstLine("/proc/sys/kernel/random/boot_id");
    if (boot.empty()) boot = "noboot";
    std::string s = boot + "|" + ReadLinkOr("/proc/self/ns/pid") + "|" +
                    ReadLinkOr("/proc/self/ns/mnt");
    for (char& c : s) {
      if (c == ' ') c = '_';
    }
    return s;
  }();
  return id;
}

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string RandomHex() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                     static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string ErrnoText(int e) { return std::strerror(e); }

class ShmTransport;

// One fast-path op and its Work, in one allocation (the op registry links it intrusively, so
// issuing an op allocates nothing else). Wait drives the channel's progress while it spins.
// Completion is lock-free: the completer publishes the status with a release store and takes the
// mutex (to notify) only when a waiter announced that it sleeps on the condition variable.
class ShmWork final : public Work {
 public:
  ShmWork(std::weak_ptr<ShmTransport> t, int peer_rank) : peer(peer_rank), transport_(std::move(t)) {}
  bool IsCompleted() const override { return state_.load(std::memory_order_acquire) == kDone; }
  Status Wait(Deadline deadline) override;
  // First call wins; later calls return false and change nothing.
  bool Complete(Status status) {
    int expected = kPending;
    if (!state_.compare_exchange_strong(expected, kCompleting, std::memory_order_acq_rel)) {
      return false;
    }
    status_ = std::move(status);
    state_.store(kDone, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) != 0) {
      { std::lock_guard lock(mu_); }
      cv_.notify_all();
    }
    return true;
  }

  // The op (set before it is published to the transport; afterwards guarded by the transport's
  // mu_ or owned by the one progress runner that took it off a queue).
  bool is_send = false;
  const int peer;
  uint32_t tag = 0;
  uint8_t dtype = 0;
  bool deadline_hit = false;
  bool linked = false;  // in the transport's pending list
  void* data = nullptr;
  uint64_t nbytes = 0;
  uint64_t seq = 0;
  uint64_t offset = 0;  // bytes streamed (send) or pulled/received (recv)
  uint64_t remote_addr = 0;
  Deadline deadline = Deadline::Infinite();
  int64_t timeout_ms = 0;
  ShmWork* prev = nullptr;  // pending list (transport's mu_)
  ShmWork* next = nullptr;
  std::shared_ptr<ShmWork> self;  // the list's reference while linked
  std::string what() const {
    return (is_send ? "send to rank " : "recv from rank ") + std::to_string(peer) + " tag " +
           std::to_string(tag);
  }

 private:
  static constexpr int kPending = 0, kCompleting = 1, kDone = 2;
  std::weak_ptr<ShmTransport> transport_;
  std::atomic<int> state_{kPending};
  std::atomic<int> sleepers_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status status_;  // written once before state_ = kDone
};
using OpPtr = std::shared_ptr<ShmWork>;

// Sends awaiting their CTS or ACK, indexed by sequence number (assigned in order per channel, so
// a deque with a base replaces a map: no allocation per message, O(1) lookup).
class SeqWindow {
 public:
  void Put(uint64_t seq, OpPtr op) {
    ARCHI_CHECK(seq == base_ + ops_.size());
    ops_.push_back(std::move(op));
  }
  // The op with this sequence number, or null.
  const OpPtr* Find(uint64_t seq) const {
    if (seq < base_ || seq - base_ >= ops_.size()) return nullptr;
    const OpPtr& p = ops_[seq - base_];
    return p ? &p : nullptr;
  }
  void Erase(uint64_t seq) {
    if (seq < base_ || seq - base_ >= ops_.size()) return;
    ops_[seq - base_].reset();
    while (!ops_.empty() && !ops_.front()) {
      ops_.pop_front();
      ++base_;
    }
  }
  bool empty() const { return ops_.empty(); }  // the front entry is never null
  void clear() {
    base_ += ops_.size();
    ops_.clear();
  }

 private:
  uint64_t base_ = 0;
  std::deque<OpPtr> ops_;
};

struct Unexpected {
  Rec rec;
  std::vector<char> payload;  // EAGER only
};

struct OutRec {
  Rec rec;
  const void* payload = nullptr;  // EAGER: the sender's tensor (alive until the op completes)
};

struct Channel {
  int peer = -1;
  pid_t peer_pid = 0;
  int pidfd = -1;
  bool cma = false;  // this side may process_vm_readv from the peer
  void* map = nullptr;
  SegHeader* seg = nullptr;
  SideCtl* me = nullptr;
  SideCtl* them = nullptr;
  RingCtl* out = nullptr;
  RingCtl* in = nullptr;
  char* out_data = nullptr;
  char* in_data = nullptr;
  std::string seg_name;  // while it may still exist under /dev/shm

  std::mutex prog_mu;    // one progress runner at a time (reads `in`, copies into tensors)
  uint64_t in_tail = 0;  // prog_mu
  // The rest: the transport's mu_.
  uint64_t out_head = 0;
  uint64_t out_tail_seen = 0;  // the consumer's tail as last read (reloaded only when short of space)
  uint64_t next_seq = 0;
  std::deque<OutRec> outq;
  SeqWindow wait_sends;  // by seq: sent, awaiting CTS or ACK
  std::deque<OpPtr> stream_sends;        // CTS received: chunks to write, in order
  std::unordered_map<uint64_t, OpPtr> stream_recvs;  // by seq: CTS sent, chunks arriving
  std::deque<OpPtr> pulls;                           // CMA reads to do, in order
  // outq, stream_sends or pulls may be non-empty (set under mu_ on every push, cleared under mu_
  // by a progress step that found all three empty): lets an idle step skip the lock.
  std::atomic<bool> backlog{false};
  // Process-local (the peer never reads these: a Wait costs no cache line moving to the peer).
  std::atomic<uint32_t> polling{0};         // Work::Wait callers driving progress right now
  std::atomic<uint64_t> waits{0};           // Waits that completed their op by polling (kLeaseSleep)
  std::atomic<bool> in_futex{false};        // the progress thread is (about to be) in FUTEX_WAIT
  std::unordered_map<uint32_t, std::deque<OpPtr>> posted;
  std::unordered_map<uint32_t, std::deque<Unexpected>> unexpected;
  std::vector<std::vector<char>> spare_payloads;  // buffers of matched unexpected EAGERs, reused
  std::jthread thread;
};

// Wakes this side's progress thread for a local event (a queued record, a pull to do).
void KickLocal(Channel& c) {
  c.me->doorbell.fetch_add(1, std::memory_order_seq_cst);
  if (c.in_futex.load(std::memory_order_seq_cst)) FutexWakeAll(&c.me->doorbell);
}

// Whether the record at the consumer's published position is ready (any thread, no lock).
bool InReady(const Channel& c) {
  const uint64_t t = c.in->tail.load(std::memory_order_acquire);
  return StampAt(c.in_data, t % kRingBytes).load(std::memory_order_acquire) == t + 1;
}

bool AnyPosted(const Channel& c) {
  for (const auto& [tag, q] : c.posted) {
    if (!q.empty()) return true;
  }
  return false;
}

using Completions = std::vector<std::pair<std::shared_ptr<ShmWork>, Status>>;

void RunCompletions(Completions& c) {
  for (auto& [w, s] : c) w->Complete(std::move(s));
  c.clear();
}

// The fast path's state; shared with its Works (a spinning Wait keeps it alive).
class ShmTransport : public std::enable_shared_from_this<ShmTransport> {
 public:
  ShmTransport(int rank, int size, CommOptions options)
      : rank_(rank), size_(size), options_(std::move(options)), channels_(size) {}
  ~ShmTransport();

  // Connection, before any thread runs.
  Status AddChannel(int peer, pid_t peer_pid, uint64_t peer_probe, bool creator,
                    const std::shared_ptr<Store>& store, Deadline deadline);
  Status FinishConnect(const std::shared_ptr<Store>& store, Deadline deadline);
  void Start(std::function<void(const Status&)> break_hook);

  bool Has(int peer) const { return peer >= 0 && peer < size_ && channels_[peer] != nullptr; }
  std::shared_ptr<Work> Send(const Tensor& t, int dst, uint32_t tag, const OpOptions& opts);
  std::shared_ptr<Work> Recv(Tensor& t, int src, uint32_t tag, const OpOptions& opts);
  void Break(Status reason, bool from_destructor = false);
  bool broken() const {
    std::lock_guard lock(mu_);
    return broken_;
  }
  Status error() const {
    std::lock_guard lock(mu_);
    return error_;
  }
  void Shutdown();
  // Drives `peer`'s progress until `work` completes or `until` passes.
  void Spin(int peer, const ShmWork& work, Deadline deadline);

 private:
  // One pass over the channel. `for_wait`: stop reading records after one that completed an op
  // (the Wait returns at once instead of first polling the next record's line).
  Status Step(Channel& c, bool* worked, Completions* done, bool for_wait = false);
  bool TryWriteLocked(Channel& c, const Rec& r, const void* payload);
  void QueueLocked(Channel& c, const Rec& r, const void* payload, bool* peer_dirty,
                   bool* local_dirty);
  void MatchLocked(Channel& c, const OpPtr& op, const Rec& r, const char* payload,
                   Completions* done, bool* peer_dirty, bool* local_dirty);
  void RegisterLocked(const OpPtr& op);
  OpPtr EraseLocked(ShmWork& op);
  bool HasWork(Channel& c);
  void ProgressLoop(Channel& c, std::stop_token st);
  void WatchdogLoop(std::stop_token st);
  std::string MismatchText(bool send_side, int peer, const Rec& r, uint64_t my_bytes,
                           uint8_t my_dtype) const;

  const int rank_;
  const int size_;
  const CommOptions options_;
  std::vector<std::unique_ptr<Channel>> channels_;
  std::function<void(const Status&)> break_hook_;
  int event_fd_ = -1;

  mutable std::mutex mu_;
  std::atomic<bool> broken_flag_{false};
  bool broken_ = false;  // mu_
  Status error_;         // mu_
  // Every pending op, in issue order (intrusive: ShmWork::prev/next; each holds itself through
  // ShmWork::self while linked). The watchdog scans it for the earliest deadline.
  ShmWork* pending_head_ = nullptr;  // mu_
  ShmWork* pending_tail_ = nullptr;  // mu_
  Clock::time_point watchdog_wake_at_ = Clock::time_point::min();  // mu_: its next wake-up
  std::jthread watchdog_;
  bool started_ = false;
};

Status ShmWork::Wait(Deadline deadline) {
  if (!IsCompleted()) {
    if (auto t = transport_.lock()) t->Spin(peer, *this, deadline);
  }
  if (!IsCompleted()) {
    std::unique_lock lock(mu_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    auto done = [&] { return state_.load(std::memory_order_seq_cst) == kDone; };
    bool ok = true;
    if (deadline.infinite()) {
      cv_.wait(lock, done);
    } else {
      ok = cv_.wait_until(lock, deadline.time_point(), done);
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    if (!ok) return DeadlineExceededError("Work::Wait: deadline passed, op still pending");
  }
  return status_;
}

ShmTransport::~ShmTransport() {
  Shutdown();
  for (auto& c : channels_) {
    if (!c) continue;
    if (!c->seg_name.empty()) ::shm_unlink(c->seg_name.c_str());
    if (c->map) ::munmap(c->map, kSegBytes);
    if (c->pidfd >= 0) ::close(c->pidfd);
  }
  if (event_fd_ >= 0) ::close(event_fd_);
}

void ShmTransport::Shutdown() {
  Break(AbortedError("communicator destroyed"), /*from_destructor=*/true);
  std::vector<std::jthread*> threads;
  for (auto& c : channels_) {
    if (c && c->thread.joinable()) {
      c->thread.request_stop();
      threads.push_back(&c->thread);
    }
  }
  if (watchdog_.joinable()) {
    watchdog_.request_stop();
    threads.push_back(&watchdog_);
  }
  for (auto& c : channels_) {
    if (c && c->me) Kick(c->me);
  }
  if (event_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!::write(event_fd_, &one, sizeof(one));
  }
  for (auto* t : threads) {
    // Never join ourselves (a Work's last reference dropped on one of our threads).
    if (t->get_id() == std::this_thread::get_id()) {
      t->detach();  // cannot happen in practice: our threads hold no owning reference
      continue;
    }
    t->join();
  }
}

Status ShmTransport::AddChannel(int peer, pid_t peer_pid, uint64_t peer_probe, bool creator,
                                const std::shared_ptr<Store>& store, Deadline deadline) {
  auto c = std::make_unique<Channel>();
  c->peer = peer;
  c->peer_pid = peer_pid;
  const int lo = std::min(rank_, peer), hi = std::max(rank_, peer);
  const std::string key = "archi_shm/seg/" + std::to_string(lo) + "_" + std::to_string(hi);
  int fd = -1;
  if (creator) {
    c->seg_name = "/" + std::string(kShmSegmentPrefix) + std::to_string(::getpid()) + "-" +
                  RandomHex();
    fd = ::shm_open(c->seg_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return UnavailableError("shm_open(" + c->seg_name + "): " + ErrnoText(errno));
    if (::ftruncate(fd, static_cast<off_t>(kSegBytes)) != 0) {
      const int e = errno;
      ::close(fd);
      ::shm_unlink(c->seg_name.c_str());
      return UnavailableError("ftruncate(" + c->seg_name + "): " + ErrnoText(e));
    }
  } else {
    if (Status s = store->Wait({key}, deadline); !s.ok()) {
      return s.WithContext("shm: waiting for rank " + std::to_string(peer) + "'s segment");
    }
    ARCHI_ASSIGN_OR_RETURN(std::string name, store->Get(key, deadline));
    fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return UnavailableError("shm_open(" + name + "): " + ErrnoText(errno));
    ::shm_unlink(name.c_str());  // both ends have it now (the creator unlinks too; ENOENT is fine)
  }
  void* map = ::mmap(nullptr, kSegBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    if (creator) ::shm_unlink(c->seg_name.c_str());
    return UnavailableError("mmap of the shm segment: " + ErrnoText(map_errno));
  }
  c->map = map;
  c->seg = static_cast<SegHeader*>(map);
  if (creator) {
    new (c->seg) SegHeader();
    c->seg->ring_bytes = kRingBytes;
    c->seg->version = kSegVersion;
    std::atomic_thread_fence(std::memory_order_release);
    c->seg->magic = kSegMagic;
  } else if (c->seg->magic != kSegMagic || c->seg->version != kSegVersion ||
             c->seg->ring_bytes != kRingBytes) {
    channels_[peer] = std::move(c);
    return FailedPreconditionError("shm: segment of rank " + std::to_string(peer) +
                                   " has an unknown layout (different Archipelago versions?)");
  }
  const int my_side = rank_ < peer ? 0 : 1;
  c->me = &c->seg->side[my_side];
  c->them = &c->seg->side[1 - my_side];
  c->me->pid = ::getpid();
  c->out = &c->seg->ring[my_side];
  c->in = &c->seg->ring[1 - my_side];
  char* data = static_cast<char*>(map) + kDataOffset;
  c->out_data = data + my_side * kRingBytes;
  c->in_data = data + (1 - my_side) * kRingBytes;
  c->pidfd = PidfdOpen(peer_pid);
  if (c->pidfd < 0) {
    const int e = errno;
    channels_[peer] = std::move(c);
    return UnavailableError("shm: pidfd_open of rank " + std::to_string(peer) + " (pid " +
                            std::to_string(peer_pid) + "): " + ErrnoText(e));
  }
  // Single copy when the kernel lets us read the peer's memory (same uid, no Yama/seccomp veto).
  uint64_t probe = 0;
  iovec local{&probe, sizeof(probe)};
  iovec remote{reinterpret_cast<void*>(peer_probe), sizeof(probe)};
  c->cma = EnvBool("ARCHI_SHM_CMA", true) &&
           ::process_vm_readv(peer_pid, &local, 1, &remote, 1, 0) == sizeof(probe) &&
           probe == kCmaProbeMagic;
  if (creator) {
    if (Status s = store->Set(key, c->seg_name, deadline); !s.ok()) {
      ::shm_unlink(c->seg_name.c_str());
      channels_[peer] = std::move(c);
      return s.WithContext("shm: publishing the segment");
    }
  } else {
    if (Status s = store->Set(key + "/attached", "1", deadline); !s.ok()) {
      channels_[peer] = std::move(c);
      return s.WithContext("shm: acknowledging the segment");
    }
  }
  channels_[peer] = std::move(c);
  return Status();
}

Status ShmTransport::FinishConnect(const std::shared_ptr<Store>& store, Deadline deadline) {
  for (auto& c : channels_) {
    if (!c || c->seg_name.empty()) continue;
    const int lo = std::min(rank_, c->peer), hi = std::max(rank_, c->peer);
    const std::string key =
        "archi_shm/seg/" + std::to_string(lo) + "_" + std::to_string(hi) + "/attached";
    Status s = store->Wait({key}, deadline);
    ::shm_unlink(c->seg_name.c_str());
    c->seg_name.clear();
    if (!s.ok()) {
      return s.WithContext("shm: rank " + std::to_string(c->peer) + " did not map the segment");
    }
  }
  return Status();
}

void ShmTransport::Start(std::function<void(const Status&)> break_hook) {
  break_hook_ = std::move(break_hook);
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  for (auto& c : channels_) {
    if (!c) continue;
    Channel* ch = c.get();
    ch->thread = std::jthread([this, ch](std::stop_token st) { ProgressLoop(*ch, st); });
  }
  watchdog_ = std::jthread([this](std::stop_token st) { WatchdogLoop(st); });
  started_ = true;
}

// ---- rings --------------------------------------------------------------------------------------

bool ShmTransport::TryWriteLocked(Channel& c, const Rec& r, const void* payload) {
  const uint64_t need = AlignRec(sizeof(Rec) + r.len);
  uint64_t head = c.out_head;
  const uint64_t pos = head % kRingBytes;
  const uint64_t rem = kRingBytes - pos;
  // + one line: the stamp just past the record is zeroed (it must not be in use by the consumer).
  const uint64_t required = (rem < need ? rem + need : need) + kRecAlign;
  // The consumer's tail lives on a line it writes after every record: read it only when the last
  // value seen leaves too little space (saves a cache-line transfer per message).
  if (kRingBytes - (head - c.out_tail_seen) < required) {
    c.out_tail_seen = c.out->tail.load(std::memory_order_acquire);
    if (kRingBytes - (head - c.out_tail_seen) < required) return false;
  }
  if (rem < need) {  // no room before the end: a pad record (rem >= one aligned line) skips it
    Rec p;
    p.kind = kPad;
    std::memcpy(c.out_data + pos + sizeof(uint64_t), reinterpret_cast<const char*>(&p) + 8,
                kRecBody);
    StampAt(c.out_data, pos).store(head + 1, std::memory_order_release);
    head += rem;
  }
  char* dst = c.out_data + head % kRingBytes;
  std::memcpy(dst + sizeof(uint64_t), reinterpret_cast<const char*>(&r) + 8, kRecBody);
  if (r.len > 0) std::memcpy(dst + sizeof(Rec), payload, r.len);
  // Clear the next record's stamp before publishing this one: whatever an older lap left there
  // can then never look ready to the consumer.
  StampAt(c.out_data, (head + need) % kRingBytes).store(0, std::memory_order_relaxed);
  StampAt(c.out_data, head % kRingBytes).store(head + 1, std::memory_order_release);
  head += need;
  c.out_head = head;
  return true;
}

void ShmTransport::QueueLocked(Channel& c, const Rec& r, const void* payload, bool* peer_dirty,
                               bool* local_dirty) {
  if (c.outq.empty() && TryWriteLocked(c, r, payload)) {
    *peer_dirty = true;
  } else {
    c.outq.push_back({r, payload});
    c.backlog.store(true, std::memory_order_release);
    *local_dirty = true;
  }
}

// ---- ops ----------------------------------------------------------------------------------------

void ShmTransport::RegisterLocked(const OpPtr& op) {
  op->self = op;
  op->linked = true;
  op->prev = pending_tail_;
  op->next = nullptr;
  if (pending_tail_) {
    pending_tail_->next = op.get();
  } else {
    pending_head_ = op.get();
  }
  pending_tail_ = op.get();
  if (!op->deadline.infinite()) {
    // Wake the watchdog only if it would sleep past this deadline (not once per op).
    if (op->deadline.time_point() < watchdog_wake_at_ && event_fd_ >= 0) {
      watchdog_wake_at_ = op->deadline.time_point();
      const uint64_t one = 1;
      (void)!::write(event_fd_, &one, sizeof(one));
    }
  }
}

// Takes `op` off the pending list and returns the list's reference to it (moved: the caller's
// completion list takes it without touching the count); null if it was not on the list
// (completed or failed already).
OpPtr ShmTransport::EraseLocked(ShmWork& op) {
  if (!op.linked) return nullptr;
  op.linked = false;
  if (op.prev) {
    op.prev->next = op.next;
  } else {
    pending_head_ = op.next;
  }
  if (op.next) {
    op.next->prev = op.prev;
  } else {
    pending_tail_ = op.prev;
  }
  op.prev = op.next = nullptr;
  return std::move(op.self);
}

std::string ShmTransport::MismatchText(bool send_side, int peer, const Rec& r, uint64_t my_bytes,
                                       uint8_t my_dtype) const {
  // r: the sender's announcement (receive side) or the receiver's acknowledgement (send side).
  if (send_side) {
    return "send to rank " + std::to_string(peer) + " tag " + std::to_string(r.tag) + ": sent " +
           std::to_string(my_bytes) + " bytes of " + WireDTypeName(my_dtype) +
           ", receiver expects " + std::to_string(r.aux) + " bytes of " +
           WireDTypeName(r.recv_dtype);
  }
  return "recv from rank " + std::to_string(peer) + " tag " + std::to_string(r.tag) +
         ": sender sent " + std::to_string(r.nbytes) + " bytes of " + WireDTypeName(r.dtype) +
         ", receiver expects " + std::to_string(my_bytes) + " bytes of " +
         WireDTypeName(my_dtype);
}

Status CheckCpuTensor(const Tensor& t, std::string_view what) {
  if (!t.defined()) return InvalidArgumentError(std::string(what) + ": undefined tensor");
  if (!t.device().is_cpu()) {
    return InvalidArgumentError(std::string(what) + ": tensor on " + t.device().ToString() +
                                ", the gloo backend needs CPU tensors");
  }
  return Status();
}

// Now on the coarse monotonic clock (the kernel's last tick, read without the TSC; the same
// base as steady_clock on Linux) plus its resolution: never earlier than Clock::now(), at most
// one tick (1-4 ms) later. An op deadline needs no better, and every op takes one.
Clock::time_point CoarseNowNotEarly() {
  static const int64_t res_ns = [] {
    timespec r{};
    if (::clock_getres(CLOCK_MONOTONIC_COARSE, &r) != 0) return int64_t{-1};
    return static_cast<int64_t>(r.tv_sec) * 1'000'000'000 + r.tv_nsec;
  }();
  timespec ts{};
  if (res_ns < 0 || res_ns > 10'000'000 || ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
    return Clock::now();
  }
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(
      static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec + res_ns)));
}

Deadline OpDeadlineOf(const OpOptions& opts, const CommOptions& co, int64_t* ms_out) {
  const int64_t ms = opts.timeout_ms >= 0 ? opts.timeout_ms : co.op_timeout_ms;
  *ms_out = ms;
  return ms < 0 ? Deadline::Infinite()
                : Deadline(CoarseNowNotEarly() + std::chrono::milliseconds(ms));
}

std::shared_ptr<Work> ShmTransport::Send(const Tensor& t, int dst, uint32_t tag,
                                         const OpOptions& opts) {
  if (tag > kMaxTag) {
    return CompletedWork(InvalidArgumentError("send: tag " + std::to_string(tag) + " above 2^20"));
  }
  if (Status s = CheckCpuTensor(t, "send"); !s.ok()) return CompletedWork(s);
  Channel& c = *channels_[dst];
  auto op = std::make_shared<ShmWork>(weak_from_this(), dst);
  op->is_send = true;
  op->tag = tag;
  op->dtype = static_cast<uint8_t>(t.dtype());
  op->data = t.data();
  op->nbytes = t.nbytes();
  op->deadline = OpDeadlineOf(opts, options_, &op->timeout_ms);
  Rec r;
  r.dtype = op->dtype;
  r.tag = tag;
  r.nbytes = op->nbytes;
  const void* payload = nullptr;
  if (op->nbytes <= kEagerMax) {
    r.kind = kEager;
    r.len = static_cast<uint32_t>(op->nbytes);
    payload = op->data;
  } else {
    r.kind = kRts;
    r.aux = reinterpret_cast<uint64_t>(op->data);
  }
  bool peer_dirty = false, local_dirty = false;
  {
    std::lock_guard lock(mu_);
    if (broken_) return CompletedWork(AbortedError(std::string(error_.message())));
    op->seq = r.seq = c.next_seq++;
    RegisterLocked(op);
    c.wait_sends.Put(op->seq, op);
    QueueLocked(c, r, payload, &peer_dirty, &local_dirty);
  }
  if (peer_dirty) Notify(c.them);
  if (local_dirty || c.them->closed.load(std::memory_order_acquire) != 0) KickLocal(c);
  return op;
}

std::shared_ptr<Work> ShmTransport::Recv(Tensor& t, int src, uint32_t tag,
                                         const OpOptions& opts) {
  if (tag > kMaxTag) {
    return CompletedWork(InvalidArgumentError("recv: tag " + std::to_string(tag) + " above 2^20"));
  }
  if (Status s = CheckCpuTensor(t, "recv"); !s.ok()) return CompletedWork(s);
  Channel& c = *channels_[src];
  auto op = std::make_shared<ShmWork>(weak_from_this(), src);
  op->tag = tag;
  op->dtype = static_cast<uint8_t>(t.dtype());
  op->data = t.data();
  op->nbytes = t.nbytes();
  op->deadline = OpDeadlineOf(opts, options_, &op->timeout_ms);
  thread_local Completions done;  // keeps its capacity: no allocation per receive
  bool peer_dirty = false, local_dirty = false;
  {
    std::lock_guard lock(mu_);
    if (broken_) return CompletedWork(AbortedError(std::string(error_.message())));
    RegisterLocked(op);
    auto it = c.unexpected.find(tag);
    if (it != c.unexpected.end() && !it->second.empty()) {
      Unexpected u = std::move(it->second.front());
      it->second.pop_front();  // the (empty) deque stays: no allocation per message
      MatchLocked(c, op, u.rec, u.payload.data(), &done, &peer_dirty, &local_dirty);
      if (u.payload.capacity() != 0 && c.spare_payloads.size() < 64) {
        c.spare_payloads.push_back(std::move(u.payload));
      }
    } else {
      c.posted[tag].push_back(op);
    }
  }
  RunCompletions(done);
  if (peer_dirty) Notify(c.them);
  if (local_dirty || c.them->closed.load(std::memory_order_acquire) != 0) KickLocal(c);
  return op;
}

// A receive meets its message's announcement (EAGER with the payload, or RTS).
void ShmTransport::MatchLocked(Channel& c, const OpPtr& op, const Rec& r, const char* payload,
                               Completions* done, bool* peer_dirty, bool* local_dirty) {
  Rec ack;
  ack.kind = kAck;
  ack.tag = r.tag;
  ack.seq = r.seq;
  ack.dtype = r.dtype;
  ack.nbytes = r.nbytes;
  ack.recv_dtype = op->dtype;
  ack.aux = op->nbytes;
  if (r.dtype != op->dtype || r.nbytes != op->nbytes) {
    ack.status = kAckMismatch;
    QueueLocked(c, ack, nullptr, peer_dirty, local_dirty);
    if (OpPtr ref = EraseLocked(*op)) {
      done->emplace_back(std::move(ref), InvalidArgumentError(MismatchText(
                                              false, c.peer, r, op->nbytes, op->dtype)));
    }
    return;
  }
  if (r.kind == kEager) {
    if (r.len > 0) std::memcpy(op->data, payload, r.len);
    ack.status = kAckOk;
    QueueLocked(c, ack, nullptr, peer_dirty, local_dirty);
    if (OpPtr ref = EraseLocked(*op)) done->emplace_back(std::move(ref), Status());
    return;
  }
  op->seq = r.seq;
  op->remote_addr = r.aux;
  if (c.cma) {
    c.pulls.push_back(op);
    c.backlog.store(true, std::memory_order_release);
    *local_dirty = true;
  } else {
    Rec cts;
    cts.kind = kCts;
    cts.tag = r.tag;
    cts.seq = r.seq;
    c.stream_recvs.emplace(r.seq, op);
    QueueLocked(c, cts, nullptr, peer_dirty, local_dirty);
  }
}

// ---- progress -----------------------------------------------------------------------------------

Status ShmTransport::Step(Channel& c, bool* worked, Completions* done, bool for_wait) {
  auto who = [&c] {  // built only on an error
    return "peer rank " + std::to_string(c.peer) + " (pid " + std::to_string(c.peer_pid) + "): ";
  };
  bool peer_dirty = false, local_dirty = false, consumed = false;
  // 1. Incoming records.
  for (int n = 0; n < kMaxRecordsPerStep; ++n) {
    const uint64_t tail = c.in_tail;
    const uint64_t pos = tail % kRingBytes;
    const uint64_t rem = kRingBytes - pos;
    if (StampAt(c.in_data, pos).load(std::memory_order_acquire) != tail + 1) break;
    Rec r;
    std::memcpy(reinterpret_cast<char*>(&r) + 8, c.in_data + pos + sizeof(uint64_t), kRecBody);
    if (r.kind == kPad) {
      c.in_tail = tail + rem;
      c.in->tail.store(c.in_tail, std::memory_order_release);
      continue;
    }
    const uint64_t total = AlignRec(sizeof(Rec) + r.len);
    if (total > rem) {
      return AbortedError(who() + "protocol error (corrupt shared-memory record)");
    }
    const char* payload = c.in_data + pos + sizeof(Rec);
    switch (r.kind) {
      case kEager:
      case kRts: {
        std::lock_guard lock(mu_);
        if (broken_) return Status();
        auto it = c.posted.find(r.tag);
        if (it != c.posted.end() && !it->second.empty()) {
          OpPtr op = it->second.front();
          it->second.pop_front();
          MatchLocked(c, op, r, payload, done, &peer_dirty, &local_dirty);
        } else {
          Unexpected u;
          u.rec = r;
          if (r.kind == kEager && r.len > 0) {
            if (!c.spare_payloads.empty()) {
              u.payload = std::move(c.spare_payloads.back());
              c.spare_payloads.pop_back();
            }
            u.payload.assign(payload, payload + r.len);
          }
          c.unexpected[r.tag].push_back(std::move(u));
        }
        break;
      }
      case kCts: {
        std::lock_guard lock(mu_);
        if (broken_) return Status();
        const OpPtr* it = c.wait_sends.Find(r.seq);
        if (it == nullptr) return AbortedError(who() + "protocol error (unknown CTS)");
        c.stream_sends.push_back(*it);
        c.backlog.store(true, std::memory_order_release);
        c.wait_sends.Erase(r.seq);
        break;
      }
      case kChunk: {
        OpPtr op;
        {
          std::lock_guard lock(mu_);
          if (broken_) return Status();
          auto it = c.stream_recvs.find(r.seq);
          if (it == c.stream_recvs.end()) {
            return AbortedError(who() + "protocol error (unknown chunk)");
          }
          op = it->second;
        }
        if (r.aux + r.len > op->nbytes) return AbortedError(who() + "protocol error (chunk bounds)");
        std::memcpy(static_cast<char*>(op->data) + r.aux, payload, r.len);
        if (r.aux + r.len == op->nbytes) {
          std::lock_guard lock(mu_);
          if (broken_) return Status();
          c.stream_recvs.erase(r.seq);
          if (OpPtr ref = EraseLocked(*op)) done->emplace_back(std::move(ref), Status());
        }
        break;
      }
      case kAck: {
        std::lock_guard lock(mu_);
        if (broken_) return Status();
        const OpPtr* it = c.wait_sends.Find(r.seq);
        if (it == nullptr) {
          return AbortedError(who() + "protocol error (unknown acknowledgement)");
        }
        OpPtr op = *it;
        c.wait_sends.Erase(r.seq);
        if (OpPtr ref = EraseLocked(*op)) {
          done->emplace_back(std::move(ref),
                             r.status == kAckOk
                                 ? Status()
                                 : InvalidArgumentError(MismatchText(true, c.peer, r, op->nbytes,
                                                                     op->dtype)));
        }
        break;
      }
      default:
        return AbortedError(who() + "protocol error (unknown record kind " +
                            std::to_string(r.kind) + ")");
    }
    c.in_tail = tail + total;
    c.in->tail.store(c.in_tail, std::memory_order_release);
    consumed = true;
    *worked = true;
    if (for_wait && !done->empty()) break;
  }
  if (consumed) Notify(c.them);  // it may wait for ring space
  // The peer broke or went away: like a closed connection, this fails whatever is pending with it
  // (once everything it wrote has been read); an idle channel stays quiet until its next op.
  if (c.them->closed.load(std::memory_order_acquire) != 0 &&
      StampAt(c.in_data, c.in_tail % kRingBytes).load(std::memory_order_acquire) !=
          c.in_tail + 1) {
    std::lock_guard lock(mu_);
    if (broken_) return Status();
    if (!c.wait_sends.empty() || !c.stream_sends.empty() || !c.stream_recvs.empty() ||
        !c.pulls.empty() || !c.outq.empty() || AnyPosted(c)) {
      return AbortedError(who() + "closed the connection (its communicator broke or was destroyed)");
    }
  }

  if (!c.backlog.load(std::memory_order_acquire)) {
    if (peer_dirty) {
      *worked = true;
      Notify(c.them);
    }
    return Status();
  }
  // 2. One single-copy pull (process_vm_readv straight into the receiver's tensor).
  OpPtr pull;
  {
    std::lock_guard lock(mu_);
    if (broken_) return Status();
    if (!c.pulls.empty()) pull = c.pulls.front();
  }
  if (pull) {
    *worked = true;
    while (pull->offset < pull->nbytes) {
      const uint64_t n = std::min<uint64_t>(pull->nbytes - pull->offset, 1ull << 30);
      iovec local{static_cast<char*>(pull->data) + pull->offset, n};
      iovec remote{reinterpret_cast<void*>(pull->remote_addr + pull->offset), n};
      const ssize_t got = ::process_vm_readv(c.peer_pid, &local, 1, &remote, 1, 0);
      if (got <= 0) {
        const int e = errno;
        return AbortedError(who() + "reading the message (process_vm_readv): " +
                            (got == 0 ? std::string("no progress") : ErrnoText(e)) +
                            (e == ESRCH ? " (the process is gone)" : ""));
      }
      pull->offset += static_cast<uint64_t>(got);
    }
    std::lock_guard lock(mu_);
    if (broken_) return Status();
    c.pulls.pop_front();
    Rec ack;
    ack.kind = kAck;
    ack.status = kAckOk;
    ack.tag = pull->tag;
    ack.seq = pull->seq;
    ack.dtype = pull->dtype;
    ack.nbytes = pull->nbytes;
    ack.recv_dtype = pull->dtype;
    ack.aux = pull->nbytes;
    QueueLocked(c, ack, nullptr, &peer_dirty, &local_dirty);
    if (OpPtr ref = EraseLocked(*pull)) done->emplace_back(std::move(ref), Status());
  }

  // 3. Outgoing: queued records, then chunks of streamed sends.
  {
    std::lock_guard lock(mu_);
    if (broken_) return Status();
    while (!c.outq.empty() && TryWriteLocked(c, c.outq.front().rec, c.outq.front().payload)) {
      c.outq.pop_front();
      peer_dirty = true;
    }
    while (c.outq.empty() && !c.stream_sends.empty()) {
      OpPtr op = c.stream_sends.front();
      Rec r;
      r.kind = kChunk;
      r.tag = op->tag;
      r.seq = op->seq;
      r.aux = op->offset;
      r.len = static_cast<uint32_t>(std::min<uint64_t>(kChunkBytes, op->nbytes - op->offset));
      if (!TryWriteLocked(c, r, static_cast<const char*>(op->data) + op->offset)) break;
      peer_dirty = true;
      op->offset += r.len;
      if (op->offset == op->nbytes) {
        c.stream_sends.pop_front();
        if (OpPtr ref = EraseLocked(*op)) done->emplace_back(std::move(ref), Status());
      }
    }
    if (c.outq.empty() && c.stream_sends.empty() && c.pulls.empty()) {
      c.backlog.store(false, std::memory_order_release);
    }
  }
  if (peer_dirty) {
    *worked = true;
    Notify(c.them);
  }
  return Status();
}

bool ShmTransport::HasWork(Channel& c) {
  if (InReady(c)) return true;
  std::lock_guard lock(mu_);
  if (broken_) return false;
  if (!c.pulls.empty()) return true;
  if (c.them->closed.load(std::memory_order_seq_cst) != 0 &&
      (!c.wait_sends.empty() || !c.stream_recvs.empty() || AnyPosted(c))) {
    return true;
  }
  if (c.outq.empty() && c.stream_sends.empty()) return false;
  const uint64_t used = c.out_head - c.out->tail.load(std::memory_order_seq_cst);
  return kRingBytes - used >= kRingBytes / 4;
}

void ShmTransport::Spin(int peer, const ShmWork& work, Deadline deadline) {
  if (!Has(peer) || broken_flag_.load(std::memory_order_acquire)) return;
  Channel& c = *channels_[peer];
  c.polling.fetch_add(1, std::memory_order_seq_cst);
  // A progress thread in its long sleep makes the peer ring the doorbell for every record: move
  // it to the short, silent sleep (it sees `polling`). Once per idle period, not per Wait.
  if (c.me->sleeping.load(std::memory_order_seq_cst) != 0) KickLocal(c);
  thread_local Completions done;  // keeps its capacity across waits
  Status failure;
  int idle = 0;
  Clock::time_point until = Clock::time_point::max();  // read the clock only once idle
  while (!work.IsCompleted() && !broken_flag_.load(std::memory_order_acquire)) {
    bool worked = false;
    // Peek first (our own tail word and the next record's stamp): an idle poll takes no lock.
    const bool ready = InReady(c) || c.backlog.load(std::memory_order_acquire) ||
                       c.them->closed.load(std::memory_order_relaxed) != 0;
    if (ready) {
      if (!c.prog_mu.try_lock()) {
        // The progress thread is copying (it may share our core): let it run instead of
        // spinning against it for a whole scheduler slice.
        std::this_thread::yield();
        continue;
      }
      failure = Step(c, &worked, &done, /*for_wait=*/true);
      c.prog_mu.unlock();
      RunCompletions(done);
      if (!failure.ok()) break;
    }
    if (!worked) {
      // Spin; after ~kSpinBeforeYield idle rounds give the core away now and then (a no-op when
      // nothing else is runnable): with more busy ranks than cores, or our progress thread
      // runnable on this core, a pure spin would hold the core for a scheduler slice while the
      // peer waits for it. A prompt answer (ping-pong) never pays for the system call.
      if (++idle > kSpinBeforeYield && (idle & 15) == 0) {
        if (until == Clock::time_point::max()) {
          until = std::min(Clock::now() + kWaitSpin, deadline.time_point());
        }
        std::this_thread::yield();
        if ((idle & 63) == 0 && Clock::now() >= until) break;
      } else {
        CpuRelax();
      }
    }
  }
  const bool completed = work.IsCompleted();
  // The lease: a completed Wait says another is likely soon (a ping-pong); one about to block
  // hands the channel to the progress thread now (no lease: records must ring it).
  if (completed) {
    c.waits.store(c.waits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  c.polling.fetch_sub(1, std::memory_order_seq_cst);
  if (!failure.ok()) {
    Break(failure);
    return;
  }
  if (!completed) KickLocal(c);
}

void ShmTransport::ProgressLoop(Channel& c, std::stop_token st) {
  auto last_work = Clock::now();
  uint64_t last_waits = 0;
  Completions done;
  while (!st.stop_requested()) {
    if (broken_flag_.load(std::memory_order_acquire)) {
      const uint32_t db = c.me->doorbell.load();
      c.me->sleeping.store(1);
      if (!st.stop_requested()) FutexWait(&c.me->doorbell, db, microseconds(100'000));
      c.me->sleeping.store(0);
      continue;
    }
    bool worked = false;
    if (c.prog_mu.try_lock()) {
      Status s = Step(c, &worked, &done);
      c.prog_mu.unlock();
      RunCompletions(done);
      if (!s.ok()) Break(s);
    }
    const auto now = Clock::now();
    if (worked) {
      last_work = now;
      continue;
    }
    // A Work::Wait that polls makes the progress itself: get out of its way (it may share our
    // core) instead of spinning; it rings our doorbell when it stops with records left.
    const bool polled = c.polling.load(std::memory_order_relaxed) != 0;
    if (!polled && now - last_work < kBgSpin) {
      CpuRelax();
      continue;
    }
    const uint64_t waits = c.waits.load(std::memory_order_relaxed);
    const uint32_t db = c.me->doorbell.load(std::memory_order_seq_cst);
    c.in_futex.store(true, std::memory_order_seq_cst);
    if (polled || waits != last_waits) {
      // Silent sleep: the peer does not ring (`sleeping` stays clear); a polling Wait handles the
      // records, else we look again after kLeaseSleep (local events ring through KickLocal).
      last_waits = waits;
      if ((polled || !HasWork(c)) && !st.stop_requested()) {
        FutexWait(&c.me->doorbell, db, kLeaseSleep);
      }
    } else {
      c.me->sleeping.store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      // Re-read after announcing the sleep: a Wait that started in between either sees
      // `sleeping` (and kicks us) or we see its `polling` here; records published before the
      // peer read `sleeping` are seen by HasWork (seq_cst fences on both sides).
      if (c.polling.load(std::memory_order_seq_cst) == 0 &&
          c.waits.load(std::memory_order_relaxed) == waits && !HasWork(c) &&
          !st.stop_requested()) {
        FutexWait(&c.me->doorbell, db, microseconds(100'000));
      }
      c.me->sleeping.store(0, std::memory_order_seq_cst);
    }
    c.in_futex.store(false, std::memory_order_seq_cst);
    last_work = Clock::now();
  }
}

// ---- breaking and the watchdog ------------------------------------------------------------------

void ShmTransport::Break(Status reason, bool from_destructor) {
  std::vector<OpPtr> to_complete;
  {
    std::lock_guard lock(mu_);
    if (broken_) return;
    broken_ = true;
    broken_flag_.store(true, std::memory_order_release);
    if (!options_.label.empty() && !reason.message().starts_with(options_.label)) {
      reason = reason.WithContext(options_.label);
    }
    error_ = reason;
    for (ShmWork* op = pending_head_; op != nullptr;) {
      ShmWork* next = op->next;
      op->linked = false;
      op->prev = op->next = nullptr;
      to_complete.push_back(std::move(op->self));
      op = next;
    }
    pending_head_ = pending_tail_ = nullptr;
    for (auto& c : channels_) {
      if (!c) continue;
      c->outq.clear();
      c->wait_sends.clear();
      c->stream_sends.clear();
      c->stream_recvs.clear();
      c->pulls.clear();
      c->posted.clear();
      c->unexpected.clear();
    }
  }
  ARCHI_LOG_DEBUG("shm communicator rank {}/{} broken: {}", rank_, size_, reason.ToString());
  if (!from_destructor && options_.on_broken) {
    try {
      options_.on_broken(reason);
    } catch (...) {
      ARCHI_LOG_ERROR("shm communicator: on_broken callback threw");
    }
  }
  if (break_hook_) break_hook_(reason);
  // Wait for in-flight copies into or out of user tensors (a progress step never waits for the
  // peer), so that no op completes while its memory is still being touched.
  for (auto& c : channels_) {
    if (!c) continue;
    { std::lock_guard quiesce(c->prog_mu); }
    if (c->me) {
      c->me->closed.store(1, std::memory_order_seq_cst);
      Kick(c->me);
      Kick(c->them);  // the peer sees a closed connection
    }
  }
  if (event_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!::write(event_fd_, &one, sizeof(one));
  }
  const std::string msg(reason.message());
  for (auto& op : to_complete) {
    if (op->deadline_hit) {
      op->Complete(DeadlineExceededError(op->what() + " exceeded its op deadline of " +
                                               std::to_string(op->timeout_ms) + " ms"));
    } else {
      op->Complete(AbortedError(msg.empty() ? std::string("communicator broken") : msg));
    }
  }
}

void ShmTransport::WatchdogLoop(std::stop_token st) {
  std::vector<pollfd> fds;
  std::vector<int> peers;
  fds.push_back({event_fd_, POLLIN, 0});
  peers.push_back(-1);
  for (auto& c : channels_) {
    if (c && c->pidfd >= 0) {
      fds.push_back({c->pidfd, POLLIN, 0});
      peers.push_back(c->peer);
    }
  }
  while (!st.stop_requested()) {
    int timeout_ms = -1;
    std::string expired_what;
    int64_t expired_ms = 0;
    bool watch_pids = true;
    {
      std::lock_guard lock(mu_);
      watch_pids = !broken_;
      watchdog_wake_at_ = Clock::time_point::max();
      // The earliest deadline among the pending ops (a scan: the watchdog runs once per earliest
      // deadline or eventfd wake-up, not once per op).
      ShmWork* first = nullptr;
      if (!broken_) {
        for (ShmWork* op = pending_head_; op != nullptr; op = op->next) {
          if (op->deadline.infinite()) continue;
          if (first == nullptr || op->deadline.time_point() < first->deadline.time_point()) {
            first = op;
          }
        }
      }
      if (first != nullptr) {
        const auto when = first->deadline.time_point();
        const auto now = Clock::now();
        if (now >= when) {
          first->deadline_hit = true;
          expired_what = first->what();
          expired_ms = first->timeout_ms;
        } else {
          timeout_ms = static_cast<int>(std::min<int64_t>(
              std::chrono::ceil<std::chrono::milliseconds>(when - now).count(), 60'000));
          watchdog_wake_at_ = now + std::chrono::milliseconds(timeout_ms);
        }
      } else if (!broken_) {
        // Nothing to time: look again in a second anyway, so that the ops issued meanwhile (their
        // deadlines are usually further away) need not wake us one by one through the eventfd
        // (an op completing before we ran would otherwise make the next op wake us again).
        timeout_ms = 1000;
        watchdog_wake_at_ = Clock::now() + std::chrono::milliseconds(timeout_ms);
      }
    }
    if (!expired_what.empty()) {
      Break(DeadlineExceededError(expired_what + " exceeded its op deadline of " +
                                  std::to_string(expired_ms) + " ms"));
      continue;
    }
    const nfds_t n = watch_pids ? fds.size() : 1;
    const int rc = ::poll(fds.data(), n, timeout_ms);
    if (rc < 0 && errno != EINTR) {
      Break(InternalError("shm watchdog: poll: " + ErrnoText(errno)));
      return;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      while (::read(event_fd_, &v, sizeof(v)) > 0) {
      }
    }
    for (nfds_t i = 1; i < n; ++i) {
      if (fds[i].revents != 0) {
        const int peer = peers[i];
        Break(AbortedError("peer rank " + std::to_string(peer) + " (pid " +
                           std::to_string(channels_[peer]->peer_pid) +
                           ") exited (seen through its pidfd)"));
        break;
      }
    }
  }
}

// ---- the communicator ---------------------------------------------------------------------------

class ShmP2pCommunicator final : public Communicator {
 public:
  ShmP2pCommunicator(std::unique_ptr<Communicator> gloo, std::shared_ptr<ShmTransport> shm)
      : gloo_(std::move(gloo)), shm_(std::move(shm)) {}
  ~ShmP2pCommunicator() override {
    shm_->Shutdown();
    gloo_.reset();
  }

  int rank() const override { return gloo_->rank(); }
  int size() const override { return gloo_->size(); }
  BackendKind backend() const override { return BackendKind::kGloo; }
  bool UsesShm(int peer) const { return shm_->Has(peer); }

  std::shared_ptr<Work> Send(const Tensor& t, int dst, uint32_t tag, OpOptions opts) override {
    if (dst != rank() && shm_->Has(dst)) return Guard([&] { return shm_->Send(t, dst, tag, opts); });
    return gloo_->Send(t, dst, tag, opts);
  }
  std::shared_ptr<Work> Recv(Tensor& t, int src, uint32_t tag, OpOptions opts) override {
    if (src != rank() && shm_->Has(src)) return Guard([&] { return shm_->Recv(t, src, tag, opts); });
    return gloo_->Recv(t, src, tag, opts);
  }
  std::shared_ptr<Work> Broadcast(Tensor& t, int root, OpOptions opts) override {
    return gloo_->Broadcast(t, root, opts);
  }
  std::shared_ptr<Work> AllReduce(Tensor& t, ReduceOp op, OpOptions opts) override {
    return gloo_->AllReduce(t, op, opts);
  }
  std::shared_ptr<Work> AllGather(const Tensor& in, Tensor& out, OpOptions opts) override {
    return gloo_->AllGather(in, out, opts);
  }
  std::shared_ptr<Work> ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op,
                                      OpOptions opts) override {
    return gloo_->ReduceScatter(in, out, op, opts);
  }
  std::shared_ptr<Work> Barrier(OpOptions opts) override { return gloo_->Barrier(opts); }

  void Abort(const Status& reason) override {
    shm_->Break(reason.ok() ? AbortedError("aborted") : reason);
  }
  bool broken() const override { return shm_->broken(); }
  Status error() const override { return shm_->error(); }

 private:
  template <typename F>
  static std::shared_ptr<Work> Guard(F&& f) {
    try {
      return f();
    } catch (const std::exception& e) {
      return CompletedWork(InternalError(std::string("shm p2p: unexpected exception: ") +
                                         e.what()));
    }
  }

  std::unique_ptr<Communicator> gloo_;
  std::shared_ptr<ShmTransport> shm_;
};

struct PeerInfo {
  bool enabled = false;
  std::string host;
  pid_t pid = 0;
  uint64_t probe = 0;
};

Result<PeerInfo> ParseInfo(const std::string& s) {
  std::istringstream in(s);
  std::string version;
  int enabled = 0;
  long long pid = 0;
  unsigned long long probe = 0;
  PeerInfo p;
  if (!(in >> version >> enabled >> p.host >> pid >> probe) || version != "v1") {
    return FailedPreconditionError("shm: malformed peer info '" + s + "'");
  }
  p.enabled = enabled != 0;
  p.pid = static_cast<pid_t>(pid);
  p.probe = probe;
  return p;
}

}  // namespace

bool ShmFastPathEnabled(const CommOptions& options) {
  switch (options.shm) {
    case ShmMode::kOff:
      return false;
    case ShmMode::kOn:
      return true;
    case ShmMode::kDefault:
      break;
  }
  return EnvBool("ARCHI_SHM", kShmDefaultOn);
}

bool UsesShmFastPath(const Communicator& comm, int peer) {
  auto* c = dynamic_cast<const ShmP2pCommunicator*>(&comm);
  return c != nullptr && c->UsesShm(peer);
}

int RemoveStaleShmSegments() {
  DIR* d = ::opendir("/dev/shm");
  if (!d) return 0;
  int removed = 0;
  const std::string prefix = kShmSegmentPrefix;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (!name.starts_with(prefix)) continue;
    const long long pid = std::atoll(name.c_str() + prefix.size());
    if (pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    if (::shm_unlink(("/" + name).c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

Result<std::unique_ptr<Communicator>> CreateCpuCommunicator(int rank, int size,
                                                            std::shared_ptr<Store> store,
                                                            CommOptions options) {
  if (size < 1 || rank < 0 || rank >= size || !store || options.connect_timeout_ms <= 0) {
    return GlooCommunicator::Create(rank, size, std::move(store), std::move(options));
  }
  const Deadline deadline = Deadline::AfterMs(options.connect_timeout_ms);
  const bool enabled = ShmFastPathEnabled(options);
  if (enabled) {
    static std::once_flag once;
    std::call_once(once, [] {
      const int n = RemoveStaleShmSegments();
      if (n > 0) ARCHI_LOG_INFO("shm: removed {} stale segment(s) of dead processes", n);
    });
  }
  // Gloo first: it carries collectives (and every pair that does not qualify).
  auto transport = std::make_shared<ShmTransport>(rank, size, options);
  // Gloo's breaks go to the user's callback while Gloo stands alone, to the fast path (which
  // then runs the user's callback once) when both are combined.
  struct Relay {
    std::weak_ptr<ShmTransport> transport;
    std::function<void(const Status&)> user;
    std::atomic<bool> combined{false};
  };
  auto relay = std::make_shared<Relay>();
  relay->transport = transport;
  relay->user = options.on_broken;
  CommOptions gloo_options = options;
  gloo_options.on_broken = [relay](const Status& s) {
    if (relay->combined.load()) {
      if (auto t = relay->transport.lock()) t->Break(s);
    } else if (relay->user) {
      relay->user(s);
    }
  };
  ARCHI_ASSIGN_OR_RETURN(auto gloo,
                         GlooCommunicator::Create(rank, size, store, std::move(gloo_options)));
  if (size == 1) return gloo;
  auto fail = [&](Status s) -> Status {
    return s.WithContext("shm fast path (rank " + std::to_string(rank) + "/" +
                         std::to_string(size) + ")");
  };
  const std::string info = "v1 " + std::to_string(enabled ? 1 : 0) + " " + HostIdentity() + " " +
                           std::to_string(::getpid()) + " " +
                           std::to_string(reinterpret_cast<uint64_t>(&g_cma_probe));
  if (Status s = store->Set("archi_shm/info/" + std::to_string(rank), info, deadline); !s.ok()) {
    return fail(s);
  }
  std::vector<PeerInfo> peers(size);
  bool any = false;
  for (int q = 0; q < size; ++q) {
    if (q == rank) continue;
    const std::string key = "archi_shm/info/" + std::to_string(q);
    if (Status s = store->Wait({key}, deadline); !s.ok()) {
      if (s.code() == StatusCode::kDeadlineExceeded) {
        return DeadlineExceededError("shm fast path: rank " + std::to_string(q) +
                                     " did not publish its info in time");
      }
      return fail(s);
    }
    auto v = store->Get(key, deadline);
    if (!v.ok()) return fail(v.status());
    auto p = ParseInfo(*v);
    if (!p.ok()) return fail(p.status());
    peers[q] = *p;
    any = any || (enabled && p->enabled && p->host == HostIdentity());
  }
  if (!any) return gloo;
  for (int q = 0; q < size; ++q) {  // creators first (no waiting), then the segments of others
    if (q == rank || !peers[q].enabled || !enabled || peers[q].host != HostIdentity()) continue;
    if (rank < q) {
      if (Status s = transport->AddChannel(q, peers[q].pid, peers[q].probe, true, store, deadline);
          !s.ok()) {
        return fail(s);
      }
    }
  }
  for (int q = 0; q < size; ++q) {
    if (q == rank || !peers[q].enabled || !enabled || peers[q].host != HostIdentity()) continue;
    if (rank > q) {
      if (Status s = transport->AddChannel(q, peers[q].pid, peers[q].probe, false, store, deadline);
          !s.ok()) {
        return fail(s);
      }
    }
  }
  if (Status s = transport->FinishConnect(store, deadline); !s.ok()) return fail(s);
  Communicator* g = gloo.get();
  relay->combined.store(true);
  if (gloo->broken()) {
    return fail(UnavailableError("the gloo connection broke during setup: " +
                                 std::string(gloo->error().message())));
  }
  transport->Start([g](const Status& reason) { g->Abort(reason); });
  return std::unique_ptr<Communicator>(
      std::make_unique<ShmP2pCommunicator>(std::move(gloo), std::move(transport)));
}

}  // namespace archi
