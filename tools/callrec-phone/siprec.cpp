#include "siprec.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>

#include "control/config.hpp"
#include "control/sip/sdp.hpp"
#include "siprec_msg.hpp"
#include "tx_drain.hpp"

namespace callrec::phone {
namespace {

namespace sip = control::sip;

constexpr std::int64_t kNsPerMs = 1'000'000;
constexpr std::int64_t kNsPerSec = 1'000'000'000;
constexpr std::int64_t kPublishIntervalNs = 100 * kNsPerMs;
constexpr std::uint32_t kT2Ms = 4000;  ///< RFC 3261 T2
constexpr std::uint64_t kTimerTag = 0;
constexpr std::uint64_t kEventFdTag = ~std::uint64_t{0};
constexpr int kUdpRcvBuf = 8 << 20;
constexpr std::string_view kBoundary = "callrec-phone-siprec-boundary";
constexpr std::string_view kAllow = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n";

std::string errno_name(int e) {
  switch (e) {
    case EAGAIN: return "EAGAIN";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ENOBUFS: return "ENOBUFS";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EPIPE: return "EPIPE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    default: return std::system_category().message(e);
  }
}

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

/// IP text of an address (no port, no brackets).
std::string ip_text(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  } else if (a.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    if (IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr)) {
      ::inet_ntop(AF_INET, &v6.sin6_addr.s6_addr[12], buf, sizeof buf);
    } else {
      ::inet_ntop(AF_INET6, &v6.sin6_addr, buf, sizeof buf);
    }
  }
  return buf;
}

std::uint16_t port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

/// A host for a URI: IPv6 in brackets.
std::string uri_host(const std::string& ip) { return ip.find(':') != std::string::npos ? "[" + ip + "]" : ip; }

bool to_sockaddr(const dataplane::decode::IpAddr& ip, std::uint16_t port, sockaddr_storage& out) {
  out = sockaddr_storage{};
  if (ip.family == 4) {
    auto& s = reinterpret_cast<sockaddr_in&>(out);
    s.sin_family = AF_INET;
    std::memcpy(&s.sin_addr, ip.b.data(), 4);
    s.sin_port = htons(port);
    return true;
  }
  if (ip.family == 6) {
    auto& s = reinterpret_cast<sockaddr_in6&>(out);
    s.sin6_family = AF_INET6;
    std::memcpy(&s.sin6_addr, ip.b.data(), 16);
    s.sin6_port = htons(port);
    return true;
  }
  return false;
}

void set_port(sockaddr_storage& a, std::uint16_t port) {
  if (a.ss_family == AF_INET) reinterpret_cast<sockaddr_in&>(a).sin_port = htons(port);
  if (a.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6&>(a).sin6_port = htons(port);
}

/// The text="..." of a Reason header (SIP;cause=200;text="no_space"), else the whole value.
std::string reason_text(std::string_view v) {
  const auto p = v.find("text=");
  if (p == std::string_view::npos) return std::string(sip::trim(v));
  std::string_view t = v.substr(p + 5);
  if (!t.empty() && t.front() == '"') {
    t.remove_prefix(1);
    const auto q = t.find('"');
    return std::string(t.substr(0, q));
  }
  const auto semi = t.find_first_of(";, ");
  return std::string(t.substr(0, semi));
}

const char* via_transport(SipTransport t) {
  switch (t) {
    case SipTransport::kUdp: return "UDP";
    case SipTransport::kTcp: return "TCP";
    case SipTransport::kTls: return "TLS";
  }
  return "UDP";
}

std::uint64_t stream_key(std::uint32_t slot, std::uint32_t gen, unsigned k) {
  return (static_cast<std::uint64_t>(slot) << 32) | (static_cast<std::uint64_t>(gen & 0x7FFFFFFFU) << 1) | k;
}

}  // namespace

SipClient::SipClient(const RunConfig& cfg, const sockaddr_storage& server, std::vector<Worker*> workers,
                     const StopLevel* stop)
    : cfg_(cfg), opt_(cfg.opt), server_(server), workers_(std::move(workers)), stop_(stop) {
  outbox_.resize(workers_.size());
  Rng r{cfg.seed ^ 0x51F0C0DE5151F0C0ULL};
  run_id_ = r.next() & 0xFFFFFFFFFFFFULL;
  sessions_.resize(opt_.sessions);
  for (auto& s : sessions_) s.repeats_left = opt_.repeat;
  conns_.resize(opt_.connections);
  server_host_ = uri_host(ip_text(server_));
  server_port_ = port_of(server_);
  packets_per_stream_ = static_cast<std::uint64_t>(std::llround(opt_.duration_s * 1000.0 / opt_.ptime_ms));
  evfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (Worker* w : workers_) {
    w->set_stream_done([this](std::uint64_t key, std::uint64_t n) {
      bool wake = false;
      {
        std::lock_guard lock(done_mu_);
        wake = done_queue_.empty();
        done_queue_.emplace_back(key, n);
      }
      if (wake && evfd_ >= 0) {
        const std::uint64_t one = 1;
        (void)!::write(evfd_, &one, sizeof one);
      }
    });
  }
}

SipClient::~SipClient() {
  for (auto& c : conns_) {
    if (c.ssl != nullptr) SSL_free(c.ssl);
    if (c.fd >= 0) ::close(c.fd);
  }
  if (tls_ != nullptr) SSL_CTX_free(tls_);
  if (evfd_ >= 0) ::close(evfd_);
  if (tfd_ >= 0) ::close(tfd_);
  if (epfd_ >= 0) ::close(epfd_);
}

