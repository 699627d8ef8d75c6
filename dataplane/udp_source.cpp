#include "dataplane/udp_source.hpp"

#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <span>
#include <thread>
#include <utility>

#include "dataplane/end_marks.hpp"
#include "dataplane/flow_policer.hpp"
#include "fileio/rtp.hpp"

namespace callrec::dataplane {

namespace udp_detail {

constexpr std::size_t kCacheLine = 64;
constexpr int kIdleTimeoutMs = 10;     ///< epoll timeout: bounds command and publish latency
constexpr int kPendingTimeoutMs = 1;   ///< while end marks wait for ring space
constexpr std::uint64_t kPublishIntervalNs = 100'000'000;
constexpr int kMaxEvents = 256;
constexpr std::uint64_t kWakeToken = ~std::uint64_t{0};
constexpr unsigned kMaxBurst = 256;
/// Bursts read from a socket being removed: everything queued before the remove, bounded so
/// that a peer still blasting cannot hold the RX thread.
constexpr unsigned kFinalDrainBursts = 256;
constexpr auto kPortCloseWait = std::chrono::milliseconds(200);


/// A peer address in the receiving socket's own family: AF_INET (4 address bytes) or AF_INET6
/// (16 bytes; IPv4 peers of a dual-stack socket as v4-mapped ::ffff:a.b.c.d).
struct Endpoint {
  sa_family_t family = AF_UNSPEC;  ///< AF_UNSPEC: any source
  in_port_t port = 0;              ///< network byte order; 0 = any port
  std::array<std::byte, 16> addr{};
};

/// Converts `ss` to an endpoint of family `socket_family`. False when it cannot be expressed
/// there (an IPv6 address for an IPv4 socket) or `ss` is neither AF_INET nor AF_INET6.
bool to_endpoint(const sockaddr_storage& ss, sa_family_t socket_family, Endpoint& out) {
  std::array<std::byte, 16> a{};
  bool v4 = false;
  in_port_t port = 0;
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &ss, sizeof sin);
    std::memcpy(a.data(), &sin.sin_addr, 4);
    port = sin.sin_port;
    v4 = true;
  } else if (ss.ss_family == AF_INET6) {
    sockaddr_in6 s6{};
    std::memcpy(&s6, &ss, sizeof s6);
    if (IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr)) {
      std::memcpy(a.data(), &s6.sin6_addr.s6_addr[12], 4);
      v4 = true;
    } else {
      std::memcpy(a.data(), &s6.sin6_addr, 16);
    }
    port = s6.sin6_port;
  } else {
    return false;
  }
  out = Endpoint{};
  out.port = port;
  if (socket_family == AF_INET) {
    if (!v4) return false;
    out.family = AF_INET;
    std::copy_n(a.begin(), 4, out.addr.begin());
    return true;
  }
  out.family = AF_INET6;
  if (v4) {
    out.addr[10] = std::byte{0xFF};
    out.addr[11] = std::byte{0xFF};
    std::copy_n(a.begin(), 4, out.addr.begin() + 12);
  } else {
    out.addr = a;
  }
  return true;
}

/// Per packet: compares the sender (as the socket reported it) with an endpoint of the
/// socket's family. memcpy of the address fields compiles to plain loads.
inline bool same_source(const Endpoint& e, const sockaddr_storage& from, bool with_port) {
  if (e.family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, &from, sizeof sin);
    return sin.sin_family == AF_INET && std::memcmp(&sin.sin_addr, e.addr.data(), 4) == 0 &&
           (!with_port || sin.sin_port == e.port);
  }
  sockaddr_in6 s6;
  std::memcpy(&s6, &from, sizeof s6);
  return s6.sin6_family == AF_INET6 && std::memcmp(&s6.sin6_addr, e.addr.data(), 16) == 0 &&
         (!with_port || s6.sin6_port == e.port);
}

/// RX-thread-local counters (plain integers; summed once per burst).
struct Counters {
  std::uint64_t rx_packets = 0;
  std::uint64_t rx_bytes = 0;
  std::uint64_t delivered = 0;
  std::uint64_t ring_full = 0;
  std::uint64_t wrong_source = 0;
  std::uint64_t not_rtp = 0;
  std::uint64_t policed = 0;
  std::uint64_t rx_errors = 0;

