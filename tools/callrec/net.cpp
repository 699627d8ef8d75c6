// Network helpers of the callrec tool: HOST:PORT parsing and a small blocking HTTP/1.1 client
// (one GET per connection, "Connection: close") for the daemon's operator interface.
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>

#include "cli.hpp"

namespace callrec::cli {
namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

/// Closes the fd at scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// Non-blocking connect bounded by the deadline. Returns 0 or an errno (ETIMEDOUT).
int connect_by(int fd, const sockaddr* addr, socklen_t len, Clock::time_point deadline) {
  if (::connect(fd, addr, len) == 0) return 0;
  if (errno != EINPROGRESS) return errno;
  pollfd p{fd, POLLOUT, 0};
  for (;;) {
    const int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return errno;
    if (rc == 0) return ETIMEDOUT;
    break;
  }
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) return errno;
  return soerr;
}

}  // namespace

std::optional<HostPort> split_host_port(std::string_view s, std::string& err) {
  HostPort d;
  std::string_view port;
  if (s.starts_with('[')) {
    const auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      err = "expected [IPv6]:PORT, got '" + printable(s) + "'";
      return std::nullopt;
    }
    d.host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      err = "expected HOST:PORT, got '" + printable(s) + "'";
      return std::nullopt;
    }
    d.host = std::string(s.substr(0, colon));
    if (d.host.find(':') != std::string::npos) {
      err = "an IPv6 address needs brackets: [" + printable(d.host) + "]:PORT";
      return std::nullopt;
    }
    port = s.substr(colon + 1);
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (d.host.empty() || port.empty() || ec != std::errc{} || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    err = "expected HOST:PORT with a port from 1 to 65535, got '" + printable(s) + "'";
    return std::nullopt;
  }
  d.port = std::to_string(value);
  return d;
}

HttpResult http_get(const HostPort& to, std::string_view path, std::chrono::milliseconds timeout) {
  HttpResult r;
  const auto deadline = Clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(to.host.c_str(), to.port.c_str(), &hints, &res); rc != 0) {
    r.error = "cannot resolve '" + printable(to.host) + "': " +
              (rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc));
    return r;
  }
  Fd sock;
  int connect_errno = ECONNREFUSED;
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      connect_errno = errno;
      continue;
    }
    connect_errno = connect_by(fd, ai->ai_addr, ai->ai_addrlen, deadline);
    if (connect_errno == ETIMEDOUT) r.timed_out = true;
    if (connect_errno == 0) {
      sock.fd = fd;
      break;
    }
    ::close(fd);
  }
  freeaddrinfo(res);
  if (sock.fd < 0) {
    r.error = std::string("cannot connect: ") + std::strerror(connect_errno);
    return r;
  }
  r.connected = true;

  std::string host = to.host.find(':') != std::string::npos ? "[" + to.host + "]" : to.host;
  const std::string req = "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + host + ":" + to.port +
                          "\r\nUser-Agent: callrec\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  std::size_t off = 0;
  while (off < req.size()) {
    const ssize_t n = ::send(sock.fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{sock.fd, POLLOUT, 0};
      if (::poll(&p, 1, ms_left(deadline)) > 0) continue;
      r.error = "timed out sending the request";
      r.timed_out = true;
      return r;
    }
    r.error = std::string("send: ") + std::strerror(errno);
    return r;
  }

  std::string resp;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(sock.fd, buf, sizeof buf, 0);
    if (n > 0) {
      resp.append(buf, static_cast<std::size_t>(n));
      if (resp.size() > kHttpMaxResponse) {
        r.error = "response larger than " + std::to_string(kHttpMaxResponse) + " bytes";
        return r;
      }
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd p{sock.fd, POLLIN, 0};
      const int left = ms_left(deadline);
      if (left > 0 && ::poll(&p, 1, left) >= 0) continue;
      r.error = "no answer within " + fixed(static_cast<double>(timeout.count()) / 1000.0, 1) + " s";
      r.timed_out = true;
      return r;
    }
    r.error = std::string("receive: ") + std::strerror(errno);
    return r;
  }

  // "HTTP/1.1 200 OK\r\n" headers "\r\n\r\n" body
  const auto head_end = resp.find("\r\n\r\n");
  if (!resp.starts_with("HTTP/1.") || resp.size() < 12 || head_end == std::string::npos) {
    r.error = resp.empty() ? "connection closed without a response" : "not an HTTP response";
    return r;
  }
  int status = 0;
  const auto [end, ec] = std::from_chars(resp.data() + 9, resp.data() + 12, status);
  if (ec != std::errc{} || end != resp.data() + 12) {
    r.error = "not an HTTP response (bad status line)";
    return r;
  }
  r.status = status;
  r.body = resp.substr(head_end + 4);
  return r;
}

}  // namespace callrec::cli
