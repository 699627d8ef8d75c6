#include "worker.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstring>
#include <ctime>
#include <system_error>

#include "control/config.hpp"
#include "fileio/rtp.hpp"
#include "tx_drain.hpp"

namespace callrec::phone {
namespace {

constexpr std::int64_t kNsPerMs = 1'000'000;
constexpr std::int64_t kNsPerSec = 1'000'000'000;
constexpr std::int64_t kPublishIntervalNs = 100 * kNsPerMs;
/// --wrong-source: the forged packets go out when the real packet with this index is made.
constexpr std::uint64_t kStrayAtPacket = 5;
constexpr int kStrayCount = 3;
constexpr int kPoolSndBuf = 4 << 20;
/// Room after an RTP packet for the SRTP authentication tag (10 bytes for _80, 16 for GCM).
constexpr std::uint32_t kSrtpRoom = 16;
/// epoll data of the command eventfd (timerfd is 0, phones are index + 1).
constexpr std::uint64_t kEventFdTag = ~std::uint64_t{0};

/// Names for remote_name: UTF-8 and the bytes that need percent-encoding (&, =, %).
constexpr std::array<std::string_view, 8> kRemoteNames = {
    "Alice Smith", "Jürgen Müller", "张伟",     "O'Brien & Sons",
    "50% = half",  "Zoë Ångström",  "José García", "Ελένη Π."};

/// errno as a short stable name for counters ("ECONNREFUSED"), strerror text otherwise.
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
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSPC: return "ENOSPC";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return std::system_category().message(e);
  }
}

bool is_any_address(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(a).sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (a.ss_family == AF_INET6) {
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr);
  }
  return false;
}

}  // namespace

Worker::Worker(const RunConfig& cfg, std::uint32_t index, const StopLevel* stop)
    : cfg_(cfg), opt_(cfg.opt), index_(index), stop_(stop) {
  spp_ = opt_.ptime_ms * 8;
  pkt_len_ = static_cast<std::uint32_t>(fileio::kRtpHeaderMin) + spp_;
  pt_ = fileio::codec_info(opt_.codec).payload_type;
  slot_len_ = pkt_len_ + (opt_.srtp ? kSrtpRoom : 0);
  siprec_ = opt_.siprec_mode();
  for (std::uint32_t g = index; !siprec_ && g < opt_.phones; g += opt_.threads) {
    Phone p;
    p.index = opt_.first_phone + g;
    char mac[32];
    std::snprintf(mac, sizeof mac, "02:00:%02x:%02x:%02x:%02x", (p.index >> 24) & 0xFFU, (p.index >> 16) & 0xFFU,
                  (p.index >> 8) & 0xFFU, p.index & 0xFFU);
    p.mac = mac;
    Rng seeder{cfg.seed ^ (static_cast<std::uint64_t>(p.index) * 0xD1B54A32D192ED03ULL)};
    p.rng.state = seeder.next();
    p.calls_left = opt_.calls_per_phone;
    phones_.push_back(std::move(p));
  }
}

Worker::~Worker() {
  for (auto& p : phones_) {
    if (p.fd >= 0) ::close(p.fd);
    if (p.udp_fd >= 0) ::close(p.udp_fd);
  }
  for (auto& c : calls_) {
    if (c.save != nullptr) std::fclose(c.save);
    if (c.owns_fd && c.udp_fd >= 0) ::close(c.udp_fd);
  }
  for (int fd : udp_pool_) ::close(fd);
  if (evfd_ >= 0) ::close(evfd_);
  if (stray_fd_ >= 0) ::close(stray_fd_);
  if (tfd_ >= 0) ::close(tfd_);
  if (epfd_ >= 0) ::close(epfd_);
}

std::int64_t Worker::now_ns() const {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

Stats Worker::snapshot() const {
  std::lock_guard lock(pub_mu_);
  return published_;
}

void Worker::publish() {
  std::lock_guard lock(pub_mu_);
  published_ = stats_;
}

int Worker::make_udp_socket(int sndbuf) {
  const int fd = ::socket(udp_family_, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    count_error("udp_socket: " + errno_name(errno));
    return -1;
  }
  if (udp_family_ == AF_INET6) {
    const int off = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  }
  if (sndbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  return fd;
}

bool Worker::setup() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  tfd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epfd_ < 0 || tfd_ < 0) {
    count_error("fatal: epoll/timerfd: " + errno_name(errno));
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, tfd_, &ev) != 0) {
    count_error("fatal: epoll_ctl: " + errno_name(errno));
    return false;
  }
  if (siprec_) {
    evfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ev.data.u64 = kEventFdTag;
    if (evfd_ < 0 || ::epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0) {
      count_error("fatal: eventfd: " + errno_name(errno));
      return false;
    }
  }
  // One dual-stack IPv6 socket reaches both families (IPv4 as ::ffff:a.b.c.d); fall back to
  // IPv4 where IPv6 is disabled.
  const int probe = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0) {
    udp_family_ = AF_INET;
  } else {
    ::close(probe);
  }
  for (std::uint32_t i = 0; i < opt_.udp_sockets; ++i) {
    const int fd = make_udp_socket(kPoolSndBuf);
    if (fd < 0) return false;
    udp_pool_.push_back(fd);
  }
  arena_.assign(kBatchMax * slot_len_, std::byte{0});
  batch_.reserve(kBatchMax);
  order_.reserve(kBatchMax);
  calls_.reserve(std::min<std::size_t>(static_cast<std::size_t>(phones_.size()) * opt_.concurrent_per_phone, 1U << 20));
  if (opt_.ramp > 0) {
    start_interval_ns_ = static_cast<std::int64_t>(static_cast<double>(kNsPerSec) * opt_.threads / opt_.ramp);
    if (start_interval_ns_ < 1) start_interval_ns_ = 1;
  }
  // Round-robin over phones first, then their extra concurrent slots, so a ramp spreads the
  // first calls over all phones.
  for (std::uint32_t slot = 0; slot < opt_.concurrent_per_phone; ++slot) {
    for (std::uint32_t i = 0; i < phones_.size(); ++i) {
      if (phones_[i].calls_left > phones_[i].queued) {
        ready_.push_back(i);
        ++phones_[i].queued;
      }
    }
  }
  t0_ns_ = now_ns();
  // Stagger the workers' first calls so N threads together keep the configured rate.
  next_start_ns_ = t0_ns_ + (start_interval_ns_ * index_) / std::max<std::uint32_t>(opt_.threads, 1);
  next_publish_ns_ = t0_ns_;
  return true;
}

