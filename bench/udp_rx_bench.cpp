// udp_rx_bench: how fast can the kernel-socket source receive RTP on many UDP sockets?
//
// A sender thread blasts RTP-sized datagrams (172 B: 12 B header + 160 B G.711 payload)
// round-robin over S loopback ports with sendmmsg, either unthrottled or at a target rate.
// The receiving side is one of:
//   bare    one thread: level-triggered epoll over the S sockets + recvmmsg bursts (no
//           classification, no copy): the floor the kernel API allows;
//   source  dataplane::UdpSource, the full path: source check, RTP parse, copy into a
//           fileio::PacketRing, with a consumer thread draining the rings;
//   uring   one thread, io_uring multishot recvmsg armed once per socket with a provided-buffer
//           ring (no classification): what replacing epoll+recvmmsg could gain (burst n/a).
// It prints one table row and one machine-readable `RESULT {json}` line per run, and the
// command that reruns the whole matrix.
//
// Note on loopback: the kernel work of delivering a datagram into the receiving socket (UDP
// lookup, enqueue) runs in the *sender's* system call, so receiver CPU here is the
// epoll/recvmmsg/copy-out side only. Loss is sent - received (socket buffer overflow).
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <ctime>
#include <fstream>
#include <memory>
#include <netinet/in.h>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "bench/bench_util.hpp"
#include "dataplane/udp_source.hpp"
#include "fileio/packet_ring.hpp"
#include "fileio/rtp.hpp"

#if defined(CALLREC_HAVE_URING)
#include <liburing.h>
#include <sys/mman.h>
#endif

namespace {

using callrec::bench::join;
using callrec::bench::parse_list;
using callrec::bench::pin_self;
using callrec::bench::threads_cpu_s;
using callrec::bench::udp_rcvbuf_errors;

using callrec::dataplane::FlowSpec;
using callrec::dataplane::UdpSource;
using callrec::fileio::RingMatrix;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kPacketBytes = 172;
constexpr int kRcvbuf = 256 * 1024;  // = UdpSource's default SO_RCVBUF
constexpr unsigned kSendBatch = 64;

struct Config {
  std::vector<unsigned> streams{1000, 10000};
  std::vector<unsigned> bursts{1, 32};
  #if defined(CALLREC_HAVE_URING)
  std::vector<std::string> modes{"bare", "source", "uring"};
#else
  std::vector<std::string> modes{"bare", "source"};
#endif
  std::vector<double> pps_per_stream{0, 50};  ///< 0 = unthrottled; 50 = one G.711 call leg
  double seconds = 2.0;
  unsigned rx_threads = 1;
  bool pin = false;
  std::string json;  ///< also append RESULT lines to this file
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [options]\n"
      "  --streams LIST         sockets (one per stream), e.g. 1000,10000 (default)\n"
      "  --bursts LIST          recvmmsg vlen values to sweep (default 1,32)\n"
      "  --modes LIST           bare,source,uring (default all built)\n"
      "  --pps-per-stream LIST  send rate per stream, 0 = unthrottled (default 0,50)\n"
      "  --seconds S            send time per run (default 2)\n"
      "  --rx-threads N         UdpSource RX threads (default 1)\n"
      "  --pin                  pin receiver to cpu 0, sender to cpu 1\n"
      "  --json FILE            append RESULT json lines to FILE\n",
      argv0);
}

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

struct SendResult {
  std::uint64_t sent = 0;
  std::uint64_t errors = 0;
  double cpu_s = 0;
};

