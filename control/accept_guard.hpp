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

namespace callrec::control {

class AcceptGuard {
 public:
  AcceptGuard() { reserve(); }
  ~AcceptGuard() {
    if (spare_ >= 0) ::close(spare_);
  }
  AcceptGuard(const AcceptGuard&) = delete;
  AcceptGuard& operator=(const AcceptGuard&) = delete;

  /// True when err says the process or system ran out of descriptors.
  static bool exhausted(int err) { return err == EMFILE || err == ENFILE; }

  /// Sheds one pending connection of listen_fd using the spare descriptor. Returns true when a
  /// connection was accepted and closed; false when there was none or the spare is gone (pause).
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
};

}  // namespace callrec::control
