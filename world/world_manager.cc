#include "world/world_manager.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "runtime/core/logging.h"
#include "runtime/core/params.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace archi {

std::string_view WorldStateName(WorldState state) {
  switch (state) {
    case WorldState::kInitializing: return "INITIALIZING";
    case WorldState::kReady: return "READY";
    case WorldState::kBroken: return "BROKEN";
    case WorldState::kRemoved: return "REMOVED";
  }
  return "?";
}

WorldOptions WorldOptions::FromEnv() {
  WorldOptions o;
  o.init_timeout_ms = EnvInt("ARCHI_WORLD_INIT_TIMEOUT_MS", o.init_timeout_ms, 1, INT32_MAX);
  o.op_timeout_ms = EnvInt("ARCHI_WORLD_OP_TIMEOUT_MS", o.op_timeout_ms, 1, INT32_MAX);
  o.heartbeat_interval_ms = EnvInt("ARCHI_HEARTBEAT_INTERVAL_MS", o.heartbeat_interval_ms, 10, 60'000);
  o.heartbeat_timeout_ms = EnvInt("ARCHI_HEARTBEAT_TIMEOUT_MS", o.heartbeat_timeout_ms, 50, INT32_MAX);
  o.hostname = EnvString("ARCHI_BIND_HOST", "");
  return o;
}

namespace {

constexpr size_t kMaxWorldName = 128;

// Identity of this kernel + pid namespace: peers with the same identity can watch each other's
// process handles (pidfd).
const std::string& HostIdentity() {
  static const std::string id = [] {
    std::string boot;
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    std::getline(f, boot);
    char ns[128] = {0};
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
    std::string out = boot + "|" + (n > 0 ? std::string(ns, n) : std::string("?"));
    for (char& c : out) {
      if (c == ' ') c = '_';
    }
    return out;
  }();
  return id;
}

Status ValidateName(const std::string& name) {
  if (name.empty()) return InvalidArgumentError("world name is empty");
  if (name.size() > kMaxWorldName) {
    return InvalidArgumentError("world name longer than " + std::to_string(kMaxWorldName) + " characters");
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':')) {
      return InvalidArgumentError("world name '" + name +
                                  "' may only contain letters, digits and _ - . :");
    }
  }
  return Status::Ok();
}

struct Peer {
  int rank = 0;
  int64_t pid = 0;
  bool same_host = false;
  int pidfd = -1;
  std::string last_hb;
  Clock::time_point last_change{};
};

}  // namespace

struct World {
  std::string name;
  int rank = 0;
  int size = 0;
  uint64_t epoch = 0;
  WorldOptions opts;
  std::shared_ptr<Store> root;
  std::shared_ptr<PrefixStore> estore;  // "archi/world/<name>/e<epoch>"
  std::shared_ptr<Communicator> comm;
  std::string tag;    // for logs: "[name rank/size eN]"
  std::string label;  // for errors: "world 'name' eN rank R/S"

  mutable std::mutex mu;
  WorldState state = WorldState::kInitializing;
  Status error;
  Clock::time_point broken_at{};
  double init_ms = 0;

  // Watchdog-owned after READY.
  std::vector<Peer> peers;
  Clock::time_point next_tick{};
  Clock::time_point last_store_ok{};
  bool store_warned = false;
  std::atomic<bool> needs_close_mark{false};

  ~World() {
    for (auto& p : peers) {
      if (p.pidfd >= 0) ::close(p.pidfd);
    }
  }

  WorldInfo Info() const {
    std::lock_guard<std::mutex> lock(mu);
    return InfoLocked();
  }
  WorldInfo InfoLocked() const {
    WorldInfo i;
    i.name = name;
    i.rank = rank;
    i.size = size;
    i.epoch = epoch;
    i.state = state;
    i.backend = opts.backend;
    i.error = error;
    i.init_ms = init_ms;
    i.broken_at = broken_at;
    return i;
  }
  WorldState State() const {
    std::lock_guard<std::mutex> lock(mu);
    return state;
  }
};

