// printf-style formatting into a std::string, for the reasons policies attach to their actions.
// Pure; thread-safe. Output longer than 511 characters is cut.
#pragma once

#include <string>

namespace archi::policy {

std::string StrFormat(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace archi::policy
