#include "control/http_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace callrec::control {

namespace {

constexpr std::size_t kMaxRequest = 8192;

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    default: return "Error";
  }
}

}  // namespace

HttpServer::~HttpServer() { close(); }

void HttpServer::close() {
  if (accept_timer_ != 0) loop_.cancel_timer(accept_timer_);
  accept_timer_ = 0;
  if (sweep_timer_ != 0) loop_.cancel_timer(sweep_timer_);
  sweep_timer_ = 0;
  for (auto& [fd, c] : conns_) {
    loop_.remove_fd(fd);
    ::close(fd);
  }
  conns_.clear();
  if (fd_ >= 0) {
    loop_.remove_fd(fd_);
    ::close(fd_);
    fd_ = -1;
  }
}

Status HttpServer::listen(const sockaddr_storage& addr) {
  fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return Status::from_errno("metrics: socket");
  int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), len) != 0 || ::listen(fd_, 64) != 0) {
    Status st = Status::from_errno("metrics: bind/listen");
    ::close(fd_);
    fd_ = -1;
    return st;
  }
  sockaddr_storage local{};
  socklen_t ll = sizeof local;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &ll);
  port_ = ntohs(local.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&local)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  char host[INET6_ADDRSTRLEN] = "?";
  if (local.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr, host, sizeof host);
    endpoint_ = "[" + std::string(host) + "]:" + std::to_string(port_);
  } else {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&local)->sin_addr, host, sizeof host);
    endpoint_ = std::string(host) + ":" + std::to_string(port_);
  }
  const auto period = std::max(std::chrono::milliseconds(100), std::min(opts_.header_timeout, opts_.idle_timeout) / 4);
  sweep_timer_ = loop_.add_timer(period, [this] { sweep(); }, true);
  return loop_.add_fd(fd_, EPOLLIN, [this](std::uint32_t) { on_accept(); });
}

void HttpServer::sweep() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> late;
  for (const auto& [fd, c] : conns_) {
    const auto limit = c.out.empty() ? opts_.header_timeout : opts_.header_timeout + opts_.idle_timeout;
    if (now - c.opened >= limit) late.push_back(fd);
  }
  for (const int fd : late) {
    ++counters_.timeouts;
    finish(fd);
  }
}

void HttpServer::adopt(int c, bool reserved) {
  if (conns_.size() >= opts_.max_connections) {
    // Full: the oldest connection still sending its request head makes room (a slow client
    // cannot keep the operator out); if every one is being answered, the new one waits its turn
    // by being refused.
    int oldest = -1;
    for (const auto& [fd, conn] : conns_) {
      if (!conn.out.empty()) continue;
      if (oldest < 0 || conn.opened < conns_.at(oldest).opened) oldest = fd;
    }
    if (oldest < 0) {
      ::close(c);
      if (reserved) accept_guard_.replenish();
      ++counters_.shed;
      return;
    }
    ++counters_.replaced;
    finish(oldest);
  }
  Conn conn;
  conn.opened = std::chrono::steady_clock::now();
  conn.reserved = reserved;
  conns_.emplace(c, std::move(conn));
  if (!loop_.add_fd(c, EPOLLIN | EPOLLRDHUP, [this, c](std::uint32_t ev) { on_conn(c, ev); })) {
    finish(c);
  }
}

void HttpServer::on_accept() {
  for (;;) {
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      if (!AcceptGuard::exhausted(errno)) return;  // EAGAIN, EINTR: the next readiness event brings the rest
      // Out of descriptors: serve the connection on a reserved descriptor; none left: shed it
      // (a level-triggered listener would otherwise spin), or pause the listener for 100 ms
      // when even the spare is gone.
      if (const int r = accept_guard_.take(fd_); r >= 0) {
        ++counters_.reserved_used;
        adopt(r, true);
        continue;
      }
      if (accept_guard_.shed(fd_)) {
        ++counters_.shed;
        continue;
      }
      if (accept_timer_ == 0) {
        (void)loop_.modify_fd(fd_, 0);
        accept_timer_ = loop_.add_timer(std::chrono::milliseconds(100), [this] {
          accept_timer_ = 0;
          if (fd_ >= 0) (void)loop_.modify_fd(fd_, EPOLLIN);
        });
      }
      return;
    }
    adopt(c, false);
  }
}

void HttpServer::finish(int fd) {
  auto it = conns_.find(fd);
  const bool reserved = it != conns_.end() && it->second.reserved;
  loop_.remove_fd(fd);
  ::close(fd);
  if (it != conns_.end()) conns_.erase(it);
  if (reserved) accept_guard_.replenish();
}

void HttpServer::on_conn(int fd, std::uint32_t ev) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  if (c.out.empty()) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        c.in.append(buf, static_cast<std::size_t>(n));
        if (c.in.size() > kMaxRequest) break;
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos) {
          finish(fd);
          return;
        }
      }
      break;
    }
    HttpResponse r;
    const auto end = c.in.find("\r\n\r\n") != std::string::npos ? c.in.find("\r\n\r\n") : c.in.find("\n\n");
    if (c.in.size() > kMaxRequest) {
      r = {413, "text/plain", "request too large\n"};
    } else if (end == std::string::npos) {
      if (ev & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) finish(fd);
      return;  // wait for the rest of the head
    } else {
      ++counters_.requests;
      r = dispatch(c.in.substr(0, end));
    }
    c.out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) +
            "\r\nContent-Type: " + r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) +
            "\r\nConnection: close\r\n\r\n" + r.body;
    loop_.modify_fd(fd, EPOLLOUT);
  }
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    break;
  }
  finish(fd);
}

HttpResponse HttpServer::dispatch(const std::string& head) {
  const auto line_end = head.find_first_of("\r\n");
  const std::string line = head.substr(0, line_end);
  const auto sp1 = line.find(' ');
  const auto sp2 = line.find(' ', sp1 == std::string::npos ? 0 : sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos) return {400, "text/plain", "bad request line\n"};
  HttpRequest req;
  req.method = line.substr(0, sp1);
  std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const auto q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) {
    std::string_view qs(target);
    qs.remove_prefix(q + 1);
    while (!qs.empty()) {
      const auto amp = qs.find('&');
      std::string_view kv = qs.substr(0, amp);
      const auto eq = kv.find('=');
      req.query[url_decode(kv.substr(0, eq))] = eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      qs.remove_prefix(amp + 1);
    }
  }
  auto it = routes_.find(req.path);
  // The path is not echoed: the page must never carry request bytes back (terminal escapes,
  // markup) to whoever looks at it.
  if (it == routes_.end()) return {404, "text/plain", "not found\n"};
  return it->second(req);
}

}  // namespace callrec::control
