// Store: the key-value interface used for rendezvous (addresses, world membership, heartbeats).
//
// Semantics shared by every implementation (in-memory, gRPC client):
//   Set         overwrites.
//   Get         returns kNotFound when the key is absent (it does not wait; use Wait).
//   Add         atomically adds `delta` to the integer stored at the key (absent counts as 0) and
//               returns the new value; kInvalidArgument if the present value is not an integer,
//               kOutOfRange if the sum overflows int64 (the value is then unchanged).
//   CompareSet  sets `desired` when the current value equals `expected` (an absent key matches an
//               empty `expected`); returns the value held after the call.
//   Delete      returns whether the key existed.
//   Wait        returns OK once every key exists, kDeadlineExceeded at the deadline.
//   List        returns all (key, value) pairs whose key starts with the prefix, sorted by key.
//   DeletePrefix removes all keys with the prefix and returns how many were removed.
// Every call takes a deadline and never blocks past it. Transport failures are kUnavailable.
// Thread safety: implementations are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

class Store {
 public:
  virtual ~Store() = default;
  virtual Status Set(const std::string& key, const std::string& value, Deadline deadline) = 0;
  virtual Result<std::string> Get(const std::string& key, Deadline deadline) = 0;
  virtual Result<int64_t> Add(const std::string& key, int64_t delta, Deadline deadline) = 0;
  virtual Result<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired, Deadline deadline) = 0;
  virtual Result<bool> Delete(const std::string& key, Deadline deadline) = 0;
  virtual Status Wait(const std::vector<std::string>& keys, Deadline deadline) = 0;
  virtual Result<KeyValues> List(const std::string& prefix, Deadline deadline) = 0;
  virtual Result<int64_t> DeletePrefix(const std::string& prefix, Deadline deadline) = 0;
};

// A view of another store under a key prefix ("prefix/" is prepended to every key; List returns
// keys with the prefix stripped). The base store is shared. Thread-safe as the base store is.
class PrefixStore final : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> base, std::string prefix);
  const std::string& prefix() const { return prefix_; }
  Status Set(const std::string& key, const std::string& value, Deadline deadline) override;
  Result<std::string> Get(const std::string& key, Deadline deadline) override;
  Result<int64_t> Add(const std::string& key, int64_t delta, Deadline deadline) override;
  Result<std::string> CompareSet(const std::string& key, const std::string& expected,
                                 const std::string& desired, Deadline deadline) override;
  Result<bool> Delete(const std::string& key, Deadline deadline) override;
  Status Wait(const std::vector<std::string>& keys, Deadline deadline) override;
  Result<KeyValues> List(const std::string& prefix, Deadline deadline) override;
  Result<int64_t> DeletePrefix(const std::string& prefix, Deadline deadline) override;

 private:
  std::string Full(const std::string& key) const { return prefix_ + "/" + key; }
  std::shared_ptr<Store> base_;
  std::string prefix_;
};

}  // namespace archi
