#include "bench/harness/ready_file.h"

#include <fstream>
#include <sstream>
#include <thread>

namespace archi::harness {

Result<nlohmann::json> WaitReadyFile(const std::string& path, Deadline deadline, Process* watch) {
  std::string last_error = "file not found";
  for (;;) {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) return j;
      last_error = "not a JSON object: '" + ss.str().substr(0, 200) + "'";
    }
    if (watch != nullptr) {
      if (auto e = watch->TryWait()) {
        return UnavailableError("ready file " + path + ": " + watch->options().binary + " (pid " +
                                std::to_string(watch->Pid()) + ") ended with " + e->ToString() +
                                " before it was ready; log tail:\n" + watch->LogTail(3000));
      }
    }
    if (deadline.Expired()) {
      return DeadlineExceededError("ready file " + path + " not ready at the deadline (" +
                                   last_error + ")");
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(Millis(10), deadline.Remaining()));
  }
}

}  // namespace archi::harness
