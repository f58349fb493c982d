// PendingWork: the Work returned by backends. Completed exactly once (the first Complete() wins);
// Wait() blocks on a condition variable, never on the transport.
// Thread safety: every method is thread-safe.
#pragma once

#include <condition_variable>
#include <mutex>

#include "collectives/communicator.h"

namespace archi {

class PendingWork final : public Work {
 public:
  PendingWork() = default;

  bool IsCompleted() const override {
    std::lock_guard lock(mu_);
    return done_;
  }

  Status Wait(Deadline deadline) override {
    std::unique_lock lock(mu_);
    if (deadline.infinite()) {
      cv_.wait(lock, [&] { return done_; });
    } else if (!cv_.wait_until(lock, deadline.time_point(), [&] { return done_; })) {
      return DeadlineExceededError("Work::Wait: deadline passed, op still pending");
    }
    return status_;
  }

  // Returns false when the work was already completed (the status is then ignored).
  bool Complete(Status status) {
    {
      std::lock_guard lock(mu_);
      if (done_) return false;
      done_ = true;
      status_ = std::move(status);
    }
    cv_.notify_all();
    return true;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Status status_;
};

}  // namespace archi
