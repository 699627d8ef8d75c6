#include "control/siprec/sip_transport.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control/config.hpp"
#include "control/log.hpp"
#include "control/sip/sip_message.hpp"

namespace callrec::control::siprec {

namespace {




void set_port(sockaddr_storage& a, std::uint16_t port) {
  if (a.ss_family == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(port);
  else
    reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(port);
}

std::string ssl_error_text() {
  char buf[256] = "unknown TLS error";
  if (unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

/// Our address on a connected (or received-on) socket, as text.
std::string local_host_of(int fd, std::uint16_t& port) {
  sockaddr_storage a{};
  socklen_t l = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l) != 0) return "0.0.0.0";
  a = unmap_v4(a);
  port = endpoint_port(a);
  return format_ip(a);
}

}  // namespace

const char* transport_name(Transport t) {
  switch (t) {
    case Transport::kUdp: return "UDP";
    case Transport::kTcp: return "TCP";
    case Transport::kTls: return "TLS";
  }
  return "?";
}


struct SipTransport::Conn {
  std::uint64_t id = 0;
  int fd = -1;
  Transport kind = Transport::kTcp;
  SSL* ssl = nullptr;
  bool handshaken = false;
  bool got_message = false;
  SipPeer peer;
  std::string in;
  std::string out;
  std::size_t out_sent = 0;
  std::uint32_t interest = 0;
  bool want_write_for_read = false;  ///< TLS: a read needs the socket writable (renegotiation)
  bool dead = false;
  EventLoop::Clock::time_point opened, last_activity;
};

SipTransport::SipTransport(EventLoop& loop, TransportOptions opts, OnMessage on_message, OnClose on_close)
    : loop_(loop), opts_(opts), on_message_(std::move(on_message)), on_close_(std::move(on_close)) {
  udp_buf_.resize(65536);
  sweep_timer_ = loop_.add_timer(std::chrono::milliseconds(1000), [this] { sweep(); }, true);
}

SipTransport::~SipTransport() {
  close_all();
  if (sweep_timer_ != 0) loop_.cancel_timer(sweep_timer_);
  for (auto& l : listeners_) {
    if (l->fd < 0) continue;
    loop_.remove_fd(l->fd);
    ::close(l->fd);
  }
  if (tls_ctx_) SSL_CTX_free(tls_ctx_);
}

Status SipTransport::listen(const sockaddr_storage& addr_in) {
  sockaddr_storage addr = addr_in;
  // TCP first: with port 0 the kernel picks one, and UDP then binds the same number.
  int tfd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (tfd < 0) return Status::from_errno("siprec: socket");
  int one = 1;
  ::setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(tfd, reinterpret_cast<const sockaddr*>(&addr), sockaddr_length(addr)) != 0 || ::listen(tfd, 1024) != 0) {
    Status st = Status::from_errno("siprec: TCP bind/listen " + format_endpoint(addr));
    ::close(tfd);
    return st;
  }
  sockaddr_storage bound{};
  socklen_t bl = sizeof bound;
  ::getsockname(tfd, reinterpret_cast<sockaddr*>(&bound), &bl);
  set_port(addr, endpoint_port(bound));
  int ufd = ::socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ufd < 0) {
    ::close(tfd);
    return Status::from_errno("siprec: socket");
  }
  int rcv = 4 << 20;
  ::setsockopt(ufd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  if (addr.ss_family == AF_INET6) {
    ::setsockopt(ufd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    ::setsockopt(ufd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);  // v4-mapped peers (dual stack)
  } else {
    ::setsockopt(ufd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
  }
  if (::bind(ufd, reinterpret_cast<const sockaddr*>(&addr), sockaddr_length(addr)) != 0) {
    Status st = Status::from_errno("siprec: UDP bind " + format_endpoint(addr));
    ::close(tfd);
    ::close(ufd);
    return st;
  }
  auto tl = std::make_unique<Listener>();
  tl->fd = tfd;
  tl->kind = Transport::kTcp;
  tl->port = endpoint_port(bound);
  tl->addr = addr;
  auto ul = std::make_unique<Listener>();
  ul->fd = ufd;
  ul->kind = Transport::kUdp;
  ul->port = tl->port;
  ul->addr = addr;
  Listener* tp = tl.get();
  Listener* up = ul.get();
  listeners_.push_back(std::move(tl));
  listeners_.push_back(std::move(ul));
  if (Status st = loop_.add_fd(tfd, EPOLLIN, [this, tp](std::uint32_t) { on_accept(*tp); }); !st) return st;
  return loop_.add_fd(ufd, EPOLLIN, [this, up](std::uint32_t) { on_udp(*up); });
}

Status SipTransport::listen_tls(const sockaddr_storage& addr, const TlsOptions& tls) {
  if (!tls_ctx_) {
    tls_ctx_ = SSL_CTX_new(TLS_server_method());
    if (!tls_ctx_) return Status(EINVAL, "siprec TLS: " + ssl_error_text());
    SSL_CTX_set_min_proto_version(tls_ctx_, TLS1_2_VERSION);
    SSL_CTX_set_mode(tls_ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(tls_ctx_, SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(tls_ctx_, tls.cert.c_str()) != 1)
      return Status(EINVAL, "siprec TLS: certificate " + tls.cert + ": " + ssl_error_text());
    if (SSL_CTX_use_PrivateKey_file(tls_ctx_, tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
      return Status(EINVAL, "siprec TLS: key " + tls.key + ": " + ssl_error_text());
    if (SSL_CTX_check_private_key(tls_ctx_) != 1)
      return Status(EINVAL, "siprec TLS: key " + tls.key + " does not match " + tls.cert);
    if (!tls.ca.empty()) {
      if (SSL_CTX_load_verify_locations(tls_ctx_, tls.ca.c_str(), nullptr) != 1)
        return Status(EINVAL, "siprec TLS: CA " + tls.ca + ": " + ssl_error_text());
      SSL_CTX_set_verify(tls_ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::from_errno("siprec: socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sockaddr_length(addr)) != 0 || ::listen(fd, 1024) != 0) {
    Status st = Status::from_errno("siprec: TLS bind/listen " + format_endpoint(addr));
    ::close(fd);
    return st;
  }
  sockaddr_storage bound{};
  socklen_t bl = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bl);
  auto l = std::make_unique<Listener>();
  l->fd = fd;
  l->kind = Transport::kTls;
  l->port = endpoint_port(bound);
  l->addr = addr;
  Listener* lp = l.get();
  listeners_.push_back(std::move(l));
  return loop_.add_fd(fd, EPOLLIN, [this, lp](std::uint32_t) { on_accept(*lp); });
}

std::uint16_t SipTransport::port(std::size_t n) const {
  for (const auto& l : listeners_)
    if (l->kind == Transport::kTcp && n-- == 0) return l->port;
  return 0;
}

std::uint16_t SipTransport::tls_port(std::size_t n) const {
  for (const auto& l : listeners_)
    if (l->kind == Transport::kTls && n-- == 0) return l->port;
  return 0;
}

void SipTransport::on_udp(Listener& l) {
  // Bounded per wake-up: other sockets get their turn. IP_PKTINFO gives the address each
  // datagram was sent to: on a wildcard listener that is our address as the SRC knows it (for
  // Contact and the answer's c=), with no extra system call.
  for (int i = 0; i < 256; ++i) {
    sockaddr_storage from{};
    iovec iov{udp_buf_.data(), udp_buf_.size()};
    alignas(cmsghdr) char control[128];
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(l.fd, &mh, MSG_TRUNC);
    if (n < 0) return;  // EAGAIN (or an ICMP error reported on the socket): nothing more now
    ++c_.udp_datagrams;
    if (static_cast<std::size_t>(n) > udp_buf_.size() || (mh.msg_flags & MSG_TRUNC) != 0) {
      ++c_.udp_oversize;
      continue;
    }
    if (n <= 4) {  // keep-alives (CRLF, empty datagrams)
      ++c_.keepalives;
      continue;
    }
    SipPeer p;
    p.transport = Transport::kUdp;
    p.addr = unmap_v4(from);
    p.udp_fd = l.fd;
    p.local_port = l.port;
    sockaddr_storage local{};
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        in_pktinfo pi{};
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
        auto* s4 = reinterpret_cast<sockaddr_in*>(&local);
        s4->sin_family = AF_INET;
        s4->sin_addr = pi.ipi_addr;
      } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo pi{};
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&local);
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = pi.ipi6_addr;
      }
    }
    p.local_host = local.ss_family != 0 ? format_ip(unmap_v4(local)) : format_ip(l.addr);
    on_message_(p, std::string_view(udp_buf_.data(), static_cast<std::size_t>(n)));
  }
}

void SipTransport::on_accept(Listener& l) {
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage from{};
    socklen_t fl = sizeof from;
    const int fd = ::accept4(l.fd, reinterpret_cast<sockaddr*>(&from), &fl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        ++c_.conn_refused;
        log_warn("siprec: out of descriptors, a %s connection waits in the backlog", transport_name(l.kind));
      }
      return;
    }
    if (conns_.size() >= opts_.max_connections) {
      ++c_.conn_refused;
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Conn>();
    c->id = next_conn_++;
    c->fd = fd;
    c->kind = l.kind;
    c->peer.transport = l.kind;
    c->peer.addr = unmap_v4(from);
    c->peer.conn = c->id;
    c->peer.local_host = local_host_of(fd, c->peer.local_port);
    c->opened = c->last_activity = EventLoop::now();
    if (l.kind == Transport::kTls) {
      c->ssl = SSL_new(tls_ctx_);
      if (!c->ssl) {
        ::close(fd);
        ++c_.handshake_failures;
        continue;
      }
      SSL_set_fd(c->ssl, fd);
      SSL_set_accept_state(c->ssl);
      ++c_.tls_accepted;
    } else {
      c->handshaken = true;
      ++c_.tcp_accepted;
    }
    const std::uint64_t id = c->id;
    c->interest = EPOLLIN;
    Conn* cp = c.get();
    conns_.emplace(id, std::move(c));
    if (!loop_.add_fd(fd, EPOLLIN | EPOLLRDHUP, [this, id](std::uint32_t ev) { on_conn(id, ev); })) {
      conn_close(*cp, "epoll");
      continue;
    }
  }
}

bool SipTransport::conn_handshake(Conn& c) {
  ERR_clear_error();
  const int r = SSL_do_handshake(c.ssl);
  if (r == 1) {
    c.handshaken = true;
    return true;
  }
  const int e = SSL_get_error(c.ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    const std::uint32_t want = e == SSL_ERROR_WANT_WRITE ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
    if (want != c.interest) {
      c.interest = want;
      (void)loop_.modify_fd(c.fd, want | EPOLLRDHUP);
    }
    return false;
  }
  ++c_.handshake_failures;
  log_warn("siprec: TLS handshake with %s failed: %s", format_endpoint(c.peer.addr).c_str(), ssl_error_text().c_str());
  conn_close(c, "handshake failed");
  return false;
}

void SipTransport::on_conn(std::uint64_t id, std::uint32_t ev) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.ssl && !c.handshaken) {
    if (!conn_handshake(c)) return;
    conn_interest(c);
  }
  if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) conn_read(c);
  if (c.dead) return;
  if ((ev & EPOLLOUT) || c.want_write_for_read) conn_flush(c);
}