bool SipClient::init(std::string* error) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  tfd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epfd_ < 0 || tfd_ < 0 || evfd_ < 0) {
    *error = "epoll/timerfd/eventfd: " + errno_name(errno);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTimerTag;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, tfd_, &ev);
  ev.data.u64 = kEventFdTag;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev);
  udp_buf_.resize(65536);
  if (opt_.transport == SipTransport::kTls) {
    tls_ = SSL_CTX_new(TLS_client_method());
    if (tls_ == nullptr) {
      *error = "TLS: " + openssl_error();
      return false;
    }
    SSL_CTX_set_min_proto_version(tls_, TLS1_2_VERSION);
    SSL_CTX_set_mode(tls_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!opt_.tls_cert.empty()) {
      if (SSL_CTX_use_certificate_chain_file(tls_, opt_.tls_cert.c_str()) != 1) {
        *error = "--tls-cert " + opt_.tls_cert + ": " + openssl_error();
        return false;
      }
      if (SSL_CTX_use_PrivateKey_file(tls_, opt_.tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_check_private_key(tls_) != 1) {
        *error = "--tls-key " + opt_.tls_key + ": " + openssl_error();
        return false;
      }
    }
    if (!opt_.tls_ca.empty()) {
      if (SSL_CTX_load_verify_locations(tls_, opt_.tls_ca.c_str(), nullptr) != 1) {
        *error = "--tls-ca " + opt_.tls_ca + ": " + openssl_error();
        return false;
      }
      SSL_CTX_set_verify(tls_, SSL_VERIFY_PEER, nullptr);
    } else {
      SSL_CTX_set_verify(tls_, SSL_VERIFY_NONE, nullptr);  // documented in --help
    }
  }
  if (opt_.ramp > 0) {
    start_interval_ns_ = static_cast<std::int64_t>(static_cast<double>(kNsPerSec) / opt_.ramp);
    if (start_interval_ns_ < 1) start_interval_ns_ = 1;
  }
  for (std::uint32_t i = 0; i < sessions_.size(); ++i) ready_.push_back(i);
  if (opt_.srtp) {  // libsrtp's one-time initialisation here, not in the first session's media
    fileio::SdesCrypto k;
    k = fileio::make_sdes_answer(k);
    std::string why;
    if (!fileio::SrtpSender::create(k, &why)) {
      *error = "--srtp: " + why;
      return false;
    }
  }
  return true;
}

std::int64_t SipClient::now_ns() const {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

Stats SipClient::snapshot() const {
  std::lock_guard lock(pub_mu_);
  return published_;
}

void SipClient::publish() {
  std::lock_guard lock(pub_mu_);
  published_ = stats_;
}

void SipClient::arm_timer(std::int64_t at_ns) {
  if (at_ns == armed_ns_) return;
  itimerspec its{};
  its.it_value.tv_sec = at_ns / kNsPerSec;
  its.it_value.tv_nsec = at_ns % kNsPerSec;
  if (::timerfd_settime(tfd_, TFD_TIMER_ABSTIME, &its, nullptr) != 0) {
    count_error("timerfd_settime: " + errno_name(errno));
    return;
  }
  armed_ns_ = at_ns;
}

void SipClient::log(std::uint32_t slot, const char* fmt, ...) {
  if (!opt_.verbose) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const double t = static_cast<double>(now_ns() - t0_ns_) / kNsPerSec;
  std::fprintf(stderr, "[%8.3f] session %s: %s\n", t, call_id(slot, sessions_[slot].gen).c_str(), msg);
}

void SipClient::run() {
  t0_ns_ = now_ns();
  next_start_ns_ = t0_ns_;
  next_publish_ns_ = t0_ns_;
  std::array<epoll_event, 256> events{};
  while (true) {
    const int level = stop_->load(std::memory_order_acquire);
    if (level >= 2) break;
    if (level >= 1 && stop_seen_ == 0) begin_stop();
    const std::int64_t now = now_ns();
    if (!deferred_fail_.empty()) {
      std::vector<DeferredFail> f;
      f.swap(deferred_fail_);
      for (const auto& d : f) {
        if (sessions_[d.slot].gen == d.gen && sessions_[d.slot].state != State::kIdle) end_session(d.slot, false, d.why);
      }
    }
    drain_done(now);
    run_timers(now);
    start_ready(now);
    flush_outbox();
    if (now >= next_publish_ns_) {
      publish();
      next_publish_ns_ = now + kPublishIntervalNs;
    }
    if (active_ == 0 && ready_.empty() && deferred_fail_.empty()) break;

    std::int64_t wake = next_publish_ns_;
    if (!timers_.empty()) wake = std::min(wake, timers_.top().at_ns);
    if (!ready_.empty() && stop_seen_ == 0) wake = std::min(wake, start_interval_ns_ > 0 ? next_start_ns_ : now);
    int timeout = 0;
    if (wake > now_ns() && deferred_fail_.empty()) {
      arm_timer(wake);
      timeout = -1;
    }
    const int n = ::epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      count_error("fatal: epoll_wait: " + errno_name(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kTimerTag) {
        std::uint64_t x = 0;
        while (::read(tfd_, &x, sizeof x) > 0) {
        }
        armed_ns_ = -1;
      } else if (tag == kEventFdTag) {
        std::uint64_t x = 0;
        while (::read(evfd_, &x, sizeof x) > 0) {
        }
      } else {
        on_conn_event(static_cast<std::uint32_t>(tag - 1), events[i].events);
      }
    }
    flush_outbox();
  }
  // Every session is over (or the run is aborted): the workers may finish.
  flush_outbox();
  for (Worker* w : workers_) w->close_external();
  publish();
  finished_.store(true, std::memory_order_release);
}

void SipClient::begin_stop() {
  stop_seen_ = 1;
  ready_.clear();
  for (auto& s : sessions_) s.repeats_left = 0;
  // Streams end at their next packet time (the workers saw the stop too) and report done ->
  // BYE. A session without streams hangs up now.
  const std::int64_t now = now_ns();
  for (std::uint32_t i = 0; i < sessions_.size(); ++i) {
    Session& s = sessions_[i];
    if (s.state == State::kActive && s.streams == 0) {
      s.pending |= kWantBye;
      run_pending(i, now);
    }
  }
}

void SipClient::flush_outbox() {
  for (std::size_t w = 0; w < workers_.size(); ++w) {
    if (!outbox_[w].empty()) workers_[w]->post(outbox_[w]);
  }
}

void SipClient::drain_done(std::int64_t now) {
  {
    std::lock_guard lock(done_mu_);
    done_work_.swap(done_queue_);
  }
  for (const auto& [key, packets] : done_work_) {
    const auto slot = static_cast<std::uint32_t>(key >> 32);
    const auto gen = static_cast<std::uint32_t>((key >> 1) & 0x7FFFFFFFU);
    if (slot >= sessions_.size()) continue;
    Session& s = sessions_[slot];
    if ((s.gen & 0x7FFFFFFFU) != gen || s.streams == 0) continue;  // stopped by us, or an older session
    if (--s.streams == 0 && s.state == State::kActive) {
      log(slot, "media done (%llu packet times): hanging up", static_cast<unsigned long long>(packets));
      s.pending |= kWantBye;
      run_pending(slot, now);
    }
  }
  done_work_.clear();
}

void SipClient::add_timer(std::int64_t at, std::uint32_t slot, TimerKind kind, bool tx_bound) {
  const Session& s = sessions_[slot];
  timers_.push(Timer{at, slot, s.gen, tx_bound ? s.epoch : ~0U, kind});
}

void SipClient::run_timers(std::int64_t now) {
  while (!timers_.empty() && timers_.top().at_ns <= now) {
    const Timer t = timers_.top();
    timers_.pop();
    Session& s = sessions_[t.slot];
    if (s.gen != t.gen || s.state == State::kIdle) continue;
    if (t.epoch != ~0U && (t.epoch != s.epoch || s.tx == TxKind::kNone)) continue;  // its transaction ended
    switch (t.kind) {
      case TimerKind::kRetransmit: {
        const bool invite = s.tx == TxKind::kInvite || s.tx == TxKind::kReinvite;
        if (invite && s.provisional) break;  // timer A stops in Proceeding
        send_on(s.conn, s.tx_msg);
        ++stats_.sip_retransmissions;
        log(t.slot, "retransmission (%u ms)", s.retx_ms);
        s.retx_ms = invite ? s.retx_ms * 2 : std::min(s.retx_ms * 2, kT2Ms);
        if (!invite && s.provisional) s.retx_ms = kT2Ms;
        add_timer(now + static_cast<std::int64_t>(s.retx_ms) * kNsPerMs, t.slot, TimerKind::kRetransmit, true);
        break;
      }
      case TimerKind::kTxTimeout: {
        const TxKind kind = s.tx;
        finish_tx(s);
        if (kind == TxKind::kInvite) {
          end_session(t.slot, false, "timeout");
        } else if (kind == TxKind::kBye) {
          end_session(t.slot, false, "bye_timeout");
        } else {
          count_error(kind == TxKind::kUpdate ? "sip: UPDATE timed out" : "sip: re-INVITE timed out");
          run_pending(t.slot, now);
        }
        break;
      }
      case TimerKind::kPause:
        if (s.state == State::kActive && stop_seen_ == 0) {
          s.pending |= kWantPause;
          run_pending(t.slot, now);
        }
        break;
      case TimerKind::kResume:
        if (s.state == State::kActive && stop_seen_ == 0) {
          s.pending |= kWantResume;
          run_pending(t.slot, now);
        }
        break;
      case TimerKind::kMetaUpdate:
        if (s.state == State::kActive && stop_seen_ == 0) {
          s.pending |= kWantMeta;
          run_pending(t.slot, now);
        }
        break;
    }
  }
}

void SipClient::start_ready(std::int64_t now) {
  if (stop_seen_ != 0) return;
  while (!ready_.empty() && (start_interval_ns_ == 0 || next_start_ns_ <= now)) {
    next_start_ns_ += start_interval_ns_;
    const std::uint32_t slot = ready_.front();
    ready_.pop_front();
    start_session(slot, now);
  }
  if (ready_.empty() && next_start_ns_ < now) next_start_ns_ = now;
}

// ---- sessions --------------------------------------------------------------------------------

std::string SipClient::call_id(std::uint32_t slot, std::uint32_t gen) const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%u.%u.%llx@callrec-phone", slot, gen, static_cast<unsigned long long>(run_id_));
  return buf;
}

