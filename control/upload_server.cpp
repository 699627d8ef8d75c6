#include "control/upload_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "control/config.hpp"
#include "control/log.hpp"

namespace callrec::control {

namespace {

std::string addr_text(const sockaddr_storage& a, bool with_port) {
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
    port = ntohs(s->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
    port = ntohs(s->sin6_port);
    if (with_port) return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return with_port ? std::string(host) + ":" + std::to_string(port) : std::string(host);
}


}  // namespace

class UploadServer::Conn final : public RecordingOwner {
 public:
  Conn(UploadServer& srv, int sock, const sockaddr_storage& peer_addr, const sockaddr_storage& local_addr,
       std::size_t max_msg)
      : srv_(srv), fd(sock), peer(unmap_v4(peer_addr)), local(unmap_v4(local_addr)), decoder(max_msg) {
    peer_text = addr_text(this->peer, true);
    local_host = addr_text(this->local, false);
    address = key_of(this->peer);
    last_activity = std::chrono::steady_clock::now();
  }
  void on_server_stop(RecordingHandle, const std::string& call_id, const std::string& why) override {
    StopRequest req;
    req.id = call_id;
    req.reason = why;
    ++srv_.counters_.server_stops_sent;
    srv_.sync_recordings(*this);
    srv_.send(*this, format_stop_request(req));
  }