void SipTransport::conn_read(Conn& c) {
  char buf[16384];
  bool eof = false;
  for (int i = 0; i < 16 && !c.dead; ++i) {
    ssize_t n = 0;
    if (c.ssl) {
      ERR_clear_error();
      const int r = SSL_read(c.ssl, buf, sizeof buf);
      if (r <= 0) {
        const int e = SSL_get_error(c.ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) {
          c.want_write_for_read = true;
          conn_interest(c);
          break;
        }
        eof = true;
        break;
      }
      n = r;
    } else {
      n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
        eof = true;
        break;
      }
      if (n == 0) {
        eof = true;
        break;
      }
    }
    c.last_activity = EventLoop::now();
    c.in.append(buf, static_cast<std::size_t>(n));
    conn_frame(c);
    if (!c.dead && c.in.size() > opts_.max_message) {
      ++c_.input_overflow;
      conn_close(c, "message over the size limit");
      return;
    }
  }
  if (eof && !c.dead) conn_close(c, "closed by peer");
}

void SipTransport::conn_frame(Conn& c) {
  std::size_t off = 0;
  while (!c.dead && off < c.in.size()) {
    std::string_view rest(c.in.data() + off, c.in.size() - off);
    // CRLF keep-alives between messages; a double CRLF is a ping (RFC 5626): pong one CRLF.
    std::size_t crlf = 0;
    while (crlf < rest.size() && (rest[crlf] == '\r' || rest[crlf] == '\n')) ++crlf;
    if (crlf != 0) {
      if (crlf >= 4 && rest.substr(0, 4) == "\r\n\r\n") {
        ++c_.keepalives;
        send(c.peer, "\r\n");
      }
      off += crlf;
      continue;
    }
    sip::Message m;
    const sip::ParseResult r = sip::parse_message(rest, m, true);
    if (r == sip::ParseResult::kIncomplete) break;
    if (r != sip::ParseResult::kOk) {
      ++c_.framing_errors;
      log_warn("siprec: %s %s: cannot frame a message (%s): closing the connection", transport_name(c.kind),
               format_endpoint(c.peer.addr).c_str(), sip::parse_result_name(r));
      conn_close(c, "framing error");
      return;
    }
    c.got_message = true;
    const SipPeer peer = c.peer;  // the handler may close the connection
    const std::uint64_t id = c.id;
    on_message_(peer, rest.substr(0, m.size));
    if (!conns_.contains(id)) return;
    off += m.size;
  }
  if (!c.dead && off != 0) c.in.erase(0, off);
}