std::string SipClient::from_tag(std::uint32_t slot, std::uint32_t gen) const {
  char buf[48];
  std::snprintf(buf, sizeof buf, "src%llx.%u.%u", static_cast<unsigned long long>(run_id_ & 0xFFFFFF), slot, gen);
  return buf;
}

std::string SipClient::branch(std::uint32_t slot, std::uint32_t gen, std::uint32_t cseq, char suffix) const {
  char buf[80];
  std::snprintf(buf, sizeof buf, "z9hG4bK%llx.%u.%u.%u%c", static_cast<unsigned long long>(run_id_), slot, gen, cseq,
                suffix);
  return buf;
}

int SipClient::slot_of(std::string_view cid) const {
  // "<slot>.<gen>.<run hex>@callrec-phone"
  std::uint64_t slot = 0, gen = 0, run = 0;
  std::size_t i = 0;
  auto digits = [&](std::uint64_t& v, int base) {
    const std::size_t from = i;
    while (i < cid.size()) {
      const char c = cid[i];
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
      if (d < 0) break;
      v = v * static_cast<std::uint64_t>(base) + static_cast<std::uint64_t>(d);
      ++i;
      if (i - from > 16) return false;
    }
    return i > from;
  };
  if (!digits(slot, 10) || i >= cid.size() || cid[i++] != '.') return -1;
  if (!digits(gen, 10) || i >= cid.size() || cid[i++] != '.') return -1;
  if (!digits(run, 16) || i >= cid.size() || cid[i] != '@') return -1;
  if (run != run_id_ || slot >= sessions_.size()) return -1;
  if (sessions_[slot].gen != gen || sessions_[slot].state == State::kIdle) return -1;
  return static_cast<int>(slot);
}

void SipClient::start_session(std::uint32_t slot, std::int64_t now) {
  Session& s = sessions_[slot];
  if (s.repeats_left > 0) --s.repeats_left;
  s.state = State::kInviting;
  s.tx = TxKind::kNone;
  s.number = next_number_++;
  s.conn = slot % static_cast<std::uint32_t>(conns_.size());
  s.cseq = 0;
  s.sdp_version = 1;
  Rng r{cfg_.seed ^ (static_cast<std::uint64_t>(s.number) * 0x9E6C63D0676A9A99ULL)};
  s.sdp_id = (r.next() & 0xFFFFFFFFFFFFULL) | 1;
  s.streams = 0;
  s.pending = 0;
  s.paused = false;
  for (unsigned k = 0; k < 2; ++k) s.local_ports[k] = static_cast<std::uint16_t>(20000 + (s.number * 2 + k) % 40000);
  if (opt_.srtp) {
    s.keys = std::make_unique<std::array<fileio::SdesCrypto, 2>>();
    fileio::SdesCrypto offer;
    offer.tag = 1;
    offer.suite = fileio::SrtpSuite::kAesCm128HmacSha1_80;
    for (auto& k : *s.keys) k = fileio::make_sdes_answer(offer);
  }
  ++stats_.calls_attempted;
  ++stats_.calls_active;
  ++active_;
  if (stats_.first_invite_ns == 0) stats_.first_invite_ns = now;
  send_request(slot, TxKind::kInvite, now);
}

