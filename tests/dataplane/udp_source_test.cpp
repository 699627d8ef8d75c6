// UdpSource over real loopback sockets: byte-exact delivery, source checks (spec
// control-protocol point 5), latching, non-RTP, flow removal and end marks, many flows over two
// RX threads, bind errors and ring-full accounting. No fixed sleeps: every wait polls a
// condition against a deadline.
#include "dataplane/udp_source.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fileio/packet_ring.hpp"
#include "fileio/rtp.hpp"

namespace callrec::dataplane {
namespace {

using fileio::RecordKind;
using fileio::RingMatrix;
using Clock = std::chrono::steady_clock;

constexpr auto kDeadline = std::chrono::seconds(10);

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout = kDeadline) {
  const auto end = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() >= end) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::vector<std::byte> make_rtp(std::uint16_t seq, std::uint32_t ssrc, std::size_t payload_len) {
  std::vector<std::byte> p(12 + payload_len);
  fileio::write_rtp_header(p.data(), 8, seq == 0, seq, seq * 160U, ssrc);
  for (std::size_t i = 0; i < payload_len; ++i) p[12 + i] = static_cast<std::byte>((seq + i) & 0xFF);
  return p;
}

sockaddr_storage make_addr(const char* ip, std::uint16_t port) {
  sockaddr_storage ss{};
  sockaddr_in sin{};
  sockaddr_in6 s6{};
  if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&ss, &sin, sizeof sin);
  } else if (inet_pton(AF_INET6, ip, &s6.sin6_addr) == 1) {
    s6.sin6_family = AF_INET6;
    s6.sin6_port = htons(port);
    std::memcpy(&ss, &s6, sizeof s6);
  }
  return ss;
}

socklen_t addr_len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

/// A UDP client socket bound to `ip`:ephemeral.
class Client {
 public:
  explicit Client(const char* ip) {
    const sockaddr_storage local = make_addr(ip, 0);
    fd_ = ::socket(local.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<const sockaddr*>(&local), addr_len(local)) != 0) {
      ok_ = false;
      return;
    }
    socklen_t len = sizeof local_;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local_), &len);
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  [[nodiscard]] bool ok() const { return ok_; }
  [[nodiscard]] const sockaddr_storage& local() const { return local_; }
  [[nodiscard]] std::uint16_t port() const {
    sockaddr_in sin{};
    std::memcpy(&sin, &local_, sizeof sin);  // sin_port and sin6_port share the offset
    return ntohs(sin.sin_port);
  }
  bool send(const char* ip, std::uint16_t port, std::span<const std::byte> data) const {
    const sockaddr_storage to = make_addr(ip, port);
    return ::sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<const sockaddr*>(&to), addr_len(to)) ==
           static_cast<ssize_t>(data.size());
  }

 private:
  int fd_ = -1;
  bool ok_ = true;
  sockaddr_storage local_{};
};

struct Record {
  StreamId stream = 0;
  RecordKind kind = RecordKind::kPacket;
  std::uint64_t rx_ns = 0;
  std::vector<std::byte> bytes;
  unsigned producer = 0;
  unsigned writer = 0;
};

/// Consumes every ring of `m` (the test thread is the only consumer) into `out`.
std::size_t drain(RingMatrix& m, std::vector<Record>& out) {
  std::size_t n = 0;
  for (unsigned p = 0; p < m.producers(); ++p) {
    for (unsigned w = 0; w < m.writers(); ++w) {
      n += m.ring(p, w).consume([&](const fileio::RingRecordHeader& h, std::span<const std::byte> data) {
        out.push_back(Record{h.stream, static_cast<RecordKind>(h.kind), h.rx_ns,
                             std::vector<std::byte>(data.begin(), data.end()), p, w});
      });
    }
  }
  return n;
}

