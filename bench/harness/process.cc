#include "bench/harness/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

extern char** environ;

namespace archi::harness {

std::string ExitInfo::ToString() const {
  if (!signaled) return "exit " + std::to_string(code);
  const char* name = strsignal(signal);
  return "signal " + std::to_string(signal) + " (" + (name ? name : "?") + ")";
}

std::string ReadFileTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                                   ? size - static_cast<std::streamoff>(max_bytes)
                                   : 0;
  in.seekg(start);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

Result<std::unique_ptr<Process>> Process::Spawn(ProcessOptions options) {
  if (options.binary.empty() || ::access(options.binary.c_str(), X_OK) != 0) {
    return InvalidArgumentError("Process: '" + options.binary + "' is not an executable file");
  }
  // Everything the child needs is built before fork: after fork only async-signal-safe calls.
  std::vector<std::string> argv_s;
  argv_s.push_back(options.binary.substr(options.binary.find_last_of('/') + 1));
  argv_s.insert(argv_s.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env_map[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : options.env) env_map[k] = v;
  std::vector<std::string> env_s;
  for (const auto& [k, v] : env_map) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  const std::string log = options.log_path.empty() ? "/dev/null" : options.log_path;
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return InvalidArgumentError("Process: cannot open log " + log + ": " + std::strerror(errno));
  }
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return InternalError(std::string("Process: fork: ") + std::strerror(err));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    // A fresh signal state: nothing blocked or ignored that the parent had.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) ::signal(s, SIG_DFL);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    if (!options.working_dir.empty() && ::chdir(options.working_dir.c_str()) != 0) {
      static const char msg[] = "Process: chdir failed\n";
      [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
      ::_exit(127);
    }
    ::execve(options.binary.c_str(), argv.data(), envp.data());
    static const char msg[] = "Process: execve failed\n";
    [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  return std::unique_ptr<Process>(new Process(std::move(options), pid));
}

Process::~Process() {
  std::lock_guard<std::mutex> lock(mu_);
  if (exit_) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
}

std::optional<ExitInfo> Process::TryWaitLocked() {
  if (exit_) return exit_;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    ExitInfo e;
    if (WIFSIGNALED(st)) {
      e.signaled = true;
      e.signal = WTERMSIG(st);
    } else {
      e.code = WEXITSTATUS(st);
    }
    exit_ = e;
  } else if (r < 0 && errno == ECHILD) {
    exit_ = ExitInfo{.signaled = false, .code = -1, .signal = 0};  // reaped elsewhere
  }
  return exit_;
}

std::optional<ExitInfo> Process::TryWait() {
  std::lock_guard<std::mutex> lock(mu_);
  return TryWaitLocked();
}

Status Process::Signal(int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  if (TryWaitLocked()) {
    return FailedPreconditionError("Process " + std::to_string(pid_) + " has exited");
  }
  if (::kill(pid_, sig) != 0) {
    return InternalError("kill(" + std::to_string(pid_) + "): " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<ExitInfo> Process::WaitExit(Deadline deadline) {
  auto sleep = Millis(1);
  for (;;) {
    if (auto e = TryWait()) return *e;
    if (deadline.Expired()) {
      return DeadlineExceededError("Process " + std::to_string(pid_) + " (" + options_.binary +
                                   ") still running at the deadline");
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(sleep, deadline.Remaining()));
    sleep = std::min(sleep * 2, Millis(10));
  }
}

ExitInfo Process::Terminate(Millis grace) {
  Signal(SIGTERM).IgnoreError();
  if (auto e = WaitExit(Deadline::After(grace)); e.ok()) return *e;
  Signal(SIGKILL).IgnoreError();
  auto e = WaitExit(Deadline::AfterMs(10'000));
  return e.ok() ? *e : ExitInfo{.signaled = true, .code = 0, .signal = SIGKILL};
}

std::string Process::LogTail(size_t max_bytes) const {
  return options_.log_path.empty() ? "" : ReadFileTail(options_.log_path, max_bytes);
}

}  // namespace archi::harness