void Worker::run() {
  if (!setup()) {
    publish();
    finished_.store(true, std::memory_order_release);
    return;
  }
  std::array<epoll_event, 256> events{};
  while (true) {
    const int level = stop_->load(std::memory_order_acquire);
    if (level >= 2) break;
    if (level >= 1 && stop_seen_ == 0) {
      stop_seen_ = 1;
      begin_stop();
    }
    const std::int64_t now = now_ns();
    if (siprec_ && ext_pending_.load(std::memory_order_acquire)) drain_external(now);
    const bool behind = process_wheel(now);
    run_timers(now);
    start_ready_calls(now);
    if (now >= next_publish_ns_) {
      publish();
      next_publish_ns_ = now + kPublishIntervalNs;
    }
    if (siprec_) {
      if (ext_closed_.load(std::memory_order_acquire) && !ext_pending_.load(std::memory_order_acquire) &&
          ext_calls_.empty()) {
        break;
      }
    } else if (phones_done_ == phones_.size()) {
      break;
    }

    const std::int64_t wake = next_wakeup_ns(now);
    int timeout = 0;
    if (!behind && wake > now_ns()) {
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
      if (events[i].data.u64 == 0) {
        std::uint64_t expirations = 0;
        while (::read(tfd_, &expirations, sizeof expirations) > 0) {
        }
        armed_ns_ = -1;
      } else if (events[i].data.u64 == kEventFdTag) {
        std::uint64_t count = 0;
        while (::read(evfd_, &count, sizeof count) > 0) {
        }
      } else {
        on_phone_event(static_cast<std::uint32_t>(events[i].data.u64 - 1), events[i].events);
      }
    }
  }
  publish();
  finished_.store(true, std::memory_order_release);
}

std::int64_t Worker::next_wakeup_ns(std::int64_t now) const {
  std::int64_t w = next_publish_ns_;
  if (!timers_.empty()) w = std::min(w, timers_.top().at_ns);
  if (!ready_.empty() && stop_seen_ == 0) w = std::min(w, start_interval_ns_ > 0 ? next_start_ns_ : now);
  const std::int64_t busy_ms = wheel_.next_busy_ms();
  if (busy_ms >= 0) w = std::min(w, t0_ns_ + busy_ms * kNsPerMs);
  return w;
}

void Worker::arm_timer(std::int64_t at_ns) {
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

// ---- calls ---------------------------------------------------------------------------------

std::uint32_t Worker::alloc_call() {
  if (!free_calls_.empty()) {
    const std::uint32_t i = free_calls_.back();
    free_calls_.pop_back();
    return i;
  }
  calls_.emplace_back();
  return static_cast<std::uint32_t>(calls_.size() - 1);
}

void Worker::start_ready_calls(std::int64_t now) {
  if (stop_seen_ != 0) return;
  // The ramp is a schedule (one start every interval): a loop that fell behind starts every
  // call that is due, but time spent with nothing to start earns no burst.
  while (!ready_.empty() && (start_interval_ns_ == 0 || next_start_ns_ <= now)) {
    next_start_ns_ += start_interval_ns_;
    const std::uint32_t pidx = ready_.front();
    ready_.pop_front();
    --phones_[pidx].queued;
    if (phones_[pidx].calls_left == 0) {
      after_call(pidx);
      continue;
    }
    start_call(pidx, now);
  }
  if (ready_.empty() && next_start_ns_ < now) next_start_ns_ = now;
}

void Worker::start_call(std::uint32_t pidx, std::int64_t now) {
  const std::uint32_t ci = alloc_call();
  Phone& p = phones_[pidx];
  Call& c = calls_[ci];
  --p.calls_left;
  c.phone = pidx;
  c.state = CallState::kStarting;
  ++c.epoch;
  c.rng.state = p.rng.next();
  std::uint64_t id = p.rng.next() >> 1;  // random 63-bit number
  if (id == 0) id = 1;
  c.id = std::to_string(id);
  char digits[16];
  std::snprintf(digits, sizeof digits, "%07llu", static_cast<unsigned long long>(p.rng.next() % 10000000ULL));
  c.remote_number = std::string("+4930") + digits;
  c.remote_name = std::string(kRemoteNames[p.rng.next() % kRemoteNames.size()]);
  c.local_number = std::to_string(100000ULL + p.index);
  c.local_name = "Phone " + std::to_string(p.index);
  c.dir_in = (p.rng.next() & 1U) != 0;
  c.audio = p.index;
  c.n = 0;
  c.total = 0;
  c.has_held = false;
  c.streaming = false;
  c.server_text.clear();
  c.server_port = 0;
  p.active.push_back(ci);
  ++stats_.calls_attempted;
  ++stats_.calls_active;

  if (p.conn == ConnState::kClosed && !connect_phone(pidx)) {
    end_call(ci, Outcome::kFailed, "connect_failed");
    return;
  }
  control::StartRequest r;
  r.id = c.id;
  r.device = p.mac;
  r.remote_number = c.remote_number;
  r.remote_name = c.remote_name;
  r.local_number = c.local_number;
  r.local_name = c.local_name;
  r.dir = c.dir_in ? control::Direction::kIn : control::Direction::kOut;
  r.codec = opt_.codec;
  c.start_sent_ns = now;
  add_timer(now + static_cast<std::int64_t>(opt_.timeout_s * kNsPerSec), ci, TimerKind::kStartTimeout);
  log_call(c, "start request (%s %s)", c.dir_in ? "in" : "out", c.remote_number.c_str());
  send_msg(pidx, control::format_start_request(r));
}

void Worker::start_stream(std::uint32_t ci, const control::StartResponse& r, std::int64_t now) {
  Call& c = calls_[ci];
  Phone& p = phones_[c.phone];
  sockaddr_storage dst{};
  if (!control::parse_ip(r.server, dst).is_ok()) {
    end_call(ci, Outcome::kFailed, "bad_server_address");
    return;
  }
  if (is_any_address(dst)) dst = cfg_.server;  // "0.0.0.0": the control server's address
  c.server_text = r.server;
  c.server_port = r.port;
  if (!set_dest(c, dst, r.port)) {
    end_call(ci, Outcome::kFailed, "ipv6_unavailable");
    return;
  }
  if (!udp_pool_.empty()) {
    c.udp_fd = udp_pool_[udp_rr_++ % udp_pool_.size()];
  } else {
    if (p.udp_fd < 0) p.udp_fd = make_udp_socket(0);
    c.udp_fd = p.udp_fd;
  }
  if (c.udp_fd < 0) {
    end_call(ci, Outcome::kFailed, "udp_socket");
    return;
  }
  c.ssrc = static_cast<std::uint32_t>(c.rng.next());
  c.seq0 = static_cast<std::uint16_t>(c.rng.next());
  c.ts0 = static_cast<std::uint32_t>(c.rng.next());
  c.n = 0;
  c.total = stop_seen_ != 0 ? 0 : static_cast<std::uint64_t>(std::llround(opt_.duration_s * 1000.0 / opt_.ptime_ms));
  c.base_ms = (now - t0_ns_) / kNsPerMs + 1;
  c.state = CallState::kStreaming;
  ++c.epoch;
  c.streaming = true;
  ++stats_.streams_active;
  if (opt_.reorder_pct > 0) c.held.resize(slot_len_);
  if (!opt_.save_sent_dir.empty()) {
    const std::string path = opt_.save_sent_dir + "/" + c.id + ".rtp";
    c.save = std::fopen(path.c_str(), "wb");
    if (c.save == nullptr) count_error("save_sent_open: " + errno_name(errno));
  }
  wheel_insert(ci, c.base_ms);
  if (stop_seen_ == 0 && c.rng.chance_pct(opt_.disconnect_pct)) {
    const double at = (0.1 + 0.8 * c.rng.uniform()) * opt_.duration_s;
    add_timer(now + static_cast<std::int64_t>(at * kNsPerSec), ci, TimerKind::kDisconnect);
  }
  log_call(c, "streaming %llu packets to %s port %u", static_cast<unsigned long long>(c.total), r.server.c_str(),
           static_cast<unsigned>(r.port));
}

void Worker::stop_stream(Call& c) {
  if (!c.streaming) return;
  c.streaming = false;
  --stats_.streams_active;
}

void Worker::send_stop(std::uint32_t ci, std::int64_t now) {
  Call& c = calls_[ci];
  stop_stream(c);
  c.state = CallState::kStopping;
  ++c.epoch;
  control::StopRequest s;
  s.id = c.id;
  s.reason = "hangup";
  for (const auto& [k, v] : opt_.stop_overrides) {
    if (k == "remote_number") {
      s.remote_number = v;
    } else if (k == "remote_name") {
      s.remote_name = v;
    } else if (k == "local_number") {
      s.local_number = v;
    } else if (k == "local_name") {
      s.local_name = v;
    } else if (k == "reason") {
      s.reason = v;
    } else {
      s.extras.emplace_back(k, v);
    }
  }
  c.stop_sent_ns = now;
  add_timer(now + static_cast<std::int64_t>(opt_.timeout_s * kNsPerSec), ci, TimerKind::kStopTimeout);
  log_call(c, "stop request after %llu packets", static_cast<unsigned long long>(c.n));
  send_msg(c.phone, control::format_stop_request(s));
}

void Worker::end_call(std::uint32_t ci, Outcome o, const std::string& reason) {
  Call& c = calls_[ci];
  const std::uint32_t pidx = c.phone;
  switch (o) {
    case Outcome::kSucceeded: ++stats_.calls_succeeded; break;
    case Outcome::kFailed:
      ++stats_.calls_failed;
      ++stats_.failed_by_reason[reason];
      break;
    case Outcome::kAborted: ++stats_.calls_aborted; break;
  }
  stop_stream(c);
  --stats_.calls_active;
  if (!opt_.save_sent_dir.empty()) write_meta(c, o, reason);
  if (c.save != nullptr) {
    if (std::fclose(c.save) != 0) count_error("save_sent_write: " + errno_name(errno));
    c.save = nullptr;
  }
  log_call(c, "ended: %s%s%s", o == Outcome::kSucceeded ? "succeeded" : o == Outcome::kFailed ? "failed" : "aborted",
           reason.empty() ? "" : " ", reason.c_str());
  auto& act = phones_[pidx].active;
  act.erase(std::remove(act.begin(), act.end(), ci), act.end());
  c.state = CallState::kFree;
  ++c.gen;
  ++c.epoch;
  c.has_held = false;
  free_calls_.push_back(ci);
  after_call(pidx);
}

void Worker::after_call(std::uint32_t pidx) {
  Phone& p = phones_[pidx];
  if (p.done) return;
  if (stop_seen_ == 0 && p.calls_left > p.queued) {
    ready_.push_back(pidx);
    ++p.queued;
  } else if (p.active.empty() && p.queued == 0 && (p.calls_left == 0 || stop_seen_ != 0)) {
    finish_phone(pidx);
  }
}

void Worker::finish_phone(std::uint32_t pidx) {
  Phone& p = phones_[pidx];
  if (p.done) return;
  if (p.conn == ConnState::kConnected && p.tx_off < p.tx.size()) {
    flush_tx(pidx);
    if (p.tx_off < p.tx.size()) count_error("tcp_unsent_at_close");
  }
  close_phone_fd(p, false);
  if (p.udp_fd >= 0) {
    ::close(p.udp_fd);
    p.udp_fd = -1;
  }
  p.done = true;
  ++phones_done_;
}

void Worker::begin_stop() {
  ready_.clear();
  for (auto& p : phones_) {
    p.queued = 0;
    p.calls_left = 0;
  }
  for (auto& c : calls_) {
    if (c.state == CallState::kStreaming) c.total = std::min(c.total, c.n);  // stops at its next tick
  }
  for (std::uint32_t i = 0; i < phones_.size(); ++i) {
    if (phones_[i].active.empty()) finish_phone(i);
  }
}

int Worker::find_call(const Phone& p, std::string_view id) const {
  for (const std::uint32_t ci : p.active) {
    if (calls_[ci].id == id) return static_cast<int>(ci);
  }
  return -1;
}

void Worker::add_timer(std::int64_t at, std::uint32_t ci, TimerKind kind) {
  timers_.push(Timer{at, ci, calls_[ci].gen, calls_[ci].epoch, kind});
}

void Worker::run_timers(std::int64_t now) {
  while (!timers_.empty() && timers_.top().at_ns <= now) {
    const Timer t = timers_.top();
    timers_.pop();
    Call& c = calls_[t.call];
    if (c.gen != t.gen || c.epoch != t.epoch) continue;  // stale: the call moved on
    switch (t.kind) {
      case TimerKind::kStartTimeout:
        if (c.state != CallState::kStarting) break;
        if (phones_[c.phone].conn == ConnState::kConnecting) {
          count_error("connect: timeout");
          connection_lost(c.phone, "connect_timeout", Outcome::kFailed);
        } else {
          end_call(t.call, Outcome::kFailed, "start_timeout");
        }
        break;
      case TimerKind::kStopTimeout:
        if (c.state == CallState::kStopping) end_call(t.call, Outcome::kFailed, "stop_timeout");
        break;
      case TimerKind::kDisconnect:
        if (c.state == CallState::kStreaming) {
          ++stats_.disconnects;
          log_call(c, "impairment: resetting the control connection");
          connection_lost(c.phone, "disconnect", Outcome::kAborted);
        }
        break;
    }
  }
}

void Worker::write_meta(const Call& c, Outcome o, const std::string& reason) {
  const std::string path = opt_.save_sent_dir + "/" + c.id + ".meta";
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    count_error("save_sent_open: " + errno_name(errno));
    return;
  }
  const Phone& p = phones_[c.phone];
  const auto& loop = cfg_.audio.loop_for_phone(p.index);
  std::fprintf(f, "id=%s\ndevice=%s\nphone_index=%u\n", c.id.c_str(), p.mac.c_str(), p.index);
  std::fprintf(f, "remote_number=%s\nremote_name=%s\nlocal_number=%s\nlocal_name=%s\ndir=%s\n", c.remote_number.c_str(),
               c.remote_name.c_str(), c.local_number.c_str(), c.local_name.c_str(), c.dir_in ? "in" : "out");
  std::fprintf(f, "codec=%s\npayload_type=%u\nptime_ms=%u\nsamples_per_packet=%u\ntone_hz=%g\n",
               std::string(fileio::codec_info(opt_.codec).name).c_str(), static_cast<unsigned>(pt_), opt_.ptime_ms,
               spp_, loop.tone_hz);
  std::fprintf(f, "ssrc=%u\nfirst_seq=%u\nfirst_timestamp=%u\npackets=%llu\nserver=%s\nport=%u\n", c.ssrc,
               static_cast<unsigned>(c.seq0), c.ts0, static_cast<unsigned long long>(c.n), c.server_text.c_str(),
               static_cast<unsigned>(c.server_port));
  std::fprintf(f, "outcome=%s\nreason=%s\n",
               o == Outcome::kSucceeded ? "succeeded" : o == Outcome::kFailed ? "failed" : "aborted", reason.c_str());
  for (const auto& [k, v] : opt_.stop_overrides) std::fprintf(f, "stop_%s=%s\n", k.c_str(), v.c_str());
  if (std::fclose(f) != 0) count_error("save_sent_write: " + errno_name(errno));
}

void Worker::log_call(const Call& c, const char* fmt, ...) {
  if (!opt_.verbose) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const double t = static_cast<double>(now_ns() - t0_ns_) / kNsPerSec;
  if (c.ext) {
    std::fprintf(stderr, "[%8.3f] rtp stream %llx: %s\n", t, static_cast<unsigned long long>(c.ext_key), msg);
    return;
  }
  std::fprintf(stderr, "[%8.3f] phone %u call %s: %s\n", t, phones_[c.phone].index, c.id.c_str(), msg);
}

// ---- control connection ----------------------------------------------------------------------

bool Worker::connect_phone(std::uint32_t pidx) {
  Phone& p = phones_[pidx];
  const int fd = ::socket(cfg_.server.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    count_error("tcp_socket: " + errno_name(errno));
    return false;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&cfg_.server), control::sockaddr_length(cfg_.server));
  if (r != 0 && errno != EINPROGRESS) {
    count_error("connect: " + errno_name(errno));
    ::close(fd);
    return false;
  }
  p.fd = fd;
  p.conn = r == 0 ? ConnState::kConnected : ConnState::kConnecting;
  ++p.conn_epoch;
  p.decoder = std::make_unique<control::FrameDecoder>();
  p.tx.clear();
  p.tx_off = 0;
  p.want_write = p.conn == ConnState::kConnecting;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (p.want_write ? EPOLLOUT : 0U);
  ev.data.u64 = static_cast<std::uint64_t>(pidx) + 1;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    count_error("epoll_ctl: " + errno_name(errno));
    ::close(fd);
    p.fd = -1;
    p.conn = ConnState::kClosed;
    return false;
  }
  if (p.conn == ConnState::kConnected) on_connected(pidx);
  return true;
}

void Worker::on_connected(std::uint32_t pidx) {
  Phone& p = phones_[pidx];
  p.conn = ConnState::kConnected;
  // Setup latency counts from the moment the request can leave, not from the connect.
  const std::int64_t now = now_ns();
  for (const std::uint32_t ci : p.active) {
    if (calls_[ci].state == CallState::kStarting) calls_[ci].start_sent_ns = now;
  }
  flush_tx(pidx);
  update_epoll(p);
}

void Worker::update_epoll(Phone& p) {
  if (p.fd < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (p.want_write ? EPOLLOUT : 0U);
  ev.data.u64 = static_cast<std::uint64_t>(&p - phones_.data()) + 1;
  ::epoll_ctl(epfd_, EPOLL_CTL_MOD, p.fd, &ev);
}

void Worker::send_msg(std::uint32_t pidx, std::string msg) {
  Phone& p = phones_[pidx];
  if (p.fd < 0) return;
  if (p.tx.empty()) {
    p.tx = std::move(msg);
    p.tx_off = 0;
  } else {
    p.tx += msg;
  }
  if (p.conn == ConnState::kConnected) flush_tx(pidx);
}

void Worker::flush_tx(std::uint32_t pidx) {
  // Never tears the connection down itself (callers hold references into the call table): a
  // send error shuts the socket down and the read path reports the loss on the next event.
  Phone& p = phones_[pidx];
  const bool wanted = p.want_write;
  int err = 0;
  const Drain d = drain_tx(p.tx, p.tx_off, [&](const char* data, std::size_t n) -> long {
    for (;;) {
      const ssize_t k = ::send(p.fd, data, n, MSG_NOSIGNAL);
      if (k > 0) return k;
      if (k < 0 && errno == EINTR) continue;
      if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
      err = errno;
      return -1;
    }
  });
  if (d == Drain::kFailed) {
    count_error("tcp_send: " + errno_name(err));
    ::shutdown(p.fd, SHUT_RDWR);
  }
  p.want_write = !p.tx.empty();
  if (p.want_write != wanted) update_epoll(p);
}

void Worker::close_phone_fd(Phone& p, bool reset) {
  if (p.fd >= 0) {
    if (reset) {
      const linger lg{1, 0};  // close() sends RST: an abrupt failure, as a crashing phone would
      ::setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    ::close(p.fd);
  }
  p.fd = -1;
  p.conn = ConnState::kClosed;
  ++p.conn_epoch;
  p.tx.clear();
  p.tx_off = 0;
  p.want_write = false;
}

void Worker::connection_lost(std::uint32_t pidx, const std::string& reason, Outcome o) {
  Phone& p = phones_[pidx];
  close_phone_fd(p, o == Outcome::kAborted);
  const std::vector<std::uint32_t> affected = p.active;  // end_call edits p.active
  for (const std::uint32_t ci : affected) end_call(ci, o, reason);
}

void Worker::on_phone_event(std::uint32_t pidx, std::uint32_t events) {
  Phone& p = phones_[pidx];
  if (p.fd < 0) return;
  const std::uint32_t epoch = p.conn_epoch;
  if (p.conn == ConnState::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      count_error("connect: " + errno_name(err));
      connection_lost(pidx, "connect_failed", Outcome::kFailed);
      return;
    }
    on_connected(pidx);
    if (p.conn_epoch != epoch) return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    std::array<char, 16384> buf{};
    while (true) {
      const ssize_t n = ::recv(p.fd, buf.data(), buf.size(), 0);
      if (n > 0) {
        p.decoder->feed(std::string_view(buf.data(), static_cast<std::size_t>(n)));
        const std::int64_t now = now_ns();
        while (auto line = p.decoder->next()) {
          handle_message(pidx, *line, now);
          if (p.conn_epoch != epoch) return;
        }
        if (p.decoder->overflow()) {
          count_error("protocol: message too long");
          connection_lost(pidx, "protocol_error", Outcome::kFailed);
          return;
        }
        continue;
      }
      if (n == 0) {
        if (auto line = p.decoder->take_unterminated()) {
          handle_message(pidx, *line, now_ns());
          if (p.conn_epoch != epoch) return;
        }
        if (!p.active.empty()) count_error("tcp: closed by server");
        connection_lost(pidx, "connection_lost", Outcome::kFailed);
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      count_error("tcp_recv: " + errno_name(errno));
      connection_lost(pidx, "connection_lost", Outcome::kFailed);
      return;
    }
  }
  if ((events & EPOLLOUT) != 0 && p.fd >= 0) flush_tx(pidx);
}

void Worker::handle_message(std::uint32_t pidx, std::string_view line, std::int64_t now) {
  auto parsed = control::parse_message(line);
  if (!parsed) {
    count_error("protocol: unparsable message");
    return;
  }
  const control::Message& m = *parsed;
  Phone& p = phones_[pidx];
  const auto id = m.get("id");
  const int ci = id ? find_call(p, *id) : -1;
  switch (control::command_of(m.cmd)) {
    case control::Command::kStartResponse: {
      auto r = control::parse_start_response(m);
      if (ci < 0 || calls_[static_cast<std::size_t>(ci)].state != CallState::kStarting) {
        count_error("protocol: unexpected RecordStartResponse");
        if (r.ok() && r->success) {  // a late answer after our timeout: do not leave it recording
          control::StopRequest s;
          s.id = r->id;
          s.reason = "start_timeout";
          send_msg(pidx, control::format_stop_request(s));
        }
        return;
      }
      const auto call = static_cast<std::uint32_t>(ci);
      stats_.setup_latency.add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - calls_[call].start_sent_ns)) /
                               1000);
      if (!r) {
        count_error("protocol: bad RecordStartResponse (" + r.error().detail + ")");
        end_call(call, Outcome::kFailed, "bad_response");
      } else if (!r->success) {
        end_call(call, Outcome::kFailed, r->reason.empty() ? "failed_without_reason" : r->reason);
      } else {
        start_stream(call, *r, now);
      }
      return;
    }
    case control::Command::kStopResponse: {
      if (ci < 0 || calls_[static_cast<std::size_t>(ci)].state != CallState::kStopping) {
        count_error("protocol: unexpected RecordStopResponse");
        return;
      }
      const auto call = static_cast<std::uint32_t>(ci);
      stats_.stop_latency.add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - calls_[call].stop_sent_ns)) /
                              1000);
      auto r = control::parse_stop_response(m);
      if (!r) {
        count_error("protocol: bad RecordStopResponse (" + r.error().detail + ")");
        end_call(call, Outcome::kFailed, "bad_response");
      } else if (r->success) {
        end_call(call, Outcome::kSucceeded, "");
      } else {
        end_call(call, Outcome::kFailed, "stop_" + (r->reason.empty() ? std::string("failed") : r->reason));
      }
      return;
    }
    case control::Command::kStopRequest: {
      auto r = control::parse_stop_request(m);
      control::StopResponse resp;
      if (!r) {
        count_error("protocol: bad RecordStopRequest (" + r.error().detail + ")");
        resp.id = id ? std::string(*id) : std::string();
        resp.success = false;
        resp.reason = std::string(control::reason::kBadRequest);
        send_msg(pidx, control::format_stop_response(resp));
        return;
      }
      resp.id = r->id;
      if (ci < 0) {
        count_error("protocol: RecordStopRequest for an unknown id");
        resp.success = false;
        resp.reason = std::string(control::reason::kUnknownId);
        send_msg(pidx, control::format_stop_response(resp));
        return;
      }
      const auto call = static_cast<std::uint32_t>(ci);
      const std::string why = r->reason && !r->reason->empty() ? *r->reason : "unspecified";
      ++stats_.server_stops_by_reason[why];
      log_call(calls_[call], "server stop (reason %s)", why.c_str());
      send_msg(pidx, control::format_stop_response(resp));
      if (calls_[call].state == CallState::kStopping) {
        end_call(call, Outcome::kSucceeded, "");  // both sides stopped at once
      } else {
        end_call(call, Outcome::kFailed, "server_stop");
      }
      return;
    }
    default:
      count_error("protocol: unexpected " + (m.cmd.empty() ? std::string("message") : m.cmd));
      return;
  }
}

// ---- SIPREC streams ---------------------------------------------------------------------------

void Worker::post(std::vector<ExtCommand>& cmds) {
  if (cmds.empty()) return;
  bool wake = false;
  {
    std::lock_guard lock(ext_mu_);
    wake = ext_queue_.empty();
    if (wake) {
      ext_queue_.swap(cmds);
    } else {
      for (auto& c : cmds) ext_queue_.push_back(std::move(c));
    }
    ext_pending_.store(true, std::memory_order_release);
  }
  cmds.clear();
  if (wake && evfd_ >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(evfd_, &one, sizeof one);
  }
}

void Worker::close_external() {
  ext_closed_.store(true, std::memory_order_release);
  if (evfd_ >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(evfd_, &one, sizeof one);
  }
}

void Worker::drain_external(std::int64_t now) {
  {
    std::lock_guard lock(ext_mu_);
    ext_work_.swap(ext_queue_);
    ext_pending_.store(false, std::memory_order_release);
  }
  for (const ExtCommand& cmd : ext_work_) {
    if (cmd.op == ExtOp::kStart) {
      ext_start(cmd.key, cmd.stream, now);
      continue;
    }
    const auto it = ext_calls_.find(cmd.key);
    if (it == ext_calls_.end()) continue;  // ended meanwhile
    Call& c = calls_[it->second];
    switch (cmd.op) {
      case ExtOp::kPause:
        c.paused = true;
        log_call(c, "paused at packet %llu", static_cast<unsigned long long>(c.n));
        break;
      case ExtOp::kResume:
        c.paused = false;
        log_call(c, "resumed at packet %llu", static_cast<unsigned long long>(c.n));
        break;
      case ExtOp::kStop:
        if (c.state == CallState::kStreaming) ext_end(it->second);
        break;
      case ExtOp::kStart: break;
    }
  }
  ext_work_.clear();
}

bool Worker::set_dest(Call& c, const sockaddr_storage& dst, std::uint16_t port) {
  std::memset(&c.dest, 0, sizeof c.dest);
  if (dst.ss_family == AF_INET && udp_family_ == AF_INET6) {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(c.dest);
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    v6.sin6_addr.s6_addr[10] = 0xFF;
    v6.sin6_addr.s6_addr[11] = 0xFF;
    std::memcpy(&v6.sin6_addr.s6_addr[12], &reinterpret_cast<const sockaddr_in&>(dst).sin_addr, 4);
    c.dest_len = sizeof(sockaddr_in6);
    return true;
  }
  if (dst.ss_family == AF_INET6 && udp_family_ == AF_INET) return false;
  c.dest = dst;
  if (dst.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in&>(c.dest).sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6&>(c.dest).sin6_port = htons(port);
  }
  c.dest_len = control::sockaddr_length(c.dest);
  return true;
}

void Worker::ext_start(std::uint64_t key, const ExtStream& s, std::int64_t now) {
  const std::uint32_t ci = alloc_call();
  Call& c = calls_[ci];
  c.ext = true;
  c.ext_key = key;
  c.phone = 0;
  c.audio = s.audio;
  c.paused = false;
  c.has_held = false;
  c.rng.state = s.seed;
  c.n = 0;
  c.total = 0;
  c.owns_fd = false;
  c.udp_fd = -1;
  c.state = CallState::kStreaming;
  ++c.epoch;
  c.streaming = true;
  ++stats_.streams_active;
  ext_calls_[key] = ci;
  std::uint16_t port = 0;
  if (s.dest.ss_family == AF_INET) port = ntohs(reinterpret_cast<const sockaddr_in&>(s.dest).sin_port);
  if (s.dest.ss_family == AF_INET6) port = ntohs(reinterpret_cast<const sockaddr_in6&>(s.dest).sin6_port);
  if (!set_dest(c, s.dest, port)) {
    count_error("rtp: ipv6_unavailable");
    ext_end(ci);
    return;
  }
  if (!udp_pool_.empty()) {
    c.udp_fd = udp_pool_[udp_rr_++ % udp_pool_.size()];
  } else {
    c.udp_fd = make_udp_socket(0);
    c.owns_fd = c.udp_fd >= 0;
  }
  if (c.udp_fd < 0) {
    ext_end(ci);
    return;
  }
  if (s.srtp) {
    std::string why;
    c.srtp = fileio::SrtpSender::create(*s.srtp, &why);
    if (!c.srtp) {
      count_error("srtp: " + why);
      ext_end(ci);
      return;
    }
  }
  c.ssrc = static_cast<std::uint32_t>(c.rng.next());
  c.seq0 = static_cast<std::uint16_t>(c.rng.next());
  c.ts0 = static_cast<std::uint32_t>(c.rng.next());
  c.total = stop_seen_ != 0 ? 0 : s.packets;
  c.base_ms = (now - t0_ns_) / kNsPerMs + 1;
  if (opt_.reorder_pct > 0) c.held.resize(slot_len_);
  wheel_insert(ci, c.base_ms);
  log_call(c, "streaming %llu packets", static_cast<unsigned long long>(c.total));
}

void Worker::ext_end(std::uint32_t ci) {
  Call& c = calls_[ci];
  if (c.has_held) {  // --reorder: the held packet still goes out
    std::memcpy(batch_slot(), c.held.data(), c.held_len);
    commit_slot(c, c.held_len);
    c.has_held = false;
    flush_batch();
  }
  stop_stream(c);
  const std::uint64_t key = c.ext_key;
  const std::uint64_t sent = c.n;
  log_call(c, "ended after %llu packet times", static_cast<unsigned long long>(sent));
  if (c.owns_fd && c.udp_fd >= 0) ::close(c.udp_fd);
  c.owns_fd = false;
  c.udp_fd = -1;
  c.srtp.reset();
  c.state = CallState::kFree;
  c.ext = false;
  c.paused = false;
  ++c.gen;
  ++c.epoch;
  free_calls_.push_back(ci);
  ext_calls_.erase(key);
  if (stream_done_) stream_done_(key, sent);
}

// ---- RTP -------------------------------------------------------------------------------------

void Worker::wheel_insert(std::uint32_t ci, std::int64_t key_ms) {
  wheel_.insert(SendWheel::Entry{ci, calls_[ci].gen}, key_ms);
}

bool Worker::process_wheel(std::int64_t now) {
  const std::int64_t now_ms = (now - t0_ns_) / kNsPerMs;
  const auto ptime = static_cast<std::int64_t>(opt_.ptime_ms);
  const bool more = wheel_.sweep(now_ms, kSendBudget, [&](const SendWheel::Entry& e, std::int64_t ms) {
    Call& c = calls_[e.call];
    if (c.gen != e.gen || c.state != CallState::kStreaming) return false;  // ended meanwhile
    const std::int64_t due_ms = c.base_ms + static_cast<std::int64_t>(c.n) * ptime;
    if (due_ms > now_ms) {  // not yet (a later lap of the wheel)
      wheel_insert(e.call, due_ms);
      return false;
    }
    if (c.n >= c.total) {  // the call's time is up: hang up once this sweep's packets are out
      ended_streams_.push_back(e.call);
      return false;
    }
    if (c.paused) {  // SIPREC pause: the packet time passes without a packet
      ++c.n;
      ++stats_.rtp_paused;
      wheel_insert(e.call, std::max(c.base_ms + static_cast<std::int64_t>(c.n) * ptime, ms + 1));
      return false;
    }
    const std::int64_t late_ns = now - (t0_ns_ + due_ms * kNsPerMs);
    if (late_ns > 0) {
      const auto late_us = static_cast<std::uint64_t>(late_ns / 1000);
      if (late_us > kLateThresholdUs) ++stats_.late_sends;
      stats_.max_late_us = std::max(stats_.max_late_us, late_us);
    }
    emit_packet(c, now);
    ++c.n;
    const std::int64_t next_ms = c.base_ms + static_cast<std::int64_t>(c.n) * ptime;
    wheel_insert(e.call, std::max(next_ms, ms + 1));
    return true;
  });
  flush_batch();
  if (!ended_streams_.empty()) {
    for (const std::uint32_t ci : ended_streams_) {
      if (calls_[ci].state != CallState::kStreaming) continue;
      if (calls_[ci].ext) {
        ext_end(ci);
      } else {
        send_stop(ci, now);
      }
    }
    ended_streams_.clear();
  }
  return more;
}

std::byte* Worker::batch_slot() {
  return arena_.data() + batch_.size() * slot_len_;
}

void Worker::commit_slot(const Call& c, std::uint32_t len) {
  BatchItem item{};
  item.fd = c.udp_fd;
  item.len = len;
  item.order = static_cast<std::uint32_t>(batch_.size());
  item.dest_len = c.dest_len;
  std::memcpy(&item.dest, &c.dest, std::min<std::size_t>(c.dest_len, sizeof item.dest));
  batch_.push_back(item);
}