std::size_t count_kind(const std::vector<Record>& v, StreamId s, RecordKind k) {
  std::size_t n = 0;
  for (const Record& r : v) n += (r.stream == s && r.kind == k) ? 1 : 0;
  return n;
}

FlowSpec flow_spec(StreamId stream, std::uint16_t port = 0) {
  FlowSpec f;
  f.stream = stream;
  f.local_port = port;
  return f;
}

UdpSource::Options options(unsigned rx_threads = 1) {
  UdpSource::Options o;
  o.rx_threads = rx_threads;
  o.max_flows_per_thread = 1024;
  return o;
}

/// Sends `packets` to the flow, pacing on the flow's packet counter so that the socket buffer
/// never overflows (loopback drops silently when the receiver falls behind).
void send_paced(UdpSource& src, StreamId stream, const Client& c, const char* ip, std::uint16_t port,
                const std::vector<std::vector<std::byte>>& packets) {
  const std::uint64_t base = src.flow_stats(stream).value_or(FlowStats{}).packets;
  for (std::size_t i = 0; i < packets.size(); ++i) {
    ASSERT_TRUE(c.send(ip, port, packets[i]));
    if (i % 64 == 63) {
      ASSERT_TRUE(wait_until([&] { return src.flow_stats(stream)->packets >= base + i + 1; }));
    }
  }
}

TEST(UdpSource, DeliversThousandPacketsByteExact) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client client("127.0.0.1");
  ASSERT_TRUE(client.ok());
  FlowSpec f = flow_spec(7);
  f.expected = make_addr("127.0.0.1", 0);  // the phone's address, any port
  const Status s = src.add_flow(f);
  ASSERT_TRUE(s) << s.message();
  const std::uint16_t port = src.local_port(7);
  ASSERT_NE(port, 0);

  std::vector<std::vector<std::byte>> sent;
  for (std::uint16_t i = 0; i < 1000; ++i) sent.push_back(make_rtp(i, 0xABCD, 1 + (i * 37U) % 300));
  send_paced(src, 7, client, "127.0.0.1", port, sent);

  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return got.size() >= 1000;
  }));
  ASSERT_EQ(got.size(), 1000U);
  std::uint64_t prev_ns = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].stream, 7U);
    EXPECT_EQ(got[i].kind, RecordKind::kPacket);
    ASSERT_EQ(got[i].bytes, sent[i]) << "packet " << i;
    EXPECT_GE(got[i].rx_ns, prev_ns);
    prev_ns = got[i].rx_ns;
  }
  EXPECT_GT(prev_ns, 0U);
  ASSERT_TRUE(wait_until([&] {
    const SourceStats st = src.stats();
    return st.rx_packets == 1000 && st.delivered == 1000;
  }));
  const SourceStats st = src.stats();
  std::uint64_t bytes = 0;
  for (const auto& p : sent) bytes += p.size();
  EXPECT_EQ(st.rx_bytes, bytes);
  EXPECT_EQ(st.wrong_source + st.not_rtp + st.ring_full + st.rx_errors, 0U);
  EXPECT_EQ(src.flow_stats(7)->packets, 1000U);
  src.stop();
}

TEST(UdpSource, DualStackIpv6AndMappedIpv4) {
  Client v6("::1");
  if (!v6.ok()) GTEST_SKIP() << "no IPv6 loopback";
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource::Options o = options();
  o.bind_address = make_addr("::", 0);
  UdpSource src(o);
  ASSERT_TRUE(src.start(rings));
  FlowSpec f6 = flow_spec(1);
  f6.expected = v6.local();  // exact address and port
  ASSERT_TRUE(src.add_flow(f6));
  Client v4("127.0.0.1");
  FlowSpec f4 = flow_spec(2);
  f4.expected = make_addr("127.0.0.1", 0);  // an IPv4 phone on a dual-stack socket
  ASSERT_TRUE(src.add_flow(f4));

  const auto p1 = make_rtp(1, 1, 160);
  const auto p2 = make_rtp(2, 2, 160);
  ASSERT_TRUE(v6.send("::1", src.local_port(1), p1));
  ASSERT_TRUE(v4.send("127.0.0.1", src.local_port(2), p2));
  ASSERT_TRUE(v4.send("127.0.0.1", src.local_port(1), p2));  // stray into flow 1
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return got.size() >= 2 && src.flow_stats(1)->wrong_source == 1;
  }));
  std::map<StreamId, std::vector<std::byte>> by_stream;
  for (const Record& r : got) by_stream[r.stream] = r.bytes;
  EXPECT_EQ(got.size(), 2U);
  EXPECT_EQ(by_stream[1], p1);
  EXPECT_EQ(by_stream[2], p2);
}

