#include "runtime/executor/tools/worker_process.h"

#include <chrono>
#include <cstdio>
#include <thread>

#include "runtime/core/logging.h"

namespace archi::executor {

int RunWorkerProcess(const WorkerOptions& options, const sigset_t& signals,
                     int64_t self_drain_after_ms) {
  StageWorker worker(options);
  std::jthread sig_thread([&](std::stop_token st) {
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed_ms = [&] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - t0)
          .count();
    };
    int count = 0;
    bool self_drained = false;
    while (!st.stop_requested()) {
      if (self_drain_after_ms > 0) {
        if (!self_drained && elapsed_ms() >= self_drain_after_ms) {
          self_drained = true;
          ARCHI_LOG_WARN("archi-worker: nobody ended the job after {} ms: draining",
                         self_drain_after_ms);
          worker.RequestDrain();
        } else if (self_drained && elapsed_ms() >= self_drain_after_ms + 10'000) {
          ARCHI_LOG_WARN("archi-worker: drain did not finish: stopping now");
          worker.Stop();
        }
      }
      timespec ts{0, 100'000'000};
      const int sig = sigtimedwait(&signals, nullptr, &ts);
      if (sig <= 0) continue;
      if (++count == 1) {
        ARCHI_LOG_INFO("archi-worker: signal {}: draining", sig);
        worker.RequestDrain();
      } else {
        ARCHI_LOG_WARN("archi-worker: second signal: stopping now");
        worker.Stop();
      }
    }
  });
  const Status st = worker.Run();
  sig_thread.request_stop();
  if (st.ok()) return 0;
  std::fprintf(stderr, "archi-worker: %s\n", st.ToString().c_str());
  return st.code() == StatusCode::kAborted ? 3 : 1;
}

}  // namespace archi::executor
