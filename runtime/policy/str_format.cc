#include "runtime/policy/str_format.h"

#include <cstdarg>
#include <cstdio>

namespace archi::policy {

std::string StrFormat(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace archi::policy