TEST(UdpSource, WrongSourcePortIsCountedAndDropped) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  Client other("127.0.0.1");  // same address, different port
  FlowSpec f = flow_spec(3);
  f.expected = phone.local();
  ASSERT_TRUE(src.add_flow(f));
  const std::uint16_t port = src.local_port(3);

  for (std::uint16_t i = 0; i < 10; ++i) ASSERT_TRUE(other.send("127.0.0.1", port, make_rtp(i, 0xBAD, 160)));
  for (std::uint16_t i = 0; i < 5; ++i) ASSERT_TRUE(phone.send("127.0.0.1", port, make_rtp(i, 0x600D, 160)));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    const FlowStats fs = *src.flow_stats(3);
    return fs.packets == 5 && fs.wrong_source == 10;
  }));
  drain(rings, got);
  ASSERT_EQ(got.size(), 5U);
  for (const Record& r : got) EXPECT_EQ(fileio::parse_rtp(r.bytes)->ssrc, 0x600DU);
  ASSERT_TRUE(wait_until([&] { return src.stats().wrong_source == 10; }));
  EXPECT_EQ(src.stats().delivered, 5U);
}

TEST(UdpSource, WrongSourceAddressIsCountedAndDropped) {
  Client stranger("127.0.0.2");
  if (!stranger.ok()) GTEST_SKIP() << "cannot bind 127.0.0.2";
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  FlowSpec f = flow_spec(4);
  f.expected = make_addr("127.0.0.1", 0);  // any port from the phone's address
  ASSERT_TRUE(src.add_flow(f));
  const std::uint16_t port = src.local_port(4);

  for (std::uint16_t i = 0; i < 7; ++i) ASSERT_TRUE(stranger.send("127.0.0.1", port, make_rtp(i, 0xBAD, 160)));
  for (std::uint16_t i = 0; i < 3; ++i) ASSERT_TRUE(phone.send("127.0.0.1", port, make_rtp(i, 0x600D, 160)));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    const FlowStats fs = *src.flow_stats(4);
    return fs.packets == 3 && fs.wrong_source == 7;
  }));
  drain(rings, got);
  ASSERT_EQ(got.size(), 3U);
  for (const Record& r : got) EXPECT_EQ(fileio::parse_rtp(r.bytes)->ssrc, 0x600DU);
}

TEST(UdpSource, LatchesOnFirstRtpSource) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client first("127.0.0.1");
  Client second("127.0.0.1");
  FlowSpec f = flow_spec(5);
  f.latch = true;  // expected AF_UNSPEC: any source until the first RTP packet
  ASSERT_TRUE(src.add_flow(f));
  const std::uint16_t port = src.local_port(5);
  const std::array<std::byte, 4> garbage{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};

  // Garbage does not latch; the first RTP packet does.
  ASSERT_TRUE(second.send("127.0.0.1", port, garbage));
  ASSERT_TRUE(wait_until([&] { return src.stats().not_rtp == 1; }));
  ASSERT_TRUE(first.send("127.0.0.1", port, make_rtp(0, 0xF1, 160)));
  ASSERT_TRUE(wait_until([&] { return src.flow_stats(5)->packets == 1; }));
  for (std::uint16_t i = 0; i < 4; ++i) ASSERT_TRUE(second.send("127.0.0.1", port, make_rtp(i, 0x5E, 160)));
  for (std::uint16_t i = 1; i < 3; ++i) ASSERT_TRUE(first.send("127.0.0.1", port, make_rtp(i, 0xF1, 160)));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    const FlowStats fs = *src.flow_stats(5);
    return fs.packets == 3 && fs.wrong_source == 4;
  }));
  drain(rings, got);
  ASSERT_EQ(got.size(), 3U);
  for (const Record& r : got) EXPECT_EQ(fileio::parse_rtp(r.bytes)->ssrc, 0xF1U);
}

