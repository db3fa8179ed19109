// Status and Result<T>: how Fanout reports ordinary failures (a failed task, a bad file, a dead
// agent) as values. Exceptions stay inside thin wrappers around libraries that throw.
// Both types are plain values; share them between threads like any other value.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace fanout {

enum class Code {
  kOk = 0,
  kInvalidArgument,    // bad input: a package, a flag, a request body
  kNotFound,           // a file, job, run or package that does not exist
  kAlreadyExists,      // a name taken where it must be unique
  kFailedPrecondition, // the thing exists but is in the wrong state (job already running)
  kUnavailable,        // a peer or database cannot be reached right now; retrying may help
  kDeadlineExceeded,   // a timeout elapsed
  kCanceled,           // stopped on request (SIGINT, SIGTERM, stop call)
  kPermissionDenied,   // authenticated but not allowed
  kUnauthenticated,    // no or bad credentials
  kResourceExhausted,  // a size or count limit was reached
  kInternal,           // a bug or an unexpected library failure
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NotFound: no such file" — for logs and error lines.
  std::string ToString() const;

  // Adds context in front of the message, keeping the code: "loading x.yaml: ...".
  Status WithContext(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {Code::kFailedPrecondition, std::move(m)};
}
inline Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {Code::kDeadlineExceeded, std::move(m)}; }
inline Status Canceled(std::string m) { return {Code::kCanceled, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

// Result<T> holds either a T or a non-ok Status, like std::expected<T, Status>.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(data_).ok()) std::abort();     // an ok Status carries no value
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(data_);
  }
  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace fanout

#define FANOUT_CONCAT_INNER(a, b) a##b
#define FANOUT_CONCAT(a, b) FANOUT_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::fanout::Status fanout_status_ = (expr);        \
    if (!fanout_status_.ok()) return fanout_status_; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(FANOUT_CONCAT(fanout_result_, __LINE__), lhs, expr)

// Programmer errors only: aborts with the condition that failed.
#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) ::fanout::internal::CheckFailed(#cond, __FILE__, __LINE__);           \
  } while (0)

namespace fanout::internal {
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line);
}