class WorldManager::Impl {
 public:
  Impl() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ARCHI_CHECK(epfd_ >= 0 && wakefd_ >= 0, "epoll/eventfd: {}", std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // 0 = wake-up fd
    ARCHI_CHECK(epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) == 0, "epoll_ctl");
    events_thread_ = std::jthread([this](std::stop_token st) { EventLoop(st); });
    watchdog_ = std::jthread([this](std::stop_token st) { WatchdogLoop(st); });
  }

  ~Impl() {
    std::vector<std::string> names;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [n, w] : worlds_) names.push_back(n);
    }
    for (auto& n : names) RemoveWorld(n, Deadline::AfterMs(300)).IgnoreError();
    watchdog_.request_stop();
    Wake();
    if (watchdog_.joinable()) watchdog_.join();
    events_thread_.request_stop();
    events_cv_.notify_all();
    if (events_thread_.joinable()) events_thread_.join();
    ::close(epfd_);
    ::close(wakefd_);
  }

  Status InitializeWorld(const std::string& name, int rank, int size, std::shared_ptr<Store> store,
                         WorldOptions opts) {
    ARCHI_RETURN_IF_ERROR(ValidateName(name));
    if (size < 1) return InvalidArgumentError("world '" + name + "': size " + std::to_string(size) + " < 1");
    if (rank < 0 || rank >= size) {
      return InvalidArgumentError("world '" + name + "': rank " + std::to_string(rank) +
                                  " outside [0, " + std::to_string(size) + ")");
    }
    if (!store) return InvalidArgumentError("world '" + name + "': no store given");
    if (opts.init_timeout_ms <= 0 || opts.op_timeout_ms <= 0 || opts.heartbeat_interval_ms <= 0 ||
        opts.heartbeat_timeout_ms <= 0) {
      return InvalidArgumentError("world '" + name + "': timeouts and intervals must be positive");
    }
    auto w = std::make_shared<World>();
    w->name = name;
    w->rank = rank;
    w->size = size;
    w->opts = opts;
    w->root = std::move(store);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = worlds_.find(name);
      if (it != worlds_.end()) {
        return AlreadyExistsError("world '" + name + "' already exists in this process (state " +
                                  std::string(WorldStateName(it->second->State())) +
                                  "); remove it first");
      }
      worlds_[name] = w;
      generation_.fetch_add(1, std::memory_order_release);
    }
    auto t0 = Clock::now();
    Status st = Rendezvous(*w);
    if (!st.ok()) {
      std::shared_ptr<Communicator> comm;
      {
        std::lock_guard<std::mutex> lock(w->mu);
        comm = std::move(w->comm);
      }
      if (comm) comm->Abort(st);
      {
        std::lock_guard<std::mutex> lock(mu_);
        worlds_.erase(name);
        generation_.fetch_add(1, std::memory_order_release);
      }
      ARCHI_LOG_WARN("{} initialisation failed: {}", WorldTag(name, rank, size, w->epoch), st.ToString());
      return st.WithContext("world '" + name + "' rank " + std::to_string(rank) + "/" +
                            std::to_string(size));
    }
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->init_ms = MsSince(t0);
      if (w->state == WorldState::kInitializing) {
        w->state = WorldState::kReady;
        Emit(w->InfoLocked());
      }
    }
    RegisterPeers(w);
    ARCHI_LOG_INFO("{} ready in {:.1f} ms", w->tag, w->init_ms);
    return Status::Ok();
  }

  Status RemoveWorld(const std::string& name, Deadline deadline) {
    std::shared_ptr<World> w;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = worlds_.find(name);
      if (it == worlds_.end()) return NotFoundError("world '" + name + "' not found");
      if (it->second->State() == WorldState::kInitializing) {
        return FailedPreconditionError("world '" + name + "' is still initialising");
      }
      w = it->second;
      worlds_.erase(it);
      generation_.fetch_add(1, std::memory_order_release);
    }
    WorldState prev;
    WorldInfo removed_info;
    std::shared_ptr<Communicator> comm;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      prev = w->state;
      w->state = WorldState::kRemoved;
      removed_info = w->InfoLocked();
      comm = std::move(w->comm);
    }
    UnregisterPeers(*w);
    if (comm) {
      comm->Abort(CancelledError(w->label + ": world removed"));
      comm.reset();  // releases sockets and threads (bounded, even with dead peers)
    }
    // Store clean-up, best effort within the deadline.
    auto d = Deadline::Min(deadline, Deadline::AfterMs(500));
    auto& es = *w->estore;
    std::string who = "rank " + std::to_string(w->rank) + " removed the world";
    es.Set("closed", prev == WorldState::kBroken ? "broken: " + std::string(w->Info().error.message()) : who, d)
        .IgnoreError();
    auto left = es.Add("left", 1, d);
    if (prev == WorldState::kBroken || (left.ok() && *left >= w->size)) {
      es.DeletePrefix("", d).IgnoreError();
    } else {
      es.Delete("hb/" + std::to_string(w->rank), d).IgnoreError();
    }
    ARCHI_LOG_INFO("{} removed (was {})", w->tag, WorldStateName(prev));
    Emit(std::move(removed_info));
    return Status::Ok();
  }

  std::shared_ptr<World> Find(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = worlds_.find(name);
    return it == worlds_.end() ? nullptr : it->second;
  }

  Result<WorldInfo> GetWorld(const std::string& name) const {
    auto w = Find(name);
    if (!w) return NotFoundError("world '" + name + "' not found");
    return w->Info();
  }

  std::vector<WorldInfo> ListWorlds() const {
    std::vector<std::shared_ptr<World>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [n, w] : worlds_) all.push_back(w);
    }
    std::vector<WorldInfo> out;
    for (auto& w : all) out.push_back(w->Info());
    return out;
  }

  int AddStateCallback(WorldCallback cb) {
    std::lock_guard<std::mutex> lock(events_mu_);
    int id = next_cb_id_++;
    callbacks_[id] = std::move(cb);
    return id;
  }
  void RemoveStateCallback(int id) {
    std::lock_guard<std::mutex> lock(events_mu_);
    callbacks_.erase(id);
  }

  // The world an op names, through a per-thread cache of the last lookup (valid while no world
  // was added or removed): an op costs the same whatever the number of worlds, and takes no
  // manager-wide lock. A stale entry only points to a world that is still in the map.
  std::shared_ptr<World> FindForOp(const std::string& name) const {
    struct Cached {
      uint64_t manager = 0;
      uint64_t generation = 0;
      std::string name;
      std::weak_ptr<World> world;
    };
    thread_local Cached cache;
    const uint64_t gen = generation_.load(std::memory_order_acquire);
    if (cache.manager == id_ && cache.generation == gen && cache.name == name) {
      if (auto w = cache.world.lock()) return w;
    }
    auto w = Find(name);
    if (w) {
      cache.manager = id_;
      cache.generation = gen;
      cache.name = name;
      cache.world = w;
    }
    return w;
  }

  Result<std::shared_ptr<Communicator>> Comm(const std::string& name) const {
    auto w = FindForOp(name);
    if (!w) return NotFoundError("world '" + name + "' not found (never initialised, or removed)");
    std::lock_guard<std::mutex> lock(w->mu);
    switch (w->state) {
      case WorldState::kReady: return w->comm;
      case WorldState::kBroken: return w->error;
      case WorldState::kInitializing:
        return FailedPreconditionError("world '" + name + "' is still initialising");
      case WorldState::kRemoved: return NotFoundError("world '" + name + "' was removed");
    }
    return InternalError("bad world state");
  }

  // Marks the world broken once (first cause wins), aborts its communicator and tells the peers.
  // `from_comm`: called by the communicator's own on_broken (it is already broken; taking a
  // reference to it here could make its own thread run its destructor).
  void Break(const std::shared_ptr<World>& w, const Status& cause, bool from_comm = false) {
    WorldInfo info;
    std::shared_ptr<Communicator> comm;
    {
      std::lock_guard<std::mutex> lock(w->mu);
      if (w->state != WorldState::kReady && w->state != WorldState::kInitializing) return;
      w->state = WorldState::kBroken;
      w->error = cause;
      w->broken_at = Clock::now();
      info = w->InfoLocked();
      // Emitted under the world's lock so that a concurrent RemoveWorld's event comes after.
      Emit(std::move(info));
      if (!from_comm) comm = w->comm;  // a copy: RemoveWorld may drop its reference meanwhile
    }
    ARCHI_LOG_WARN("{} BROKEN: {}", w->tag, cause.ToString());
    if (comm) comm->Abort(cause);
    w->needs_close_mark = true;
    Wake();
  }

 private:
  Status Rendezvous(World& w) {
    const auto d = Deadline::AfterMs(w.opts.init_timeout_ms);
    const std::string base = "archi/world/" + w.name;
    const std::string token = HostIdentity() + "#" + std::to_string(::getpid()) + "#" +
                              std::to_string(token_counter_.fetch_add(1));
    auto epoch_store = [&](uint64_t e) {
      return std::make_shared<PrefixStore>(w.root, base + "/e" + std::to_string(e));
    };
    std::string created_size;  // the size rank 0 gave the epoch (read before joining it)
    if (w.rank == 0) {
      created_size = std::to_string(w.size);
      ARCHI_ASSIGN_OR_RETURN(int64_t e, w.root->Add(base + "/epoch", 1, d));
      w.epoch = static_cast<uint64_t>(e);
      w.estore = epoch_store(w.epoch);
      ARCHI_RETURN_IF_ERROR(w.estore->Set("size", std::to_string(w.size), d));
      ARCHI_RETURN_IF_ERROR(w.estore->Set("rank/0", token, d));
      ARCHI_RETURN_IF_ERROR(w.root->Set(base + "/current", std::to_string(w.epoch), d));
    } else {
      for (;;) {
        ARCHI_RETURN_IF_ERROR(WaitOrExplain(*w.root, {base + "/current"}, d,
                                            "rank 0 never created the world"));
        ARCHI_ASSIGN_OR_RETURN(std::string cur, w.root->Get(base + "/current", d));
        auto e = ParseInt("current epoch", cur);
        if (!e.ok()) return InternalError("corrupt epoch key " + base + "/current: " + cur);
        auto es = epoch_store(static_cast<uint64_t>(*e));
        // Stale: closed, or already cleaned up (its keys, "size" included, were deleted when
        // its last rank left), or our rank there is taken by an earlier incarnation.
        auto size_key = es->Get("size", d);
        bool stale = es->Get("closed", d).ok() || !size_key.ok();
        if (!stale) {
          ARCHI_ASSIGN_OR_RETURN(std::string holder,
                                 es->CompareSet("rank/" + std::to_string(w.rank), "", token, d));
          stale = holder != token;
        }
        if (!stale) {
          w.epoch = static_cast<uint64_t>(*e);
          w.estore = es;
          created_size = *size_key;
          break;
        }
        // The current epoch is closed or our rank there is taken (a previous incarnation): wait
        // for rank 0 to open the next one.
        ARCHI_RETURN_IF_ERROR(WaitOrExplain(
            *w.root, {base + "/e" + std::to_string(*e + 1) + "/size"}, d,
            "epoch " + std::to_string(*e) + " is closed or rank " + std::to_string(w.rank) +
                " is taken there, and rank 0 has not opened a new epoch"));
      }
    }
    w.tag = WorldTag(w.name, w.rank, w.size, w.epoch);
    w.label = "world '" + w.name + "' e" + std::to_string(w.epoch) + " rank " +
              std::to_string(w.rank) + "/" + std::to_string(w.size);
    Status st = JoinEpoch(w, created_size, d);
    if (!st.ok()) {
      // Nobody may join this epoch any more; the next attempt opens a new one. Rank 0 owns the
      // epoch and drops its keys (a peer down for hours costs one small key per attempt).
      auto d2 = Deadline::AfterMs(200);
      if (w.rank == 0) w.estore->DeletePrefix("", d2).IgnoreError();
      // "closed" (one small key left per failed epoch) tells ranks still joining to give up now.
      w.estore->Set("closed", "initialisation failed at rank " + std::to_string(w.rank) + ": " +
                                  std::string(st.message()), d2)
          .IgnoreError();
    }
    return st;
  }

  static Status WaitOrExplain(Store& s, const std::vector<std::string>& keys, Deadline d,
                              const std::string& why) {
    Status st = s.Wait(keys, d);
    if (st.code() == StatusCode::kDeadlineExceeded) return DeadlineExceededError(why + " (" + std::string(st.message()) + ")");
    return st;
  }

  Status JoinEpoch(World& w, const std::string& created_size, Deadline d) {
    auto& es = *w.estore;
    const std::string me = std::to_string(w.rank);
    // Published even when the size disagrees, so that rank 0 sees the disagreement too.
    ARCHI_RETURN_IF_ERROR(es.Set("member/" + me,
                                 std::to_string(w.size) + " " + std::to_string(::getpid()) + " " +
                                     HostIdentity(),
                                 d));
    if (created_size != std::to_string(w.size)) {
      return InvalidArgumentError("size disagreement: this rank says size " + std::to_string(w.size) +
                                  " but rank 0 created the world with size " + created_size);
    }
    std::vector<std::string> keys;
    for (int r = 0; r < w.size; ++r) keys.push_back("member/" + std::to_string(r));
    // Wait in slices so that an epoch another rank gave up on ("closed") fails us at once
    // instead of at our deadline.
    for (;;) {
      Status st = es.Wait(keys, Deadline::Min(d, Deadline::AfterMs(100)));
      if (st.ok()) break;
      if (st.code() != StatusCode::kDeadlineExceeded) return st;
      if (auto closed = es.Get("closed", d); closed.ok()) {
        return AbortedError("another rank gave up on epoch " + std::to_string(w.epoch) + ": " + *closed);
      }
      if (d.Expired()) return DeadlineExceededError("not every rank arrived (" + std::string(st.message()) + ")");
    }
    w.peers.clear();
    for (int r = 0; r < w.size; ++r) {
      ARCHI_ASSIGN_OR_RETURN(std::string info, es.Get("member/" + std::to_string(r), d));
      std::istringstream in(info);
      int64_t sz = 0, pid = 0;
      std::string host;
      in >> sz >> pid >> host;
      if (sz != w.size) {
        return InvalidArgumentError("size disagreement: rank " + std::to_string(r) + " says size " +
                                    std::to_string(sz) + ", this rank says " + std::to_string(w.size));
      }
      if (r == w.rank) continue;
      Peer p;
      p.rank = r;
      p.pid = pid;
      p.same_host = host == HostIdentity();
      w.peers.push_back(p);
    }
    CommOptions co;
    co.connect_timeout_ms = std::max<int64_t>(1, d.RemainingMs().count());
    co.op_timeout_ms = w.opts.op_timeout_ms;
    co.hostname = w.opts.hostname;
    co.shm = w.opts.shm;
    co.device_index = w.opts.device_index;
    co.label = w.label;
    std::weak_ptr<World> weak = Find(w.name);
    co.on_broken = [this, weak](const Status& s) {
      if (auto sw = weak.lock()) Break(sw, s, /*from_comm=*/true);
    };
    ARCHI_ASSIGN_OR_RETURN(auto comm, CreateCommunicator(w.opts.backend, w.rank, w.size,
                                                         std::make_shared<PrefixStore>(w.estore, "comm"),
                                                         std::move(co)));
    std::lock_guard<std::mutex> lock(w.mu);
    w.comm = std::move(comm);
    return Status::Ok();
  }

  void RegisterPeers(const std::shared_ptr<World>& w) {
    std::lock_guard<std::mutex> lock(wd_mu_);
    auto now = Clock::now();
    w->next_tick = now;
    w->last_store_ok = now;
    for (auto& p : w->peers) {
      p.last_change = now;
      if (!p.same_host) continue;
      int fd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(p.pid), 0));
      if (fd < 0) {
        if (errno == ESRCH) {
          Break(w, AbortedError(w->label + ": peer rank " + std::to_string(p.rank) + " (pid " +
                                std::to_string(p.pid) + ") exited"));
        } else {
          ARCHI_LOG_DEBUG("{} pidfd_open({}) failed: {}; relying on heartbeats", w->tag, p.pid,
                          std::strerror(errno));
        }
        continue;
      }
      p.pidfd = fd;
      uint64_t id = next_reg_id_++;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = id;
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0) {
        regs_[id] = {w, p.rank};
      }
    }
    watched_.push_back(w);
    Wake();
  }

  void UnregisterPeers(World& w) {
    std::lock_guard<std::mutex> lock(wd_mu_);
    for (auto it = regs_.begin(); it != regs_.end();) {
      auto sw = it->second.world.lock();
      if (!sw || sw.get() == &w) {
        if (sw) {
          for (auto& p : sw->peers) {
            if (p.rank == it->second.peer_rank && p.pidfd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, p.pidfd, nullptr);
          }
        }
        it = regs_.erase(it);
      } else {
        ++it;
      }
    }
    std::erase_if(watched_, [&](const std::shared_ptr<World>& x) { return x.get() == &w; });
  }

  void Wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wakefd_, &one, sizeof(one));
  }

  // One thread for every world: process handles, heartbeats, closed marks.
  void WatchdogLoop(std::stop_token st) {
    auto last_loop = Clock::now();
    while (!st.stop_requested()) {
      std::vector<std::shared_ptr<World>> worlds;
      Clock::time_point next = Clock::now() + std::chrono::seconds(1);
      {
        std::lock_guard<std::mutex> lock(wd_mu_);
        worlds = watched_;
      }
      for (auto& w : worlds) next = std::min(next, w->next_tick);
      int timeout_ms = static_cast<int>(std::max<int64_t>(
          0, std::chrono::duration_cast<Millis>(next - Clock::now()).count()));
      epoll_event evs[16];
      int n = epoll_wait(epfd_, evs, 16, timeout_ms);
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.u64 == 0) {
          uint64_t v;
          [[maybe_unused]] auto r = ::read(wakefd_, &v, sizeof(v));
          continue;
        }
        std::shared_ptr<World> w;
        int peer = -1;
        {
          std::lock_guard<std::mutex> lock(wd_mu_);
          auto it = regs_.find(evs[i].data.u64);
          if (it == regs_.end()) continue;
          w = it->second.world.lock();
          peer = it->second.peer_rank;
          for (auto& p : w ? w->peers : std::vector<Peer>{}) {
            if (p.rank == peer && p.pidfd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, p.pidfd, nullptr);
          }
          regs_.erase(it);
        }
        if (!w) continue;
        int64_t pid = 0;
        for (auto& p : w->peers) {
          if (p.rank == peer) pid = p.pid;
        }
        Break(w, AbortedError(w->label + ": peer rank " + std::to_string(peer) + " (pid " +
                              std::to_string(pid) + ") exited"));
      }
      auto now = Clock::now();
      // If this process itself was stopped (SIGSTOP, debugger), peers' heartbeats look stale:
      // restart their clocks rather than blame them.
      bool we_stalled = now - last_loop > Millis(500);
      last_loop = now;
      for (auto& w : worlds) {
        if (we_stalled) {
          for (auto& p : w->peers) p.last_change = now;
          w->last_store_ok = now;
        }
        if (now >= w->next_tick) Tick(w, now);
      }
      {
        // Drop worlds that are no longer READY and have nothing left to publish.
        std::lock_guard<std::mutex> lock(wd_mu_);
        std::erase_if(watched_, [](const std::shared_ptr<World>& w) {
          return w->State() != WorldState::kReady && !w->needs_close_mark;
        });
      }
    }
  }

  void Tick(const std::shared_ptr<World>& w, Clock::time_point now) {
    w->next_tick = now + Millis(w->opts.heartbeat_interval_ms);
    auto d = Deadline::After(Millis(std::min<int64_t>(w->opts.heartbeat_interval_ms * 2, 500)));
    auto& es = *w->estore;
    if (w->needs_close_mark.exchange(false)) {
      es.Set("closed", std::string(w->Info().error.message()), d).IgnoreError();
      return;
    }
    if (w->State() != WorldState::kReady) return;
    auto added = es.Add("hb/" + std::to_string(w->rank), 1, d);
    auto kv = added.ok() ? es.List("", d) : Result<KeyValues>(added.status());
    if (!kv.ok()) {
      if (!w->store_warned && now - w->last_store_ok > Millis(w->opts.heartbeat_timeout_ms)) {
        w->store_warned = true;
        ARCHI_LOG_WARN("{} store unreachable for {} ms ({}); peers are watched by their "
                       "connections, process handles and op deadlines only",
                       w->tag, w->opts.heartbeat_timeout_ms, kv.status().ToString());
      }
      return;
    }
    w->last_store_ok = now;
    w->store_warned = false;
    std::map<std::string, std::string> m(kv->begin(), kv->end());
    if (auto it = m.find("closed"); it != m.end()) {
      Break(w, AbortedError(w->label + ": a peer closed the world (" + it->second + ")"));
      return;
    }
    for (auto& p : w->peers) {
      auto it = m.find("hb/" + std::to_string(p.rank));
      std::string v = it == m.end() ? std::string() : it->second;
      if (v != p.last_hb) {
        p.last_hb = v;
        p.last_change = now;
      } else if (now - p.last_change > Millis(w->opts.heartbeat_timeout_ms)) {
        auto ms = std::chrono::duration_cast<Millis>(now - p.last_change).count();
        Break(w, AbortedError(w->label + ": peer rank " + std::to_string(p.rank) + " (pid " +
                              std::to_string(p.pid) + ") missed heartbeats for " +
                              std::to_string(ms) + " ms (hung or unreachable)"));
        return;
      }
    }
  }

  void Emit(WorldInfo info) {
    {
      std::lock_guard<std::mutex> lock(events_mu_);
      events_.push_back(std::move(info));
    }
    events_cv_.notify_one();
  }

  void EventLoop(std::stop_token st) {
    std::unique_lock<std::mutex> lock(events_mu_);
    for (;;) {
      events_cv_.wait(lock, [&] { return st.stop_requested() || !events_.empty(); });
      if (events_.empty()) return;  // stop requested and drained
      WorldInfo info = std::move(events_.front());
      events_.pop_front();
      auto cbs = callbacks_;
      lock.unlock();
      for (auto& [id, cb] : cbs) cb(info);
      lock.lock();
    }
  }

  struct Registration {
    std::weak_ptr<World> world;
    int peer_rank;
  };

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<World>> worlds_;
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) on every insert into / erase from worlds_
  // Distinguishes managers in FindForOp's per-thread cache (an address could be reused).
  const uint64_t id_ = [] {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }();
  std::atomic<uint64_t> token_counter_{0};

  std::mutex wd_mu_;
  std::vector<std::shared_ptr<World>> watched_;
  std::map<uint64_t, Registration> regs_;
  uint64_t next_reg_id_ = 1;
  int epfd_ = -1;
  int wakefd_ = -1;

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<WorldInfo> events_;
  std::map<int, WorldCallback> callbacks_;
  int next_cb_id_ = 1;

  std::jthread events_thread_;
  std::jthread watchdog_;
};

