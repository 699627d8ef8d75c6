#pragma once
// Error reporting shared by every library: a Status is either ok or carries an errno-style
// code plus a message that names the file and the problem. Never thrown on hot paths.
#include <string>
#include <utility>

namespace callrec {

class Status {
 public:
  Status() = default;
  /// errno_value: the errno of the failed call, or 0 for a logical error (bad format ...).
  Status(int errno_value, std::string message) : code_(errno_value == 0 ? -1 : errno_value), message_(std::move(message)) {}
  static Status ok() { return {}; }
  /// Builds "what: strerror(errno)" from the current errno.
  static Status from_errno(const std::string& what);
  static Status error(std::string message) { return Status(-1, std::move(message)); }

  [[nodiscard]] bool is_ok() const { return code_ == 0; }
  explicit operator bool() const { return is_ok(); }
  /// errno of the failure (ENOSPC, EIO ...); -1 for errors that did not come from a system call.
  [[nodiscard]] int code() const { return code_; }
  [[nodiscard]] const std::string& message() const { return message_; }

 private:
  int code_ = 0;
  std::string message_;
};

}  // namespace callrec
