#include "runtime/core/status.h"

#include <cstring>

namespace archi {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN_CODE";
}

Status::Status(StatusCode code, std::string message) {
  if (code != StatusCode::kOk) rep_ = std::make_unique<Rep>(Rep{code, std::move(message)});
}

Status::Status(const Status& other)
    : rep_(other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
  return *this;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code()));
  out += ": ";
  out += rep_->message;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return Status();
  std::string msg(context);
  msg += ": ";
  msg += rep_->message;
  return Status(rep_->code, std::move(msg));
}

std::ostream& operator<<(std::ostream& os, const Status& s) { return os << s.ToString(); }

#define ARCHI_DEFINE_ERROR_(Name, Code) \
  Status Name(std::string msg) { return Status(StatusCode::Code, std::move(msg)); }
ARCHI_DEFINE_ERROR_(CancelledError, kCancelled)
ARCHI_DEFINE_ERROR_(InvalidArgumentError, kInvalidArgument)
ARCHI_DEFINE_ERROR_(DeadlineExceededError, kDeadlineExceeded)
ARCHI_DEFINE_ERROR_(NotFoundError, kNotFound)
ARCHI_DEFINE_ERROR_(AlreadyExistsError, kAlreadyExists)
ARCHI_DEFINE_ERROR_(FailedPreconditionError, kFailedPrecondition)
ARCHI_DEFINE_ERROR_(AbortedError, kAborted)
ARCHI_DEFINE_ERROR_(OutOfRangeError, kOutOfRange)
ARCHI_DEFINE_ERROR_(UnimplementedError, kUnimplemented)
ARCHI_DEFINE_ERROR_(InternalError, kInternal)
ARCHI_DEFINE_ERROR_(UnavailableError, kUnavailable)
ARCHI_DEFINE_ERROR_(PermissionDeniedError, kPermissionDenied)
ARCHI_DEFINE_ERROR_(UnauthenticatedError, kUnauthenticated)
ARCHI_DEFINE_ERROR_(ResourceExhaustedError, kResourceExhausted)
#undef ARCHI_DEFINE_ERROR_

namespace internal {
std::string SourceLocation(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  std::string out = base ? base + 1 : file;
  out += ':';
  out += std::to_string(line);
  return out;
}
}  // namespace internal

}  // namespace archi