/// Round-robin sendmmsg over `ports` until `stop`; `pps` 0 = as fast as possible.
void run_sender(const std::vector<std::uint16_t>& ports, double pps, const std::atomic<bool>& stop, bool pin,
                SendResult& out) {
  pthread_setname_np(pthread_self(), "bench-tx");
  if (pin) pin_self(1);
  const double cpu0 = thread_cpu_s();
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const sockaddr_in self = loopback(0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&self), sizeof self) != 0) {
    std::perror("sender socket");
    std::abort();
  }
  const int sndbuf = 4 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  std::vector<sockaddr_in> dests;
  dests.reserve(ports.size());
  for (const std::uint16_t p : ports) dests.push_back(loopback(p));
  std::array<std::byte, kPacketBytes> pkt{};
  callrec::fileio::write_rtp_header(pkt.data(), 8, false, 1, 160, 0x1234);
  iovec iov{pkt.data(), pkt.size()};
  std::array<mmsghdr, kSendBatch> msgs{};
  for (mmsghdr& m : msgs) {
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
    m.msg_hdr.msg_namelen = sizeof(sockaddr_in);
  }
  std::size_t next = 0;
  const auto t0 = Clock::now();
  while (!stop.load(std::memory_order_relaxed)) {
    unsigned batch = kSendBatch;
    if (pps > 0) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
      const auto allowed = static_cast<std::uint64_t>(elapsed * pps);
      if (out.sent >= allowed) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        continue;
      }
      batch = static_cast<unsigned>(std::min<std::uint64_t>(kSendBatch, allowed - out.sent));
    }
    for (unsigned i = 0; i < batch; ++i) {
      msgs[i].msg_hdr.msg_name = &dests[(next + i) % dests.size()];
    }
    const int n = ::sendmmsg(fd, msgs.data(), batch, 0);
    if (n <= 0) {
      ++out.errors;
      continue;
    }
    next = (next + static_cast<unsigned>(n)) % dests.size();
    out.sent += static_cast<unsigned>(n);
  }
  ::close(fd);
  out.cpu_s = thread_cpu_s() - cpu0;
}

struct RunResult {
  std::string mode;
  unsigned streams = 0;
  unsigned burst = 0;
  double target_pps = 0;
  double seconds = 0;
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t ring_full = 0;
  long long kernel_drops = 0;
  double rx_cpu_s = 0;
  double sender_cpu_s = 0;
  std::string note;  ///< printed after the row (io_uring unavailable, ENOBUFS ...)
};

/// Waits until `count()` has not moved for 200 ms (max 2 s): the tail after the sender stops.
template <typename F>
void wait_quiet(F count) {
  const auto end = Clock::now() + std::chrono::seconds(2);
  std::uint64_t last = count();
  auto last_change = Clock::now();
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::uint64_t now = count();
    if (now != last) {
      last = now;
      last_change = Clock::now();
    } else if (Clock::now() - last_change >= std::chrono::milliseconds(200)) {
      return;
    }
  }
}

// ---- (a) bare epoll + recvmmsg ------------------------------------------------------------

/// `streams` nonblocking UDP sockets on 127.0.0.1:ephemeral with UdpSource's SO_RCVBUF.
void open_sockets(unsigned streams, std::vector<int>& fds, std::vector<std::uint16_t>& ports) {
  for (unsigned i = 0; i < streams; ++i) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kRcvbuf, sizeof kRcvbuf);
    sockaddr_in a = loopback(0);
    if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      std::fprintf(stderr, "socket/bind %u: %s\n", i, std::strerror(errno));
      std::exit(1);
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
}

/// Runs the sender for cfg.seconds against `ports`, then lets `rx_count` settle.
/// rx_cpu_s: CPU of the threads named `rx_prefix`* over the window (send + settle).
template <typename F>
SendResult send_for(const Config& cfg, const std::vector<std::uint16_t>& ports, double pps, F rx_count,
                    const std::string& rx_prefix, double& rx_cpu_s) {
  const double cpu0 = threads_cpu_s(rx_prefix);
  std::atomic<bool> stop_tx{false};
  SendResult sr;
  std::thread tx([&] { run_sender(ports, pps, stop_tx, cfg.pin, sr); });
  std::this_thread::sleep_for(std::chrono::duration<double>(cfg.seconds));
  stop_tx.store(true);
  tx.join();
  wait_quiet(rx_count);
  rx_cpu_s = threads_cpu_s(rx_prefix) - cpu0;
  return sr;
}