// Issue 9 item 6 (latch hijack), dataplane part: with an expected address, latch only to a
// packet from that address (any port: NAT), never to a host that sprays the port first.
TEST(UdpSource, LatchWithExpectedAddressIgnoresSprayFromOtherAddresses) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client attacker("127.0.0.2");  // another address (all of 127/8 is loopback on Linux)
  Client phone("127.0.0.1");
  Client phone_other_port("127.0.0.1");
  ASSERT_TRUE(attacker.ok());
  FlowSpec f = flow_spec(9);
  f.latch = true;
  // The phone's address as the control connection saw it, with that connection's port: NAT
  // gives the RTP another port, so the port must not matter for latching.
  f.expected = make_addr("127.0.0.1", static_cast<std::uint16_t>(phone.port() ^ 1u));
  ASSERT_TRUE(src.add_flow(f));
  const std::uint16_t port = src.local_port(9);

  for (std::uint16_t i = 0; i < 20; ++i) ASSERT_TRUE(attacker.send("127.0.0.1", port, make_rtp(i, 0xBAD, 160)));
  ASSERT_TRUE(wait_until([&] { return src.flow_stats(9)->wrong_source == 20; }));
  EXPECT_EQ(src.flow_stats(9)->packets, 0U) << "the spray before the phone's first packet does not latch";
  ASSERT_TRUE(phone.send("127.0.0.1", port, make_rtp(0, 0x600D, 160)));
  ASSERT_TRUE(wait_until([&] { return src.flow_stats(9)->packets == 1; }));
  // Latched to the phone's address:port now: the attacker and another port of the phone are strays.
  for (std::uint16_t i = 20; i < 30; ++i) ASSERT_TRUE(attacker.send("127.0.0.1", port, make_rtp(i, 0xBAD, 160)));
  ASSERT_TRUE(phone_other_port.send("127.0.0.1", port, make_rtp(1, 0x0DD, 160)));
  for (std::uint16_t i = 1; i < 5; ++i) ASSERT_TRUE(phone.send("127.0.0.1", port, make_rtp(i, 0x600D, 160)));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    const FlowStats fs = *src.flow_stats(9);
    return fs.packets == 5 && fs.wrong_source == 31;
  }));
  drain(rings, got);
  ASSERT_EQ(got.size(), 5U);
  for (const Record& r : got) EXPECT_EQ(fileio::parse_rtp(r.bytes)->ssrc, 0x600DU);
  EXPECT_TRUE(wait_until([&] { return src.stats().wrong_source == 31; })) << src.stats().wrong_source;
}