void SipClient::end_session(std::uint32_t slot, bool ok, const std::string& reason) {
  Session& s = sessions_[slot];
  if (s.state == State::kIdle) return;
  if (ok) {
    ++stats_.calls_succeeded;
  } else {
    ++stats_.calls_failed;
    ++stats_.failed_by_reason[reason];
  }
  --stats_.calls_active;
  --active_;
  log(slot, "ended: %s%s%s", ok ? "succeeded" : "failed", reason.empty() ? "" : " ", reason.c_str());
  stop_streams(slot);
  s.state = State::kIdle;
  s.tx = TxKind::kNone;
  std::string().swap(s.tx_msg);
  std::string().swap(s.to_tag);
  std::string().swap(s.remote_target);
  s.keys.reset();
  s.pending = 0;
  s.paused = false;
  s.provisional = false;
  ++s.gen;
  ++s.epoch;
  if (s.repeats_left > 0 && stop_seen_ == 0) ready_.push_back(slot);
}

void SipClient::finish_tx(Session& s) {
  s.tx = TxKind::kNone;
  s.provisional = false;
  std::string().swap(s.tx_msg);
  ++s.epoch;
}

void SipClient::stop_streams(std::uint32_t slot) {
  Session& s = sessions_[slot];
  if (s.streams == 0) return;
  auto& box = outbox_[slot % workers_.size()];
  for (unsigned k = 0; k < 2; ++k) {
    ExtCommand c;
    c.op = ExtOp::kStop;
    c.key = stream_key(slot, s.gen, k);
    box.push_back(std::move(c));
  }
  s.streams = 0;
}

void SipClient::run_pending(std::uint32_t slot, std::int64_t now) {
  Session& s = sessions_[slot];
  if (s.state != State::kActive || s.tx != TxKind::kNone || s.pending == 0) return;
  if ((s.pending & kWantBye) != 0 || stop_seen_ != 0) {
    if ((s.pending & kWantBye) == 0) return;  // stopping: only the BYE still goes out
    s.pending = 0;
    stop_streams(slot);
    s.state = State::kByeing;
    send_request(slot, TxKind::kBye, now);
    return;
  }
  if ((s.pending & kWantPause) != 0) {
    s.pending = static_cast<std::uint8_t>(s.pending & ~kWantPause);
    s.paused = true;  // the SRC stops forwarding media as it sends the offer
    auto& box = outbox_[slot % workers_.size()];
    for (unsigned k = 0; k < 2; ++k) {
      ExtCommand c;
      c.op = ExtOp::kPause;
      c.key = stream_key(slot, s.gen, k);
      box.push_back(std::move(c));
    }
    send_request(slot, TxKind::kReinvite, now);
    return;
  }
  if ((s.pending & kWantResume) != 0) {
    s.pending = static_cast<std::uint8_t>(s.pending & ~kWantResume);
    s.paused = false;  // media resumes when the server has answered
    send_request(slot, TxKind::kReinvite, now);
    return;
  }
  if ((s.pending & kWantMeta) != 0) {
    s.pending = static_cast<std::uint8_t>(s.pending & ~kWantMeta);
    send_request(slot, TxKind::kUpdate, now);
  }
}

std::string SipClient::sdp_offer(const Session& s, std::uint32_t, std::string_view direction) {
  siprec::OfferParams p;
  p.address = conns_[s.conn].local_host;
  p.codec = opt_.codec;
  p.ptime_ms = opt_.ptime_ms;
  p.ports = s.local_ports;
  p.direction = direction;
  if (s.keys) p.crypto = {&(*s.keys)[0], &(*s.keys)[1]};
  p.session_id = s.sdp_id;
  p.version = s.sdp_version;
  return siprec::make_sdp_offer(p);
}

std::string SipClient::build_request(const Session& s, std::uint32_t slot, std::string_view method,
                                     std::uint32_t cseq, std::string_view br, std::string_view extra,
                                     std::string_view content_type, std::string_view body,
                                     std::string_view to_override) const {
  const Conn& c = conns_[s.conn];
  const std::string local = uri_host(c.local_host) + ':' + std::to_string(c.local_port);
  const char* tparam = opt_.transport == SipTransport::kTcp   ? ";transport=tcp"
                       : opt_.transport == SipTransport::kTls ? ";transport=tls"
                                                              : "";
  std::string ruri;
  if (!s.to_tag.empty() && !s.remote_target.empty()) {
    ruri = s.remote_target;
  } else {
    ruri = "sip:srs@" + server_host_ + ':' + std::to_string(server_port_) + tparam;
  }
  std::string r;
  r.reserve(640 + body.size());
  r.append(method);
  r += ' ' + ruri + " SIP/2.0\r\n";
  r += "Via: SIP/2.0/" + std::string(via_transport(opt_.transport)) + ' ' + local + ";branch=";
  r.append(br);
  r += ";rport\r\n";
  r += "Max-Forwards: 70\r\n";
  r += "From: <sip:src@" + uri_host(c.local_host) + ">;tag=" + from_tag(slot, s.gen) + "\r\n";
  if (!to_override.empty()) {
    r += "To: ";
    r.append(to_override);
    r += "\r\n";
  } else {
    r += "To: <sip:srs@" + server_host_ + '>' + (s.to_tag.empty() ? std::string() : ";tag=" + s.to_tag) + "\r\n";
  }
  r += "Call-ID: " + call_id(slot, s.gen) + "\r\n";
  r += "CSeq: " + std::to_string(cseq) + ' ';
  r.append(method);
  r += "\r\n";
  if (method == "INVITE" || method == "UPDATE") {
    r += "Contact: <sip:src@" + local + tparam + ">;+sip.src\r\n";
  }
  r += "User-Agent: callrec-phone\r\n";
  r.append(extra);
  if (!body.empty()) {
    r += "Content-Type: ";
    r.append(content_type);
    r += "\r\n";
  }
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  r.append(body);
  return r;
}