RunResult run_bare(const Config& cfg, unsigned streams, unsigned burst, double pps) {
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  open_sockets(streams, fds, ports);
  std::atomic<bool> stop_rx{false};
  std::atomic<std::uint64_t> received{0};
  std::thread rx([&] {
    pthread_setname_np(pthread_self(), "bench-rx");
    if (cfg.pin) pin_self(0);
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < fds.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    std::vector<std::byte> buf(std::size_t{burst} * UdpSource::kMaxDatagram);
    std::vector<iovec> iov(burst);
    std::vector<mmsghdr> msgs(burst);
    std::vector<sockaddr_storage> names(burst);
    for (unsigned i = 0; i < burst; ++i) {
      iov[i] = iovec{buf.data() + std::size_t{i} * UdpSource::kMaxDatagram, UdpSource::kMaxDatagram};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &names[i];
    }
    std::array<epoll_event, 256> evs{};
    std::uint64_t n_pkts = 0;
    while (!stop_rx.load(std::memory_order_relaxed)) {
      const int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 10);
      for (int e = 0; e < n; ++e) {
        const int fd = fds[evs[static_cast<std::size_t>(e)].data.u64];
        for (unsigned b = 0; b < 4; ++b) {  // same per-socket cap as UdpSource
          for (unsigned i = 0; i < burst; ++i) msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
          const int r = ::recvmmsg(fd, msgs.data(), burst, MSG_DONTWAIT, nullptr);
          if (r <= 0) break;
          n_pkts += static_cast<unsigned>(r);
          if (static_cast<unsigned>(r) < burst) break;
        }
      }
      received.store(n_pkts, std::memory_order_relaxed);
    }
    ::close(ep);
  });

  RunResult r;
  const long long drops0 = udp_rcvbuf_errors();
  const SendResult sr = send_for(
      cfg, ports, pps, [&] { return received.load(std::memory_order_relaxed); }, "bench-rx", r.rx_cpu_s);
  stop_rx.store(true);
  rx.join();
  for (const int fd : fds) ::close(fd);
  r.sent = sr.sent;
  r.received = received.load();
  r.kernel_drops = udp_rcvbuf_errors() - drops0;
  r.sender_cpu_s = sr.cpu_s;
  return r;
}

// ---- (b) UdpSource into rings ---------------------------------------------------------------

RunResult run_source(const Config& cfg, unsigned streams, unsigned burst, double pps) {
  RingMatrix rings(cfg.rx_threads, 1, 32u << 20);
  UdpSource::Options o;
  o.rx_threads = cfg.rx_threads;
  o.burst = burst;
  o.max_flows_per_thread = streams + 16;
  if (cfg.pin) o.cpus = {0};
  UdpSource src(o);
  if (const auto s = src.start(rings); !s) {
    std::fprintf(stderr, "start: %s\n", s.message().c_str());
    std::exit(1);
  }
  std::vector<std::uint16_t> ports;
  for (unsigned i = 0; i < streams; ++i) {
    FlowSpec f;
    f.stream = i;
    f.expected = sockaddr_storage{};
    const sockaddr_in lo = loopback(0);  // any port from 127.0.0.1
    std::memcpy(&f.expected, &lo, sizeof lo);
    if (const auto s = src.add_flow(f); !s) {
      std::fprintf(stderr, "add_flow %u: %s\n", i, s.message().c_str());
      std::exit(1);
    }
    ports.push_back(src.local_port(i));
  }
  std::atomic<bool> stop_consumer{false};
  std::atomic<std::uint64_t> consumed{0};
  std::thread consumer([&] {
    std::uint64_t n = 0;
    for (;;) {
      const bool stopping = stop_consumer.load(std::memory_order_acquire);
      std::size_t got = 0;
      for (unsigned p = 0; p < rings.producers(); ++p) {
        got += rings.ring(p, 0).consume([&](const callrec::fileio::RingRecordHeader& h, std::span<const std::byte>) {
          n += h.kind == 0 ? 1 : 0;
        });
      }
      consumed.store(n, std::memory_order_relaxed);
      if (got == 0) {
        if (stopping) break;
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // a writer's poll interval
      }
    }
  });

  RunResult r;
  const long long drops0 = udp_rcvbuf_errors();
  const SendResult sr = send_for(
      cfg, ports, pps, [&] { return consumed.load(std::memory_order_relaxed); }, "callrec-rx", r.rx_cpu_s);
  src.stop();
  stop_consumer.store(true, std::memory_order_release);
  consumer.join();
  const auto st = src.stats();
  r.sent = sr.sent;
  r.received = st.delivered;
  r.ring_full = st.ring_full;
  r.kernel_drops = udp_rcvbuf_errors() - drops0;
  r.sender_cpu_s = sr.cpu_s;
  return r;
}