// Issue 9 item 3: a flow over --max-stream-pps is policed; another flow is untouched.
TEST(UdpSource, AFlowOverItsRateIsPolicedAndTheOthersAreNot) {
  RingMatrix rings(1, 1, 4 << 20);
  UdpSource::Options o = options();
  o.max_stream_pps = 50;
  o.stream_burst = 20;
  UdpSource src(o);
  ASSERT_TRUE(src.start(rings));
  Client flooder("127.0.0.1");
  Client phone("127.0.0.1");
  ASSERT_TRUE(src.add_flow(flow_spec(1)));
  ASSERT_TRUE(src.add_flow(flow_spec(2)));
  const std::uint16_t flood_port = src.local_port(1);
  const std::uint16_t phone_port = src.local_port(2);
  const auto t0 = Clock::now();
  constexpr std::uint16_t kFlood = 500;
  for (std::uint16_t i = 0; i < kFlood; ++i) {
    ASSERT_TRUE(flooder.send("127.0.0.1", flood_port, make_rtp(i, 0xF100D, 160)));
    if (i % 100 == 0) {
      ASSERT_TRUE(phone.send("127.0.0.1", phone_port, make_rtp(i / 100, 0x600D, 160)));
    }
    // The socket buffer holds a few hundred datagrams: let the RX thread keep up (a stall of
    // a few ms on a loaded machine would otherwise lose some in the kernel, and the sum below
    // would never reach kFlood). The rate bound uses the elapsed time, so pacing keeps it honest.
    if (i % 64 == 63) {
      ASSERT_TRUE(wait_until([&] {
        const FlowStats f = *src.flow_stats(1);
        return f.packets + f.policed >= i + 1u;
      }));
    }
  }
  ASSERT_TRUE(wait_until([&] {
    const FlowStats fs = *src.flow_stats(1);
    return fs.packets + fs.policed == kFlood && src.flow_stats(2)->packets == 5;
  }));
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const FlowStats fs = *src.flow_stats(1);
  EXPECT_GE(fs.packets, 20U) << "the burst passes";
  EXPECT_LE(static_cast<double>(fs.packets), 20.0 + 50.0 * elapsed_s + 1.0) << "then the sustained rate";
  EXPECT_GT(fs.policed, 0U);
  EXPECT_EQ(src.flow_stats(2)->policed, 0U);
  ASSERT_TRUE(wait_until([&] { return src.stats().policed == fs.policed; }));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return got.size() == fs.packets + 5;
  }));
}

TEST(UdpSource, NonRtpIsCountedNotRtp) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  ASSERT_TRUE(src.add_flow(flow_spec(6)));
  const std::uint16_t port = src.local_port(6);

  std::vector<std::vector<std::byte>> bad;
  bad.emplace_back(5, std::byte{0x80});  // too short
  auto v1 = make_rtp(1, 1, 160);
  v1[0] = std::byte{0x40};  // version 1
  bad.push_back(v1);
  auto cc = make_rtp(2, 1, 8);
  cc[0] = std::byte{0x8F};  // 15 CSRCs announced, 8 bytes present
  bad.push_back(cc);
  bad.push_back(make_rtp(3, 1, UdpSource::kMaxDatagram + 100));  // truncated by the kernel
  bad.emplace_back();                                            // empty datagram
  for (const auto& b : bad) ASSERT_TRUE(phone.send("127.0.0.1", port, b));
  const auto good = make_rtp(4, 1, 160);
  ASSERT_TRUE(phone.send("127.0.0.1", port, good));

  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return src.stats().not_rtp == bad.size() && got.size() == 1;
  }));
  EXPECT_EQ(got[0].bytes, good);
  EXPECT_EQ(src.flow_stats(6)->packets, 1U);
}