void SipClient::send_request(std::uint32_t slot, TxKind kind, std::int64_t now) {
  Session& s = sessions_[slot];
  if (!ensure_conn(s.conn)) {
    deferred_fail_.push_back(DeferredFail{slot, s.gen, "connect_failed"});
    return;
  }
  ++s.cseq;
  s.tx = kind;
  s.provisional = false;
  s.tx_sent_ns = now;
  std::string msg;
  switch (kind) {
    case TxKind::kInvite: {
      siprec::MetadataParams mp{s.number, run_id_ ^ (static_cast<std::uint64_t>(s.number) << 20)};
      const std::string body = siprec::make_multipart(kBoundary, sdp_offer(s, slot, "sendonly"), siprec::make_metadata(mp));
      msg = build_request(s, slot, "INVITE", s.cseq, branch(slot, s.gen, s.cseq, 'i'),
                          "Require: siprec\r\nSupported: siprec\r\nAccept: application/sdp, "
                          "application/rs-metadata+xml\r\n" + std::string(kAllow),
                          "multipart/mixed;boundary=" + std::string(kBoundary), body);
      break;
    }
    case TxKind::kReinvite:
      ++s.sdp_version;
      msg = build_request(s, slot, "INVITE", s.cseq, branch(slot, s.gen, s.cseq, 'i'), "Require: siprec\r\n",
                          "application/sdp", sdp_offer(s, slot, s.paused ? "inactive" : "sendonly"));
      break;
    case TxKind::kUpdate: {
      siprec::MetadataParams mp{s.number, run_id_ ^ (static_cast<std::uint64_t>(s.number) << 20)};
      msg = build_request(s, slot, "UPDATE", s.cseq, branch(slot, s.gen, s.cseq, 'u'),
                          "Content-Disposition: recording-session\r\n", "application/rs-metadata+xml",
                          siprec::make_metadata_update(mp));
      break;
    }
    case TxKind::kBye:
      msg = build_request(s, slot, "BYE", s.cseq, branch(slot, s.gen, s.cseq, 'b'), {}, {}, {});
      break;
    case TxKind::kNone: return;
  }
  log(slot, "%s sent (CSeq %u)",
      kind == TxKind::kInvite     ? "INVITE"
      : kind == TxKind::kReinvite ? (s.paused ? "re-INVITE (pause)" : "re-INVITE (resume)")
      : kind == TxKind::kUpdate   ? "UPDATE (metadata)"
                                  : "BYE",
      s.cseq);
  send_on(s.conn, msg);
  if (opt_.transport == SipTransport::kUdp) {
    s.tx_msg = std::move(msg);
    s.retx_ms = opt_.t1_ms;
    add_timer(now + static_cast<std::int64_t>(s.retx_ms) * kNsPerMs, slot, TimerKind::kRetransmit, true);
  }
  add_timer(now + static_cast<std::int64_t>(opt_.timeout_s * static_cast<double>(kNsPerSec)), slot,
            TimerKind::kTxTimeout, true);
}

void SipClient::send_ack(std::uint32_t slot, std::uint32_t cseq) {
  const Session& s = sessions_[slot];
  send_on(s.conn, build_request(s, slot, "ACK", cseq, branch(slot, s.gen, cseq, 'a'), {}, {}, {}));
}

void SipClient::on_invite_2xx(std::uint32_t slot, const sip::Message& m, std::int64_t now) {
  Session& s = sessions_[slot];
  s.to_tag = std::string(sip::parse_name_addr(m.to).tag);
  s.remote_target = std::string(sip::parse_name_addr(m.contact).uri);
  ++stats_.sessions_established;
  stats_.last_established_ns = now;
  finish_tx(s);
  s.state = State::kActive;
  send_ack(slot, s.cseq);
  if (s.to_tag.empty()) count_error("sip: 200 without a To tag");
  sip::Sdp sdp;
  const std::string_view text = sip::find_sdp(m.content_type, m.body);
  if (text.empty() || !sip::parse_sdp(text, sdp)) {
    count_error("sip: 200 without a usable SDP answer");
    s.pending |= kWantBye;
    run_pending(slot, now);
    return;
  }
  if (stop_seen_ != 0) {  // stopping: no media, hang up at once
    s.pending |= kWantBye;
    run_pending(slot, now);
    return;
  }
  auto& box = outbox_[slot % workers_.size()];
  for (unsigned k = 0; k < 2 && k < sdp.media.size(); ++k) {
    const sip::SdpMedia& md = sdp.media[k];
    if (md.port == 0) {
      count_error("sip: stream rejected (port 0 in the answer)");
      continue;
    }
    sockaddr_storage dest{};
    if (md.addr.family == 0 || md.addr.is_unspecified() || !to_sockaddr(md.addr, md.port, dest)) {
      dest = server_;
      set_port(dest, md.port);
    }
    s.media = dest;
    s.media_ports[k] = md.port;
    ExtCommand c;
    c.op = ExtOp::kStart;
    c.key = stream_key(slot, s.gen, k);
    c.stream.dest = dest;
    c.stream.audio = s.number * 2 + k;
    c.stream.packets = packets_per_stream_;
    Rng r{cfg_.seed ^ (c.key * 0xD1B54A32D192ED03ULL)};
    c.stream.seed = r.next();
    if (s.keys) c.stream.srtp = (*s.keys)[k];
    box.push_back(std::move(c));
    ++s.streams;
  }
  if (s.streams == 0) {
    count_error("sip: no stream to send (every m-line rejected)");
    s.pending |= kWantBye;
    run_pending(slot, now);
    return;
  }
  log(slot, "established: %u stream(s) to %s port %u/%u", s.streams, ip_text(s.media).c_str(), s.media_ports[0],
      s.media_ports[1]);
  const auto at = [&](double frac) { return now + static_cast<std::int64_t>(opt_.duration_s * frac * kNsPerSec); };
  if (opt_.pause_resume) {
    add_timer(at(1.0 / 3.0), slot, TimerKind::kPause, false);
    add_timer(at(2.0 / 3.0), slot, TimerKind::kResume, false);
  }
  if (opt_.metadata_update) add_timer(at(0.5), slot, TimerKind::kMetaUpdate, false);
}

// ---- messages in -------------------------------------------------------------------------------

