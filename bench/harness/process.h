// Process: a child process started from a binary path, for tests and benchmarks that drive the
// real binaries (archi-frontend, archi-worker) the way production runs them.
//
//   ARCHI_ASSIGN_OR_RETURN(auto p, Process::Spawn({.binary = "/bin/sh",
//                                                  .args = {"-c", "exit 3"},
//                                                  .log_path = "/tmp/sh.log"}));
//   ARCHI_ASSIGN_OR_RETURN(ExitInfo e, p->WaitExit(Deadline::AfterMs(1000)));  // e.code == 3
//
// The child's stdout and stderr go (appended) to `log_path` (/dev/null when empty); stdin is
// /dev/null. The child gets PR_SET_PDEATHSIG(SIGKILL): it dies when the *thread* that spawned it
// exits, so spawn from a thread that outlives the child (the main thread, a test body).
//
// Ownership and threads: a Process owns its child. The destructor SIGKILLs a child that is still
// running and reaps it (it never leaves a zombie). Every method is thread-safe; WaitExit blocks
// until the child exits or the deadline passes, never longer. Signal never reaches a recycled pid:
// once the child is reaped it returns kFailedPrecondition.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/deadline.h"
#include "runtime/core/status.h"

namespace archi::harness {

struct ProcessOptions {
  std::string binary{};             // path of the executable (no PATH search)
  std::vector<std::string> args{};  // argv[1..]; argv[0] is the binary's base name
  std::vector<std::pair<std::string, std::string>> env{};  // added to (or replacing in) ours
  std::string log_path{};     // stdout+stderr, appended; empty: /dev/null
  std::string working_dir{};  // empty: ours
};

// How a child ended.
struct ExitInfo {
  bool signaled = false;  // killed by a signal
  int code = 0;           // exit code when !signaled
  int signal = 0;         // the signal when signaled
  bool ok() const { return !signaled && code == 0; }
  // "exit 0", "exit 3", "signal 9 (Killed)"
  std::string ToString() const;
};

class Process {
 public:
  // kInvalidArgument when `binary` is not an executable file; kInternal when fork fails. An exec
  // failure in the child shows as exit code 127 with the reason in the log.
  static Result<std::unique_ptr<Process>> Spawn(ProcessOptions options);

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t Pid() const { return pid_; }
  const ProcessOptions& options() const { return options_; }

  // kill(pid, sig). kFailedPrecondition once the child has been reaped.
  Status Signal(int sig);
  // Waits for the child to exit (polling waitpid every few ms); kDeadlineExceeded at the
  // deadline. After the first success every call returns the same ExitInfo at once.
  Result<ExitInfo> WaitExit(Deadline deadline);
  // The ExitInfo when the child has exited (reaping it), std::nullopt while it runs.
  std::optional<ExitInfo> TryWait();
  bool Running() { return !TryWait().has_value(); }
  // SIGTERM, wait up to `grace`, then SIGKILL and reap. Returns how the child ended.
  ExitInfo Terminate(Millis grace);
  // The last `max_bytes` of the log file ("" when there is none).
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  Process(ProcessOptions options, pid_t pid) : options_(std::move(options)), pid_(pid) {}
  std::optional<ExitInfo> TryWaitLocked();

  const ProcessOptions options_;
  const pid_t pid_;
  mutable std::mutex mu_;
  std::optional<ExitInfo> exit_;  // set once reaped; guarded by mu_
};

// The last `max_bytes` of a file ("" when it cannot be read).
std::string ReadFileTail(const std::string& path, size_t max_bytes);

}  // namespace archi::harness