TEST(UdpSource, RemoveFlowDrainsSocketThenOneEndMark) {
  // Flow added and removed before start: its socket holds 200 queued packets when the RX
  // thread applies the remove, so the final drain is what delivers them.
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  Client phone("127.0.0.1");
  ASSERT_TRUE(src.add_flow(flow_spec(8)));
  const std::uint16_t port = src.local_port(8);
  std::vector<std::vector<std::byte>> sent;
  for (std::uint16_t i = 0; i < 200; ++i) {
    sent.push_back(make_rtp(i, 8, 160));
    ASSERT_TRUE(phone.send("127.0.0.1", port, sent.back()));
  }
  src.remove_flow(8);
  ASSERT_TRUE(src.start(rings));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return count_kind(got, 8, RecordKind::kEndOfStream) == 1;
  }));
  ASSERT_EQ(got.size(), 201U);
  for (std::size_t i = 0; i < 200; ++i) ASSERT_EQ(got[i].bytes, sent[i]);
  EXPECT_EQ(got.back().kind, RecordKind::kEndOfStream);
  EXPECT_TRUE(got.back().bytes.empty());
  ASSERT_TRUE(src.flow_stats(8));  // removed: its final counters are kept
  EXPECT_EQ(src.flow_stats(8)->packets, 200U);
  ASSERT_TRUE(wait_until([&] { return src.stats().delivered == 200; }));

  src.stop();  // the flow is gone: stop adds no second mark
  drain(rings, got);
  EXPECT_EQ(count_kind(got, 8, RecordKind::kEndOfStream), 1U);
  EXPECT_EQ(src.end_marks_lost(), 0U);
}

TEST(UdpSource, RemoveRunningFlowEndMarkFollowsLastPacket) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  ASSERT_TRUE(src.add_flow(flow_spec(9)));
  const std::uint16_t port = src.local_port(9);
  std::vector<std::vector<std::byte>> sent;
  for (std::uint16_t i = 0; i < 300; ++i) sent.push_back(make_rtp(i, 9, 160));
  send_paced(src, 9, phone, "127.0.0.1", port, sent);
  EXPECT_TRUE(src.flow_stats(9));  // installed (the last packets may still be queued in the socket)
  src.remove_flow(9);
  EXPECT_EQ(src.local_port(9), 0);
  EXPECT_TRUE(src.flow_stats(9));  // removed: still answers (live until the socket is closed)
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return count_kind(got, 9, RecordKind::kEndOfStream) == 1;
  }));
  ASSERT_EQ(got.size(), 301U);
  for (std::size_t i = 0; i < 300; ++i) ASSERT_EQ(got[i].bytes, sent[i]);
  EXPECT_EQ(got.back().kind, RecordKind::kEndOfStream);
  ASSERT_TRUE(src.flow_stats(9));
  EXPECT_EQ(src.flow_stats(9)->packets, 300U);  // final: the end mark follows the last count
  src.remove_flow(9);  // not installed any more: ignored
  src.stop();
  drain(rings, got);
  EXPECT_EQ(count_kind(got, 9, RecordKind::kEndOfStream), 1U);
  ASSERT_TRUE(src.flow_stats(9));
  EXPECT_EQ(src.flow_stats(9)->packets, 300U);
}

TEST(UdpSource, FlowStatsOfRemovedFlowsAreFinalAndForgottenWhenTheStreamIsReused) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  ASSERT_TRUE(src.add_flow(flow_spec(12)));
  const std::uint16_t port = src.local_port(12);
  std::vector<std::vector<std::byte>> sent;
  for (std::uint16_t i = 0; i < 10; ++i) sent.push_back(make_rtp(i, 12, 160));
  send_paced(src, 12, phone, "127.0.0.1", port, sent);
  ASSERT_TRUE(wait_until([&] { return src.flow_stats(12)->packets == 10; }));
  src.remove_flow(12);
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return count_kind(got, 12, RecordKind::kEndOfStream) == 1;
  }));
  // More removes on the thread: the first one's counters are kept, final (read live while its
  // remove is not acknowledged, from the kept copy afterwards).
  ASSERT_TRUE(src.add_flow(flow_spec(13)));
  src.remove_flow(13);
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return count_kind(got, 13, RecordKind::kEndOfStream) == 1;
  }));
  ASSERT_TRUE(src.flow_stats(12));
  EXPECT_EQ(src.flow_stats(12)->packets, 10U);
  EXPECT_EQ(src.flow_stats(12)->wrong_source, 0U);
  ASSERT_TRUE(src.flow_stats(13));
  EXPECT_EQ(src.flow_stats(13)->packets, 0U);
  // The stream id used again: its counters are the new flow's.
  ASSERT_TRUE(src.add_flow(flow_spec(12)));
  ASSERT_TRUE(src.flow_stats(12));
  EXPECT_EQ(src.flow_stats(12)->packets, 0U);
  EXPECT_NE(src.local_port(12), 0);
  src.stop();
  ASSERT_TRUE(src.flow_stats(12));  // stopped: the final counters
  EXPECT_EQ(src.flow_stats(12)->packets, 0U);
  EXPECT_FALSE(src.flow_stats(14));  // never added
}