  Counters& operator+=(const Counters& o) {
    rx_packets += o.rx_packets;
    rx_bytes += o.rx_bytes;
    delivered += o.delivered;
    ring_full += o.ring_full;
    wrong_source += o.wrong_source;
    not_rtp += o.not_rtp;
    policed += o.policed;
    rx_errors += o.rx_errors;
    return *this;
  }
};

/// The copy of Counters other threads read: written only by its RX thread (relaxed stores
/// every kPublishIntervalNs), on its own cache line.
struct alignas(kCacheLine) PublishedCounters {
  std::atomic<std::uint64_t> rx_packets{0};
  std::atomic<std::uint64_t> rx_bytes{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> ring_full{0};
  std::atomic<std::uint64_t> wrong_source{0};
  std::atomic<std::uint64_t> not_rtp{0};
  std::atomic<std::uint64_t> policed{0};
  std::atomic<std::uint64_t> rx_errors{0};

  void store(const Counters& c) {
    constexpr auto r = std::memory_order_relaxed;
    rx_packets.store(c.rx_packets, r);
    rx_bytes.store(c.rx_bytes, r);
    delivered.store(c.delivered, r);
    ring_full.store(c.ring_full, r);
    wrong_source.store(c.wrong_source, r);
    not_rtp.store(c.not_rtp, r);
    policed.store(c.policed, r);
    rx_errors.store(c.rx_errors, r);
  }
  void add_to(SourceStats& s) const {
    constexpr auto r = std::memory_order_relaxed;
    s.rx_packets += rx_packets.load(r);
    s.rx_bytes += rx_bytes.load(r);
    s.delivered += delivered.load(r);
    s.ring_full += ring_full.load(r);
    s.wrong_source += wrong_source.load(r);
    s.not_rtp += not_rtp.load(r);
    s.policed += policed.load(r);
    s.rx_errors += rx_errors.load(r);
  }
};

}  // namespace udp_detail

using udp_detail::Counters;
using udp_detail::Endpoint;
using udp_detail::kCacheLine;

/// Per-flow counters: written by the owning RX thread after each service of the socket,
/// read by control threads. Shared: the control side drops its reference at remove_flow(), the
/// RX thread when it has closed the socket, in either order.
struct alignas(kCacheLine) UdpSource::FlowCounters {
  std::atomic<std::uint64_t> packets{0};
  std::atomic<std::uint64_t> wrong_source{0};
  std::atomic<std::uint64_t> policed{0};
};

namespace udp_detail {

/// One entry of an RX thread's flow table (a preallocated array indexed by slot; epoll data
/// carries the slot). Built by the control thread, then moved in by the RX thread.
struct Flow {
  int fd = -1;
  StreamId stream = 0;
  unsigned writer = 0;  ///< set by the RX thread: rings.writer_for(stream)
  sa_family_t socket_family = AF_INET;
  bool latch = false;
  bool latched = false;
  Endpoint expected;  ///< family AF_UNSPEC: any source
  Endpoint latched_src;
  std::uint64_t packets = 0;
  std::uint64_t wrong_source = 0;
  std::uint64_t policed = 0;
  std::uint64_t policer_tat = 0;  ///< flow_policer.hpp state
  std::shared_ptr<UdpSource::FlowCounters> counters;

  /// Latched: only the latched address:port. Otherwise the expected source (with latch: its
  /// address, any port -- the packet that passes latches the flow), or anyone.
  [[nodiscard]] bool accepts(const sockaddr_storage& from) const {
    if (latched) return same_source(latched_src, from, true);
    if (expected.family == AF_UNSPEC) return true;
    return same_source(expected, from, !latch && expected.port != 0);
  }
};

}  // namespace udp_detail

using udp_detail::Flow;

namespace udp_detail {

/// A flow's counters as its RX thread last published them (final once it closed the socket).
FlowStats published_stats(const FlowRegistry<std::shared_ptr<UdpSource::FlowCounters>>::Entry& e) {
  const UdpSource::FlowCounters& c = *e.payload;
  return FlowStats{c.packets.load(std::memory_order_relaxed), c.wrong_source.load(std::memory_order_relaxed),
                   c.policed.load(std::memory_order_relaxed)};
}

}  // namespace udp_detail

struct UdpSource::Command {
  enum class Kind : std::uint8_t { kAdd, kRemove };
  Kind kind = Kind::kAdd;
  std::uint32_t slot = 0;
  Flow flow;  ///< kAdd: the flow with its open socket (fd ownership moves to the RX thread)
};