void SipClient::on_message(std::uint32_t ci, std::string_view bytes, bool stream) {
  sip::Message m;
  const sip::ParseResult r = sip::parse_message(bytes, m, stream);
  if (r != sip::ParseResult::kOk) {
    count_error(std::string("sip: unparseable message (") + sip::parse_result_name(r) + ")");
    return;
  }
  handle_message(ci, m);
}

void SipClient::handle_message(std::uint32_t ci, const sip::Message& m) {
  ++stats_.sip_received;
  if (m.request) {
    on_request(ci, m);
  } else {
    on_response(ci, m, now_ns());
  }
}

void SipClient::on_response(std::uint32_t ci, const sip::Message& m, std::int64_t now) {
  const int si = slot_of(m.call_id);
  const bool invite = sip::iequals(m.cseq_method, "INVITE");
  if (si < 0) {
    if (invite && m.status >= 200 && m.status < 300) {
      stray_2xx(ci, m);
    } else if (!sip::iequals(m.cseq_method, "BYE")) {
      count_error("sip: response for no session");
    }
    return;
  }
  const auto slot = static_cast<std::uint32_t>(si);
  Session& s = sessions_[slot];
  const bool current = s.tx != TxKind::kNone && m.cseq == s.cseq &&
                       (invite == (s.tx == TxKind::kInvite || s.tx == TxKind::kReinvite)) &&
                       (invite || sip::iequals(m.cseq_method, s.tx == TxKind::kBye ? "BYE" : "UPDATE"));
  if (!current) {
    // A retransmitted 2xx of an INVITE we already answered: our ACK was lost, send it again.
    if (invite && m.status >= 200 && m.status < 300 && m.cseq <= s.cseq && s.state != State::kInviting) {
      send_ack(slot, m.cseq);
    }
    return;
  }
  if (m.status < 200) {
    s.provisional = true;
    return;
  }
  const bool ok = m.status < 300;
  const auto latency_us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - s.tx_sent_ns) / 1000);
  const std::string code = std::to_string(m.status);
  switch (s.tx) {
    case TxKind::kInvite:
      if (ok) {
        stats_.setup_latency.add(latency_us);
        on_invite_2xx(slot, m, now);
      } else {
        // ACK of a non-2xx final: same branch as the INVITE, the response's To (RFC 3261 17.1.1.3).
        send_on(s.conn, build_request(s, slot, "ACK", s.cseq, branch(slot, s.gen, s.cseq, 'i'), {}, {}, {}, m.to));
        finish_tx(s);
        end_session(slot, false, code);
      }
      return;
    case TxKind::kReinvite:
      if (ok) {
        stats_.indialog_latency.add(latency_us);
        ++stats_.reinvites;
        finish_tx(s);
        send_ack(slot, s.cseq);
        if (!s.paused && s.streams > 0) {  // the resume was answered: media again
          auto& box = outbox_[slot % workers_.size()];
          for (unsigned k = 0; k < 2; ++k) {
            ExtCommand c;
            c.op = ExtOp::kResume;
            c.key = stream_key(slot, s.gen, k);
            box.push_back(std::move(c));
          }
        }
      } else {
        send_on(s.conn, build_request(s, slot, "ACK", s.cseq, branch(slot, s.gen, s.cseq, 'i'), {}, {}, {}, m.to));
        count_error("sip: re-INVITE answered " + code);
        finish_tx(s);
        if (s.paused) {  // the pause was refused: media goes on
          s.paused = false;
          auto& box = outbox_[slot % workers_.size()];
          for (unsigned k = 0; k < 2; ++k) {
            ExtCommand c;
            c.op = ExtOp::kResume;
            c.key = stream_key(slot, s.gen, k);
            box.push_back(std::move(c));
          }
        }
      }
      run_pending(slot, now);
      return;
    case TxKind::kUpdate:
      if (ok) {
        stats_.indialog_latency.add(latency_us);
        ++stats_.updates;
      } else {
        count_error("sip: UPDATE answered " + code);
      }
      finish_tx(s);
      run_pending(slot, now);
      return;
    case TxKind::kBye:
      if (ok) stats_.stop_latency.add(latency_us);
      finish_tx(s);
      end_session(slot, ok, ok ? std::string() : "bye_" + code);
      return;
    case TxKind::kNone: return;
  }
}

void SipClient::respond(std::uint32_t ci, const sip::Message& m, int code, std::string_view reason,
                        std::string_view extra) {
  std::string r = "SIP/2.0 " + std::to_string(code) + ' ';
  r.append(reason);
  r += "\r\n";
  sip::for_each_header(m, "Via", 'v', [&r](std::string_view v) {
    r += "Via: ";
    r.append(v);
    r += "\r\n";
  });
  r += "From: ";
  r.append(m.from);
  r += "\r\nTo: ";
  r.append(m.to);
  if (sip::parse_name_addr(m.to).tag.empty() && code > 100) r += ";tag=" + from_tag(0, 0) + "r";
  r += "\r\nCall-ID: ";
  r.append(m.call_id);
  r += "\r\nCSeq: " + std::to_string(m.cseq) + ' ';
  r.append(m.cseq_method);
  r += "\r\nUser-Agent: callrec-phone\r\n";
  r.append(extra);
  r += "Content-Length: 0\r\n\r\n";
  send_on(ci, r);
}

void SipClient::on_request(std::uint32_t ci, const sip::Message& m) {
  if (m.method == "ACK") return;
  if (m.method == "BYE") {
    const int si = slot_of(m.call_id);
    if (si < 0) {
      respond(ci, m, 481, "Call/Transaction Does Not Exist");
      return;
    }
    const auto slot = static_cast<std::uint32_t>(si);
    Session& s = sessions_[slot];
    respond(ci, m, 200, "OK");
    const std::string_view rh = sip::header_value(m, "Reason");
    ++stats_.server_stops_by_reason[rh.empty() ? std::string("none") : reason_text(rh)];
    log(slot, "BYE from the server (%s)", rh.empty() ? "no Reason" : reason_text(rh).c_str());
    if (s.state == State::kByeing) {
      end_session(slot, true, "");  // both sides hung up at once
    } else {
      end_session(slot, false, "server_bye");
    }
    return;
  }
  if (m.method == "OPTIONS") {
    respond(ci, m, 200, "OK", std::string(kAllow) + "Supported: siprec\r\n");
    return;
  }
  respond(ci, m, 405, "Method Not Allowed", kAllow);
}