// ---- (c) io_uring multishot recvmsg ---------------------------------------------------------

#if defined(CALLREC_HAVE_URING)
/// One multishot IORING_OP_RECVMSG per socket, buffers from one provided-buffer ring: no
/// per-socket system call once armed; completions are reaped in batches from the CQ.
RunResult run_uring(const Config& cfg, unsigned streams, unsigned /*burst*/, double pps) {
  constexpr unsigned kBufs = 8192;  // provided buffers (power of two, <= 32768)
  constexpr unsigned kBufSize = 2048;
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  open_sockets(streams, fds, ports);
  std::atomic<bool> stop_rx{false};
  std::atomic<bool> ready{false};
  std::atomic<int> setup_error{0};
  std::atomic<std::uint64_t> received{0};
  std::uint64_t nobufs = 0;
  std::thread rx([&] {
    pthread_setname_np(pthread_self(), "bench-rx");
    if (cfg.pin) pin_self(0);
    io_uring ring{};
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    params.cq_entries = 65536;
    int rc = io_uring_queue_init_params(4096, &ring, &params);
    if (rc < 0) {
      setup_error.store(-rc);
      ready.store(true);
      return;
    }
    const std::size_t br_bytes = kBufs * sizeof(io_uring_buf);
    void* br_mem = ::mmap(nullptr, br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    auto* br = static_cast<io_uring_buf_ring*>(br_mem);
    io_uring_buf_ring_init(br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(br_mem);
    reg.ring_entries = kBufs;
    reg.bgid = 0;
    rc = io_uring_register_buf_ring(&ring, &reg, 0);
    if (rc < 0) {
      setup_error.store(-rc);
      ready.store(true);
      io_uring_queue_exit(&ring);
      ::munmap(br_mem, br_bytes);
      return;
    }
    const int mask = io_uring_buf_ring_mask(kBufs);
    std::vector<std::byte> data(std::size_t{kBufs} * kBufSize);
    for (unsigned i = 0; i < kBufs; ++i) {
      io_uring_buf_ring_add(br, data.data() + std::size_t{i} * kBufSize, kBufSize, static_cast<unsigned short>(i),
                            mask, static_cast<int>(i));
    }
    io_uring_buf_ring_advance(br, static_cast<int>(kBufs));
    msghdr tmpl{};
    tmpl.msg_namelen = sizeof(sockaddr_storage);  // the kernel reserves this much for the name
    auto arm = [&](std::uint64_t idx) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
        if (sqe == nullptr) std::abort();  // the SQ was just flushed
      }
      io_uring_prep_recvmsg_multishot(sqe, fds[idx], &tmpl, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
      io_uring_sqe_set_data64(sqe, idx);
    };
    for (std::size_t i = 0; i < fds.size(); ++i) arm(i);
    io_uring_submit(&ring);
    ready.store(true);
    std::vector<std::uint64_t> rearm;
    rearm.reserve(fds.size());
    std::uint64_t n_pkts = 0;
    while (!stop_rx.load(std::memory_order_relaxed)) {
      __kernel_timespec ts{0, 10'000'000};
      io_uring_cqe* cqe = nullptr;
      io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, nullptr);
      unsigned head = 0;
      unsigned seen = 0;
      int added = 0;
      io_uring_for_each_cqe(&ring, head, cqe) {
        ++seen;
        if (cqe->res < 0) {
          if (cqe->res == -ENOBUFS) ++nobufs;
        } else if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
          const unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          std::byte* buf = data.data() + std::size_t{bid} * kBufSize;
          if (io_uring_recvmsg_validate(buf, cqe->res, &tmpl) != nullptr) ++n_pkts;
          io_uring_buf_ring_add(br, buf, kBufSize, static_cast<unsigned short>(bid), mask, added++);
        }
        if ((cqe->flags & IORING_CQE_F_MORE) == 0) rearm.push_back(cqe->user_data);  // terminated
      }
      io_uring_cq_advance(&ring, seen);
      if (added != 0) io_uring_buf_ring_advance(br, added);  // buffers back before re-arming
      for (const std::uint64_t idx : rearm) arm(idx);
      rearm.clear();
      received.store(n_pkts, std::memory_order_relaxed);
    }
    io_uring_queue_exit(&ring);
    ::munmap(br_mem, br_bytes);
  });
  while (!ready.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  RunResult r;
  if (setup_error.load() != 0) {
    rx.join();
    for (const int fd : fds) ::close(fd);
    r.note = std::string("io_uring unavailable: ") + std::strerror(setup_error.load());
    return r;
  }
  const long long drops0 = udp_rcvbuf_errors();
  const SendResult sr = send_for(
      cfg, ports, pps, [&] { return received.load(std::memory_order_relaxed); }, "bench-rx", r.rx_cpu_s);
  stop_rx.store(true);
  rx.join();
  for (const int fd : fds) ::close(fd);
  r.sent = sr.sent;
  r.received = received.load();
  r.kernel_drops = udp_rcvbuf_errors() - drops0;
  r.sender_cpu_s = sr.cpu_s;
  if (nobufs != 0) r.note = "ENOBUFS re-arms: " + std::to_string(nobufs);
  return r;
}
#endif

