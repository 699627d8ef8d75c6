// The DPDK source's IPv6 host presence (neighbour discovery, ICMPv6 echo) and its telemetry
// command, through a net_ring port whose RX and TX rings belong to the test
// (rte_eth_from_rings): the test puts frames it built on the RX ring, lcore 0 of the source
// answers on the TX ring, and the test checks every field of each answer, checksums recomputed
// here independently. Invalid solicitations must get no answer and be counted. No NIC, no
// hugepages, no root.
//
// EAL is initialised once per process with the same arguments as dpdk_source_test.cpp (the two
// files share a binary); the first source of the process does it (see dpdk_source.hpp).
#include <gtest/gtest.h>

#if defined(CALLREC_HAVE_DPDK) && defined(CALLREC_HAVE_RTE_ETH_RING)

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#pragma GCC diagnostic pop

#include "common/dpdk_telemetry_client.hpp"
#include "dataplane/decode/checksum.hpp"
#include "dataplane/dpdk_source.hpp"
#include "fileio/packet_ring.hpp"

namespace callrec::dataplane {
namespace {

using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::uint8_t>;
using Mac = std::array<std::uint8_t, 6>;
using Ip6 = std::array<std::uint8_t, 16>;

/// The EAL arguments of every source in this binary (dpdk_source_test.cpp uses the same ones).
std::vector<std::string> eal_args(const std::string& vdev) {
  static const std::string prefix = "--file-prefix=callrec-test-" + std::to_string(::getpid());
  return {"--no-huge", "--no-pci", "-m", "512", "--no-shconf", prefix, "--lcores=(0-2)@(0-1)", "--vdev=" + vdev};
}

std::string unique_name(const std::string& what) {
  static std::atomic<unsigned> n{0};
  return what + std::to_string(::getpid() % 100000) + "_" + std::to_string(n++);
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto end = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() >= end) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

/// EAL keeps its runtime directory (telemetry socket) after the process: remove this
/// process's at the end (every test binary run under ctest is one process per test).
class RuntimeDirCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    const char* dir = rte_eal_get_runtime_dir();
    const std::string mine = "/callrec-test-" + std::to_string(::getpid());
    if (dir != nullptr && std::string(dir).ends_with(mine)) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
};
[[maybe_unused]] ::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new RuntimeDirCleanup);

// ---- frames, built and checked independently of the dataplane's code ----------------------------

Ip6 ip6(const char* text) {
  Ip6 a{};
  EXPECT_EQ(inet_pton(AF_INET6, text, a.data()), 1) << text;
  return a;
}

Mac parse_mac(const std::string& text) {
  Mac m{};
  unsigned v[6] = {};
  EXPECT_EQ(std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]), 6) << text;
  for (int i = 0; i < 6; ++i) m[i] = static_cast<std::uint8_t>(v[i]);
  return m;
}

/// RFC 1071 over an explicit copy of the IPv6 pseudo-header (RFC 8200 8.1) and the message: the
/// layout is built here, not taken from the dataplane's inet6_checksum (checksum_test.cpp checks
/// the sum itself against RFC 1071's example).
std::uint16_t icmp6_sum(const Ip6& src, const Ip6& dst, const Bytes& msg) {
  Bytes b(src.begin(), src.end());
  b.insert(b.end(), dst.begin(), dst.end());
  const auto len = static_cast<std::uint32_t>(msg.size());
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<std::uint8_t>(len >> shift));
  b.insert(b.end(), {0, 0, 0, 58});
  b.insert(b.end(), msg.begin(), msg.end());
  return decode::inet_checksum(b.data(), b.size());
}

void set_checksum(const Ip6& src, const Ip6& dst, Bytes& msg) {
  msg[2] = msg[3] = 0;
  const std::uint16_t c = icmp6_sum(src, dst, msg);
  msg[2] = static_cast<std::uint8_t>(c >> 8);
  msg[3] = static_cast<std::uint8_t>(c);
}

struct Frame {
  Mac dst_mac{};
  Mac src_mac{};
  int vlan = -1;  ///< 802.1Q tag, -1: none
  Ip6 src{};
  Ip6 dst{};
  std::uint8_t hop_limit = 255;
  std::uint8_t next_header = 58;
  Bytes payload;  ///< the ICMPv6 message (or other upper layer)
  std::size_t padding = 0;