void SipClient::stray_2xx(std::uint32_t ci, const sip::Message& m) {
  // The server answered an INVITE we gave up on (timeout): acknowledge and hang up, so that it
  // does not keep a recording nobody sends to.
  count_error("sip: late 2xx for a session given up (ACKed and BYEd)");
  if (!ensure_conn(ci)) return;
  const Conn& c = conns_[ci];
  std::string uri(sip::parse_name_addr(m.contact).uri);
  if (uri.empty()) uri = "sip:srs@" + server_host_ + ':' + std::to_string(server_port_);
  const std::string local = uri_host(c.local_host) + ':' + std::to_string(c.local_port);
  for (int k = 0; k < 2; ++k) {
    const char* method = k == 0 ? "ACK" : "BYE";
    std::string r = std::string(method) + ' ' + uri + " SIP/2.0\r\n";
    char br[64];
    std::snprintf(br, sizeof br, "z9hG4bK%llxs%u%c", static_cast<unsigned long long>(run_id_), m.cseq,
                  k == 0 ? 'a' : 'b');
    r += "Via: SIP/2.0/" + std::string(via_transport(opt_.transport)) + ' ' + local + ";branch=" + br + "\r\n";
    r += "Max-Forwards: 70\r\nFrom: ";
    r.append(m.from);
    r += "\r\nTo: ";
    r.append(m.to);
    r += "\r\nCall-ID: ";
    r.append(m.call_id);
    r += "\r\nCSeq: " + std::to_string(k == 0 ? m.cseq : m.cseq + 1) + ' ' + method + "\r\n";
    r += "User-Agent: callrec-phone\r\nContent-Length: 0\r\n\r\n";
    send_on(ci, r);
  }
}

// ---- transport ---------------------------------------------------------------------------------

bool SipClient::ensure_conn(std::uint32_t ci) {
  Conn& c = conns_[ci];
  if (c.st != ConnState::kClosed) return true;
  const bool udp = opt_.transport == SipTransport::kUdp;
  const int fd = ::socket(server_.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    count_error("sip socket: " + errno_name(errno));
    return false;
  }
  if (udp) {
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kUdpRcvBuf, sizeof kUdpRcvBuf) != 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kUdpRcvBuf, sizeof kUdpRcvBuf);
    }
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &kUdpRcvBuf, sizeof kUdpRcvBuf) != 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kUdpRcvBuf, sizeof kUdpRcvBuf);
    }
  } else {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  const int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&server_), control::sockaddr_length(server_));
  if (r != 0 && errno != EINPROGRESS) {
    count_error("sip connect: " + errno_name(errno));
    ::close(fd);
    return false;
  }
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  c.fd = fd;
  c.local_host = ip_text(local);
  c.local_port = port_of(local);
  c.rx.clear();
  c.tx.clear();
  c.tx_off = 0;
  c.want_write = false;
  c.ssl_wants_write = false;
  c.broken.clear();
  ++c.opened;
  c.st = udp || r == 0 ? ConnState::kReady : ConnState::kConnecting;
  epoll_event ev{};
  ev.events = EPOLLIN | (udp ? 0U : EPOLLRDHUP | EPOLLOUT);
  ev.data.u64 = static_cast<std::uint64_t>(ci) + 1;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    count_error("epoll_ctl: " + errno_name(errno));
    ::close(fd);
    c.fd = -1;
    c.st = ConnState::kClosed;
    return false;
  }
  if (!udp && r == 0) {
    c.st = ConnState::kConnecting;
    conn_connected(ci);
  }
  return true;
}

void SipClient::conn_connected(std::uint32_t ci) {
  Conn& c = conns_[ci];
  if (opt_.transport != SipTransport::kTls) {
    c.st = ConnState::kReady;
    conn_flush(ci);
    conn_interest(ci);
    return;
  }
  c.ssl = SSL_new(tls_);
  if (c.ssl == nullptr) {
    count_error("tls: SSL_new: " + openssl_error());
    c.broken = "tls_failed";
    ::shutdown(c.fd, SHUT_RDWR);
    return;
  }
  SSL_set_fd(c.ssl, c.fd);
  SSL_set_connect_state(c.ssl);
  // The name to verify: the --siprec host as given (an address literal or a DNS name).
  std::string host = opt_.siprec.substr(0, opt_.siprec.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  sockaddr_storage probe{};
  const bool literal = control::parse_ip(host, probe).is_ok();
  if (!literal) {  // SNI (SSL_set_tlsext_host_name is a macro with a C cast)
    SSL_ctrl(c.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str()));
  }
  if (!opt_.tls_ca.empty()) {
    if (literal) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.ssl), host.c_str());
    } else {
      SSL_set1_host(c.ssl, host.c_str());
    }
  }
  c.st = ConnState::kHandshaking;
  if (!conn_handshake(ci)) {
    c.broken = "tls_failed";
    ::shutdown(c.fd, SHUT_RDWR);  // the event it raises closes the connection
  }
}

bool SipClient::conn_handshake(std::uint32_t ci) {
  Conn& c = conns_[ci];
  ERR_clear_error();
  const int r = SSL_do_handshake(c.ssl);
  if (r == 1) {
    c.st = ConnState::kReady;
    c.ssl_wants_write = false;
    conn_flush(ci);
    conn_interest(ci);
    return true;
  }
  const int e = SSL_get_error(c.ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    c.ssl_wants_write = e == SSL_ERROR_WANT_WRITE;
    conn_interest(ci);
    return true;
  }
  std::string why = openssl_error();
  const long v = SSL_get_verify_result(c.ssl);
  if (v != X509_V_OK) why = std::string("certificate: ") + X509_verify_cert_error_string(v);
  count_error("tls handshake: " + why);
  return false;
}