/// All state of one RX thread. The first group is touched only by that thread once it runs
/// (the constructor prepares it); the aligned groups below are shared with control threads.
struct UdpSource::RxThread {
  // ---- owned by the RX thread -------------------------------------------------------------
  unsigned index = 0;
  int epfd = -1;
  int wakefd = -1;
  unsigned burst = 32;
  unsigned bursts_per_socket = 4;
  PolicerConfig policer;
  fileio::RingMatrix* rings = nullptr;
  std::vector<Flow> flows;  ///< preallocated table, indexed by slot
  std::vector<mmsghdr> msgs;
  std::vector<iovec> iovs;
  std::vector<sockaddr_storage> names;
  std::unique_ptr<std::byte[]> buffers;  ///< burst * kMaxDatagram
  std::vector<Command> batch;            ///< commands being applied (swapped with `commands`)
  EndMarks end_marks;  ///< end marks waiting for ring space
  Counters local;
  std::uint64_t last_publish_ns = 0;
  std::chrono::milliseconds stop_drain_timeout{2000};
  std::atomic<std::uint64_t>* end_marks_lost = nullptr;
  std::thread thread;

  // ---- shared -------------------------------------------------------------------------------
  alignas(kCacheLine) udp_detail::PublishedCounters published;
  alignas(kCacheLine) std::atomic<bool> stop_requested{false};
  std::atomic<bool> commands_pending{false};
  std::atomic<std::uint64_t> commands_done{0};  ///< commands applied (remove => socket closed)
  std::mutex cmd_mu;
  std::vector<Command> commands;  ///< guarded by cmd_mu

  RxThread() = default;
  RxThread(const RxThread&) = delete;
  RxThread& operator=(const RxThread&) = delete;
  ~RxThread();

  void run();
  void drain_commands();
  void apply(Command& cmd);
  void service(Flow& f, unsigned max_bursts);
  void close_flow(Flow& f);
  void shutdown();
  void wake() const {
    const std::uint64_t one = 1;
    if (::write(wakefd, &one, sizeof one) < 0) {
      // EAGAIN: the counter is saturated, so the thread is awake anyway.
    }
  }
  std::byte* buffer(unsigned i) { return buffers.get() + std::size_t{i} * UdpSource::kMaxDatagram; }
};

UdpSource::RxThread::~RxThread() {
  // Only sockets of a source that never ran are still open here; a running thread closes its
  // own in shutdown().
  for (Flow& f : flows) {
    if (f.fd >= 0) ::close(f.fd);
  }
  for (Command& c : commands) {
    if (c.kind == Command::Kind::kAdd && c.flow.fd >= 0) ::close(c.flow.fd);
  }
  if (wakefd >= 0) ::close(wakefd);
  if (epfd >= 0) ::close(epfd);
}

void UdpSource::RxThread::run() {
  std::array<epoll_event, udp_detail::kMaxEvents> events{};
  last_publish_ns = mono_ns();
  // acquire: pairs with stop()'s release; commands posted before it are seen by shutdown().
  while (!stop_requested.load(std::memory_order_acquire)) {
    // acquire: pairs with post_command_locked()'s release (the lock also orders the vector).
    if (commands_pending.load(std::memory_order_acquire)) drain_commands();
    if (!end_marks.empty()) end_marks.retry(*rings, index);
    const int timeout = end_marks.empty() ? udp_detail::kIdleTimeoutMs : udp_detail::kPendingTimeoutMs;
    const int n = ::epoll_wait(epfd, events.data(), udp_detail::kMaxEvents, timeout);
    if (n < 0 && errno != EINTR) ++local.rx_errors;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tag = events[static_cast<std::size_t>(i)].data.u64;
      if (tag == udp_detail::kWakeToken) {
        std::uint64_t v = 0;
        if (::read(wakefd, &v, sizeof v) < 0) {
          // EAGAIN: already reset by an earlier read.
        }
        continue;
      }
      // Level-triggered: a socket left non-empty by the per-round cap is reported again next
      // round, after the other ready sockets had their turn.
      service(flows[tag], bursts_per_socket);
    }
    const std::uint64_t now = mono_ns();
    if (now - last_publish_ns >= udp_detail::kPublishIntervalNs) {
      published.store(local);
      last_publish_ns = now;
    }
  }
  shutdown();
}