  UploadServer& srv_;
  int fd;
  sockaddr_storage peer;
  sockaddr_storage local;
  std::string peer_text;
  std::string local_host;
  AddressKey address;
  FrameDecoder decoder;
  std::string out;
  std::size_t out_sent = 0;
  unsigned garbage = 0;
  std::uint32_t interest = 0;  ///< the epoll events currently asked for
  bool paused = false;         ///< output over out_high: not read until the peer reads
  bool eof = false;            ///< the peer half-closed: finish the framed messages, then close
  bool closing = false;        ///< eof handled: close once the output is out
  std::uint64_t requests = 0;  ///< well-formed messages handled (a peer that speaks the protocol)
  std::size_t counted = 0;     ///< recordings of this connection in per_address_
  bool flush_queued = false;
  bool dead = false;
  EventLoop::TimerId quiet_timer = 0;
  std::chrono::steady_clock::time_point last_activity;  ///< last byte read (eviction order)
};

UploadServer::AddressKey UploadServer::key_of(const sockaddr_storage& a) {
  AddressKey k;
  if (a.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    k.bytes.assign("4");
    k.bytes.append(reinterpret_cast<const char*>(&s->sin_addr), sizeof s->sin_addr);
  } else if (a.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
    k.bytes.assign("6");
    k.bytes.append(reinterpret_cast<const char*>(&s->sin6_addr), sizeof s->sin6_addr);
  }
  return k;
}

UploadServer::UploadServer(EventLoop& loop, SessionManager& sessions, UploadServerOptions opts)
    : loop_(loop), sessions_(sessions), opts_(std::move(opts)) {
  opts_.out_low = std::min(opts_.out_low, opts_.out_high);
  opts_.out_hard = std::max(opts_.out_hard, opts_.out_high);
  opts_.read_budget = std::max<std::size_t>(opts_.read_budget, 512);
}

UploadServer::~UploadServer() {
  close_all();
  stop_listening();
}

Status UploadServer::listen() {
  const auto& a = opts_.listen;
  fd_ = ::socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return Status::from_errno("control: socket");
  int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const socklen_t len = a.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd_, reinterpret_cast<const sockaddr*>(&a), len) != 0) {
    Status st = Status::from_errno("control: bind " + addr_text(a, true));
    ::close(fd_);
    fd_ = -1;
    return st;
  }
  if (::listen(fd_, 4096) != 0) {
    Status st = Status::from_errno("control: listen");
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

void UploadServer::pause_accept() {
  if (accept_paused_ || fd_ < 0) return;
  accept_paused_ = true;
  (void)loop_.modify_fd(fd_, 0);
  accept_timer_ = loop_.add_timer(std::chrono::milliseconds(100), [this] {
    accept_paused_ = false;
    accept_timer_ = 0;
    if (fd_ >= 0) (void)loop_.modify_fd(fd_, EPOLLIN);
  });
}

void UploadServer::stop_listening() {
  if (accept_timer_ != 0) loop_.cancel_timer(accept_timer_);
  accept_timer_ = 0;
  if (fd_ < 0) return;
  loop_.remove_fd(fd_);
  ::close(fd_);
  fd_ = -1;
}

void UploadServer::close_all() {
  std::vector<Conn*> all;
  for (auto& [fd, c] : conns_) all.push_back(c.get());
  for (Conn* c : all) drop(*c, "closing");
}

std::size_t UploadServer::evict_idle(std::size_t n, const void* keep) {
  if (n == 0) return 0;
  std::vector<Conn*> idle;
  for (auto& [fd, c] : conns_) {
    if (c->dead || c.get() == keep || sessions_.owns_any(c.get())) continue;
    idle.push_back(c.get());
  }
  if (idle.empty()) return 0;
  const std::size_t k = std::min(n, idle.size());
  // Connections that never sent a request go first (the attack: a socket held open), then the
  // ones idle longest.
  std::partial_sort(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(k), idle.end(),
                    [](const Conn* a, const Conn* b) {
                      if ((a->requests == 0) != (b->requests == 0)) return a->requests == 0;
                      return a->last_activity < b->last_activity;
                    });
  for (std::size_t i = 0; i < k; ++i) {
    log_info("control: closing idle connection %s (no recording) to free a descriptor", idle[i]->peer_text.c_str());
    ++counters_.evicted_idle;
    drop(*idle[i], "idle, descriptor needed");
  }
  return k;
}

void UploadServer::on_accept() {
  for (int i = 0; i < 256; ++i) {
    sockaddr_storage peer{};
    socklen_t pl = sizeof peer;
    const int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EINTR) return;
      if (AcceptGuard::exhausted(err)) {
        // Out of descriptors: first close connections that hold no recording and have been
        // idle longest (a phone that connects to record beats one that only holds a socket),
        // then retry. Nothing to evict: close pending connections at once (counted, logged once
        // a second) rather than spin on a listener that stays readable.
        if (evict_idle(eviction_batch()) > 0) continue;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_exhausted_log_ >= std::chrono::seconds(1)) {
          log_warn("control: accept: %s: closing new connections until descriptors are free", std::strerror(err));
          last_exhausted_log_ = now;
        }
        if (accept_guard_.shed(fd_)) {
          ++counters_.rejected;
          ++counters_.fd_exhausted;
          continue;
        }
        pause_accept();
        return;
      }
      log_warn("control: accept: %s", std::strerror(err));
      return;
    }
    const sockaddr_storage peer4 = unmap_v4(peer);
    const AddressKey key = key_of(peer4);
    if (conns_.size() >= opts_.max_connections) {
      // At the cap: idle connections without a recording make room for the new one (a batch,
      // so that a stream of new connections costs one scan per batch, not one per accept).
      if (evict_idle(eviction_batch()) == 0) {
        ++counters_.rejected;
        ::close(fd);
        continue;
      }
    }
    if (opts_.max_per_address != 0) {
      auto it = per_address_.find(key);
      if (it != per_address_.end() && it->second.conns >= opts_.max_per_address) {
        ++counters_.rejected;
        ++counters_.per_address_rejected;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_per_address_log_ >= std::chrono::seconds(1)) {
          log_warn("control: %s already has %zu connections (--max-connections-per-address): refusing more",
                   addr_text(peer4, false).c_str(), it->second.conns);
          last_per_address_log_ = now;
        }
        ::close(fd);
        continue;
      }
    }
    sockaddr_storage local{};
    socklen_t ll = sizeof local;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto conn = std::make_unique<Conn>(*this, fd, peer, local, opts_.max_message);
    Conn* c = conn.get();
    c->interest = EPOLLIN | EPOLLRDHUP;
    if (Status st = loop_.add_fd(fd, c->interest, [this, c](std::uint32_t ev) { on_event(*c, ev); }); !st) {
      log_warn("control: %s", st.message().c_str());
      ::close(fd);
      continue;
    }
    conns_.emplace(fd, std::move(conn));
    ++per_address_[key].conns;
    ++counters_.accepted;
    counters_.active = conns_.size();
    log_debug("control: connection from %s", c->peer_text.c_str());
  }
}