void SipClient::conn_interest(std::uint32_t ci) {
  Conn& c = conns_[ci];
  if (c.fd < 0 || opt_.transport == SipTransport::kUdp) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  if (c.st == ConnState::kConnecting || c.want_write || c.ssl_wants_write) ev.events |= EPOLLOUT;
  ev.data.u64 = static_cast<std::uint64_t>(ci) + 1;
  ::epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void SipClient::send_on(std::uint32_t ci, std::string_view msg) {
  if (!ensure_conn(ci)) return;
  Conn& c = conns_[ci];
  ++stats_.sip_sent;
  if (opt_.transport == SipTransport::kUdp) {
    const ssize_t n = ::send(c.fd, msg.data(), msg.size(), MSG_NOSIGNAL);
    if (n < 0) count_error("sip udp send: " + errno_name(errno));  // the retransmission timer covers it
    return;
  }
  if (c.tx_off > 0 && c.tx_off >= c.tx.size() / 2) {
    c.tx.erase(0, c.tx_off);
    c.tx_off = 0;
  }
  c.tx.append(msg);
  if (c.st == ConnState::kReady) conn_flush(ci);
}

void SipClient::conn_flush(std::uint32_t ci) {
  // Never tears the connection down itself (callers are in the middle of session code): an
  // error shuts the socket down and the next event reports the loss.
  Conn& c = conns_[ci];
  const bool wanted = c.want_write || c.ssl_wants_write;
  c.ssl_wants_write = false;
  std::string error;
  const Drain d = drain_tx(c.tx, c.tx_off, [&](const char* p, std::size_t left) -> long {
    if (c.ssl != nullptr) {
      ERR_clear_error();
      const int n = SSL_write(c.ssl, p, static_cast<int>(std::min<std::size_t>(left, 1 << 30)));
      if (n > 0) return n;
      const int e = SSL_get_error(c.ssl, n);
      if (e == SSL_ERROR_WANT_WRITE) {
        c.ssl_wants_write = true;
        return 0;
      }
      if (e == SSL_ERROR_WANT_READ) return 0;
      error = "tls write: " + openssl_error();
      return -1;
    }
    for (;;) {
      const ssize_t n = ::send(c.fd, p, left, MSG_NOSIGNAL);
      if (n > 0) return n;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
      error = "sip tcp send: " + errno_name(errno);
      return -1;
    }
  });
  if (d == Drain::kFailed) {
    count_error(error);
    ::shutdown(c.fd, SHUT_RDWR);
  }
  c.want_write = !c.tx.empty();
  if ((c.want_write || c.ssl_wants_write) != wanted) conn_interest(ci);
}

void SipClient::on_conn_event(std::uint32_t ci, std::uint32_t events) {
  if (ci >= conns_.size()) return;
  Conn& c = conns_[ci];
  if (c.fd < 0) return;
  if (!c.broken.empty()) {
    const std::string why = c.broken;
    conn_lost(ci, why);
    return;
  }
  if (c.st == ConnState::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      count_error("sip connect: " + errno_name(err));
      conn_lost(ci, "connect_failed");
      return;
    }
    conn_connected(ci);
    if (!c.broken.empty()) {
      const std::string why = c.broken;
      conn_lost(ci, why);
      return;
    }
    if (c.st == ConnState::kConnecting) return;
  }
  if (c.st == ConnState::kHandshaking) {
    if (!conn_handshake(ci)) {
      conn_lost(ci, "tls_failed");
      return;
    }
    if (c.st != ConnState::kReady) return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0 || (c.ssl != nullptr && SSL_pending(c.ssl) > 0)) {
    conn_read(ci);
    if (c.fd < 0) return;
  }
  if ((events & EPOLLOUT) != 0 && c.st == ConnState::kReady) conn_flush(ci);
}

void SipClient::conn_read(std::uint32_t ci) {
  Conn& c = conns_[ci];
  if (opt_.transport == SipTransport::kUdp) {
    for (int i = 0; i < 4096; ++i) {
      const ssize_t n = ::recv(c.fd, udp_buf_.data(), udp_buf_.size(), 0);
      if (n > 0) {
        on_message(ci, std::string_view(udp_buf_.data(), static_cast<std::size_t>(n)), false);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) count_error("sip udp recv: " + errno_name(errno));  // ICMP unreachable: the timers go on
      break;
    }
    return;
  }
  bool closed = false;
  std::string why = "connection_lost";
  char buf[16384];
  while (true) {
    if (c.ssl != nullptr) {
      ERR_clear_error();
      const int n = SSL_read(c.ssl, buf, sizeof buf);
      if (n > 0) {
        c.rx.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      const int e = SSL_get_error(c.ssl, n);
      if (e == SSL_ERROR_WANT_READ) break;
      if (e == SSL_ERROR_WANT_WRITE) {
        c.ssl_wants_write = true;
        conn_interest(ci);
        break;
      }
      if (e != SSL_ERROR_ZERO_RETURN) count_error("tls read: " + openssl_error());
      closed = true;
      break;
    }
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.rx.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) count_error("sip tcp recv: " + errno_name(errno));
    closed = true;
    break;
  }
  // Framing by Content-Length; CRLF keep-alives between messages are skipped.
  std::size_t off = 0;
  while (off < c.rx.size()) {
    while (off < c.rx.size() && (c.rx[off] == '\r' || c.rx[off] == '\n')) ++off;
    if (off >= c.rx.size()) break;
    sip::Message m;
    const sip::ParseResult r = sip::parse_message(std::string_view(c.rx).substr(off), m, true);
    if (r == sip::ParseResult::kIncomplete) break;
    if (r != sip::ParseResult::kOk) {
      count_error(std::string("sip: framing error (") + sip::parse_result_name(r) + ")");
      closed = true;
      why = "framing_error";
      off = c.rx.size();
      break;
    }
    handle_message(ci, m);  // m views c.rx: nothing below appends to rx
    off += m.size;
  }
  c.rx.erase(0, off);
  if (c.rx.size() > 256 * 1024) {
    count_error("sip: message too large");
    closed = true;
    why = "framing_error";
  }
  if (closed) {
    if (active_ > 0) count_error("sip: connection closed by the server");
    conn_lost(ci, why);
  }
}

void SipClient::conn_lost(std::uint32_t ci, const std::string& why) {
  Conn& c = conns_[ci];
  if (c.ssl != nullptr) {
    SSL_free(c.ssl);
    c.ssl = nullptr;
  }
  if (c.fd >= 0) ::close(c.fd);
  c.fd = -1;
  c.st = ConnState::kClosed;
  c.broken.clear();
  std::string().swap(c.rx);
  std::string().swap(c.tx);
  c.tx_off = 0;
  c.want_write = false;
  c.ssl_wants_write = false;
  for (std::uint32_t slot = 0; slot < sessions_.size(); ++slot) {
    if (sessions_[slot].conn == ci && sessions_[slot].state != State::kIdle) end_session(slot, false, why);
  }
}

}  // namespace callrec::phone