  [[nodiscard]] Bytes bytes() const {
    Bytes f(dst_mac.begin(), dst_mac.end());
    f.insert(f.end(), src_mac.begin(), src_mac.end());
    if (vlan >= 0) f.insert(f.end(), {0x81, 0x00, static_cast<std::uint8_t>(vlan >> 8), static_cast<std::uint8_t>(vlan)});
    f.insert(f.end(), {0x86, 0xDD, 0x60, 0, 0, 0, static_cast<std::uint8_t>(payload.size() >> 8),
                       static_cast<std::uint8_t>(payload.size()), next_header, hop_limit});
    f.insert(f.end(), src.begin(), src.end());
    f.insert(f.end(), dst.begin(), dst.end());
    f.insert(f.end(), payload.begin(), payload.end());
    f.insert(f.end(), padding, 0);
    return f;
  }
};

/// Neighbour solicitation for `target` (checksum set for src -> dst), with a source link-layer
/// address option when `slla` is given.
Bytes ns_message(const Ip6& src, const Ip6& dst, const Ip6& target, const std::optional<Mac>& slla) {
  Bytes m = {135, 0, 0, 0, 0, 0, 0, 0};
  m.insert(m.end(), target.begin(), target.end());
  if (slla) {
    m.insert(m.end(), {1, 1});
    m.insert(m.end(), slla->begin(), slla->end());
  }
  set_checksum(src, dst, m);
  return m;
}

/// ff02::1:ffXX:XXXX for `a` and its MAC 33:33:ff:XX:XX:XX.
Ip6 solicited_node(const Ip6& a) {
  Ip6 s = ip6("ff02::1:ff00:0");
  std::copy(a.begin() + 13, a.end(), s.begin() + 13);
  return s;
}
Mac multicast_mac(const Ip6& a) { return {0x33, 0x33, a[12], a[13], a[14], a[15]}; }

/// A parsed answer (IPv6 over Ethernet, optional 802.1Q tag).
struct Answer {
  Mac dst_mac{};
  Mac src_mac{};
  int vlan = -1;
  std::uint8_t version = 0;
  std::uint32_t tc_flow = 0;
  std::uint16_t payload_length = 0;
  std::uint8_t next_header = 0;
  std::uint8_t hop_limit = 0;
  Ip6 src{};
  Ip6 dst{};
  Bytes payload;
  std::size_t frame_length = 0;
};

std::optional<Answer> parse(const Bytes& f) {
  if (f.size() < 54) return std::nullopt;
  Answer a;
  a.frame_length = f.size();
  std::copy_n(f.begin(), 6, a.dst_mac.begin());
  std::copy_n(f.begin() + 6, 6, a.src_mac.begin());
  std::size_t off = 12;
  if (f[off] == 0x81 && f[off + 1] == 0x00) {
    a.vlan = (f[off + 2] << 8 | f[off + 3]) & 0x0FFF;
    off += 4;
  }
  if (f[off] != 0x86 || f[off + 1] != 0xDD || f.size() < off + 42) return std::nullopt;
  const std::uint8_t* ip = f.data() + off + 2;
  a.version = ip[0] >> 4;
  a.tc_flow = (static_cast<std::uint32_t>(ip[0] & 0x0F) << 24) | ip[1] << 16 | ip[2] << 8 | ip[3];
  a.payload_length = static_cast<std::uint16_t>(ip[4] << 8 | ip[5]);
  a.next_header = ip[6];
  a.hop_limit = ip[7];
  std::copy_n(ip + 8, 16, a.src.begin());
  std::copy_n(ip + 24, 16, a.dst.begin());
  a.payload.assign(ip + 40, f.data() + f.size());
  return a;
}

std::string hex(const Bytes& b) {
  std::string s;
  char buf[4];
  for (const std::uint8_t x : b) {
    std::snprintf(buf, sizeof buf, "%02x", x);
    s += buf;
  }
  return s;
}

// ---- the fixture: a net_ring port on the test's rings ---------------------------------------

class DpdkHost6 : public ::testing::Test {
 protected:
  static constexpr const char* kGlobal = "2001:db8:77::1";
  static constexpr const char* kLinkLocal = "fe80::77:1";
  static constexpr const char* kPeer = "2001:db8:77::2";
  static constexpr const char* kPeerLinkLocal = "fe80::2";
  const Mac peer_mac_{0x02, 0x00, 0x00, 0x00, 0x00, 0x02};