WorldManager::WorldManager() : impl_(std::make_unique<Impl>()) {}
WorldManager::~WorldManager() = default;

Status WorldManager::InitializeWorld(const std::string& name, int rank, int size,
                                     std::shared_ptr<Store> store, WorldOptions options) {
  return impl_->InitializeWorld(name, rank, size, std::move(store), std::move(options));
}
Status WorldManager::RemoveWorld(const std::string& name, Deadline deadline) {
  return impl_->RemoveWorld(name, deadline);
}
Result<WorldInfo> WorldManager::GetWorld(const std::string& name) const { return impl_->GetWorld(name); }
std::vector<WorldInfo> WorldManager::ListWorlds() const { return impl_->ListWorlds(); }
int WorldManager::AddStateCallback(WorldCallback cb) { return impl_->AddStateCallback(std::move(cb)); }
void WorldManager::RemoveStateCallback(int id) { impl_->RemoveStateCallback(id); }
Result<std::shared_ptr<Communicator>> WorldManager::GetCommunicator(const std::string& world) const {
  return impl_->Comm(world);
}

#define ARCHI_WORLD_OP_(call)                       \
  auto comm = impl_->Comm(world);                   \
  if (!comm.ok()) return CompletedWork(comm.status()); \
  return (*comm)->call

