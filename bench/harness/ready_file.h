// Ready files: a serving binary (archi-frontend, archi-worker) writes a small JSON object to the
// path given by --ready-file once it serves, atomically (write a temporary file, then rename), so
// a reader never sees half of it.
// Thread safety: free functions without shared state.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "bench/harness/process.h"
#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::harness {

// Polls `path` until it holds a JSON object and returns it. kDeadlineExceeded at the deadline.
// When `watch` is given and that process exits first: kUnavailable naming its exit and the tail
// of its log (a binary that failed to start is reported at once, not at the deadline).
Result<nlohmann::json> WaitReadyFile(const std::string& path, Deadline deadline,
                                     Process* watch = nullptr);

}  // namespace archi::harness