void UploadServer::sync_recordings(Conn& c) {
  const std::size_t now = sessions_.active_of(&c);
  if (now == c.counted) return;
  auto& use = per_address_[c.address];
  use.recordings = use.recordings + now - std::min(use.recordings + now, c.counted);
  c.counted = now;
}

std::size_t UploadServer::unsent(const Conn& c) const { return c.out.size() - c.out_sent; }

void UploadServer::update_interest(Conn& c) {
  if (c.dead) return;
  std::uint32_t want = 0;
  if (!c.paused && !c.eof) want |= EPOLLIN | EPOLLRDHUP;
  // Paused: EPOLLOUT also tells when to resume (the peer took its output).
  if (c.paused || (unsent(c) > 0 && !c.flush_queued)) want |= EPOLLOUT;
  if (want == c.interest) return;
  c.interest = want;
  (void)loop_.modify_fd(c.fd, want);
}

void UploadServer::on_event(Conn& c, std::uint32_t ev) {
  if (ev & EPOLLOUT) {
    // Held-back output waits for the catalog commit (flush_pending), never goes out early.
    if (!c.flush_queued) flush_output(c);
    if (c.dead) return;
    if (c.paused && !c.flush_queued && unsent(c) <= opts_.out_low) {
      c.paused = false;
      handle_ready(c);
      if (c.dead) return;
      if (!c.paused && !c.eof) read_some(c);  // a full socket buffer may not signal again
      if (c.dead) return;
    }
    update_interest(c);
  }
  if (c.dead) return;
  if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c.paused) read_some(c);
  if (!c.dead && (ev & (EPOLLHUP | EPOLLERR)) && c.paused) drop(c, "connection reset");
}

void UploadServer::handle_ready(Conn& c) {
  while (!c.paused) {
    auto line = c.decoder.next();
    if (!line) break;
    on_message(c, *line);
    if (c.dead) return;
  }
  if (c.paused) return;
  if (c.eof && !c.closing) {
    // Everything framed is handled: the half-close ends the last, unterminated message. The
    // answers still go out (the peer may read after its half-close) before the close.
    c.closing = true;
    if (auto rest = c.decoder.take_unterminated()) on_message(c, *rest);
    if (!c.dead && unsent(c) == 0 && !c.flush_queued) drop(c, "peer closed");
  }
}

