// Status and Result<T>: fedrec's one error policy.
//
// Expected run-time failures (a malformed data line, an unknown config key, a
// truncated frame, a missing peer, a timeout) are returned as a non-OK Status
// whose message says what was expected, what was found and where (file:line,
// site, round). Programmer errors are asserted, never reported as a Status.
//
// Thread-safety: Status and Result are values; distinct objects may be used
// from different threads without synchronization.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace fedrec {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,  // bad input: data line, config value, frame contents
    kNotFound,         // a file, key or peer that does not exist
    kIoError,          // the operating system refused a read or write
    kCorruption,       // bytes that do not decode (frame header, payload)
    kTimeout,          // a peer did not answer in time
    kAborted,          // a round or job stopped on purpose (shutdown, too few sites)
    kUnavailable,      // a peer is gone or the transport is closed
    kInternal,         // an invariant failed inside a dependency (OpenSSL, MPI)
  };

  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status IoError(std::string m) { return {Code::kIoError, std::move(m)}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status Timeout(std::string m) { return {Code::kTimeout, std::move(m)}; }
  static Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
  static Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "<code name>: <message>", or "OK".
  std::string ToString() const;
  static const char* CodeName(Code code);

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "a Result needs a value or an error");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  // REQUIRES: ok()
  T& value() & {
    assert(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace fedrec

// Returns early from the enclosing function when `expr` yields a non-OK Status.
#define FEDREC_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::fedrec::Status fedrec_status_ = (expr);        \
    if (!fedrec_status_.ok()) return fedrec_status_; \
  } while (0)

#define FEDREC_CONCAT_INNER_(a, b) a##b
#define FEDREC_CONCAT_(a, b) FEDREC_CONCAT_INNER_(a, b)
// `FEDREC_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define FEDREC_ASSIGN_OR_RETURN(lhs, expr)                    \
  auto FEDREC_CONCAT_(fedrec_result_, __LINE__) = (expr);     \
  if (!FEDREC_CONCAT_(fedrec_result_, __LINE__).ok())         \
    return FEDREC_CONCAT_(fedrec_result_, __LINE__).status(); \
  lhs = std::move(FEDREC_CONCAT_(fedrec_result_, __LINE__)).value()
