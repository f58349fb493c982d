// Status and Result<T>: the error currency of Archipelago.
//
// Codes are a subset of the gRPC/absl canonical codes with the same numeric values, so they map
// 1:1 onto grpc::StatusCode. Meaning in this project:
//   kUnavailable        transient (retry the same call)
//   kAborted            the world broke or its epoch changed (rebuild the world)
//   kDeadlineExceeded   a deadline passed
//   kInvalidArgument    bad input from the caller
//   kFailedPrecondition the object is in the wrong state for this call
//   kInternal           a bug in Archipelago
// An OK Status holds no allocation; copying it is a null-pointer copy.
// Thread safety: Status and Result are values; distinct objects may be used from any thread.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace archi {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  std::string_view message() const { return rep_ ? std::string_view(rep_->message) : ""; }
  // "CODE: message" or "OK".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context` (e.g. a file:line or a world name).
  Status WithContext(std::string_view context) const;

  // Explicitly ignores a Status (documents that dropping it is intended).
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Convenience constructors.
Status CancelledError(std::string msg);
Status InvalidArgumentError(std::string msg);
Status DeadlineExceededError(std::string msg);
Status NotFoundError(std::string msg);
Status AlreadyExistsError(std::string msg);
Status FailedPreconditionError(std::string msg);
Status AbortedError(std::string msg);
Status OutOfRangeError(std::string msg);
Status UnimplementedError(std::string msg);
Status InternalError(std::string msg);
Status UnavailableError(std::string msg);
Status PermissionDeniedError(std::string msg);
Status UnauthenticatedError(std::string msg);
Status ResourceExhaustedError(std::string msg);

// Result<T>: either a T or a non-OK Status. Shaped like std::expected (value(), error(),
// has_value(), operator*, operator->), plus ok() and status() for symmetry with Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(runtime/explicit)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(runtime/explicit)
    if (status_.ok()) status_ = Status(StatusCode::kInternal, "Result constructed from OK Status");
  }

  bool ok() const { return value_.has_value(); }
  bool has_value() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Status& status() const { return status_; }
  const Status& error() const { return status_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

  // Explicitly ignores the outcome.
  void IgnoreError() const {}

  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? *value_ : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::optional<T> value_;
  Status status_;
};

namespace internal {
std::string SourceLocation(const char* file, int line);
inline const Status& AsStatus(const Status& s) { return s; }
template <typename T>
const Status& AsStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace internal

}  // namespace archi

#define ARCHI_INTERNAL_CONCAT_(a, b) a##b
#define ARCHI_INTERNAL_CONCAT(a, b) ARCHI_INTERNAL_CONCAT_(a, b)

// Returns the Status (with a file:line trail) from the enclosing function if `expr` is not OK.
#define ARCHI_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                              \
    /* A copy, not a reference: `expr` may be a temporary that dies with this line. */ \
    ::archi::Status archi_status_ = ::archi::internal::AsStatus((expr));            \
    if (!archi_status_.ok()) {                                                      \
      return archi_status_.WithContext(::archi::internal::SourceLocation(__FILE__, __LINE__)); \
    }                                                                               \
  } while (0)

#define ARCHI_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)                                \
  auto tmp = (expr);                                                                \
  if (!tmp.ok()) {                                                                  \
    return tmp.status().WithContext(::archi::internal::SourceLocation(__FILE__, __LINE__)); \
  }                                                                                 \
  lhs = std::move(tmp).value()

// ARCHI_ASSIGN_OR_RETURN(auto x, MakeX());
#define ARCHI_ASSIGN_OR_RETURN(lhs, expr) \
  ARCHI_ASSIGN_OR_RETURN_IMPL_(ARCHI_INTERNAL_CONCAT(archi_result_, __LINE__), lhs, expr)