void print_row(const RunResult& r, std::FILE* json) {
  const double loss = r.sent ? 100.0 * static_cast<double>(r.sent - std::min(r.sent, r.received)) / static_cast<double>(r.sent) : 0;
  const double rx_pps = static_cast<double>(r.received) / r.seconds;
  const double ns_per_pkt = r.received ? r.rx_cpu_s * 1e9 / static_cast<double>(r.received) : 0;
  std::printf("%-7s %7u %5u %10.0f %10" PRIu64 " %10" PRIu64 " %7.2f %11.0f %9.0f %8.0f%% %8.0f%% %9" PRIu64
              " %9lld\n",
              r.mode.c_str(), r.streams, r.burst, r.target_pps, r.sent, r.received, loss, rx_pps, ns_per_pkt,
              100.0 * r.rx_cpu_s / r.seconds, 100.0 * r.sender_cpu_s / r.seconds, r.ring_full, r.kernel_drops);
  char line[512];
  std::snprintf(line, sizeof line,
                "RESULT {\"bench\":\"udp_rx\",\"mode\":\"%s\",\"streams\":%u,\"burst\":%u,\"target_pps\":%.0f,"
                "\"seconds\":%.2f,\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"loss_pct\":%.3f,\"rx_pps\":%.0f,"
                "\"rx_cpu_ns_per_pkt\":%.1f,\"sender_cpu_s\":%.3f,\"ring_full\":%" PRIu64 ",\"kernel_rcvbuf_drops\":%lld}",
                r.mode.c_str(), r.streams, r.burst, r.target_pps, r.seconds, r.sent, r.received, loss, rx_pps,
                ns_per_pkt, r.sender_cpu_s, r.ring_full, r.kernel_drops);
  if (!r.note.empty()) std::printf("        (%s)\n", r.note.c_str());
  std::printf("%s\n", line);
  if (json) std::fprintf(json, "%s\n", line);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage(argv[0]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    } else if (a == "--streams") {
      cfg.streams = parse_list<unsigned>(value());
    } else if (a == "--bursts") {
      cfg.bursts = parse_list<unsigned>(value());
    } else if (a == "--modes") {
      cfg.modes = parse_list<std::string>(value());
    } else if (a == "--pps-per-stream") {
      cfg.pps_per_stream = parse_list<double>(value());
    } else if (a == "--seconds") {
      cfg.seconds = std::stod(value());
    } else if (a == "--rx-threads") {
      cfg.rx_threads = static_cast<unsigned>(std::stoul(value()));
    } else if (a == "--pin") {
      cfg.pin = true;
    } else if (a == "--json") {
      cfg.json = value();
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      usage(argv[0]);
      return 2;
    }
  }
  for (const std::string& m : cfg.modes) {
    if (m != "bare" && m != "source" && m != "uring") {
      std::fprintf(stderr, "unknown mode %s\n", m.c_str());
      return 2;
    }
  }
  // One socket per stream at most are open at once (bench + nothing else): raise the limit.
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  char exe[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string rerun = std::string(n > 0 ? exe : argv[0]) + " --streams " + join(cfg.streams) + " --bursts " +
                      join(cfg.bursts) + " --modes " + join(cfg.modes) + " --pps-per-stream " +
                      join(cfg.pps_per_stream) + " --seconds " + std::to_string(cfg.seconds) + " --rx-threads " +
                      std::to_string(cfg.rx_threads) + (cfg.pin ? " --pin" : "");
  std::string loadavg;
  std::getline(std::ifstream("/proc/loadavg"), loadavg);
  std::printf("udp_rx_bench: %zu-byte RTP datagrams over loopback, %u cpus online, loadavg %s\nrerun: %s\n\n",
              kPacketBytes, std::thread::hardware_concurrency(), loadavg.c_str(), rerun.c_str());
  std::printf("%-7s %7s %5s %10s %10s %10s %7s %11s %9s %9s %9s %9s %9s\n", "mode", "streams", "burst",
              "target_pps", "sent", "received", "loss%", "rx_pps", "ns/pkt", "rx_cpu", "tx_cpu", "ring_full",
              "k_drops");
  std::FILE* json = cfg.json.empty() ? nullptr : std::fopen(cfg.json.c_str(), "a");
  for (const unsigned streams : cfg.streams) {
    for (const double per_stream : cfg.pps_per_stream) {
      for (const std::string& mode : cfg.modes) {
        for (const unsigned burst : cfg.bursts) {
          const double pps = per_stream * streams;
          RunResult r;
          if (mode == "bare") {
            r = run_bare(cfg, streams, burst, pps);
          } else if (mode == "source") {
            r = run_source(cfg, streams, burst, pps);
          } else {
#if defined(CALLREC_HAVE_URING)
            if (burst != cfg.bursts.front()) continue;  // no burst size in multishot
            r = run_uring(cfg, streams, burst, pps);
#else
            r.note = "built without liburing";
#endif
          }
          r.mode = mode;
          r.streams = streams;
          r.burst = mode == "uring" ? 0 : burst;  // 0: not applicable
          r.target_pps = pps;
          r.seconds = cfg.seconds;
          print_row(r, json);
        }
      }
    }
  }
  if (json) std::fclose(json);
  std::printf("\nns/pkt = on-CPU time of the receive thread(s) (schedstat) per received packet; rx_cpu/tx_cpu =\n"
              "receive/send thread CPU as %% of the send window (tx_cpu ~100%%: the sender is the bottleneck).\n"
              "k_drops = system-wide UDP RcvbufErrors delta (loopback socket-buffer overflow).\nrerun: %s\n",
              rerun.c_str());
  return 0;
}
