#include "runtime/core/params.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

namespace archi {
namespace {

std::mutex& RegistryMu() {
  static std::mutex mu;
  return mu;
}
std::set<std::string>& Registry() {
  static std::set<std::string> names;
  return names;
}

const char* Lookup(const char* name) {
  {
    std::lock_guard<std::mutex> lock(RegistryMu());
    Registry().insert(name);
  }
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

void WarnBad(const Status& s) { std::fprintf(stderr, "archi: %s (using default)\n", s.ToString().c_str()); }

}  // namespace

Result<int64_t> ParseInt(std::string_view name, std::string_view text) {
  std::string s(text);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno != 0 || end == nullptr || *end != '\0') {
    return InvalidArgumentError(std::string(name) + "='" + s + "' is not an integer");
  }
  return static_cast<int64_t>(v);
}

Result<double> ParseDouble(std::string_view name, std::string_view text) {
  std::string s(text);
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || errno != 0 || end == nullptr || *end != '\0') {
    return InvalidArgumentError(std::string(name) + "='" + s + "' is not a number");
  }
  return v;
}

Result<bool> ParseBool(std::string_view name, std::string_view text) {
  std::string s(text);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  return InvalidArgumentError(std::string(name) + "='" + std::string(text) +
                              "' is not a boolean (use 1/0, true/false, yes/no, on/off)");
}

int64_t EnvInt(const char* name, int64_t fallback, int64_t min, int64_t max) {
  const char* v = Lookup(name);
  if (!v) return fallback;
  auto r = ParseInt(name, v);
  if (!r.ok()) {
    WarnBad(r.status());
    return fallback;
  }
  if (*r < min || *r > max) {
    WarnBad(InvalidArgumentError(std::string(name) + "=" + v + " is out of range [" +
                                 std::to_string(min) + ", " + std::to_string(max) + "]"));
    return fallback;
  }
  return *r;
}

double EnvDouble(const char* name, double fallback) {
  const char* v = Lookup(name);
  if (!v) return fallback;
  auto r = ParseDouble(name, v);
  if (!r.ok()) {
    WarnBad(r.status());
    return fallback;
  }
  return *r;
}

bool EnvBool(const char* name, bool fallback) {
  const char* v = Lookup(name);
  if (!v) return fallback;
  auto r = ParseBool(name, v);
  if (!r.ok()) {
    WarnBad(r.status());
    return fallback;
  }
  return *r;
}

std::string EnvString(const char* name, std::string fallback) {
  const char* v = Lookup(name);
  return v ? std::string(v) : fallback;
}

std::vector<std::string> EnvVariablesRead() {
  std::lock_guard<std::mutex> lock(RegistryMu());
  return {Registry().begin(), Registry().end()};
}

}  // namespace archi