void UploadServer::read_some(Conn& c) {
  handle_ready(c);  // messages framed before a pause come first, in order
  if (c.dead || c.paused || c.eof) {
    update_interest(c);
    return;
  }
  char buf[8192];
  std::size_t budget = opts_.read_budget;
  bool read_any = false;
  while (budget > 0 && !c.paused) {
    const std::size_t want = std::min(sizeof buf, budget);
    const ssize_t n = ::read(c.fd, buf, want);
    if (n > 0) {
      read_any = true;
      budget -= static_cast<std::size_t>(n);
      c.decoder.feed(std::string_view(buf, static_cast<std::size_t>(n)));
      // Handle as we read: the decoder never holds more than this read's messages.
      handle_ready(c);
      if (c.dead) return;
      if (c.decoder.overflow()) {
        ++counters_.overflow;
        log_warn("control: %s sent a message longer than %zu bytes: dropping the connection", c.peer_text.c_str(),
                 opts_.max_message);
        drop(c, "message too long");
        return;
      }
      if (static_cast<std::size_t>(n) < want) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    // EOF or an error: what was framed is still handled (in handle_ready, also after a pause).
    c.eof = true;
    handle_ready(c);
    if (c.dead) return;
    break;
  }
  if (read_any) c.last_activity = std::chrono::steady_clock::now();
  // Budget used up with more waiting: level-triggered epoll brings us back on the next pass,
  // after every other ready connection had its turn.
  if (!c.dead) {
    update_interest(c);
    arm_quiet_timer(c);
  }
}

void UploadServer::arm_quiet_timer(Conn& c) {
  // A complete but unterminated message: process it when the peer has been quiet for long.
  if (c.decoder.pending().empty() || c.eof) return;
  if (c.quiet_timer) loop_.cancel_timer(c.quiet_timer);
  const int fd = c.fd;
  c.quiet_timer = loop_.add_timer(opts_.quiet_flush, [this, fd] {
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    Conn& cc = *it->second;
    cc.quiet_timer = 0;
    if (cc.dead || cc.paused) return;
    if (auto rest = cc.decoder.take_unterminated()) on_message(cc, *rest);
  });
}

void UploadServer::on_message(Conn& c, const std::string& line) {
  ++counters_.messages;
  auto garbage = [&](const std::string& detail) {
    ++counters_.garbage;
    ++c.garbage;
    log_warn("control: garbage from %s (%s): %.80s", c.peer_text.c_str(), detail.c_str(), line.c_str());
    if (c.garbage >= opts_.garbage_limit) drop(c, "repeated garbage");
  };
  auto msg = parse_message(line);
  if (msg) ++c.requests;
  if (!msg) {
    // A request whose syntax is broken (a bad %-escape in one field ...) still gets its
    // answer when its command and id can be read: every request gets a response.
    if (auto ident = request_identity(line)) {
      ++counters_.bad_request;
      log_warn("control: %s: %s refused: %s", c.peer_text.c_str(), std::string(command_name(ident->command)).c_str(),
               msg.error().detail.c_str());
      if (ident->command == Command::kStartRequest) {
        StartResponse r;
        r.id = ident->id;
        r.reason = std::string(reason::kBadRequest);
        ++counters_.start_failed;
        send(c, format_start_response(r));
      } else {
        StopResponse r;
        r.id = ident->id;
        r.success = false;
        r.reason = std::string(reason::kBadRequest);
        send(c, format_stop_response(r));
      }
      return;
    }
    garbage(msg.error().detail);
    return;
  }
  switch (command_of(msg->cmd)) {
    case Command::kStartRequest: {
      auto req = parse_start_request(*msg);
      if (!req) {
        ++counters_.bad_request;
        StartResponse r;
        r.id = std::string(msg->get("id").value_or(""));
        r.reason = std::string(req.error().reason);
        log_warn("control: %s: RecordStartRequest refused: %s", c.peer_text.c_str(), req.error().detail.c_str());
        ++counters_.start_failed;
        send(c, format_start_response(r));
        return;
      }
      send(c, format_start_response(start_action(c, *req)));
      return;
    }
    case Command::kStopRequest: {
      auto req = parse_stop_request(*msg);
      if (!req) {
        ++counters_.bad_request;
        StopResponse r;
        r.id = std::string(msg->get("id").value_or(""));
        r.success = false;
        r.reason = std::string(req.error().reason);
        send(c, format_stop_response(r));
        return;
      }
      send(c, format_stop_response(stop_action(c, *req)));
      return;
    }
    case Command::kStopResponse:
      ++counters_.stop_responses;  // the phone acknowledged a server-initiated stop
      return;
    case Command::kStartResponse:
    case Command::kUnknown:
      garbage("unexpected command '" + msg->cmd + "'");
      return;
  }
}

StartResponse UploadServer::start_action(Conn& c, const StartRequest& req) {
  StartResponse r;
  r.id = req.id;
  if (sessions_.find(&c, req.id)) {
    r.reason = std::string(reason::kDuplicateId);
    ++counters_.start_failed;
    return r;
  }
  StartParams p;
  p.kind = IngestKind::kUpload;
  p.meta.call_id = req.id;
  p.meta.device = req.device;
  p.meta.remote_number = req.remote_number;
  p.meta.remote_name = req.remote_name;
  p.meta.local_number = req.local_number;
  p.meta.local_name = req.local_name;
  p.meta.direction = std::string(direction_name(req.dir));
  p.meta.codec = req.codec ? std::string(fileio::codec_info(*req.codec).name) : std::string();
  p.meta.extra = req.extras;
  p.peer = c.peer;
  p.peer_text = c.peer_text;
  p.owner = &c;
  p.streams = 1;
  if (opts_.max_recordings_per_address != 0) {
    sync_recordings(c);
    const std::size_t mine = per_address_[c.address].recordings;
    if (mine >= opts_.max_recordings_per_address) {
      ++counters_.per_address_recordings_refused;
      ++counters_.start_failed;
      r.reason = std::string(reason::kOverloaded);
      log_warn("control: %s: RecordStartRequest id=%s refused: %zu recordings from this address "
               "(--max-recordings-per-address)", c.peer_text.c_str(), req.id.c_str(), mine);
      return r;
    }
  }
  StartResult res = sessions_.start(p);
  if (!res.ok && res.reason == reason::kOverloaded && evict_idle(4, &c) > 0) {
    // Out of descriptors: idle connections without a recording were closed; try once more.
    res = sessions_.start(p);
  }
  if (!res.ok) {
    r.reason = res.reason;
    ++counters_.start_failed;
    log_warn("control: %s: RecordStartRequest id=%s device=%s failed: %s", c.peer_text.c_str(), req.id.c_str(),
             req.device.c_str(), res.reason.c_str());
    return r;
  }
  ++counters_.start_ok;
  sync_recordings(c);
  r.success = true;
  r.server = opts_.advertise.empty() ? c.local_host : opts_.advertise;
  r.port = res.ports.front();
  return r;
}

StopResponse UploadServer::stop_action(Conn& c, const StopRequest& req) {
  ++counters_.stop_requests;
  StopResponse r;
  r.id = req.id;
  auto h = sessions_.find(&c, req.id);
  if (!h) {
    ++counters_.stop_unknown;
    r.success = false;
    r.reason = std::string(reason::kUnknownId);
    return r;
  }
  MetadataOverrides ov;
  ov.remote_number = req.remote_number;
  ov.remote_name = req.remote_name;
  ov.local_number = req.local_number;
  ov.local_name = req.local_name;
  ov.extra = req.extras;
  sessions_.stop(*h, ov, req.reason && !req.reason->empty() ? *req.reason : std::string("phone"), false);
  sync_recordings(c);
  r.success = true;
  return r;
}

void UploadServer::send(Conn& c, std::string msg) {
  if (c.dead) return;
  if (unsent(c) + msg.size() > opts_.out_hard) {
    // Only server-initiated messages get here: requests stop being read at out_high.
    ++counters_.output_overflow;
    log_warn("control: %s does not read its responses (%zu bytes unread): dropping the connection",
             c.peer_text.c_str(), unsent(c));
    drop(c, "peer does not read its responses");
    return;
  }
  if (c.out_sent > 0 && c.out_sent == c.out.size()) {
    c.out.clear();
    c.out_sent = 0;
  }
  c.out += msg;
  if (!c.paused && unsent(c) >= opts_.out_high) {
    // Push back: stop reading this peer until it has read its responses.
    c.paused = true;
    ++counters_.backpressure;
    update_interest(c);
  }
  if (opts_.defer_flush) {
    if (!c.flush_queued) {
      c.flush_queued = true;
      pending_flush_.push_back(c.fd);
    }
    return;
  }
  flush_output(c);
}

void UploadServer::flush_pending() {
  std::vector<int> fds;
  fds.swap(pending_flush_);
  for (const int fd : fds) {
    auto it = conns_.find(fd);
    if (it == conns_.end() || it->second->dead || !it->second->flush_queued) continue;
    Conn& c = *it->second;  // flush_output may drop c: its node leaves conns_, c lives on until posted work runs
    c.flush_queued = false;
    flush_output(c);
    update_interest(c);
  }
}

void UploadServer::flush_output(Conn& c) {
  while (c.out_sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      update_interest(c);  // EPOLLOUT brings us back
      return;
    }
    drop(c, "send failed");
    return;
  }
  c.out.clear();
  c.out_sent = 0;
  if (c.closing) {
    drop(c, "peer closed");
    return;
  }
  update_interest(c);
}

void UploadServer::drop(Conn& c, const char* why) {
  if (c.dead) return;
  c.dead = true;
  log_debug("control: closing %s: %s", c.peer_text.c_str(), why);
  // The connection failed or ended: every recording it started stops; files are finalized.
  sessions_.stop_owned_by(&c, "disconnect");
  if (c.quiet_timer) loop_.cancel_timer(c.quiet_timer);
  loop_.remove_fd(c.fd);
  ::close(c.fd);
  if (auto it = per_address_.find(c.address); it != per_address_.end()) {
    it->second.recordings -= std::min(it->second.recordings, c.counted);
    if (--it->second.conns == 0) per_address_.erase(it);
  }
  ++counters_.closed;
  const int fd = c.fd;
  // Destroy after the current handler returns (we may be inside c's own handler).
  auto node = conns_.extract(fd);
  counters_.active = conns_.size();
  if (!node.empty()) {
    std::shared_ptr<Conn> keep(std::move(node.mapped()));
    loop_.post([keep] {});
  }
}

}  // namespace callrec::control
