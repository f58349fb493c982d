// Typed access to ARCHI_* environment variables. Every ARCHI_* variable the project reads goes
// through these helpers and is listed in docs/config.md. A malformed value is reported (logged
// once to stderr) and the default is used instead; it never crashes the process.
// Thread safety: all functions are thread-safe (they read the environment and a registry guarded
// by a mutex).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace archi {

// Parses `text` as the given type; returns kInvalidArgument naming `name` when malformed.
Result<int64_t> ParseInt(std::string_view name, std::string_view text);
Result<double> ParseDouble(std::string_view name, std::string_view text);
Result<bool> ParseBool(std::string_view name, std::string_view text);

int64_t EnvInt(const char* name, int64_t fallback, int64_t min = INT64_MIN, int64_t max = INT64_MAX);
double EnvDouble(const char* name, double fallback);
bool EnvBool(const char* name, bool fallback);
std::string EnvString(const char* name, std::string fallback);

// Names of the ARCHI_* variables read so far in this process (for --help output and tests).
std::vector<std::string> EnvVariablesRead();

}  // namespace archi