bool SipTransport::send(const SipPeer& to, std::string_view msg) {
  if (to.transport == Transport::kUdp) {
    const ssize_t n = ::sendto(to.udp_fd, msg.data(), msg.size(), MSG_NOSIGNAL,
                               reinterpret_cast<const sockaddr*>(&to.addr), sockaddr_length(to.addr));
    if (n < 0 || static_cast<std::size_t>(n) != msg.size()) {
      ++c_.send_failures;
      return false;
    }
    return true;
  }
  auto it = conns_.find(to.conn);
  if (it == conns_.end() || it->second->dead) {
    ++c_.send_failures;
    return false;
  }
  Conn& c = *it->second;
  if (c.out.size() - c.out_sent + msg.size() > opts_.out_hard) {
    ++c_.output_overflow;
    conn_close(c, "peer does not read its responses");
    return false;
  }
  c.out.append(msg);
  conn_flush(c);
  return true;
}

bool SipTransport::send_request(const SipPeer& to, std::string_view msg) {
  if (to.transport != Transport::kUdp && !conns_.contains(to.conn)) {
    // Its connection is gone: the request cannot reach it over TCP/TLS without a new
    // connection (we do not open connections to SRCs): counted by the caller.
    ++c_.send_failures;
    return false;
  }
  return send(to, msg);
}

