// StoreServer: the rendezvous store served over gRPC (service archi.store.v1.Store), embeddable in
// any process (the leader, a test) and run standalone by the `archi-store` binary.
//
// The data lives in an InMemoryStore owned by the server and shared with in-process users through
// store(). RPCs are served with the gRPC callback API on gRPC's own threads: no thread is held per
// pending Wait (a Wait is an InMemoryStore::WatchAll whose callback finishes the RPC). A Wait ends
// at the earlier of the client's RPC deadline and the request's timeout_ms; a Wait whose client
// goes away is cancelled.
//
// Status codes sent: INVALID_ARGUMENT (empty or oversized key or value, too many keys, Add on a
// non-integer), NOT_FOUND (Get of an absent key), OUT_OF_RANGE (Add overflows int64),
// DEADLINE_EXCEEDED (Wait timed out), UNAVAILABLE (the server is shutting down).
//
// Ownership: Start() returns the sole owner; the InMemoryStore is shared with store() callers and
// outlives the server if they hold it. Thread safety: every method is thread-safe; Shutdown() and
// the destructor block at most until the shutdown deadline (plus a little for gRPC's own teardown).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "runtime/core/deadline.h"
#include "runtime/core/memory_store.h"
#include "runtime/core/status.h"

namespace archi {

struct StoreServerOptions {
  // "host:port"; port 0 picks a free port (read it back with port() / address()).
  std::string address = "127.0.0.1:0";
  // Input limits; a request beyond them is rejected with INVALID_ARGUMENT.
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = size_t{16} << 20;
  size_t max_wait_keys = 4096;
  // Largest gRPC message accepted or sent (List answers can be large).
  int max_message_bytes = 256 << 20;
  // How long the destructor lets in-flight RPCs finish before cancelling them.
  int64_t shutdown_grace_ms = 2000;
};

// What a store RPC does to a key (or a prefix, for List / DeletePrefix).
enum class StoreAccess { kRead, kWrite };

// Decides whether a client may touch a key. `credential` is the client's
// "x-archi-member" metadata (StoreClient::Connect's `credential`; empty when absent). Return OK,
// or the refusal (kPermissionDenied / kUnauthenticated with the reason). Called on gRPC threads:
// must be thread-safe and must not block.
using StoreAuthorizer =
    std::function<Status(StoreAccess access, const std::string& key, const std::string& credential)>;

class StoreServer {
 public:
  // Binds and starts serving. kUnavailable naming the address when it cannot be bound (port in use,
  // bad host); kInvalidArgument for malformed options.
  static Result<std::unique_ptr<StoreServer>> Start(StoreServerOptions options);

  ~StoreServer();  // Shutdown(now + shutdown_grace_ms)
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  // "host:PORT" with the bound port, e.g. "127.0.0.1:41234"; what clients pass to Connect.
  std::string address() const;
  int port() const;
  std::shared_ptr<InMemoryStore> store() const;

  // Checks every later RPC against `authorizer` (null: everything allowed, the default). The
  // in-process store() is not checked. Thread-safe; may be called while serving.
  void SetAuthorizer(StoreAuthorizer authorizer);

  // Stops serving: pending Waits end at once with UNAVAILABLE, other in-flight RPCs get until
  // `deadline` and are then cancelled. Idempotent; later calls return immediately.
  void Shutdown(Deadline deadline);

 private:
  struct Impl;
  explicit StoreServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi
