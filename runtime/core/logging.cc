#include "runtime/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

#include "runtime/core/params.h"

namespace archi {
namespace {
std::shared_ptr<spdlog::logger> MakeLogger() {
  auto logger = spdlog::stderr_color_mt("archi");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%L%$ %P %v");
  return logger;
}
}  // namespace

spdlog::logger& Logger() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::get("archi");
    if (!l) l = MakeLogger();
    std::string level = EnvString("ARCHI_LOG_LEVEL", "info");
    auto lv = spdlog::level::from_str(level);
    if (lv == spdlog::level::off && level != "off") lv = spdlog::level::info;
    l->set_level(lv);
    return l;
  }();
  return *logger;
}

bool SetLogLevel(std::string_view level) {
  std::string name = level.empty() ? EnvString("ARCHI_LOG_LEVEL", "info") : std::string(level);
  auto lv = spdlog::level::from_str(name);
  if (lv == spdlog::level::off && name != "off") return false;
  Logger().set_level(lv);
  return true;
}

std::string WorldTag(std::string_view world, int rank, int size, uint64_t epoch) {
  return fmt::format("[{} {}/{} e{}]", world, rank, size, epoch);
}

void CheckFailed(const char* file, int line, const char* expr, const std::string& msg) {
  Logger().critical("{}:{}: check failed: {} {}", file, line, expr, msg);
  Logger().flush();
  std::abort();
}

}  // namespace archi