TEST(UdpSource, FiveHundredFlowsOnTwoRxThreads) {
  constexpr unsigned kFlows = 500;
  constexpr std::uint16_t kPerFlow = 4;
  RingMatrix rings(2, 3, 1 << 20);
  UdpSource src(options(2));
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  for (StreamId s = 100; s < 100 + kFlows; ++s) {
    FlowSpec f = flow_spec(s);
    f.expected = phone.local();
    const Status st = src.add_flow(f);
    ASSERT_TRUE(st) << st.message();
  }
  std::vector<Record> got;
  for (std::uint16_t seq = 0; seq < kPerFlow; ++seq) {
    for (StreamId s = 100; s < 100 + kFlows; ++s) {
      ASSERT_TRUE(phone.send("127.0.0.1", src.local_port(s), make_rtp(seq, s, 160)));
    }
    ASSERT_TRUE(wait_until([&] {
      drain(rings, got);
      return got.size() == std::size_t{kFlows} * (seq + 1U);
    }));
  }
  for (StreamId s = 100; s < 100 + kFlows; ++s) src.remove_flow(s);
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return got.size() == std::size_t{kFlows} * (kPerFlow + 1U);
  }));

  std::map<StreamId, std::vector<const Record*>> by_stream;
  bool producer_used[2] = {false, false};
  for (const Record& r : got) {
    by_stream[r.stream].push_back(&r);
    EXPECT_EQ(r.writer, rings.writer_for(r.stream));
    producer_used[r.producer] = true;
  }
  EXPECT_TRUE(producer_used[0] && producer_used[1]);
  ASSERT_EQ(by_stream.size(), kFlows);
  for (const auto& [stream, recs] : by_stream) {
    ASSERT_EQ(recs.size(), kPerFlow + 1U) << "stream " << stream;
    for (std::uint16_t i = 0; i < kPerFlow; ++i) {
      const auto rtp = fileio::parse_rtp(recs[i]->bytes);
      ASSERT_TRUE(rtp);
      EXPECT_EQ(rtp->ssrc, stream);  // delivered to the right stream
      EXPECT_EQ(rtp->sequence, i);   // in order
      EXPECT_EQ(recs[i]->producer, recs[0]->producer);  // one RX thread per flow
    }
    EXPECT_EQ(recs.back()->kind, RecordKind::kEndOfStream);
  }
  src.stop();
}

TEST(UdpSource, BindErrorsNameThePort) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client squatter("0.0.0.0");  // another process's socket on the port
  const Status busy = src.add_flow(flow_spec(10, squatter.port()));
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.code(), EADDRINUSE);
  EXPECT_NE(busy.message().find(std::to_string(squatter.port())), std::string::npos) << busy.message();
  EXPECT_FALSE(src.flow_stats(10));

  ASSERT_TRUE(src.add_flow(flow_spec(11)));
  const std::uint16_t port = src.local_port(11);
  const Status twice = src.add_flow(flow_spec(12, port));  // same port, same source
  EXPECT_EQ(twice.code(), EADDRINUSE) << twice.message();
  const Status dup = src.add_flow(flow_spec(11));  // same stream
  EXPECT_EQ(dup.code(), EEXIST) << dup.message();
}