std::shared_ptr<Work> WorldManager::Send(const std::string& world, const Tensor& tensor, int dst,
                                         uint32_t tag, OpOptions opts) {
  ARCHI_WORLD_OP_(Send(tensor, dst, tag, opts));
}
std::shared_ptr<Work> WorldManager::Recv(const std::string& world, Tensor& tensor, int src,
                                         uint32_t tag, OpOptions opts) {
  ARCHI_WORLD_OP_(Recv(tensor, src, tag, opts));
}
std::shared_ptr<Work> WorldManager::Broadcast(const std::string& world, Tensor& tensor, int root,
                                              OpOptions opts) {
  ARCHI_WORLD_OP_(Broadcast(tensor, root, opts));
}
std::shared_ptr<Work> WorldManager::AllReduce(const std::string& world, Tensor& tensor, ReduceOp op,
                                              OpOptions opts) {
  ARCHI_WORLD_OP_(AllReduce(tensor, op, opts));
}
std::shared_ptr<Work> WorldManager::AllGather(const std::string& world, const Tensor& input,
                                              Tensor& output, OpOptions opts) {
  ARCHI_WORLD_OP_(AllGather(input, output, opts));
}
std::shared_ptr<Work> WorldManager::ReduceScatter(const std::string& world, const Tensor& input,
                                                  Tensor& output, ReduceOp op, OpOptions opts) {
  ARCHI_WORLD_OP_(ReduceScatter(input, output, op, opts));
}
std::shared_ptr<Work> WorldManager::Barrier(const std::string& world, OpOptions opts) {
  ARCHI_WORLD_OP_(Barrier(opts));
}
#undef ARCHI_WORLD_OP_

}  // namespace archi