  void SetUp() override {
    {
      // The first source of the process initialises EAL (a later one hot-plugs its net_null).
      const std::string vdev = unique_name("net_null_h");
      DpdkSource::Options o;
      o.eal_args = eal_args(vdev);
      o.port = vdev;
      o.addresses = {"10.0.0.1"};
      o.mempool_mbufs = 1023;
      DpdkSource init(o);
      ASSERT_TRUE(init.status()) << init.status().message();
    }
    rx_ = rte_ring_create(unique_name("crhrx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    tx_ = rte_ring_create(unique_name("crhtx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    ASSERT_NE(rx_, nullptr);
    ASSERT_NE(tx_, nullptr);
    const int port = rte_eth_from_rings(unique_name("crh").c_str(), &rx_, 1, &tx_, 1, 0);
    ASSERT_GE(port, 0) << "rte_eth_from_rings";
    port_ = static_cast<std::uint16_t>(port);
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    ASSERT_EQ(rte_eth_dev_get_name_by_port(port_, name), 0);
    port_name_ = name;
    pool_ = rte_pktmbuf_pool_create(unique_name("crhp").c_str(), 511, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
  }

  void TearDown() override {
    source_.reset();
    if (tx_ != nullptr) {
      void* obj = nullptr;
      while (rte_ring_dequeue(tx_, &obj) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(obj));
    }
    if (!port_name_.empty()) rte_eal_hotplug_remove("vdev", port_name_.c_str());
    rte_ring_free(rx_);
    rte_ring_free(tx_);
    if (pool_ != nullptr) rte_mempool_free(pool_);
  }

  void start(std::vector<std::string> addresses6 = {kGlobal, kLinkLocal}) {
    DpdkSource::Options o;
    o.eal_args = eal_args(unique_name("net_null_h"));
    o.port = std::to_string(port_);
    o.addresses = {"10.0.0.1"};
    o.addresses6 = std::move(addresses6);
    o.mempool_mbufs = 1023;
    o.idle_sleep = std::chrono::microseconds(100);
    source_ = std::make_unique<DpdkSource>(o);
    ASSERT_TRUE(source_->status()) << source_->status().message();
    mac_ = parse_mac(source_->mac_address());
    ASSERT_TRUE(source_->start(rings_));
  }

  void inject(const Bytes& frame) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    char* p = rte_pktmbuf_append(m, static_cast<std::uint16_t>(frame.size()));
    ASSERT_NE(p, nullptr);
    std::memcpy(p, frame.data(), frame.size());
    ASSERT_EQ(rte_ring_enqueue(rx_, m), 0);
    ++injected_;
  }

  /// The next frame the source sent, within `timeout`.
  std::optional<Bytes> sent(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto end = Clock::now() + timeout;
    void* obj = nullptr;
    while (rte_ring_dequeue(tx_, &obj) != 0) {
      if (Clock::now() >= end) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto* m = static_cast<rte_mbuf*>(obj);
    EXPECT_EQ(m->nb_segs, 1);
    EXPECT_EQ(m->pkt_len, m->data_len);
    const auto* d = static_cast<const std::uint8_t*>(m->buf_addr) + m->data_off;
    Bytes out(d, d + m->data_len);
    rte_pktmbuf_free(m);
    return out;
  }

  /// Waits until the source has processed everything injected (counters are published every
  /// 100 ms; a reply would be on the TX ring by then).
  DpdkStats settled() {
    EXPECT_TRUE(wait_until([&] { return source_->stats().rx_packets == injected_; })) << source_->stats().rx_packets;
    return source_->dpdk_stats();
  }

  /// Checks a neighbour advertisement field by field.
  void expect_na(const Bytes& frame, const Mac& to_mac, const Ip6& to, const Ip6& target, bool solicited, int vlan = -1) {
    SCOPED_TRACE(hex(frame));
    const auto a = parse(frame);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->dst_mac, to_mac);
    EXPECT_EQ(a->src_mac, mac_);
    EXPECT_EQ(a->vlan, vlan);
    EXPECT_EQ(a->version, 6);
    EXPECT_EQ(a->tc_flow, 0U);
    EXPECT_EQ(a->next_header, 58);
    EXPECT_EQ(a->hop_limit, 255) << "RFC 4861 7.1.2: ND comes with hop limit 255";
    EXPECT_EQ(a->src, target) << "sent from the address asked for";
    EXPECT_EQ(a->dst, to);
    ASSERT_EQ(a->payload_length, 32);
    ASSERT_EQ(a->payload.size(), 32U) << "no trailing bytes";
    const Bytes& m = a->payload;
    EXPECT_EQ(m[0], 136);
    EXPECT_EQ(m[1], 0);
    EXPECT_EQ(icmp6_sum(a->src, a->dst, m), 0) << "checksum over the pseudo-header";
    Bytes zeroed = m;
    set_checksum(a->src, a->dst, zeroed);
    EXPECT_EQ(zeroed[2], m[2]);
    EXPECT_EQ(zeroed[3], m[3]);
    EXPECT_EQ(m[4], solicited ? 0x60 : 0x20) << "R=0, S=" << solicited << ", O=1";
    EXPECT_EQ(m[5] | m[6] | m[7], 0);
    EXPECT_TRUE(std::equal(target.begin(), target.end(), m.begin() + 8));
    EXPECT_EQ(m[24], 2) << "target link-layer address option";
    EXPECT_EQ(m[25], 1);
    EXPECT_TRUE(std::equal(mac_.begin(), mac_.end(), m.begin() + 26));
  }

  fileio::RingMatrix rings_{1, 1, 1 << 16};
  rte_ring* rx_ = nullptr;
  rte_ring* tx_ = nullptr;
  std::uint16_t port_ = 0;
  std::string port_name_;
  rte_mempool* pool_ = nullptr;
  std::unique_ptr<DpdkSource> source_;
  Mac mac_{};
  std::uint64_t injected_ = 0;
};

TEST_F(DpdkHost6, SolicitationToOurUnicastAddressGetsASolicitedAdvertisement) {
  ASSERT_NO_FATAL_FAILURE(start());
  const Ip6 us = ip6(kGlobal);
  const Ip6 peer = ip6(kPeer);
  // A unicast probe without link-layer option (neighbour unreachability detection): the answer
  // goes to the frame's source MAC.
  Frame f;
  f.dst_mac = mac_;
  f.src_mac = peer_mac_;
  f.src = peer;
  f.dst = us;
  f.payload = ns_message(peer, us, us, std::nullopt);
  inject(f.bytes());
  auto na = sent();
  ASSERT_TRUE(na.has_value()) << "no advertisement";
  expect_na(*na, peer_mac_, peer, us, true);

  // With a source link-layer address option, that address is the answer's destination.
  const Mac other{0x02, 0x00, 0x00, 0x00, 0x00, 0x22};
  f.payload = ns_message(peer, us, us, other);
  inject(f.bytes());
  na = sent();
  ASSERT_TRUE(na.has_value()) << "no advertisement";
  expect_na(*na, other, peer, us, true);

  const DpdkStats d = settled();
  EXPECT_EQ(d.source.nd_replies, 2U);
  EXPECT_EQ(d.icmp6_invalid, 0U);
  EXPECT_EQ(d.dropped, 0U);
}

TEST_F(DpdkHost6, SolicitationToTheSolicitedNodeGroupGetsAnAdvertisement) {
  ASSERT_NO_FATAL_FAILURE(start());
  // Address resolution: multicast to ff02::1:ff77:1 (33:33:ff:77:00:01), from a link-local
  // address, inside an 802.1Q tag that the answer keeps.
  const Ip6 target = ip6(kLinkLocal);
  const Ip6 peer = ip6(kPeerLinkLocal);
  const Ip6 group = solicited_node(target);
  Frame f;
  f.dst_mac = multicast_mac(group);
  f.src_mac = peer_mac_;
  f.vlan = 42;
  f.src = peer;
  f.dst = group;
  f.payload = ns_message(peer, group, target, peer_mac_);
  ASSERT_EQ(f.dst_mac, (Mac{0x33, 0x33, 0xFF, 0x77, 0x00, 0x01}));
  inject(f.bytes());
  const auto na = sent();
  ASSERT_TRUE(na.has_value()) << "no advertisement";
  expect_na(*na, peer_mac_, peer, target, true, 42);
  EXPECT_EQ(settled().source.nd_replies, 1U);
}

TEST_F(DpdkHost6, DuplicateAddressDetectionProbeIsAnsweredToAllNodes) {
  ASSERT_NO_FATAL_FAILURE(start());
  // RFC 4862 5.4.3 / RFC 4861 7.2.4: source ::, to the solicited-node group, no link-layer
  // option; we own the address, so we defend it: to ff02::1, without the Solicited flag.
  const Ip6 target = ip6(kGlobal);
  const Ip6 unspecified{};
  const Ip6 group = solicited_node(target);
  Frame f;
  f.dst_mac = multicast_mac(group);
  f.src_mac = peer_mac_;
  f.src = unspecified;
  f.dst = group;
  f.payload = ns_message(unspecified, group, target, std::nullopt);
  inject(f.bytes());
  const auto na = sent();
  ASSERT_TRUE(na.has_value()) << "no advertisement";
  expect_na(*na, Mac{0x33, 0x33, 0, 0, 0, 1}, ip6("ff02::1"), target, false);
  EXPECT_EQ(settled().source.nd_replies, 1U);
}

TEST_F(DpdkHost6, EchoRequestGetsAReplyWithTheSameIdentifierSequenceAndData) {
  ASSERT_NO_FATAL_FAILURE(start());
  const Ip6 us = ip6(kGlobal);
  const Ip6 peer = ip6(kPeer);
  for (const std::size_t padding : {std::size_t{0}, std::size_t{9}}) {
    SCOPED_TRACE("Ethernet padding " + std::to_string(padding));
    Bytes echo = {128, 0, 0, 0, 0x12, 0x34, 0x00, static_cast<std::uint8_t>(7 + padding)};
    for (unsigned i = 0; i < 56; ++i) echo.push_back(static_cast<std::uint8_t>(i * 7 + padding));
    set_checksum(peer, us, echo);
    Frame f;
    f.dst_mac = mac_;
    f.src_mac = peer_mac_;
    f.src = peer;
    f.dst = us;
    f.hop_limit = 64;
    f.payload = echo;
    f.padding = padding;
    inject(f.bytes());
    const auto out = sent();
    ASSERT_TRUE(out.has_value()) << "no echo reply";
    const auto a = parse(*out);
    ASSERT_TRUE(a.has_value()) << hex(*out);
    EXPECT_EQ(a->dst_mac, peer_mac_);
    EXPECT_EQ(a->src_mac, mac_);
    EXPECT_EQ(a->version, 6);
    EXPECT_EQ(a->next_header, 58);
    EXPECT_TRUE(a->hop_limit == 64 || a->hop_limit == 255) << int{a->hop_limit};
    EXPECT_EQ(a->src, us);
    EXPECT_EQ(a->dst, peer);
    ASSERT_EQ(a->payload_length, echo.size());
    ASSERT_EQ(a->payload.size(), echo.size()) << "the padding is not part of the reply";
    EXPECT_EQ(a->payload[0], 129);
    EXPECT_EQ(a->payload[1], 0);
    EXPECT_EQ(icmp6_sum(a->src, a->dst, a->payload), 0) << "checksum over the pseudo-header";
    EXPECT_TRUE(std::equal(echo.begin() + 4, echo.end(), a->payload.begin() + 4)) << "identifier, sequence, data";
  }
  const DpdkStats d = settled();
  EXPECT_EQ(d.source.icmp6_replies, 2U);
  EXPECT_EQ(d.source.nd_replies, 0U);
}

TEST_F(DpdkHost6, InvalidSolicitationsAndEchoesGetNoAnswerAndAreCounted) {
  ASSERT_NO_FATAL_FAILURE(start());
  const Ip6 us = ip6(kGlobal);
  const Ip6 peer = ip6(kPeer);
  const Ip6 group = solicited_node(us);
  const Ip6 unspecified{};
  struct Case {
    const char* what;
    std::function<void(Frame&)> mutate;
  };
  const auto base = [&] {
    Frame f;
    f.dst_mac = multicast_mac(group);
    f.src_mac = peer_mac_;
    f.src = peer;
    f.dst = group;
    f.payload = ns_message(peer, group, us, peer_mac_);
    return f;
  };
  const auto resum = [](Frame& f) { set_checksum(f.src, f.dst, f.payload); };
  const std::vector<Case> cases = {
      {"hop limit 64 (routed: not from the link)", [](Frame& f) { f.hop_limit = 64; }},
      {"hop limit 254", [](Frame& f) { f.hop_limit = 254; }},
      {"bad checksum", [](Frame& f) { f.payload[3] ^= 0x01; }},
      {"code 1", [&](Frame& f) { f.payload[1] = 1; resum(f); }},
      {"ICMP length 20 (< 24)", [&](Frame& f) { f.payload.resize(20); resum(f); }},
      {"multicast target", [&](Frame& f) { f.payload = ns_message(f.src, f.dst, ip6("ff02::1"), peer_mac_); }},
      {"option of length 0", [&](Frame& f) { f.payload[25] = 0; resum(f); }},
      {"option longer than the message", [&](Frame& f) { f.payload[25] = 2; resum(f); }},
      {"1 stray byte after the options", [&](Frame& f) { f.payload.push_back(1); resum(f); }},
      {"link-layer option of 16 bytes", [&](Frame& f) {
         f.payload[25] = 2;
         f.payload.insert(f.payload.end(), 8, 0);
         resum(f);
       }},
      {"DAD probe with a link-layer option", [&](Frame& f) {
         f.src = unspecified;
         f.payload = ns_message(unspecified, group, us, peer_mac_);
       }},
      {"DAD probe to the unicast address", [&](Frame& f) {
         f.src = unspecified;
         f.dst = us;
         f.dst_mac = mac_;
         f.payload = ns_message(unspecified, us, us, std::nullopt);
       }},
      {"echo request with a bad checksum", [&](Frame& f) {
         f.dst = us;
         f.dst_mac = mac_;
         f.payload = {128, 0, 0, 0, 0, 1, 0, 1, 'x', 'y'};
         resum(f);
         f.payload[9] ^= 0xFF;
       }},
      {"echo request with code 3", [&](Frame& f) {
         f.dst = us;
         f.dst_mac = mac_;
         f.payload = {128, 3, 0, 0, 0, 1, 0, 1};
         resum(f);
       }},
  };
  std::uint64_t invalid = 0;
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    Frame f = base();
    k.mutate(f);
    inject(f.bytes());
    ++invalid;
    const DpdkStats d = settled();
    EXPECT_EQ(d.icmp6_invalid, invalid);
    EXPECT_EQ(d.dropped, invalid) << "invalid ones are part of dropped";
    EXPECT_EQ(rte_ring_count(tx_), 0U) << "no answer to an invalid message";
  }

  // Valid, but for someone else's address: no answer, not ours.
  Frame f = base();
  const Ip6 other = ip6("2001:db8:77::99");
  f.dst = solicited_node(other);
  f.dst_mac = multicast_mac(f.dst);
  f.payload = ns_message(peer, f.dst, other, peer_mac_);
  inject(f.bytes());
  // And unicast IPv6 to another address (a UDP datagram).
  Frame u = base();
  u.dst = other;
  u.dst_mac = mac_;
  u.next_header = 17;
  u.payload = {0x13, 0x88, 0x9C, 0x40, 0, 12, 0, 0, 'a', 'b', 'c', 'd'};
  inject(u.bytes());
  DpdkStats d = settled();
  EXPECT_EQ(d.icmp6_invalid, invalid);
  EXPECT_EQ(d.not_ours, 2U);
  EXPECT_EQ(d.dropped, invalid + 2);
  EXPECT_EQ(d.source.nd_replies, 0U);
  EXPECT_EQ(d.source.icmp6_replies, 0U);
  EXPECT_EQ(rte_ring_count(tx_), 0U);

  // A valid one after all that is still answered.
  inject(base().bytes());
  const auto na = sent();
  ASSERT_TRUE(na.has_value());
  expect_na(*na, peer_mac_, peer, us, true);

  // Every received packet ends in exactly one bucket.
  source_->stop();
  d = source_->dpdk_stats();
  const SourceStats& st = d.source;
  EXPECT_EQ(st.rx_packets, injected_);
  EXPECT_EQ(st.rx_packets, st.delivered + st.ring_full + st.unknown_flow + st.wrong_source + st.not_rtp +
                               st.arp_replies + st.icmp_replies + st.nd_replies + st.icmp6_replies +
                               st.exception_path + d.dropped);
}

TEST_F(DpdkHost6, WithoutIpv6AddressesNothingIsAnswered) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  const Ip6 target = ip6(kGlobal);
  const Ip6 peer = ip6(kPeer);
  const Ip6 group = solicited_node(target);
  Frame f;
  f.dst_mac = multicast_mac(group);
  f.src_mac = peer_mac_;
  f.src = peer;
  f.dst = group;
  f.payload = ns_message(peer, group, target, peer_mac_);
  inject(f.bytes());
  const DpdkStats d = settled();
  EXPECT_EQ(d.source.nd_replies, 0U);
  EXPECT_EQ(d.dropped, 1U) << "no exception path";
  EXPECT_EQ(rte_ring_count(tx_), 0U);
}

