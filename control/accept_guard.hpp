#pragma once
// Accepting when the process is out of descriptors (EMFILE/ENFILE).
//
// A level-triggered listening socket with a pending connection that accept() cannot take wakes
// the loop again at once: the daemon would spin at 100% CPU and the peer would wait in the
// backlog until it times out. The classic remedy (libev, nginx): keep one spare descriptor; on
// EMFILE give it up, accept the connection, close it at once (the peer sees a clean close, not a
// hang), and take the spare again. If even that fails, the caller pauses the listener briefly.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace callrec::control {

class AcceptGuard {
 public:
  /// `reserved`: descriptors held besides the one for shedding, for take() (the operator's
  /// endpoint keeps a few so that /metrics answers when everything else is exhausted).
  explicit AcceptGuard(unsigned reserved = 0) {
    reserve();
    for (unsigned i = 0; i < reserved; ++i) {
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd >= 0) reserved_.push_back(fd);
    }
    wanted_ = reserved;
  }
  ~AcceptGuard() {
    if (spare_ >= 0) ::close(spare_);
    for (int fd : reserved_) ::close(fd);
  }
  AcceptGuard(const AcceptGuard&) = delete;
  AcceptGuard& operator=(const AcceptGuard&) = delete;

  /// True when err says the process or system ran out of descriptors.
  static bool exhausted(int err) { return err == EMFILE || err == ENFILE; }

  /// Sheds one pending connection of listen_fd using the spare descriptor. Returns true when a
  /// connection was accepted and closed; false when there was none or the spare is gone (pause).
  /// Accepts one pending connection of listen_fd on a reserved descriptor (to serve it, not to
  /// close it). -1 when none is reserved any more or nothing was pending. Call replenish()
  /// after the connection closed.
  int take(int listen_fd) {
    if (reserved_.empty()) return -1;
    ::close(reserved_.back());
    reserved_.pop_back();
    const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) replenish();
    return c;
  }
  /// Takes back reserved descriptors given out by take(), as far as descriptors allow.
  void replenish() {
    while (reserved_.size() < wanted_) {
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) return;
      reserved_.push_back(fd);
    }
  }
  [[nodiscard]] std::size_t reserved() const { return reserved_.size(); }

  bool shed(int listen_fd) {
    if (spare_ < 0 && !reserve()) return false;
    ::close(spare_);
    spare_ = -1;
    const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c >= 0) ::close(c);
    reserve();
    return c >= 0;
  }

 private:
  bool reserve() {
    spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return spare_ >= 0;
  }
  int spare_ = -1;
  std::vector<int> reserved_;
  unsigned wanted_ = 0;
};

}  // namespace callrec::control
