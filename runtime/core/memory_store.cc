#include "runtime/core/memory_store.h"

#include <charconv>

namespace archi {

InMemoryStore::InMemoryStore() : timer_([this](std::stop_token st) { TimerLoop(st); }) {}

InMemoryStore::~InMemoryStore() {
  Shutdown();
  timer_.request_stop();
  timer_cv_.notify_all();
}

bool InMemoryStore::AllPresentLocked(const std::vector<std::string>& keys) const {
  for (const auto& k : keys) {
    if (!data_.count(k)) return false;
  }
  return true;
}

void InMemoryStore::CollectReadyLocked(Ready* ready) {
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (AllPresentLocked(it->second.keys)) {
      ready->emplace_back(std::move(it->second.done), Status::Ok());
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

void InMemoryStore::Run(Ready& ready) {
  for (auto& [cb, st] : ready) {
    if (cb) cb(st);
  }
}

Status InMemoryStore::Set(const std::string& key, const std::string& value, Deadline) {
  Ready ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key] = value;
    CollectReadyLocked(&ready);
  }
  cv_.notify_all();
  Run(ready);
  return Status::Ok();
}

Result<std::string> InMemoryStore::Get(const std::string& key, Deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = data_.find(key);
  if (it == data_.end()) return NotFoundError("key '" + key + "' not found");
  return it->second;
}

Result<int64_t> InMemoryStore::Add(const std::string& key, int64_t delta, Deadline) {
  Ready ready;
  int64_t value = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    if (it != data_.end()) {
      const std::string& s = it->second;
      auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
      if (ec != std::errc() || ptr != s.data() + s.size()) {
        return InvalidArgumentError("key '" + key + "' holds a non-integer value");
      }
    }
    if (__builtin_add_overflow(value, delta, &value)) {
      return OutOfRangeError("adding " + std::to_string(delta) + " to key '" + key +
                             "' overflows int64");
    }
    data_[key] = std::to_string(value);
    CollectReadyLocked(&ready);
  }
  cv_.notify_all();
  Run(ready);
  return value;
}

Result<std::string> InMemoryStore::CompareSet(const std::string& key, const std::string& expected,
                                              const std::string& desired, Deadline) {
  Ready ready;
  std::string result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    bool match = (it == data_.end()) ? expected.empty() : it->second == expected;
    if (match) {
      data_[key] = desired;
      result = desired;
      CollectReadyLocked(&ready);
    } else {
      result = it == data_.end() ? std::string() : it->second;
    }
  }
  cv_.notify_all();
  Run(ready);
  return result;
}

Result<bool> InMemoryStore::Delete(const std::string& key, Deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.erase(key) > 0;
}

Status InMemoryStore::Wait(const std::vector<std::string>& keys, Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!AllPresentLocked(keys)) {
    if (shutdown_) return CancelledError("store shut down");
    if (deadline.Expired()) {
      std::string missing;
      for (const auto& k : keys) {
        if (!data_.count(k)) missing += (missing.empty() ? "" : ", ") + k;
      }
      return DeadlineExceededError("timed out waiting for keys: " + missing);
    }
    if (deadline.infinite()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, deadline.time_point());
    }
  }
  return Status::Ok();
}

Result<KeyValues> InMemoryStore::List(const std::string& prefix, Deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  KeyValues out;
  for (auto it = data_.lower_bound(prefix); it != data_.end() && it->first.starts_with(prefix); ++it) {
    out.emplace_back(it->first, it->second);
  }
  return out;
}

Result<int64_t> InMemoryStore::DeletePrefix(const std::string& prefix, Deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (auto it = data_.lower_bound(prefix); it != data_.end() && it->first.starts_with(prefix);) {
    it = data_.erase(it);
    ++n;
  }
  return n;
}

uint64_t InMemoryStore::WatchAll(std::vector<std::string> keys, Deadline deadline,
                                 WatchCallback done) {
  Status immediate;
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_watch_id_++;
    if (shutdown_) {
      immediate = CancelledError("store shut down");
    } else if (AllPresentLocked(keys)) {
      immediate = Status::Ok();
    } else if (deadline.Expired()) {
      immediate = DeadlineExceededError("timed out waiting for keys");
    } else {
      watches_.emplace(id, Watch{std::move(keys), deadline, std::move(done)});
      ++watch_generation_;  // wakes the timer: this deadline may be earlier than its current one
      timer_cv_.notify_all();
      return id;
    }
  }
  if (done) done(immediate);
  return id;
}

void InMemoryStore::CancelWatch(uint64_t id) {
  WatchCallback cb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = watches_.find(id);
    if (it == watches_.end()) return;
    cb = std::move(it->second.done);
    watches_.erase(it);
  }
  if (cb) cb(CancelledError("watch cancelled"));
}

void InMemoryStore::Shutdown() {
  Ready ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
    for (auto& [id, w] : watches_) ready.emplace_back(std::move(w.done), CancelledError("store shut down"));
    watches_.clear();
  }
  cv_.notify_all();
  timer_cv_.notify_all();
  Run(ready);
}

size_t InMemoryStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.size();
}

size_t InMemoryStore::pending_watches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watches_.size();
}

void InMemoryStore::TimerLoop(std::stop_token stop) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop.stop_requested()) {
    Deadline next = Deadline::Infinite();
    Ready ready;
    auto now = Clock::now();
    for (auto it = watches_.begin(); it != watches_.end();) {
      if (it->second.deadline.time_point() <= now) {
        ready.emplace_back(std::move(it->second.done),
                           DeadlineExceededError("timed out waiting for keys"));
        it = watches_.erase(it);
      } else {
        next = Deadline::Min(next, it->second.deadline);
        ++it;
      }
    }
    if (!ready.empty()) {
      lock.unlock();
      Run(ready);
      lock.lock();
      continue;
    }
    // Sleep until the earliest deadline, or until a new watch arrives (its deadline may be
    // earlier than `next`).
    const uint64_t generation = watch_generation_;
    if (next.infinite()) {
      timer_cv_.wait(lock, stop, [&] { return watch_generation_ != generation; });
    } else {
      timer_cv_.wait_until(lock, stop, next.time_point(),
                           [&] { return watch_generation_ != generation; });
    }
  }
}

}  // namespace archi