TEST(DpdkHost6Options, RejectsAddressesThatCannotBeTheDataplanes) {
  const struct {
    const char* address;
    const char* error;
  } cases[] = {
      {"10.0.0.1", "'10.0.0.1' is not an IPv6 address"},
      {"fe80::1%eth0", "is not an IPv6 address"},
      {"ff02::1:ff00:1", "is a multicast address"},
      {"::", "unspecified or loopback"},
      {"::1", "unspecified or loopback"},
      {"::ffff:10.0.0.1", "IPv4-mapped"},
  };
  for (const auto& k : cases) {
    DpdkSource::Options o;
    o.eal_args = eal_args(unique_name("net_null_h"));
    o.port = "0";
    o.addresses = {"10.0.0.1"};
    o.addresses6 = {k.address};
    DpdkSource s(o);
    EXPECT_FALSE(s.status()) << k.address;
    EXPECT_NE(s.status().message().find(k.error), std::string::npos) << s.status().message();
  }
  DpdkSource::Options o;
  o.eal_args = eal_args(unique_name("net_null_h"));
  o.addresses = {"10.0.0.1"};
  o.addresses6 = {"2001:db8::1", "2001:DB8:0::1"};
  DpdkSource s(o);
  EXPECT_NE(s.status().message().find("given twice"), std::string::npos) << s.status().message();
}