void UdpSource::RxThread::drain_commands() {
  {
    std::lock_guard lock(cmd_mu);
    batch.swap(commands);  // both keep their capacity: no allocation once warmed up
    commands_pending.store(false, std::memory_order_relaxed);  // the lock orders it
  }
  for (Command& c : batch) apply(c);
  // release: pairs with wait_port_closed_locked()'s acquire; the removed sockets are closed.
  commands_done.fetch_add(batch.size(), std::memory_order_release);
  batch.clear();
}

void UdpSource::RxThread::apply(Command& cmd) {
  Flow& f = flows[cmd.slot];
  if (cmd.kind == Command::Kind::kAdd) {
    f = std::move(cmd.flow);
    f.writer = rings->writer_for(f.stream);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = cmd.slot;
    if (::epoll_ctl(epfd, EPOLL_CTL_ADD, f.fd, &ev) != 0) {
      // Out of kernel memory: the flow cannot be served. Its writer still gets the end mark.
      ++local.rx_errors;
      ::close(f.fd);
      f.fd = -1;
      end_marks.push(*rings, index, f.stream, f.writer);
      f = Flow{};
    }
    return;
  }
  if (f.fd >= 0) close_flow(f);
}

// Measured (bench/udp_rx_bench, loopback, 2-core VM at load ~7-9, so +-30% run to run): at
// 1000 flows x 50 pps (~1 packet per socket per wakeup) this path costs ~3.5-4.5 us of RX CPU
// per packet, within noise (+10-20%) of a bare epoll+recvmmsg loop doing no work: the
// per-socket system calls dominate, not the source check, RTP parse or ring copy. burst 1
// costs ~30-50% more than burst 32 there (an extra recvmmsg that returns EAGAIN per socket);
// io_uring multishot recvmsg measured 25-40% below the bare loop. No prefetch: recvmmsg has
// just written every packet into buffers that are hot in L1/L2.
void UdpSource::RxThread::service(Flow& f, unsigned max_bursts) {
  fileio::PacketRing& ring = rings->ring(index, f.writer);
  Counters c;  // this service's sums, added to `local` once
  std::uint64_t accepted = 0;
  for (unsigned b = 0; b < max_bursts; ++b) {
    for (unsigned i = 0; i < burst; ++i) msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
    const int n = ::recvmmsg(f.fd, msgs.data(), burst, MSG_DONTWAIT, nullptr);
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ++c.rx_errors;
      break;
    }
    const std::uint64_t now = mono_ns();  // one clock read per burst
    std::uint64_t pushed = 0;
    for (unsigned i = 0; i < static_cast<unsigned>(n); ++i) {
      const mmsghdr& m = msgs[i];
      const std::span<const std::byte> pkt(buffer(i), m.msg_len);
      c.rx_bytes += m.msg_len;
      if (!f.accepts(names[i])) {
        ++c.wrong_source;
        continue;
      }
      if ((m.msg_hdr.msg_flags & MSG_TRUNC) != 0 || !fileio::parse_rtp(pkt)) {
        ++c.not_rtp;
        continue;
      }
      if (!policer_admit(f.policer_tat, policer, now)) [[unlikely]] {
        ++c.policed;  // over the flow's rate: it cannot take the writer from the other flows
        continue;
      }
      if (f.latch && !f.latched) {  // first RTP packet from an acceptable source: latch on it
        f.latched = udp_detail::to_endpoint(names[i], f.socket_family, f.latched_src);
      }
      ++accepted;
      if (ring.push(f.stream, fileio::RecordKind::kPacket, now, pkt)) {
        ++pushed;
      } else {
        ++c.ring_full;
      }
    }
    if (pushed != 0) ring.publish();  // one release store per burst
    c.rx_packets += static_cast<unsigned>(n);
    c.delivered += pushed;
    // A short burst means the socket was empty a moment ago: skip the recvmmsg that would
    // only return EAGAIN (level-triggered epoll reports anything that arrived since).
    if (static_cast<unsigned>(n) < burst) break;
  }
  local += c;
  if ((accepted | c.wrong_source | c.policed) != 0) {
    f.packets += accepted;
    f.wrong_source += c.wrong_source;
    f.policed += c.policed;
    f.counters->packets.store(f.packets, std::memory_order_relaxed);
    f.counters->wrong_source.store(f.wrong_source, std::memory_order_relaxed);
    f.counters->policed.store(f.policed, std::memory_order_relaxed);
  }
}

void UdpSource::RxThread::close_flow(Flow& f) {
  service(f, udp_detail::kFinalDrainBursts);
  ::epoll_ctl(epfd, EPOLL_CTL_DEL, f.fd, nullptr);
  ::close(f.fd);
  f.fd = -1;
  end_marks.push(*rings, index, f.stream, f.writer);
  f = Flow{};
}

void UdpSource::RxThread::shutdown() {
  drain_commands();  // adds/removes posted before stop() are applied, so every flow ends once
  for (Flow& f : flows) {
    if (f.fd >= 0) close_flow(f);
  }
  if (const std::size_t lost = end_marks.drain(*rings, index, stop_drain_timeout); lost != 0)
    end_marks_lost->fetch_add(lost, std::memory_order_relaxed);
  published.store(local);
}

// ---- control side ----------------------------------------------------------------------------

UdpSource::UdpSource(Options options) : options_(std::move(options)) {
  Options& o = options_;
  o.rx_threads = std::max(1U, o.rx_threads);
  o.burst = std::clamp(o.burst, 1U, udp_detail::kMaxBurst);
  o.bursts_per_socket = std::max(1U, o.bursts_per_socket);
  o.max_flows_per_thread = std::max(1U, o.max_flows_per_thread);
  if (o.bind_address.ss_family == AF_UNSPEC) {
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    o.bind_address = sockaddr_storage{};
    std::memcpy(&o.bind_address, &any, sizeof any);
  } else if (o.bind_address.ss_family != AF_INET && o.bind_address.ss_family != AF_INET6) {
    init_status_ = Status(EAFNOSUPPORT, "udp source: bind address is neither IPv4 nor IPv6");
  }

  flows_ = Flows(Flows::Options{o.rx_threads, o.max_flows_per_thread, Flows::SlotReuse::kImmediate, kKeptRemovedFlows});
  commands_posted_.assign(o.rx_threads, 0);
  for (unsigned t = 0; t < o.rx_threads; ++t) {
    auto th = std::make_unique<RxThread>();
    th->index = t;
    th->burst = o.burst;
    th->bursts_per_socket = o.bursts_per_socket;
    th->policer = PolicerConfig::make(o.max_stream_pps, o.stream_burst);
    th->stop_drain_timeout = o.stop_drain_timeout;
    th->end_marks_lost = &end_marks_lost_;
    th->flows.resize(o.max_flows_per_thread);
    th->end_marks.reserve(o.max_flows_per_thread);
    th->batch.reserve(64);
    th->commands.reserve(64);
    th->buffers = std::make_unique<std::byte[]>(std::size_t{o.burst} * kMaxDatagram);
    th->msgs.resize(o.burst);
    th->iovs.resize(o.burst);
    th->names.resize(o.burst);
    for (unsigned i = 0; i < o.burst; ++i) {
      th->iovs[i] = iovec{th->buffer(i), kMaxDatagram};
      msghdr& h = th->msgs[i].msg_hdr;
      h = msghdr{};
      h.msg_name = &th->names[i];
      h.msg_namelen = sizeof(sockaddr_storage);
      h.msg_iov = &th->iovs[i];
      h.msg_iovlen = 1;
    }

    if (init_status_) {
      th->epfd = ::epoll_create1(EPOLL_CLOEXEC);
      if (th->epfd < 0) init_status_ = Status::from_errno("udp source: epoll_create1");
    }
    if (init_status_) {
      th->wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (th->wakefd < 0) init_status_ = Status::from_errno("udp source: eventfd");
    }
    if (init_status_) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = udp_detail::kWakeToken;
      if (::epoll_ctl(th->epfd, EPOLL_CTL_ADD, th->wakefd, &ev) != 0) {
        init_status_ = Status::from_errno("udp source: epoll_ctl(eventfd)");
      }
    }
    threads_.push_back(std::move(th));
  }
}

UdpSource::~UdpSource() { stop(); }

Status UdpSource::start(fileio::RingMatrix& rings) {
  std::unique_lock lock(control_mu_);
  if (!init_status_) return init_status_;
  if (state_ != State::kIdle) return Status::error("udp source: start() after start() or stop()");
  if (rings.producers() < threads_.size()) {
    return Status::error("udp source: ring matrix has " + std::to_string(rings.producers()) +
                         " producers for " + std::to_string(threads_.size()) + " RX threads");
  }
  Status result;
  for (unsigned t = 0; t < threads_.size(); ++t) {
    RxThread* th = threads_[t].get();
    th->rings = &rings;
    th->thread = std::thread([th] { th->run(); });
    const std::string tname = "callrec-rx" + std::to_string(t);
    pthread_setname_np(th->thread.native_handle(), tname.c_str());
    if (!options_.cpus.empty() && result) {
      const int cpu = options_.cpus[t % options_.cpus.size()];
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      const int rc = pthread_setaffinity_np(th->thread.native_handle(), sizeof set, &set);
      if (rc != 0) {
        errno = rc;
        result = Status::from_errno("udp source: pinning RX thread " + std::to_string(t) + " to cpu " +
                                    std::to_string(cpu));
      }
    }
  }
  state_ = State::kRunning;
  if (!result) {
    lock.unlock();
    stop();
  }
  return result;
}

void UdpSource::stop() {
  {
    std::lock_guard lock(control_mu_);
    const State was = state_;
    state_ = State::kStopped;
    if (was != State::kRunning) return;  // never started: ~RxThread closes the sockets
  }
  for (auto& th : threads_) {
    th->stop_requested.store(true, std::memory_order_release);
    th->wake();
  }
  for (auto& th : threads_) {
    if (th->thread.joinable()) th->thread.join();
  }
  std::lock_guard lock(control_mu_);
  // The RX threads have closed every socket: the counters are final.
  flows_.forget_all(udp_detail::published_stats);
  closing_ports_.clear();
}

unsigned UdpSource::pick_thread_locked(StreamId stream) const {
  const auto n = static_cast<unsigned>(threads_.size());
  const unsigned home = stream % n;
  if (options_.placement == Placement::kStreamModulo) return home;
  unsigned best = home;
  for (unsigned k = 1; k < n; ++k) {
    const unsigned t = (home + k) % n;
    if (flows_.free_slots(t) > flows_.free_slots(best)) best = t;
  }
  return best;
}

void UdpSource::post_command_locked(unsigned thread, Command&& cmd) {
  RxThread& th = *threads_[thread];
  {
    std::lock_guard lock(th.cmd_mu);
    th.commands.push_back(std::move(cmd));
    // release: pairs with run()'s acquire of commands_pending.
    th.commands_pending.store(true, std::memory_order_release);
  }
  ++commands_posted_[thread];
  th.wake();
}