void SipTransport::conn_flush(Conn& c) {
  if (c.ssl && !c.handshaken) return;
  c.want_write_for_read = false;
  while (c.out_sent < c.out.size()) {
    const char* p = c.out.data() + c.out_sent;
    const std::size_t len = c.out.size() - c.out_sent;
    ssize_t n = 0;
    if (c.ssl) {
      ERR_clear_error();
      const int r = SSL_write(c.ssl, p, static_cast<int>(std::min<std::size_t>(len, 1 << 20)));
      if (r <= 0) {
        const int e = SSL_get_error(c.ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
        conn_close(c, "TLS write failed");
        return;
      }
      n = r;
    } else {
      n = ::send(c.fd, p, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
        conn_close(c, "write failed");
        return;
      }
    }
    c.out_sent += static_cast<std::size_t>(n);
  }
  if (c.out_sent == c.out.size()) {
    c.out.clear();
    c.out_sent = 0;
  } else if (c.out_sent > 65536) {
    c.out.erase(0, c.out_sent);
    c.out_sent = 0;
  }
  conn_interest(c);
}

void SipTransport::conn_interest(Conn& c) {
  if (c.dead) return;
  std::uint32_t want = EPOLLIN;
  if (c.out_sent < c.out.size() || c.want_write_for_read) want |= EPOLLOUT;
  if (want == c.interest) return;
  c.interest = want;
  (void)loop_.modify_fd(c.fd, want | EPOLLRDHUP);
}

void SipTransport::conn_close(Conn& c, const char* why) {
  if (c.dead) return;
  c.dead = true;
  ++c_.conn_closed;
  log_debug("siprec: %s connection %s closed: %s", transport_name(c.kind), format_endpoint(c.peer.addr).c_str(), why);
  loop_.remove_fd(c.fd);
  if (c.ssl) {
    if (c.handshaken) (void)SSL_shutdown(c.ssl);
    SSL_free(c.ssl);
    c.ssl = nullptr;
  }
  ::close(c.fd);
  const std::uint64_t id = c.id;
  // Erased later (the caller may still hold a reference): a posted closure.
  loop_.post([w = std::weak_ptr<SipTransport*>(self_), id] {
    if (auto s = w.lock()) (*s)->conns_.erase(id);
  });
  if (on_close_) on_close_(id);
}

void SipTransport::sweep() {
  const auto now = EventLoop::now();
  std::vector<Conn*> stale;
  for (auto& [id, c] : conns_) {
    if (c->dead) continue;
    const bool waiting_first = !c->handshaken || !c->got_message;
    if (waiting_first && now - c->opened > opts_.handshake_timeout) {
      if (!c->handshaken) ++c_.handshake_timeouts;
      stale.push_back(c.get());
    } else if (now - c->last_activity > opts_.idle_timeout && !(busy_ && busy_(c->id))) {
      ++c_.idle_closed;
      stale.push_back(c.get());
    }
  }
  for (Conn* c : stale) conn_close(*c, "timed out");
}

void SipTransport::close_all() {
  std::vector<Conn*> all;
  for (auto& [id, c] : conns_)
    if (!c->dead) all.push_back(c.get());
  for (Conn* c : all) conn_close(*c, "closing");
  conns_.clear();
}

}  // namespace callrec::control::siprec