void Worker::emit_packet(Call& c, std::int64_t /*now*/) {
  // A packet may occupy up to 3 slots (itself, a duplicate, a held one): make room first so
  // the slot pointers stay valid.
  if (batch_.size() + 3 > kBatchMax) flush_batch();
  std::byte* pkt = batch_slot();
  fileio::write_rtp_header(pkt, pt_, c.n == 0, static_cast<std::uint16_t>(c.seq0 + c.n),
                           static_cast<std::uint32_t>(c.ts0 + c.n * spp_), c.ssrc);
  AudioSource::copy_frame(cfg_.audio.loop_for_phone(c.audio), c.n * spp_, pkt + fileio::kRtpHeaderMin, spp_);
  ++stats_.rtp_generated;
  if (c.save != nullptr) {
    std::byte len[4];
    fileio::store_be32(len, pkt_len_);
    if (std::fwrite(len, 1, 4, c.save) != 4 || std::fwrite(pkt, 1, pkt_len_, c.save) != pkt_len_) {
      count_error("save_sent_write: " + errno_name(errno));
    }
  }
  if (opt_.wrong_source && c.n == kStrayAtPacket) send_strays(c);
  std::uint32_t len = pkt_len_;
  if (c.srtp) {
    const std::size_t n = c.srtp->protect(reinterpret_cast<std::uint8_t*>(pkt), pkt_len_, slot_len_);
    if (n == 0 || n > slot_len_) {
      ++stats_.rtp_send_failed;
      count_error("srtp_protect");
      return;
    }
    len = static_cast<std::uint32_t>(n);
  }

  if (c.rng.chance_pct(opt_.loss_pct)) {
    ++stats_.rtp_dropped_loss;
    if (c.has_held) {  // the packet it was to follow is gone: send it now
      std::memcpy(pkt, c.held.data(), c.held_len);
      commit_slot(c, c.held_len);
      c.has_held = false;
    }
    return;
  }
  if (!c.has_held && c.n + 1 < c.total && c.rng.chance_pct(opt_.reorder_pct)) {
    std::memcpy(c.held.data(), pkt, len);
    c.held_len = len;
    c.has_held = true;
    ++stats_.rtp_reordered;
    return;
  }
  commit_slot(c, len);
  if (c.rng.chance_pct(opt_.duplicate_pct)) {
    std::memcpy(batch_slot(), pkt, len);
    commit_slot(c, len);
    ++stats_.rtp_duplicated;
  }
  if (c.has_held) {
    std::memcpy(batch_slot(), c.held.data(), c.held_len);
    commit_slot(c, c.held_len);
    c.has_held = false;
  }
}

void Worker::send_strays(const Call& c) {
  if (stray_fd_ < 0) stray_fd_ = make_udp_socket(0);
  if (stray_fd_ < 0) return;
  std::vector<std::byte> pkt(pkt_len_, std::byte{0x55});
  for (int k = 0; k < kStrayCount; ++k) {
    const std::uint64_t n = c.n + static_cast<std::uint64_t>(k);
    fileio::write_rtp_header(pkt.data(), pt_, false, static_cast<std::uint16_t>(c.seq0 + n),
                             static_cast<std::uint32_t>(c.ts0 + n * spp_), c.ssrc);
    const ssize_t r =
        ::sendto(stray_fd_, pkt.data(), pkt.size(), 0, reinterpret_cast<const sockaddr*>(&c.dest), c.dest_len);
    if (r < 0) {
      count_error("udp_send: " + errno_name(errno));
    } else {
      ++stats_.stray_sent;
    }
  }
}

void Worker::flush_batch() {
  const std::size_t n = batch_.size();
  if (n == 0) return;
  // Group by socket (stable: a stream's packets keep their order), one sendmmsg per group.
  order_.resize(n);
  for (std::size_t i = 0; i < n; ++i) order_[i] = static_cast<std::uint32_t>(i);
  bool one_fd = true;
  for (std::size_t i = 1; i < n && one_fd; ++i) one_fd = batch_[i].fd == batch_[0].fd;
  if (!one_fd) {
    std::stable_sort(order_.begin(), order_.end(),
                     [this](std::uint32_t a, std::uint32_t b) { return batch_[a].fd < batch_[b].fd; });
  }
  std::array<mmsghdr, kBatchMax> msgs{};
  std::array<iovec, kBatchMax> iov{};
  for (std::size_t k = 0; k < n; ++k) {
    BatchItem& item = batch_[order_[k]];
    iov[k].iov_base = arena_.data() + static_cast<std::size_t>(order_[k]) * slot_len_;
    iov[k].iov_len = item.len;
    msgs[k].msg_hdr.msg_name = &item.dest;
    msgs[k].msg_hdr.msg_namelen = item.dest_len;
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }
  std::size_t i = 0;
  while (i < n) {
    const int fd = batch_[order_[i]].fd;
    std::size_t j = i;
    while (j < n && batch_[order_[j]].fd == fd) ++j;
    while (i < j) {
      const int r = ::sendmmsg(fd, &msgs[i], static_cast<unsigned>(j - i), 0);
      ++stats_.send_batches;
      if (r > 0) {
        for (std::size_t k = i; k < i + static_cast<std::size_t>(r); ++k) {
          ++stats_.rtp_sent;
          stats_.rtp_bytes_sent += iov[k].iov_len;
        }
        i += static_cast<std::size_t>(r);
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      // The first message of the rest failed (EAGAIN: socket buffer full; ECONNREFUSED ...):
      // count it and go on with the next one.
      ++stats_.rtp_send_failed;
      count_error("udp_send: " + errno_name(errno));
      ++i;
    }
  }
  batch_.clear();
}

}  // namespace callrec::phone
