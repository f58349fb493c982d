// Ready files: a serving process announces itself (addresses, pid) by writing a small JSON file
// that launchers and tests wait for. Written atomically (temporary file + rename), so a reader
// never sees half a file.
#pragma once

#include <string>

#include "runtime/core/status.h"

namespace archi::executor {

// Writes `content` (plus a newline) to `path` through "<path>.tmp" and rename(2).
// kInternal naming the file when it cannot be written.
Status WriteFileAtomically(const std::string& path, const std::string& content);

}  // namespace archi::executor
