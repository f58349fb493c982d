// Logging on spdlog. One process-wide logger named "archi", level from ARCHI_LOG_LEVEL
// (trace, debug, info, warn, error, off; default info). Lines about a world carry
// "[world rank/size eN]" via WorldTag(). ARCHI_CHECK logs and aborts on a broken invariant.
// Thread safety: all functions and macros are thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace archi {

// The shared logger (created on first use, writing to stderr).
spdlog::logger& Logger();

// Re-reads ARCHI_LOG_LEVEL; `level` overrides it when non-empty. Returns false on an unknown name.
bool SetLogLevel(std::string_view level = "");

// "[name rank/size eEPOCH]"
std::string WorldTag(std::string_view world, int rank, int size, uint64_t epoch);

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace archi

#define ARCHI_LOG_TRACE(...) ::archi::Logger().trace(__VA_ARGS__)
#define ARCHI_LOG_DEBUG(...) ::archi::Logger().debug(__VA_ARGS__)
#define ARCHI_LOG_INFO(...) ::archi::Logger().info(__VA_ARGS__)
#define ARCHI_LOG_WARN(...) ::archi::Logger().warn(__VA_ARGS__)
#define ARCHI_LOG_ERROR(...) ::archi::Logger().error(__VA_ARGS__)

#define ARCHI_CHECK(cond, ...)                                                       \
  do {                                                                               \
    if (!(cond)) ::archi::CheckFailed(__FILE__, __LINE__, #cond, fmt::format("" __VA_ARGS__)); \
  } while (0)
