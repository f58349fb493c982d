// GlooStoreAdapter: presents an archi::Store to Gloo's rendezvous (gloo::rendezvous::Store).
//
// Every call is bounded by one deadline fixed at construction (the communicator's connect
// deadline); Gloo's own timeouts are ignored in favour of it. get() waits for the key first,
// because Gloo expects get() to block until the key exists. Failures are thrown as
// gloo::IoException, which is what Gloo's rendezvous code expects; the exception never leaves
// the Gloo backend (GlooCommunicator::Create catches it).
// Ownership: shares the store. Thread safety: as thread-safe as the underlying store.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "runtime/core/deadline.h"
#include "runtime/core/store.h"

namespace archi {

class GlooStoreAdapter final : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(std::shared_ptr<archi::Store> store, Deadline deadline);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // The first error seen (OK if none): lets the caller report a Status rather than Gloo's text.
  const Status& first_error() const { return first_error_; }

 private:
  [[noreturn]] void Fail(Status status);

  std::shared_ptr<archi::Store> store_;
  Deadline deadline_;
  Status first_error_;
};

}  // namespace archi
