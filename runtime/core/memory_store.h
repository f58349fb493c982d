// InMemoryStore: a thread-safe Store held in this process's memory. It is the engine behind the
// gRPC store service and the store used by multi-rank tests that run ranks as threads.
//
// Besides the blocking Store calls it offers WatchAll(), an asynchronous wait: the callback runs
// exactly once, with OK when all keys exist, kDeadlineExceeded at the deadline, or kCancelled when
// the store shuts down or the watch is cancelled. Callbacks run on the thread that completed them
// (a writer, the internal timer thread, the Shutdown or CancelWatch caller, or the WatchAll caller
// itself, before WatchAll returns, when the watch completes at once) without the store lock held,
// so they may call back into the store. No thread is held per waiter.
// Thread safety: every method is thread-safe. Destruction cancels outstanding watches.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/store.h"

namespace archi {

class InMemoryStore final : public Store {
 public:
  using WatchCallback = std::function<void(Status)>;

  InMemoryStore();
  ~InMemoryStore() override;
  InMemoryStore(const InMemoryStore&) = delete;
  InMemoryStore& operator=(const InMemoryStore&) = delete;

  Status Set(const std::string& key, const std::string& value, Deadline deadline) override;
  Result<std::string> Get(const std::string& key, Deadline deadline) override;
  Result<int64_t> Add(const std::string& key, int64_t delta, Deadline deadline) override;
  Result<std::string> CompareSet(const std::string& key, const std::string& expected,
                                 const std::string& desired, Deadline deadline) override;
  Result<bool> Delete(const std::string& key, Deadline deadline) override;
  Status Wait(const std::vector<std::string>& keys, Deadline deadline) override;
  Result<KeyValues> List(const std::string& prefix, Deadline deadline) override;
  Result<int64_t> DeletePrefix(const std::string& prefix, Deadline deadline) override;

  // Asynchronous wait (see class comment). Returns an id for CancelWatch.
  uint64_t WatchAll(std::vector<std::string> keys, Deadline deadline, WatchCallback done);
  // Cancels a pending watch (its callback runs with kCancelled). No-op if already finished.
  void CancelWatch(uint64_t id);
  // Cancels every watch and makes later waits fail with kCancelled.
  void Shutdown();

  size_t size() const;
  size_t pending_watches() const;

 private:
  struct Watch {
    std::vector<std::string> keys;
    Deadline deadline;
    WatchCallback done;
  };
  using Ready = std::vector<std::pair<WatchCallback, Status>>;

  bool AllPresentLocked(const std::vector<std::string>& keys) const;
  void CollectReadyLocked(Ready* ready);  // moves satisfied watches into `ready`
  static void Run(Ready& ready);
  void TimerLoop(std::stop_token stop);

  mutable std::mutex mu_;
  std::condition_variable cv_;        // signalled on every write (blocking Wait)
  std::condition_variable_any timer_cv_;
  std::map<std::string, std::string> data_;
  std::map<uint64_t, Watch> watches_;
  uint64_t next_watch_id_ = 1;
  uint64_t watch_generation_ = 0;  // bumped when a watch is added (wakes the timer thread)
  bool shutdown_ = false;
  std::jthread timer_;  // last member: started after everything it uses
};

}  // namespace archi