Status UdpSource::wait_port_closed_locked(std::uint16_t port) {
  const auto it = closing_ports_.find(port);
  if (it == closing_ports_.end()) return Status::ok();
  const RxThread& th = *threads_[it->second.thread];
  const auto deadline = std::chrono::steady_clock::now() + udp_detail::kPortCloseWait;
  // acquire: pairs with drain_commands()'s release; the old socket is closed.
  while (th.commands_done.load(std::memory_order_acquire) < it->second.seq) {
    if (state_ != State::kRunning || std::chrono::steady_clock::now() >= deadline) {
      return Status(EADDRINUSE, "udp port " + std::to_string(port) + ": the previous flow's socket is still closing");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  closing_ports_.erase(it);
  return Status::ok();
}

Status UdpSource::add_flow(const FlowSpec& spec) {
  std::lock_guard lock(control_mu_);
  if (!init_status_) return init_status_;
  const std::string what = "udp port " + std::to_string(spec.local_port);
  if (state_ == State::kStopped) return Status::error(what + ": udp source stopped");
  if (flows_.find(spec.stream) != nullptr) {
    return Status(EEXIST, what + ": stream " + std::to_string(spec.stream) + " already has a flow");
  }
  if (spec.local_port != 0) {
    if (const auto user = flows_.port_user(spec.local_port)) {
      return Status(EADDRINUSE, what + ": already used by stream " + std::to_string(*user));
    }
    if (Status s = wait_port_closed_locked(spec.local_port); !s) return s;
  }
  const unsigned t = pick_thread_locked(spec.stream);
  const std::optional<std::uint32_t> slot = flows_.next_slot(t);
  if (!slot) {
    return Status(ENOSPC, what + ": flow table of RX thread " + std::to_string(t) + " is full (" +
                              std::to_string(options_.max_flows_per_thread) + " flows)");
  }

  const sa_family_t family = options_.bind_address.ss_family;
  Flow flow;
  flow.stream = spec.stream;
  flow.socket_family = family;
  flow.latch = spec.latch;
  if (spec.expected.ss_family != AF_UNSPEC && !udp_detail::to_endpoint(spec.expected, family, flow.expected)) {
    return Status(EAFNOSUPPORT, what + ": expected source address cannot reach a socket bound to this address family");
  }

  const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::from_errno(what + ": socket");
  auto fail = [fd](const std::string& call) {
    Status s = Status::from_errno(call);  // before close() can change errno
    ::close(fd);
    return s;
  };
  const int one = 1;
  const int zero = 0;
  if (options_.reuse_address && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return fail(what + ": setsockopt(SO_REUSEADDR)");
  }
  if (family == AF_INET6 && ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) != 0) {
    return fail(what + ": setsockopt(IPV6_V6ONLY)");
  }
  if (options_.rcvbuf_bytes > 0 &&
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options_.rcvbuf_bytes, sizeof options_.rcvbuf_bytes) != 0) {
    return fail(what + ": setsockopt(SO_RCVBUF)");
  }
  sockaddr_storage local = options_.bind_address;
  socklen_t local_len = 0;
  if (family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &local, sizeof sin);
    sin.sin_port = htons(spec.local_port);
    std::memcpy(&local, &sin, sizeof sin);
    local_len = sizeof sin;
  } else {
    sockaddr_in6 s6{};
    std::memcpy(&s6, &local, sizeof s6);
    s6.sin6_port = htons(spec.local_port);
    std::memcpy(&local, &s6, sizeof s6);
    local_len = sizeof s6;
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&local), local_len) != 0) return fail(what + ": bind");
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) return fail(what + ": getsockname");
  std::uint16_t port = 0;
  if (family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &bound, sizeof sin);
    port = ntohs(sin.sin_port);
  } else {
    sockaddr_in6 s6{};
    std::memcpy(&s6, &bound, sizeof s6);
    port = ntohs(s6.sin6_port);
  }

  auto counters = std::make_shared<FlowCounters>();
  flow.fd = fd;
  flow.counters = counters;
  flows_.add(spec.stream, Flows::Entry{t, *slot, port, 0, 1, std::move(counters)});
  post_command_locked(t, Command{Command::Kind::kAdd, *slot, std::move(flow)});
  return Status::ok();
}

void UdpSource::remove_flow(StreamId stream) {
  std::lock_guard lock(control_mu_);
  const Flows::Entry* e = flows_.find(stream);
  if (e == nullptr) return;
  const unsigned t = e->owner;
  const std::uint16_t port = e->local_port;
  post_command_locked(t, Command{Command::Kind::kRemove, e->slot, Flow{}});
  closing_ports_[port] = ClosingPort{t, commands_posted_[t]};
  if (closing_ports_.size() > 1024) {  // forget ports whose sockets are closed by now
    std::erase_if(closing_ports_, [this](const auto& kv) {
      return threads_[kv.second.thread]->commands_done.load(std::memory_order_acquire) >= kv.second.seq;
    });
  }
  // The slot and port are free at once (a later add is queued behind this remove); the
  // counters stay readable, live until the RX thread has closed the socket, then final.
  flows_.remove(stream, commands_posted_[t]);
  reclaim_locked(t);
}

void UdpSource::reclaim_locked(unsigned thread) {
  // acquire: pairs with drain_commands()'s release; the removed flows' counters are final.
  flows_.reclaim(thread, threads_[thread]->commands_done.load(std::memory_order_acquire), udp_detail::published_stats);
}

SourceStats UdpSource::stats() const {
  SourceStats s;
  for (const auto& th : threads_) th->published.add_to(s);
  return s;
}

std::optional<FlowStats> UdpSource::flow_stats(StreamId stream) const {
  std::lock_guard lock(control_mu_);
  return flows_.flow_stats(stream, udp_detail::published_stats);
}

std::uint16_t UdpSource::local_port(StreamId stream) const {
  std::lock_guard lock(control_mu_);
  const Flows::Entry* e = flows_.find(stream);
  return e == nullptr ? 0 : e->local_port;
}

}  // namespace callrec::dataplane
