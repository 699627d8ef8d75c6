#include "control/http_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
  return loop_.add_fd(fd_, EPOLLIN, [this](std::uint32_t) { on_accept(); });
}

void HttpServer::on_accept() {
  for (;;) {
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      // Out of descriptors: shed the pending connection (a level-triggered listener would
      // otherwise spin), or pause the listener for 100 ms when even the spare is gone.
      if (AcceptGuard::exhausted(errno) && !accept_guard_.shed(fd_) && accept_timer_ == 0) {
        (void)loop_.modify_fd(fd_, 0);
        accept_timer_ = loop_.add_timer(std::chrono::milliseconds(100), [this] {
          accept_timer_ = 0;
          if (fd_ >= 0) (void)loop_.modify_fd(fd_, EPOLLIN);
        });
      }
      return;  // EAGAIN, EINTR, or shed: the next readiness event brings the rest
    }
    conns_.emplace(c, Conn{});
    if (!loop_.add_fd(c, EPOLLIN | EPOLLRDHUP, [this, c](std::uint32_t ev) { on_conn(c, ev); })) {
      conns_.erase(c);
      ::close(c);
    }
  }
}

void HttpServer::finish(int fd) {
  loop_.remove_fd(fd);
  ::close(fd);
  conns_.erase(fd);
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
  if (it == routes_.end()) return {404, "text/plain", "not found: " + req.path + "\n"};
  return it->second(req);
}

}  // namespace callrec::control