// ---- telemetry ----------------------------------------------------------------------------------

using test_support::json_number;
using test_support::TelemetryClient;

TEST_F(DpdkHost6, TelemetrySocketServesTheCountersAsCallrecStats) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string path = dpdk_telemetry_socket();
  // This process's EAL arguments (--no-huge --no-shconf --file-prefix, no --no-telemetry)
  // leave telemetry on; a DPDK built without it, or a runtime dir that cannot be created,
  // would not.
  if (path.empty()) GTEST_SKIP() << "no DPDK telemetry socket in " << rte_eal_get_runtime_dir();
  EXPECT_EQ(path, std::string(rte_eal_get_runtime_dir()) + "/dpdk_telemetry.v2");

  const Ip6 us = ip6(kGlobal);
  const Ip6 peer = ip6(kPeer);
  for (std::uint8_t seq = 1; seq <= 3; ++seq) {
    Frame f;
    f.dst_mac = mac_;
    f.src_mac = peer_mac_;
    f.src = peer;
    f.dst = us;
    f.payload = {128, 0, 0, 0, 0, 9, 0, seq};
    set_checksum(peer, us, f.payload);
    inject(f.bytes());
    ASSERT_TRUE(sent().has_value());
  }
  Frame ns;
  ns.dst_mac = mac_;
  ns.src_mac = peer_mac_;
  ns.src = peer;
  ns.dst = us;
  ns.payload = ns_message(peer, us, us, std::nullopt);
  inject(ns.bytes());
  ASSERT_TRUE(sent().has_value());
  const DpdkStats d = settled();
  ASSERT_EQ(d.source.icmp6_replies, 3U);

  TelemetryClient client(path);
  ASSERT_NE(client.greeting().find("\"version\""), std::string::npos) << "greeting: " << client.greeting();
  const std::string list = client.request("/");
  EXPECT_NE(list.find("\"/callrec/stats\""), std::string::npos) << list;
  const std::string stats = client.request("/callrec/stats");
  ASSERT_EQ(stats.rfind("{\"/callrec/stats\":{", 0), 0U) << stats;
  EXPECT_EQ(json_number(stats, "sources"), 1) << stats;
  EXPECT_EQ(json_number(stats, "icmp6_replies"), 3) << stats;
  EXPECT_EQ(json_number(stats, "nd_replies"), 1) << stats;
  EXPECT_EQ(json_number(stats, "rx_packets"), static_cast<long long>(d.source.rx_packets)) << stats;
  EXPECT_EQ(json_number(stats, "icmp6_invalid"), 0) << stats;
  EXPECT_GE(json_number(stats, "imissed"), 0) << stats;

  // No source alive: an error, which the client reads as null (never a crash).
  source_.reset();
  EXPECT_EQ(client.request("/callrec/stats"), "{\"/callrec/stats\":null}");
}

}  // namespace
}  // namespace callrec::dataplane

#else

TEST(DpdkHost6, NotBuilt) { GTEST_SKIP() << "libdpdk (with librte_net_ring) was not found at configure time"; }

#endif