TEST(UdpSource, PortCanBeReusedRightAfterRemove) {
  RingMatrix rings(1, 1, 1 << 20);
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  ASSERT_TRUE(src.add_flow(flow_spec(20)));
  const std::uint16_t port = src.local_port(20);
  for (StreamId s = 21; s < 41; ++s) {
    src.remove_flow(s - 1);
    const Status st = src.add_flow(flow_spec(s, port));  // waits for the old socket to close
    ASSERT_TRUE(st) << st.message();
  }
  Client phone("127.0.0.1");
  ASSERT_TRUE(phone.send("127.0.0.1", port, make_rtp(1, 40, 160)));
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return count_kind(got, 40, RecordKind::kPacket) == 1;
  }));
  for (StreamId s = 20; s < 40; ++s) EXPECT_EQ(count_kind(got, s, RecordKind::kEndOfStream), 1U) << s;
}

TEST(UdpSource, RingFullIsCountedAndEndMarkIsNotLost) {
  RingMatrix rings(1, 1, 4096);  // ~21 records of 172 bytes; nobody consumes at first
  UdpSource src(options());
  ASSERT_TRUE(src.start(rings));
  Client phone("127.0.0.1");
  ASSERT_TRUE(src.add_flow(flow_spec(30)));
  const std::uint16_t port = src.local_port(30);
  std::vector<std::vector<std::byte>> sent;
  for (std::uint16_t i = 0; i < 200; ++i) sent.push_back(make_rtp(i, 30, 160));
  send_paced(src, 30, phone, "127.0.0.1", port, sent);
  ASSERT_TRUE(wait_until([&] {
    const SourceStats st = src.stats();
    return st.rx_packets == 200 && st.delivered + st.ring_full == 200;
  }));
  const SourceStats st = src.stats();
  EXPECT_GT(st.ring_full, 0U);
  EXPECT_GT(st.delivered, 0U);
  EXPECT_EQ(src.flow_stats(30)->packets, 200U);  // accepted, whether or not the ring had room

  src.remove_flow(30);  // ring still full: the end mark waits in the RX thread
  std::vector<Record> got;
  ASSERT_TRUE(wait_until([&] {
    drain(rings, got);
    return count_kind(got, 30, RecordKind::kEndOfStream) == 1;
  }));
  EXPECT_EQ(count_kind(got, 30, RecordKind::kPacket), st.delivered);
  EXPECT_EQ(got.back().kind, RecordKind::kEndOfStream);
  for (std::size_t i = 0; i < st.delivered; ++i) EXPECT_EQ(got[i].bytes, sent[i]);  // the first ones fit
}

TEST(UdpSource, StopEndsEveryInstalledFlow) {
  RingMatrix rings(2, 2, 1 << 20);
  UdpSource src(options(2));
  ASSERT_TRUE(src.start(rings));
  for (StreamId s = 50; s < 60; ++s) ASSERT_TRUE(src.add_flow(flow_spec(s)));
  src.stop();
  std::vector<Record> got;
  drain(rings, got);
  ASSERT_EQ(got.size(), 10U);
  for (StreamId s = 50; s < 60; ++s) EXPECT_EQ(count_kind(got, s, RecordKind::kEndOfStream), 1U);
  EXPECT_EQ(src.end_marks_lost(), 0U);
  ASSERT_TRUE(src.flow_stats(50));  // stopped: the final counters are kept
  EXPECT_EQ(src.flow_stats(50)->packets, 0U);
  EXPECT_FALSE(src.flow_stats(61));
  EXPECT_FALSE(src.add_flow(flow_spec(61)));
  src.stop();  // idempotent
}

TEST(UdpSource, StartRejectsMismatchedRingMatrix) {
  RingMatrix rings(1, 1, 4096);
  UdpSource src(options(2));
  EXPECT_FALSE(src.start(rings));
  EXPECT_EQ(src.rx_threads(), 2U);
  EXPECT_EQ(src.name(), "udp");
}

}  // namespace
}  // namespace callrec::dataplane
