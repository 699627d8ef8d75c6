// Packet decoder and reassembly tests from byte arrays built here, layer by layer (Suricata's
// decode-*.c unit tests, PcapPlusPlus parser tests): every layer, every rejection counter, and
// tunnels whose inner packet must decode to exactly what the bare frame decodes to.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/decode/decode.hpp"
#include "dataplane/decode/reassembly.hpp"

namespace callrec::dataplane::decode {
namespace {

using Bytes = std::vector<std::byte>;
using V4 = std::array<std::uint8_t, 4>;
using V6 = std::array<std::uint8_t, 16>;

// ---- builders ------------------------------------------------------------------------------

void put8(Bytes& b, unsigned v) { b.push_back(static_cast<std::byte>(v & 0xFFu)); }
void put16(Bytes& b, unsigned v) {
  put8(b, v >> 8);
  put8(b, v);
}
void put32(Bytes& b, std::uint32_t v) {
  put16(b, v >> 16);
  put16(b, v & 0xFFFFu);
}
void append(Bytes& b, const Bytes& x) { b.insert(b.end(), x.begin(), x.end()); }
Bytes text(std::string_view s) {
  Bytes b;
  for (char ch : s) b.push_back(static_cast<std::byte>(ch));
  return b;
}
Bytes filler(std::size_t n, unsigned seed = 0) {
  Bytes b;
  for (std::size_t i = 0; i < n; ++i) put8(b, static_cast<unsigned>(i * 7 + seed));
  return b;
}
Bytes to_bytes(std::span<const std::byte> s) { return Bytes(s.begin(), s.end()); }
bool within(std::span<const std::byte> inner, const Bytes& outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

constexpr V4 kA4{192, 0, 2, 1}, kB4{198, 51, 100, 7}, kO1{10, 0, 0, 1}, kO2{10, 0, 0, 2};
constexpr V6 kA6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
constexpr V6 kB6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

IpAddr addr4(const V4& a) {
  IpAddr r;
  r.family = 4;
  std::copy(a.begin(), a.end(), r.b.begin());
  return r;
}
IpAddr addr6(const V6& a) {
  IpAddr r;
  r.family = 6;
  std::copy(a.begin(), a.end(), r.b.begin());
  return r;
}

Bytes udp(unsigned sport, unsigned dport, const Bytes& payload, int len = -1) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put16(b, len >= 0 ? static_cast<unsigned>(len) : static_cast<unsigned>(8 + payload.size()));
  put16(b, 0);  // checksum: optional in IPv4, and not checked by the decoder
  append(b, payload);
  return b;
}

Bytes tcp(unsigned sport, unsigned dport, std::uint32_t seq, unsigned flags, const Bytes& payload,
          unsigned option_words = 0) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put32(b, seq);
  put32(b, 0);  // ack
  put8(b, (5 + option_words) << 4);
  put8(b, flags);
  put16(b, 65535);  // window
  put32(b, 0);      // checksum, urgent
  for (unsigned i = 0; i < option_words * 4; ++i) put8(b, 1);  // NOPs
  append(b, payload);
  return b;
}

struct V4Opts {
  unsigned id = 0x1234;
  unsigned frag = 0;  ///< flags and offset field (DF 0x4000, MF 0x2000, offset in 8-byte units)
  unsigned ihl = 5;
  int total = -1;
  unsigned version = 4;
};
Bytes ipv4(const V4& src, const V4& dst, unsigned proto, const Bytes& payload, V4Opts o = {}) {
  Bytes b;
  put8(b, (o.version << 4) | o.ihl);
  put8(b, 0);
  put16(b, o.total >= 0 ? static_cast<unsigned>(o.total) : static_cast<unsigned>(o.ihl * 4 + payload.size()));
  put16(b, o.id);
  put16(b, o.frag);
  put8(b, 64);
  put8(b, proto);
  put16(b, 0);
  b.insert(b.end(), reinterpret_cast<const std::byte*>(src.data()), reinterpret_cast<const std::byte*>(src.data()) + 4);
  b.insert(b.end(), reinterpret_cast<const std::byte*>(dst.data()), reinterpret_cast<const std::byte*>(dst.data()) + 4);
  for (unsigned i = 20; i < o.ihl * 4; ++i) put8(b, 1);  // NOP options
  append(b, payload);
  return b;
}

Bytes ipv6(const V6& src, const V6& dst, unsigned next, const Bytes& payload, int plen = -1, unsigned version = 6) {
  Bytes b;
  put32(b, (version << 28) | 0x00012345u);  // traffic class 0, flow label 0x12345
  put16(b, plen >= 0 ? static_cast<unsigned>(plen) : static_cast<unsigned>(payload.size()));
  put8(b, next);
  put8(b, 64);
  b.insert(b.end(), reinterpret_cast<const std::byte*>(src.data()), reinterpret_cast<const std::byte*>(src.data()) + 16);
  b.insert(b.end(), reinterpret_cast<const std::byte*>(dst.data()), reinterpret_cast<const std::byte*>(dst.data()) + 16);
  append(b, payload);
  return b;
}
/// A hop-by-hop / destination options / routing header of (len_units + 1) * 8 bytes.
Bytes ext6(unsigned next, unsigned len_units = 0) {
  Bytes b;
  put8(b, next);
  put8(b, len_units);
  for (unsigned i = 2; i < (len_units + 1) * 8; ++i) put8(b, 0);  // Pad1 options
  return b;
}
/// An authentication header: (4 + 2) * 4 = 24 bytes.
Bytes ah6(unsigned next) {
  Bytes b;
  put8(b, next);
  put8(b, 4);
  put16(b, 0);
  put32(b, 0x1000);  // SPI
  put32(b, 1);       // sequence
  for (unsigned i = 0; i < 12; ++i) put8(b, 0xAA);  // ICV
  return b;
}
Bytes frag6(unsigned next, unsigned offset_bytes, bool more, std::uint32_t id) {
  Bytes b;
  put8(b, next);
  put8(b, 0);
  put16(b, (offset_bytes & 0xFFF8u) | (more ? 1u : 0u));
  put32(b, id);
  return b;
}

Bytes eth(unsigned type, const Bytes& payload, std::initializer_list<std::pair<unsigned, unsigned>> tags = {}) {
  Bytes b;
  for (unsigned m : {0x00u, 0x11u, 0x22u, 0x33u, 0x44u, 0x55u, 0x66u, 0x77u, 0x88u, 0x99u, 0xAAu, 0xBBu}) put8(b, m);
  for (const auto& [tpid, tci] : tags) {
    put16(b, tpid);
    put16(b, tci);
  }
  put16(b, type);
  append(b, payload);
  return b;
}

/// GRE with the optional fields its flags announce (checksum 0x8000, key 0x2000, sequence 0x1000).
Bytes gre(unsigned proto, const Bytes& payload, unsigned flags = 0) {
  Bytes b;
  put16(b, flags);
  put16(b, proto);
  if (flags & 0x8000) put32(b, 0);
  if (flags & 0x2000) put32(b, 0xC0FFEE);
  if (flags & 0x1000) put32(b, 42);
  append(b, payload);
  return b;
}
Bytes erspan2(const Bytes& frame, unsigned version = 1) {
  Bytes b;
  put16(b, (version << 12) | 100);  // ver, vlan 100
  put16(b, 0x0000 | 7);             // cos/en/t, session 7
  put32(b, 0);                      // reserved, index
  append(b, frame);
  return b;
}
Bytes erspan3(const Bytes& frame, bool subheader, unsigned version = 2) {
  Bytes b;
  put16(b, (version << 12) | 100);
  put16(b, 7);
  put32(b, 0x5EED);        // timestamp
  put16(b, 0);             // SGT
  put8(b, 0);              // P, FT, HW ID
  put8(b, subheader ? 1 : 0);  // D, Gra, O
  if (subheader) {
    put32(b, 0xDEADBEEF);
    put32(b, 0xFEEDFACE);
  }
  append(b, frame);
  return b;
}
Bytes vxlan(const Bytes& frame, unsigned flags = 0x08) {
  Bytes b;
  put8(b, flags);
  put8(b, 0);
  put16(b, 0);
  put32(b, 5001u << 8);  // VNI 5001, reserved
  append(b, frame);
  return b;
}
Bytes sll(unsigned proto, const Bytes& payload) {
  Bytes b;
  put16(b, 0);  // packet type: to us
  put16(b, 1);  // ARPHRD_ETHER
  put16(b, 6);
  for (unsigned i = 0; i < 8; ++i) put8(b, i < 6 ? 0x10 + i : 0);
  put16(b, proto);
  append(b, payload);
  return b;
}
Bytes sll2(unsigned proto, const Bytes& payload) {
  Bytes b;
  put16(b, proto);
  put16(b, 0);
  put32(b, 3);  // ifindex
  put16(b, 1);  // ARPHRD_ETHER
  put8(b, 0);   // packet type
  put8(b, 6);
  for (unsigned i = 0; i < 8; ++i) put8(b, i < 6 ? 0x10 + i : 0);
  append(b, payload);
  return b;
}
Bytes null_hdr(std::uint32_t family, bool big_endian, const Bytes& payload) {
  Bytes b;
  if (big_endian) {
    put32(b, family);
  } else {
    for (unsigned i = 0; i < 4; ++i) put8(b, family >> (8 * i));
  }
  append(b, payload);
  return b;
}

// The reference inner packets.
const Bytes kSipPayload = text("OPTIONS sip:probe@192.0.2.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n");
Bytes udp4() { return ipv4(kA4, kB4, 17, udp(5060, 5062, kSipPayload)); }
Bytes tcp6() { return ipv6(kA6, kB6, 6, tcp(49152, 5060, 0x01020304, 0x18, kSipPayload, 3)); }

// ---- checking ------------------------------------------------------------------------------

struct Decoded {
  Result r = Result::kBad;
  Packet p;
  Counters c;
  std::unique_ptr<const Bytes> owned;  ///< a temporary frame the spans of p point into
};
/// Decodes a frame the caller keeps (the spans point into it).
Decoded decode(std::uint32_t link, const Bytes& frame) {
  Decoded d;
  d.r = decode_frame(link, frame, d.p, d.c);
  return d;
}
/// Decodes a temporary frame, kept alive in the result.
Decoded decode(std::uint32_t link, Bytes&& frame) {
  Decoded d;
  d.owned = std::make_unique<const Bytes>(std::move(frame));
  d.r = decode_frame(link, *d.owned, d.p, d.c);
  return d;
}

/// Every counter is zero except the listed ones, which have the listed values.
void expect_counters(const Counters& c, std::initializer_list<std::pair<Counter, std::uint64_t>> want) {
  for (unsigned i = 0; i < kCounterCount; ++i) {
    std::uint64_t w = 0;
    for (const auto& [k, v] : want)
      if (k == i) w = v;
    EXPECT_EQ(c.v[i], w) << "counter " << kCounterInfo[i].name;
  }
}

/// All fields but `tunnels` equal; the spans equal by content.
void expect_same_packet(const Packet& a, const Packet& b) {
  EXPECT_TRUE(a.src == b.src);
  EXPECT_TRUE(a.dst == b.dst);
  EXPECT_EQ(a.proto, b.proto);
  EXPECT_EQ(a.vlans, b.vlans);
  EXPECT_EQ(a.sport, b.sport);
  EXPECT_EQ(a.dport, b.dport);
  EXPECT_EQ(a.frag_id, b.frag_id);
  EXPECT_EQ(a.frag_offset, b.frag_offset);
  EXPECT_EQ(a.frag_more, b.frag_more);
  EXPECT_EQ(a.tcp_seq, b.tcp_seq);
  EXPECT_EQ(a.tcp_flags, b.tcp_flags);
  EXPECT_EQ(to_bytes(a.l4), to_bytes(b.l4));
  EXPECT_EQ(to_bytes(a.payload), to_bytes(b.payload));
}

// ---- counters table ------------------------------------------------------------------------

TEST(DecodeCounters, TableIsComplete) {
  std::set<std::string_view> names;
  for (const CounterInfo& ci : kCounterInfo) {
    EXPECT_FALSE(ci.name.empty());
    EXPECT_FALSE(ci.help.empty()) << ci.name;
    EXPECT_TRUE(names.insert(ci.name).second) << "duplicate " << ci.name;
  }
  EXPECT_EQ(kCounterInfo[kC_frames].name, "frames");
  EXPECT_EQ(kCounterInfo[kC_udp].name, "udp");
  EXPECT_EQ(kCounterInfo[kC_l4_other].name, "l4_other");
  std::set<std::string_view> rnames;
  for (const CounterInfo& ci : kReassemblyCounterInfo) {
    EXPECT_FALSE(ci.help.empty()) << ci.name;
    EXPECT_TRUE(rnames.insert(ci.name).second) << "duplicate " << ci.name;
  }
  EXPECT_EQ(kReassemblyCounterInfo[kR_tcp_gaps].name, "tcp_gaps");
}

TEST(DecodeCounters, SumAcrossLanes) {
  Counters a, b;
  a.inc(kC_udp, 3);
  b.inc(kC_udp);
  b.inc(kC_tcp, 2);
  a += b;
  EXPECT_EQ(a[kC_udp], 4u);
  EXPECT_EQ(a[kC_tcp], 2u);
  EXPECT_EQ(b[kC_udp], 1u);
}

// ---- addresses -----------------------------------------------------------------------------

TEST(DecodeAddr, ParseAndFormat) {
  IpAddr a;
  ASSERT_TRUE(parse_ip("192.0.2.1", a));
  EXPECT_TRUE(a == addr4(kA4));
  EXPECT_EQ(format_endpoint(a), "192.0.2.1");
  EXPECT_EQ(format_endpoint(a, 5060), "192.0.2.1:5060");
  ASSERT_TRUE(parse_ip("2001:db8::1", a));
  EXPECT_TRUE(a == addr6(kA6));
  EXPECT_EQ(format_endpoint(a, 5060), "[2001:db8::1]:5060");
  EXPECT_EQ(format_endpoint(a), "2001:db8::1");
  ASSERT_TRUE(parse_ip("::ffff:192.0.2.1", a));  // IPv4-mapped: the IPv4 endpoint
  EXPECT_TRUE(a == addr4(kA4));
  EXPECT_FALSE(parse_ip("", a));
  EXPECT_FALSE(parse_ip("example.com", a));
  EXPECT_FALSE(parse_ip("192.0.2.256", a));
  EXPECT_FALSE(parse_ip(std::string(100, '1'), a));
  ASSERT_TRUE(parse_ip("0.0.0.0", a));
  EXPECT_TRUE(a.is_unspecified());
  ASSERT_TRUE(parse_ip("::", a));
  EXPECT_TRUE(a.is_unspecified());
  EXPECT_FALSE(addr6(kA6).is_unspecified());
  EXPECT_NE(EndpointHash{}(Endpoint{addr4(kA4), 5060}), EndpointHash{}(Endpoint{addr4(kA4), 5061}));
}

// ---- Ethernet, IP, UDP, TCP ----------------------------------------------------------------

TEST(Decode, EthernetIpv4Udp) {
  const Bytes f = eth(0x0800, udp4());
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_TRUE(d.p.src == addr4(kA4));
  EXPECT_TRUE(d.p.dst == addr4(kB4));
  EXPECT_EQ(d.p.proto, 17);
  EXPECT_EQ(d.p.sport, 5060);
  EXPECT_EQ(d.p.dport, 5062);
  EXPECT_EQ(d.p.vlans, 0);
  EXPECT_EQ(d.p.tunnels, 0);
  EXPECT_EQ(d.p.payload.data(), f.data() + 14 + 20 + 8);  // a view, not a copy
  EXPECT_EQ(to_bytes(d.p.payload), kSipPayload);
  EXPECT_EQ(d.p.l4.data(), f.data() + 34);
  EXPECT_EQ(d.p.l4.size(), 8 + kSipPayload.size());
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv4, 1}, {kC_udp, 1}});
}

TEST(Decode, EthernetIpv6TcpWithOptions) {
  const Bytes f = eth(0x86DD, tcp6());
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_TRUE(d.p.src == addr6(kA6));
  EXPECT_TRUE(d.p.dst == addr6(kB6));
  EXPECT_EQ(d.p.proto, 6);
  EXPECT_EQ(d.p.sport, 49152);
  EXPECT_EQ(d.p.dport, 5060);
  EXPECT_EQ(d.p.tcp_seq, 0x01020304u);
  EXPECT_EQ(d.p.tcp_flags, 0x18);
  EXPECT_EQ(d.p.payload.data(), f.data() + 14 + 40 + 32);  // 12 bytes of options skipped
  EXPECT_EQ(to_bytes(d.p.payload), kSipPayload);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_tcp, 1}});
}

TEST(Decode, TcpFlagsAndEmptyPayload) {
  const Bytes f = eth(0x0800, ipv4(kA4, kB4, 6, tcp(1, 2, 0xFFFFFFFFu, kTcpSyn, {})));
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_EQ(d.p.tcp_flags, kTcpSyn);
  EXPECT_EQ(d.p.tcp_seq, 0xFFFFFFFFu);
  EXPECT_TRUE(d.p.payload.empty());
}

TEST(Decode, Ipv4OptionsSkipped) {
  V4Opts o;
  o.ihl = 7;
  const Bytes f = eth(0x0800, ipv4(kA4, kB4, 17, udp(1000, 2000, kSipPayload), o));
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.p.payload.data(), f.data() + 14 + 28 + 8);
  EXPECT_EQ(d.p.sport, 1000);
}

TEST(Decode, EthernetPaddingTrimmedIpv4) {
  // A 4-byte UDP payload: 46 bytes of IP and UDP, padded to the 60-byte Ethernet minimum.
  Bytes f = eth(0x0800, ipv4(kA4, kB4, 17, udp(7078, 7080, text("abcd"))));
  ASSERT_EQ(f.size(), 46u);
  while (f.size() < 60) put8(f, 0xEE);
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(to_bytes(d.p.payload), text("abcd"));
  EXPECT_EQ(d.p.l4.size(), 12u);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv4, 1}, {kC_udp, 1}});
}

TEST(Decode, EthernetPaddingTrimmedIpv6) {
  Bytes f = eth(0x86DD, ipv6(kA6, kB6, 17, udp(7078, 7080, text("xy"))));
  for (int i = 0; i < 16; ++i) put8(f, 0xEE);
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(to_bytes(d.p.payload), text("xy"));
  EXPECT_EQ(d.p.l4.size(), 10u);
}

TEST(Decode, UdpLengthShorterThanIpPayloadIsTrusted) {
  // The UDP length says 3 bytes of payload, the IP packet carries 6 (padding inside IP).
  const Bytes f = eth(0x0800, ipv4(kA4, kB4, 17, udp(1, 2, text("abcdef"), 11)));
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(to_bytes(d.p.payload), text("abc"));
}

TEST(Decode, NotIp) {
  Bytes arp = filler(28);
  Decoded d = decode(kLinkEthernet, eth(0x0806, arp));
  EXPECT_EQ(d.r, Result::kNotIp);
  expect_counters(d.c, {{kC_frames, 1}, {kC_not_ip, 1}});
  // 802.3 length field (LLC/STP)
  d = decode(kLinkEthernet, eth(0x0026, filler(38)));
  EXPECT_EQ(d.r, Result::kNotIp);
  expect_counters(d.c, {{kC_frames, 1}, {kC_not_ip, 1}});
  // LLDP behind a VLAN tag
  d = decode(kLinkEthernet, eth(0x88CC, filler(20), {{0x8100, 5}}));
  EXPECT_EQ(d.r, Result::kNotIp);
  expect_counters(d.c, {{kC_frames, 1}, {kC_vlan_tags, 1}, {kC_not_ip, 1}});
}

TEST(Decode, OtherL4) {
  const Bytes icmp = filler(16);
  const Bytes f = eth(0x0800, ipv4(kA4, kB4, 1, icmp));
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kOtherL4);
  EXPECT_EQ(d.p.proto, 1);
  EXPECT_EQ(to_bytes(d.p.l4), icmp);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv4, 1}, {kC_l4_other, 1}});
  const Decoded d6 = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 132, icmp)));  // SCTP
  EXPECT_EQ(d6.r, Result::kOtherL4);
  EXPECT_EQ(d6.p.proto, 132);
  expect_counters(d6.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_l4_other, 1}});
}

// ---- VLAN ----------------------------------------------------------------------------------

TEST(DecodeVlan, SingleQinQAndOldQinQ) {
  const Bytes bare = eth(0x0800, udp4());
  const Decoded ref = decode(kLinkEthernet, bare);
  ASSERT_EQ(ref.r, Result::kUdp);
  for (unsigned outer : {0x8100u, 0x88A8u, 0x9100u}) {
    const Bytes one = eth(0x0800, udp4(), {{outer, 100}});
    Decoded d = decode(kLinkEthernet, one);
    ASSERT_EQ(d.r, Result::kUdp) << outer;
    EXPECT_EQ(d.p.vlans, 1);
    EXPECT_EQ(to_bytes(d.p.payload), kSipPayload);
    expect_counters(d.c, {{kC_frames, 1}, {kC_vlan_tags, 1}, {kC_ipv4, 1}, {kC_udp, 1}});
    const Bytes two = eth(0x0800, udp4(), {{outer, 100}, {0x8100, 200}});
    d = decode(kLinkEthernet, two);
    ASSERT_EQ(d.r, Result::kUdp) << outer;
    EXPECT_EQ(d.p.vlans, 2);
    EXPECT_EQ(d.c[kC_vlan_tags], 2u);
    Packet p = d.p;
    p.vlans = 0;
    expect_same_packet(p, ref.p);
  }
}

TEST(DecodeVlan, FourTagsFollowedFifthRejected) {
  const Bytes four = eth(0x86DD, tcp6(), {{0x88A8, 1}, {0x8100, 2}, {0x8100, 3}, {0x8100, 4}});
  Decoded d = decode(kLinkEthernet, four);
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_EQ(d.p.vlans, 4);
  const Bytes five = eth(0x86DD, tcp6(), {{0x88A8, 1}, {0x8100, 2}, {0x8100, 3}, {0x8100, 4}, {0x8100, 5}});
  d = decode(kLinkEthernet, five);
  EXPECT_EQ(d.r, Result::kBad);
  expect_counters(d.c, {{kC_frames, 1}, {kC_vlan_tags, 4}, {kC_vlan_too_deep, 1}});
}

TEST(DecodeVlan, TruncatedTag) {
  Bytes f = eth(0x8100, {});
  put16(f, 0x0064);  // TCI but no inner ethertype
  const Decoded d = decode(kLinkEthernet, f);
  EXPECT_EQ(d.r, Result::kBad);
  expect_counters(d.c, {{kC_frames, 1}, {kC_link_truncated, 1}});
}

// ---- other link types ----------------------------------------------------------------------

TEST(DecodeLink, SllAndSll2) {
  const Decoded ref = decode(kLinkEthernet, eth(0x0800, udp4()));
  const Bytes f1 = sll(0x0800, udp4());
  Decoded d = decode(kLinkSll, f1);
  ASSERT_EQ(d.r, Result::kUdp);
  expect_same_packet(d.p, ref.p);
  EXPECT_EQ(d.p.payload.data(), f1.data() + 16 + 28);
  const Bytes f2 = sll2(0x0800, udp4());
  d = decode(kLinkSll2, f2);
  ASSERT_EQ(d.r, Result::kUdp);
  expect_same_packet(d.p, ref.p);
  EXPECT_EQ(d.p.payload.data(), f2.data() + 20 + 28);
  // VLAN tags that the kernel left in the payload (SLL protocol 0x8100)
  d = decode(kLinkSll, sll(0x8100, [] {
               Bytes b;
               put16(b, 42);
               put16(b, 0x86DD);
               append(b, tcp6());
               return b;
             }()));
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_EQ(d.p.vlans, 1);
  d = decode(kLinkSll2, sll2(0x0806, filler(28)));
  EXPECT_EQ(d.r, Result::kNotIp);
}

TEST(DecodeLink, NullAndLoop) {
  const Decoded ref4 = decode(kLinkEthernet, eth(0x0800, udp4()));
  const Decoded ref6 = decode(kLinkEthernet, eth(0x86DD, tcp6()));
  for (bool big : {false, true}) {
    Decoded d = decode(kLinkNull, null_hdr(2, big, udp4()));
    ASSERT_EQ(d.r, Result::kUdp) << big;
    expect_same_packet(d.p, ref4.p);
    for (std::uint32_t fam : {24u, 28u, 30u, 10u}) {
      d = decode(kLinkNull, null_hdr(fam, big, tcp6()));
      ASSERT_EQ(d.r, Result::kTcp) << fam << " " << big;
      expect_same_packet(d.p, ref6.p);
    }
    d = decode(kLinkNull, null_hdr(7, big, udp4()));
    EXPECT_EQ(d.r, Result::kNotIp);
    expect_counters(d.c, {{kC_frames, 1}, {kC_not_ip, 1}});
  }
  Decoded d = decode(kLinkLoop, null_hdr(2, true, udp4()));
  ASSERT_EQ(d.r, Result::kUdp);
  expect_same_packet(d.p, ref4.p);
  d = decode(kLinkLoop, null_hdr(24, true, tcp6()));
  ASSERT_EQ(d.r, Result::kTcp);
  expect_same_packet(d.p, ref6.p);
}

TEST(DecodeLink, RawIp) {
  const Decoded ref4 = decode(kLinkEthernet, eth(0x0800, udp4()));
  const Decoded ref6 = decode(kLinkEthernet, eth(0x86DD, tcp6()));
  for (std::uint32_t link : {kLinkRaw, kLinkRawDlt12, kLinkRawDlt14}) {
    Decoded d = decode(link, udp4());
    ASSERT_EQ(d.r, Result::kUdp) << link;
    expect_same_packet(d.p, ref4.p);
    d = decode(link, tcp6());
    ASSERT_EQ(d.r, Result::kTcp) << link;
    expect_same_packet(d.p, ref6.p);
    d = decode(link, Bytes{});
    EXPECT_EQ(d.r, Result::kBad);
    expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
    Bytes v7 = udp4();
    v7[0] = static_cast<std::byte>(0x75);
    d = decode(link, v7);
    EXPECT_EQ(d.r, Result::kBad);
    expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
  }
  Decoded d = decode(kLinkIpv4, udp4());
  ASSERT_EQ(d.r, Result::kUdp);
  expect_same_packet(d.p, ref4.p);
  d = decode(kLinkIpv6, tcp6());
  ASSERT_EQ(d.r, Result::kTcp);
  expect_same_packet(d.p, ref6.p);
  d = decode(kLinkIpv4, tcp6());  // the link type says IPv4: the version nibble must agree
  EXPECT_EQ(d.r, Result::kBad);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
  d = decode(kLinkIpv6, udp4());
  EXPECT_EQ(d.r, Result::kBad);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
}

TEST(DecodeLink, UnknownLinkType) {
  for (std::uint32_t link : {2u, 105u, 127u, 0xFFFFFFFFu}) {
    const Decoded d = decode(link, eth(0x0800, udp4()));
    EXPECT_EQ(d.r, Result::kBad);
    expect_counters(d.c, {{kC_frames, 1}, {kC_link_unknown, 1}});
  }
}

TEST(DecodeLink, TruncatedLinkHeaders) {
  const struct {
    std::uint32_t link;
    std::size_t need;
    Bytes frame;
  } cases[] = {
      {kLinkEthernet, 14, eth(0x0800, udp4())},
      {kLinkSll, 16, sll(0x0800, udp4())},
      {kLinkSll2, 20, sll2(0x0800, udp4())},
      {kLinkNull, 4, null_hdr(2, false, udp4())},
      {kLinkLoop, 4, null_hdr(2, true, udp4())},
  };
  for (const auto& cs : cases) {
    for (std::size_t n = 0; n < cs.need; ++n) {
      const Bytes f(cs.frame.begin(), cs.frame.begin() + static_cast<std::ptrdiff_t>(n));
      const Decoded d = decode(cs.link, f);
      EXPECT_EQ(d.r, Result::kBad) << cs.link << " " << n;
      expect_counters(d.c, {{kC_frames, 1}, {kC_link_truncated, 1}});
    }
    // The header alone: it is the IP layer that is truncated now.
    const Bytes f(cs.frame.begin(), cs.frame.begin() + static_cast<std::ptrdiff_t>(cs.need));
    const Decoded d = decode(cs.link, f);
    EXPECT_EQ(d.r, Result::kBad);
    expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
  }
}

// ---- IPv4 errors and fragments -------------------------------------------------------------

TEST(DecodeIpv4, LyingAndTruncatedHeaders) {
  auto bad = [](const Bytes& ip, const char* what) {
    const Decoded d = decode(kLinkEthernet, eth(0x0800, ip));
    EXPECT_EQ(d.r, Result::kBad) << what;
    expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
  };
  const Bytes good = udp4();
  bad(Bytes(good.begin(), good.begin() + 19), "shorter than 20 bytes");
  V4Opts o;
  o.version = 6;
  bad(ipv4(kA4, kB4, 17, udp(1, 2, kSipPayload), o), "version 6 behind ethertype IPv4");
  o = {};
  o.ihl = 4;
  bad(ipv4(kA4, kB4, 17, udp(1, 2, kSipPayload), o), "IHL below 5");
  o = {};
  o.total = 19;
  bad(ipv4(kA4, kB4, 17, udp(1, 2, kSipPayload), o), "total length below the header");
  o = {};
  o.total = static_cast<int>(20 + 8 + kSipPayload.size() + 1);
  bad(ipv4(kA4, kB4, 17, udp(1, 2, kSipPayload), o), "total length above the bytes (snap length)");
  o = {};
  o.ihl = 15;  // 60 bytes of header, but total says 40
  o.total = 40;
  bad(ipv4(kA4, kB4, 17, {}, o), "IHL beyond the total length");
  // Truncated anywhere inside the datagram: the total length lies.
  for (std::size_t n = 20; n < good.size(); n += 7) bad(Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)), "cut");
}

TEST(DecodeIpv4, Fragments) {
  const Bytes part = filler(1480);
  V4Opts o;
  o.id = 0xBEEF;
  o.frag = 0x2000;  // MF, offset 0
  const Bytes f0 = eth(0x0800, ipv4(kA4, kB4, 17, part, o));
  Decoded d = decode(kLinkEthernet, f0);
  ASSERT_EQ(d.r, Result::kFragment);
  EXPECT_EQ(d.p.frag_id, 0xBEEFu);
  EXPECT_EQ(d.p.frag_offset, 0u);
  EXPECT_TRUE(d.p.frag_more);
  EXPECT_EQ(d.p.proto, 17);
  EXPECT_TRUE(d.p.src == addr4(kA4));
  EXPECT_EQ(d.p.l4.data(), f0.data() + 34);
  EXPECT_EQ(to_bytes(d.p.l4), part);
  EXPECT_EQ(d.p.sport, 0);  // not decoded: the UDP header is the reassembler's business
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv4, 1}, {kC_ip_fragments, 1}});

  o.frag = 0x2000 | 185;  // MF, offset 1480
  d = decode(kLinkEthernet, eth(0x0800, ipv4(kA4, kB4, 17, part, o)));
  ASSERT_EQ(d.r, Result::kFragment);
  EXPECT_EQ(d.p.frag_offset, 1480u);
  EXPECT_TRUE(d.p.frag_more);

  o.frag = 0x4000 | 370;  // DF is ignored; last fragment at 2960
  d = decode(kLinkEthernet, eth(0x0800, ipv4(kA4, kB4, 17, filler(100), o)));
  ASSERT_EQ(d.r, Result::kFragment);
  EXPECT_EQ(d.p.frag_offset, 2960u);
  EXPECT_FALSE(d.p.frag_more);
  EXPECT_EQ(d.p.l4.size(), 100u);

  o.frag = 0x4000;  // DF alone: a whole datagram
  d = decode(kLinkEthernet, eth(0x0800, ipv4(kA4, kB4, 17, udp(1, 2, kSipPayload), o)));
  EXPECT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.c[kC_ip_fragments], 0u);
}

// ---- IPv6 errors, extension headers, fragments ---------------------------------------------

TEST(DecodeIpv6, LyingAndTruncatedHeaders) {
  auto bad = [](const Bytes& ip, const char* what) {
    const Decoded d = decode(kLinkEthernet, eth(0x86DD, ip));
    EXPECT_EQ(d.r, Result::kBad) << what;
    expect_counters(d.c, {{kC_frames, 1}, {kC_ip_bad, 1}});
  };
  const Bytes good = tcp6();
  bad(Bytes(good.begin(), good.begin() + 39), "shorter than 40 bytes");
  bad(ipv6(kA6, kB6, 17, udp(1, 2, kSipPayload), -1, 4), "version 4 behind ethertype IPv6");
  bad(ipv6(kA6, kB6, 17, udp(1, 2, kSipPayload), 0), "payload length 0 (jumbogram)");
  bad(ipv6(kA6, kB6, 17, udp(1, 2, kSipPayload), static_cast<int>(8 + kSipPayload.size() + 1)), "payload length lies");
  bad(Bytes(good.begin(), good.end() - 1), "cut by one byte");
}

TEST(DecodeIpv6, ExtensionHeadersWalked) {
  const Decoded ref = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 17, udp(5060, 5062, kSipPayload))));
  ASSERT_EQ(ref.r, Result::kUdp);
  // hop-by-hop(0) -> routing(43, 24 bytes) -> destination options(60) -> AH(51) -> UDP
  Bytes chain = ext6(43);
  append(chain, ext6(60, 2));
  append(chain, ext6(51));
  append(chain, ah6(17));
  append(chain, udp(5060, 5062, kSipPayload));
  const Bytes f = eth(0x86DD, ipv6(kA6, kB6, 0, chain));
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  expect_same_packet(d.p, ref.p);
  EXPECT_EQ(d.p.payload.data(), f.data() + 14 + 40 + 8 + 24 + 8 + 24 + 8);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_udp, 1}});
  // Mobility(135), HIP(139), shim6(140) have the same shape.
  Bytes other = ext6(139);
  append(other, ext6(140));
  append(other, ext6(6));
  append(other, tcp(1, 2, 3, 0x10, text("x")));
  const Decoded d2 = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 135, other)));
  ASSERT_EQ(d2.r, Result::kTcp);
  EXPECT_EQ(to_bytes(d2.p.payload), text("x"));
}

TEST(DecodeIpv6, ExtensionChainBounds) {
  // Eight options headers are followed; a ninth makes the chain too long.
  for (unsigned n : {8u, 9u, 20u}) {
    Bytes chain;
    for (unsigned i = 0; i < n; ++i) append(chain, ext6(i + 1 == n ? 17 : 60));
    append(chain, udp(1, 2, kSipPayload));
    const Decoded d = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 60, chain)));
    if (n == 8) {
      EXPECT_EQ(d.r, Result::kUdp);
    } else {
      EXPECT_EQ(d.r, Result::kBad) << n;
      expect_counters(d.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_ipv6_ext_bad, 1}});
    }
  }
  auto bad = [](const Bytes& chain, const char* what) {
    const Decoded d = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 0, chain)));
    EXPECT_EQ(d.r, Result::kBad) << what;
    expect_counters(d.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_ipv6_ext_bad, 1}});
  };
  Bytes hdr = ext6(17, 3);  // 32 bytes announced
  bad(Bytes(hdr.begin(), hdr.begin() + 16), "options header longer than the packet");
  bad(Bytes(hdr.begin(), hdr.begin() + 6), "options header shorter than 8 bytes");
  Bytes ah = ext6(51);
  const Bytes full_ah = ah6(17);
  append(ah, Bytes(full_ah.begin(), full_ah.begin() + 12));
  bad(ah, "AH longer than the packet");
  Bytes fr = ext6(44);
  append(fr, Bytes{std::byte{17}, std::byte{0}, std::byte{0}});
  bad(fr, "fragment header cut");
}

TEST(DecodeIpv6, FragmentHeader) {
  const Bytes part = filler(1232);
  Bytes first = frag6(17, 0, true, 0xCAFEF00D);
  append(first, part);
  const Bytes f = eth(0x86DD, ipv6(kA6, kB6, 44, first));
  Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kFragment);
  EXPECT_EQ(d.p.proto, 17);  // the header after the fragment header
  EXPECT_EQ(d.p.frag_id, 0xCAFEF00Du);
  EXPECT_EQ(d.p.frag_offset, 0u);
  EXPECT_TRUE(d.p.frag_more);
  EXPECT_EQ(d.p.l4.data(), f.data() + 14 + 40 + 8);
  EXPECT_EQ(to_bytes(d.p.l4), part);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_ip_fragments, 1}});

  // A later fragment behind a hop-by-hop header.
  Bytes later = ext6(44);
  append(later, frag6(17, 1232, false, 0xCAFEF00D));
  append(later, filler(10));
  d = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 0, later)));
  ASSERT_EQ(d.r, Result::kFragment);
  EXPECT_EQ(d.p.frag_offset, 1232u);
  EXPECT_FALSE(d.p.frag_more);
  EXPECT_EQ(d.p.l4.size(), 10u);

  // An atomic fragment (offset 0, M clear, RFC 6946) is a whole packet.
  Bytes atomic = frag6(17, 0, false, 7);
  append(atomic, udp(5060, 5062, kSipPayload));
  d = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 44, atomic)));
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(to_bytes(d.p.payload), kSipPayload);
  EXPECT_EQ(d.c[kC_ip_fragments], 0u);
}

// ---- UDP and TCP errors --------------------------------------------------------------------

TEST(DecodeL4, TruncatedAndLyingLengths) {
  auto bad4 = [](unsigned proto, const Bytes& l4, const char* what) {
    const Decoded d = decode(kLinkEthernet, eth(0x0800, ipv4(kA4, kB4, proto, l4)));
    EXPECT_EQ(d.r, Result::kBad) << what;
    expect_counters(d.c, {{kC_frames, 1}, {kC_ipv4, 1}, {kC_l4_bad, 1}});
  };
  const Bytes u = udp(1, 2, kSipPayload);
  bad4(17, Bytes(u.begin(), u.begin() + 7), "UDP header cut");
  bad4(17, udp(1, 2, kSipPayload, 7), "UDP length below 8");
  bad4(17, udp(1, 2, kSipPayload, static_cast<int>(kSipPayload.size() + 9)), "UDP length above the IP payload");
  const Bytes t = tcp(1, 2, 3, 0x18, kSipPayload);
  bad4(6, Bytes(t.begin(), t.begin() + 19), "TCP header cut");
  Bytes small_off = t;
  small_off[12] = static_cast<std::byte>(4 << 4);
  bad4(6, small_off, "TCP data offset below 5");
  const Bytes opts = tcp(1, 2, 3, 0x18, {}, 10);  // 60-byte header
  bad4(6, Bytes(opts.begin(), opts.begin() + 40), "TCP data offset beyond the segment");
  // The same over IPv6.
  const Decoded d = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 17, udp(1, 2, {}, 9))));
  EXPECT_EQ(d.r, Result::kBad);
  expect_counters(d.c, {{kC_frames, 1}, {kC_ipv6, 1}, {kC_l4_bad, 1}});
}

TEST(DecodeL4, DecodeL4OnReassembledBytes) {
  Packet p;
  Counters c;
  p.proto = 17;
  const Bytes u = udp(5060, 5060, kSipPayload);
  ASSERT_EQ(decode_l4(u, p, c, 0), Result::kUdp);
  EXPECT_EQ(to_bytes(p.payload), kSipPayload);
  p.proto = 50;  // ESP
  EXPECT_EQ(decode_l4(u, p, c, 0), Result::kOtherL4);
  EXPECT_EQ(c[kC_l4_other], 1u);
}

// ---- tunnels -------------------------------------------------------------------------------

/// Outer Ethernet + IPv4 (10.0.0.1 -> 10.0.0.2) carrying IP protocol `proto`.
Bytes outer4(unsigned proto, const Bytes& payload) { return eth(0x0800, ipv4(kO1, kO2, proto, payload)); }

struct Inner {
  const char* name;
  Bytes frame;  ///< an Ethernet frame
};
std::vector<Inner> inner_frames() {
  V4Opts frag;
  frag.frag = 0x2000;
  frag.id = 99;
  return {
      {"udp4", eth(0x0800, udp4())},
      {"tcp6", eth(0x86DD, tcp6())},
      {"udp4 vlan", eth(0x0800, udp4(), {{0x8100, 300}})},
      {"fragment", eth(0x0800, ipv4(kA4, kB4, 17, filler(64), frag))},
  };
}

void expect_tunnelled(const Bytes& outer, const Bytes& inner_frame, unsigned tunnels, Counter tunnel_counter,
                      const char* what) {
  SCOPED_TRACE(what);
  const Decoded bare = decode(kLinkEthernet, inner_frame);
  const Decoded d = decode(kLinkEthernet, outer);
  ASSERT_EQ(d.r, bare.r);
  EXPECT_EQ(bare.p.tunnels, 0);
  EXPECT_EQ(d.p.tunnels, tunnels);
  expect_same_packet(d.p, bare.p);
  EXPECT_TRUE(within(d.p.payload, outer));
  EXPECT_TRUE(within(d.p.l4, outer));
  EXPECT_EQ(d.c[tunnel_counter], tunnels);
  EXPECT_EQ(d.c[kC_tunnel_bad], 0u);
  EXPECT_EQ(d.c[kC_tunnel_too_deep], 0u);
}

TEST(DecodeTunnel, GreTeb) {
  for (const Inner& in : inner_frames()) {
    for (unsigned flags : {0x0000u, 0x2000u, 0xB000u}) {
      expect_tunnelled(outer4(47, gre(0x6558, in.frame, flags)), in.frame, 1, kC_tunnel_gre, in.name);
    }
  }
}

TEST(DecodeTunnel, GreIp) {
  const Bytes ip4 = udp4();
  const Decoded bare4 = decode(kLinkRaw, ip4);
  Decoded d = decode(kLinkEthernet, outer4(47, gre(0x0800, ip4, 0x2000)));
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.p.tunnels, 1);
  expect_same_packet(d.p, bare4.p);
  const Bytes ip6 = tcp6();
  const Decoded bare6 = decode(kLinkRaw, ip6);
  d = decode(kLinkEthernet, eth(0x86DD, ipv6(kA6, kB6, 47, gre(0x86DD, ip6))));
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_EQ(d.p.tunnels, 1);
  expect_same_packet(d.p, bare6.p);
  EXPECT_EQ(d.c[kC_tunnel_gre], 1u);
}

TEST(DecodeTunnel, IpInIp) {
  const Decoded bare4 = decode(kLinkRaw, udp4());
  Decoded d = decode(kLinkEthernet, outer4(4, udp4()));
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.p.tunnels, 1);
  expect_same_packet(d.p, bare4.p);
  const Decoded bare6 = decode(kLinkRaw, tcp6());
  d = decode(kLinkEthernet, outer4(41, tcp6()));
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_EQ(d.p.tunnels, 1);
  expect_same_packet(d.p, bare6.p);
}

TEST(DecodeTunnel, ErspanTypeI) {
  for (const Inner& in : inner_frames())
    expect_tunnelled(outer4(47, gre(0x88BE, in.frame)), in.frame, 1, kC_tunnel_erspan, in.name);
}

TEST(DecodeTunnel, ErspanTypeII) {
  for (const Inner& in : inner_frames())
    expect_tunnelled(outer4(47, gre(0x88BE, erspan2(in.frame), 0x1000)), in.frame, 1, kC_tunnel_erspan, in.name);
}

TEST(DecodeTunnel, ErspanTypeIII) {
  for (const Inner& in : inner_frames()) {
    expect_tunnelled(outer4(47, gre(0x22EB, erspan3(in.frame, false), 0x1000)), in.frame, 1, kC_tunnel_erspan,
                     in.name);
    expect_tunnelled(outer4(47, gre(0x22EB, erspan3(in.frame, true), 0x1000)), in.frame, 1, kC_tunnel_erspan,
                     in.name);
  }
}

TEST(DecodeTunnel, Vxlan) {
  for (const Inner& in : inner_frames()) {
    expect_tunnelled(outer4(17, udp(49999, 4789, vxlan(in.frame))), in.frame, 1, kC_tunnel_vxlan, in.name);
    expect_tunnelled(eth(0x86DD, ipv6(kA6, kB6, 17, udp(49999, 4789, vxlan(in.frame)))), in.frame, 1,
                     kC_tunnel_vxlan, in.name);
  }
}

TEST(DecodeTunnel, VxlanOnlyOnPort4789WithIFlag) {
  const Bytes in = eth(0x0800, udp4());
  const Bytes other_port = outer4(17, udp(49999, 4790, vxlan(in)));
  Decoded d = decode(kLinkEthernet, other_port);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.p.dport, 4790);
  EXPECT_EQ(d.p.tunnels, 0);
  const Bytes no_i = outer4(17, udp(49999, 4789, vxlan(in, 0x00)));
  d = decode(kLinkEthernet, no_i);
  ASSERT_EQ(d.r, Result::kUdp);  // plain UDP to 4789
  EXPECT_EQ(d.p.dport, 4789);
  EXPECT_EQ(d.c[kC_tunnel_vxlan], 0u);
  d = decode(kLinkEthernet, outer4(17, udp(49999, 4789, text("\x08short"))));
  ASSERT_EQ(d.r, Result::kUdp);  // under 8 bytes: not VXLAN
  EXPECT_EQ(d.c[kC_tunnel_vxlan], 0u);
  // VXLAN whose inner frame is cut: the inner Ethernet layer reports it.
  Bytes cut = vxlan(in);
  cut.resize(8 + 10);
  d = decode(kLinkEthernet, outer4(17, udp(49999, 4789, cut)));
  EXPECT_EQ(d.r, Result::kBad);
  EXPECT_EQ(d.c[kC_tunnel_vxlan], 1u);
  EXPECT_EQ(d.c[kC_link_truncated], 1u);
}

TEST(DecodeTunnel, VxlanInsideGreInsideVlan) {
  const Bytes in = eth(0x86DD, tcp6());
  const Bytes f = eth(0x0800, ipv4(kO1, kO2, 47, gre(0x6558, eth(0x0800, ipv4(kO2, kO1, 17, udp(1, 4789, vxlan(in)))))),
                      {{0x8100, 10}});
  const Decoded bare = decode(kLinkEthernet, in);
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kTcp);
  EXPECT_EQ(d.p.tunnels, 2);
  EXPECT_EQ(d.p.vlans, 1);
  Packet p = d.p;
  p.vlans = 0;
  expect_same_packet(p, bare.p);
}

TEST(DecodeTunnel, BadHeaders) {
  const Bytes in = eth(0x0800, udp4());
  auto bad = [](const Bytes& f, std::initializer_list<std::pair<Counter, std::uint64_t>> want, const char* what) {
    SCOPED_TRACE(what);
    const Decoded d = decode(kLinkEthernet, f);
    EXPECT_EQ(d.r, Result::kBad);
    expect_counters(d.c, want);
  };
  bad(outer4(47, Bytes{std::byte{0}, std::byte{0}, std::byte{0x65}}), {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_bad, 1}},
      "GRE under 4 bytes");
  bad(outer4(47, gre(0x6558, in, 0x0001)), {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_bad, 1}}, "GRE version 1");
  bad(outer4(47, gre(0x6558, in, 0x4000)), {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_bad, 1}}, "GRE routing");
  bad(outer4(47, gre(0x1234, in)), {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_bad, 1}}, "GRE unknown protocol");
  Bytes short_key;
  put16(short_key, 0xB000);
  put16(short_key, 0x6558);
  put32(short_key, 0);
  bad(outer4(47, short_key), {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_bad, 1}}, "GRE optional fields cut");
  bad(outer4(47, gre(0x88BE, erspan2(in, 2), 0x1000)),
      {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_erspan, 1}, {kC_tunnel_bad, 1}}, "ERSPAN II wrong version");
  bad(outer4(47, gre(0x88BE, Bytes(7, std::byte{0x10}), 0x1000)),
      {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_erspan, 1}, {kC_tunnel_bad, 1}}, "ERSPAN II cut");
  bad(outer4(47, gre(0x22EB, erspan3(in, false, 1), 0x1000)),
      {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_erspan, 1}, {kC_tunnel_bad, 1}}, "ERSPAN III wrong version");
  const Bytes e3 = erspan3({}, true);
  bad(outer4(47, gre(0x22EB, Bytes(e3.begin(), e3.begin() + 11), 0x1000)),
      {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_erspan, 1}, {kC_tunnel_bad, 1}}, "ERSPAN III cut");
  bad(outer4(47, gre(0x22EB, Bytes(e3.begin(), e3.begin() + 16), 0x1000)),
      {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_erspan, 1}, {kC_tunnel_bad, 1}}, "ERSPAN III subheader cut");
  // The inner frame of a good tunnel is cut.
  bad(outer4(47, gre(0x6558, Bytes(in.begin(), in.begin() + 20))),
      {{kC_frames, 1}, {kC_ipv4, 1}, {kC_tunnel_gre, 1}, {kC_ip_bad, 1}}, "inner IP cut");
}

TEST(DecodeTunnel, TooDeep) {
  // Four GRE/TEB layers are followed, a fifth is refused.
  const Decoded bare = decode(kLinkEthernet, eth(0x0800, udp4()));
  Bytes f = eth(0x0800, udp4());
  for (unsigned depth = 1; depth <= 5; ++depth) {
    f = outer4(47, gre(0x6558, f));
    const Decoded d = decode(kLinkEthernet, f);
    if (depth <= kMaxDepth) {
      ASSERT_EQ(d.r, Result::kUdp) << depth;
      EXPECT_EQ(d.p.tunnels, depth);
      expect_same_packet(d.p, bare.p);
    } else {
      EXPECT_EQ(d.r, Result::kBad);
      EXPECT_EQ(d.c[kC_tunnel_too_deep], 1u);
      EXPECT_EQ(d.c[kC_tunnel_gre], kMaxDepth);
    }
  }
  // IP in IP the same.
  Bytes ip = udp4();
  for (unsigned depth = 1; depth <= 5; ++depth) {
    ip = ipv4(kO1, kO2, 4, ip);
    const Decoded d = decode(kLinkRaw, ip);
    if (depth <= kMaxDepth) {
      ASSERT_EQ(d.r, Result::kUdp) << depth;
      EXPECT_EQ(d.p.tunnels, depth);
    } else {
      EXPECT_EQ(d.r, Result::kBad);
      EXPECT_EQ(d.c[kC_tunnel_too_deep], 1u);
    }
  }
  // A mix of ERSPAN, VXLAN and IPv6-in-IPv4, five deep.
  Bytes m = eth(0x0800, udp4());
  m = outer4(47, gre(0x88BE, erspan2(m), 0x1000));
  m = outer4(17, udp(1, 4789, vxlan(m)));
  m = eth(0x86DD, ipv6(kA6, kB6, 47, gre(0x22EB, erspan3(m, true), 0x1000)));
  m = outer4(47, gre(0x6558, m));
  Decoded d = decode(kLinkEthernet, m);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.p.tunnels, 4);
  expect_same_packet(d.p, bare.p);
  m = outer4(47, gre(0x6558, m));
  d = decode(kLinkEthernet, m);
  EXPECT_EQ(d.r, Result::kBad);
  EXPECT_EQ(d.c[kC_tunnel_too_deep], 1u);
}

TEST(DecodeTunnel, FifthVxlanStaysUdp) {
  // VXLAN is recognised by port: past the depth limit it is left as a UDP datagram to 4789.
  Bytes f = eth(0x0800, udp4());
  for (unsigned i = 0; i < 5; ++i) f = outer4(17, udp(1, 4789, vxlan(f)));
  const Decoded d = decode(kLinkEthernet, f);
  ASSERT_EQ(d.r, Result::kUdp);
  EXPECT_EQ(d.p.tunnels, kMaxDepth);
  EXPECT_EQ(d.p.dport, 4789);
  EXPECT_EQ(d.c[kC_tunnel_vxlan], kMaxDepth);
}

// ---- IP reassembly -------------------------------------------------------------------------

class IpReassemblyTest : public ::testing::Test {
 protected:
  ReassemblyLimits lim_;
  ReassemblyCounters c_;

  /// A fragment of `datagram` (its IP payload) covering [begin, end).
  static Packet frag(const Bytes& datagram, std::uint32_t begin, std::uint32_t end, bool more, std::uint32_t id = 1,
                     const V4& src = kA4) {
    Packet p;
    p.src = addr4(src);
    p.dst = addr4(kB4);
    p.proto = 17;
    p.frag_id = id;
    p.frag_offset = begin;
    p.frag_more = more;
    p.l4 = std::span<const std::byte>(datagram).subspan(begin, end - begin);
    return p;
  }
};

TEST_F(IpReassemblyTest, InOrder) {
  IpReassembler r(lim_, c_);
  const Bytes dg = udp(5060, 5060, filler(3000));
  const std::uint32_t n = static_cast<std::uint32_t>(dg.size());
  EXPECT_TRUE(r.add(frag(dg, 0, 1480, true), 1).empty());
  EXPECT_EQ(r.pending(), 1u);
  EXPECT_GE(r.bytes(), 1480u);
  EXPECT_TRUE(r.add(frag(dg, 1480, 2960, true), 2).empty());
  const auto out = r.add(frag(dg, 2960, n, false), 3);
  ASSERT_EQ(out.size(), dg.size());
  EXPECT_EQ(to_bytes(out), dg);
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
  EXPECT_EQ(c_[kR_frag_reassembled], 1u);
  EXPECT_EQ(c_[kR_frag_duplicate], 0u);
}

TEST_F(IpReassemblyTest, ReverseOrder) {
  IpReassembler r(lim_, c_);
  const Bytes dg = udp(5060, 5060, filler(2000, 3));
  const std::uint32_t n = static_cast<std::uint32_t>(dg.size());
  EXPECT_TRUE(r.add(frag(dg, 1600, n, false), 1).empty());
  EXPECT_TRUE(r.add(frag(dg, 800, 1600, true), 1).empty());
  EXPECT_TRUE(r.add(frag(dg, 400, 800, true), 1).empty());
  const auto out = r.add(frag(dg, 0, 400, true), 1);
  EXPECT_EQ(to_bytes(out), dg);
  EXPECT_EQ(c_[kR_frag_reassembled], 1u);
}

TEST_F(IpReassemblyTest, DuplicatesAndSameByteOverlapsTolerated) {
  IpReassembler r(lim_, c_);
  const Bytes dg = filler(64, 5);
  EXPECT_TRUE(r.add(frag(dg, 0, 24, true), 1).empty());
  EXPECT_TRUE(r.add(frag(dg, 0, 24, true), 1).empty());   // exact duplicate
  EXPECT_TRUE(r.add(frag(dg, 16, 40, true), 1).empty());  // overlaps [16, 24) with the same bytes
  EXPECT_EQ(c_[kR_frag_duplicate], 2u);
  EXPECT_EQ(c_[kR_frag_overlap], 0u);
  const auto out = r.add(frag(dg, 40, 64, false), 1);
  EXPECT_EQ(to_bytes(out), dg);
  EXPECT_EQ(c_[kR_frag_reassembled], 1u);
  // A duplicate of the last fragment of a finished datagram starts a new one; it never completes.
  EXPECT_TRUE(r.add(frag(dg, 40, 64, false), 1).empty());
  EXPECT_EQ(r.pending(), 1u);
}

TEST_F(IpReassemblyTest, ConflictingOverlapDropsDatagram) {
  IpReassembler r(lim_, c_);
  const Bytes dg = filler(64, 1);
  Bytes other = dg;
  std::fill(other.begin() + 20, other.begin() + 21, std::byte{0xFF});  // not the byte filler() put there
  ASSERT_NE(dg[20], other[20]);
  EXPECT_TRUE(r.add(frag(dg, 0, 24, true), 1).empty());
  EXPECT_TRUE(r.add(frag(other, 16, 40, true), 1).empty());
  EXPECT_EQ(c_[kR_frag_overlap], 1u);
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
  // What follows cannot complete the dropped datagram.
  EXPECT_TRUE(r.add(frag(dg, 24, 64, false), 1).empty());
  EXPECT_EQ(c_[kR_frag_reassembled], 0u);
}

TEST_F(IpReassemblyTest, TwoDifferentEndsOrBytesPastTheEnd) {
  IpReassembler r(lim_, c_);
  const Bytes dg = filler(64);
  EXPECT_TRUE(r.add(frag(dg, 32, 64, false), 1).empty());
  EXPECT_TRUE(r.add(frag(dg, 32, 48, false), 1).empty());  // another end
  EXPECT_EQ(c_[kR_frag_overlap], 1u);
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_TRUE(r.add(frag(dg, 0, 48, true), 2).empty());
  EXPECT_TRUE(r.add(frag(dg, 32, 40, false), 2).empty());  // ends before bytes already held
  EXPECT_EQ(c_[kR_frag_overlap], 2u);
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_TRUE(r.add(frag(dg, 16, 32, false), 3).empty());
  EXPECT_TRUE(r.add(frag(dg, 24, 48, true), 3).empty());  // a middle fragment past the known end
  EXPECT_EQ(c_[kR_frag_too_big], 1u);
  EXPECT_EQ(r.pending(), 0u);
}

TEST_F(IpReassemblyTest, TooBigAndMisaligned) {
  IpReassembler r(lim_, c_);
  const Bytes big = filler(65536 + 64);
  EXPECT_TRUE(r.add(frag(big, 65528, 65544, false), 1).empty());
  EXPECT_EQ(c_[kR_frag_too_big], 1u);
  EXPECT_TRUE(r.add(frag(big, 65000, 65536, true), 1).empty());
  EXPECT_EQ(c_[kR_frag_too_big], 2u);
  EXPECT_TRUE(r.add(frag(big, 0, 100, true), 1).empty());  // a middle fragment not a multiple of 8
  EXPECT_EQ(c_[kR_frag_too_big], 3u);
  EXPECT_EQ(r.pending(), 0u);
  // Exactly 65,535 bytes is allowed.
  EXPECT_TRUE(r.add(frag(big, 0, 65528, true), 1).empty());
  const auto out = r.add(frag(big, 65528, 65535, false), 1);
  EXPECT_EQ(out.size(), 65535u);
  EXPECT_EQ(c_[kR_frag_reassembled], 1u);
}

TEST_F(IpReassemblyTest, TimeoutByPacketTime) {
  lim_.fragment_timeout_ns = 1000;
  IpReassembler r(lim_, c_);
  const Bytes dg = filler(48);
  EXPECT_TRUE(r.add(frag(dg, 0, 16, true), 100).empty());
  EXPECT_TRUE(r.add(frag(dg, 16, 32, true), 1099).empty());  // 999 ns later: still held
  EXPECT_EQ(c_[kR_frag_timeout], 0u);
  EXPECT_TRUE(r.add(frag(dg, 32, 48, false), 1100).empty());  // 1000 ns after the first: expired
  EXPECT_EQ(c_[kR_frag_timeout], 1u);
  EXPECT_EQ(c_[kR_frag_reassembled], 0u);
  EXPECT_EQ(r.pending(), 1u);  // the last fragment started a new datagram
  r.expire(2099);
  EXPECT_EQ(r.pending(), 1u);
  r.expire(2100);
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
  EXPECT_EQ(c_[kR_frag_timeout], 2u);
}

TEST_F(IpReassemblyTest, EvictionAtDatagramCap) {
  lim_.max_datagrams = 2;
  IpReassembler r(lim_, c_);
  const Bytes dg = filler(32);
  EXPECT_TRUE(r.add(frag(dg, 0, 16, true, 1), 1).empty());
  EXPECT_TRUE(r.add(frag(dg, 0, 16, true, 2), 2).empty());
  EXPECT_TRUE(r.add(frag(dg, 0, 16, true, 3), 3).empty());  // evicts id 1, the oldest
  EXPECT_EQ(c_[kR_frag_evicted], 1u);
  EXPECT_EQ(r.pending(), 2u);
  EXPECT_EQ(r.add(frag(dg, 16, 32, false, 3), 4).size(), 32u);
  EXPECT_EQ(r.add(frag(dg, 16, 32, false, 2), 5).size(), 32u);
  EXPECT_TRUE(r.add(frag(dg, 16, 32, false, 1), 6).empty());  // id 1 is gone
  EXPECT_EQ(c_[kR_frag_reassembled], 2u);
}

TEST_F(IpReassemblyTest, EvictionAtByteCap) {
  lim_.max_fragment_bytes = 3000;
  IpReassembler r(lim_, c_);
  const Bytes dg = filler(4000);
  EXPECT_TRUE(r.add(frag(dg, 0, 1200, true, 1), 1).empty());
  EXPECT_TRUE(r.add(frag(dg, 0, 1200, true, 2), 2).empty());
  EXPECT_LE(r.bytes(), 3000u);
  EXPECT_TRUE(r.add(frag(dg, 0, 1200, true, 3), 3).empty());  // 3600 > 3000: the oldest goes
  EXPECT_EQ(c_[kR_frag_evicted], 1u);
  EXPECT_EQ(r.pending(), 2u);
  EXPECT_LE(r.bytes(), 3000u);
  EXPECT_TRUE(r.add(frag(dg, 1200, 1300, false, 1), 4).empty());  // id 1 was evicted
  EXPECT_EQ(r.add(frag(dg, 1200, 1300, false, 3), 5).size(), 1300u);
}

TEST_F(IpReassemblyTest, ByteCapHoldsWhenHeldDatagramsGrow) {
  // Small first fragments pass the cap; their far-away later fragments must not blow it.
  lim_.max_fragment_bytes = 16384;
  IpReassembler r(lim_, c_);
  const Bytes big = filler(65535);
  for (std::uint32_t id = 0; id < 8; ++id) {
    EXPECT_TRUE(r.add(frag(big, 0, 8, true, id), id).empty());
    EXPECT_LE(r.bytes(), lim_.max_fragment_bytes);
  }
  for (std::uint32_t id = 0; id < 8; ++id) {
    EXPECT_TRUE(r.add(frag(big, 6000, 6008, true, id), 10 + id).empty());
    EXPECT_LE(r.bytes(), lim_.max_fragment_bytes) << id;
  }
  EXPECT_GT(c_[kR_frag_evicted], 0u);
  EXPECT_TRUE(r.add(frag(big, 60000, 60008, true, 7), 20).empty());  // alone over the cap
  EXPECT_LE(r.bytes(), lim_.max_fragment_bytes);
  EXPECT_EQ(r.pending(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
}

TEST_F(IpReassemblyTest, BytesAccountedAfterManyReassemblies) {
  IpReassembler r(lim_, c_);
  for (std::uint32_t id = 0; id < 20; ++id) {
    const Bytes dg = filler(1000 + id * 100, id);
    const auto n = static_cast<std::uint32_t>(dg.size());
    EXPECT_TRUE(r.add(frag(dg, 0, 504, true, id), id).empty());
    EXPECT_EQ(to_bytes(r.add(frag(dg, 504, n, false, id), id)), dg);
    EXPECT_EQ(r.bytes(), 0u) << id;
  }
  EXPECT_EQ(c_[kR_frag_reassembled], 20u);
}

TEST_F(IpReassemblyTest, KeyedBySourceAndId) {
  IpReassembler r(lim_, c_);
  const Bytes a = filler(32, 1), b = filler(32, 2);
  EXPECT_TRUE(r.add(frag(a, 0, 16, true, 7, kA4), 1).empty());
  EXPECT_TRUE(r.add(frag(b, 0, 16, true, 7, kO1), 1).empty());
  EXPECT_EQ(r.pending(), 2u);
  EXPECT_EQ(to_bytes(r.add(frag(b, 16, 32, false, 7, kO1), 2)), b);
  EXPECT_EQ(to_bytes(r.add(frag(a, 16, 32, false, 7, kA4), 2)), a);
}

TEST_F(IpReassemblyTest, Ipv4FramesEndToEnd) {
  // A 3000-byte SIP INVITE over UDP, fragmented by the sender, decoded, reassembled, decoded.
  IpReassembler r(lim_, c_);
  const Bytes sip = text(std::string("INVITE sip:bob@example.com SIP/2.0\r\n") + std::string(2950, 'x'));
  const Bytes dg = udp(5060, 5060, sip);
  std::vector<Bytes> frames;
  for (std::size_t off = 0; off < dg.size(); off += 1480) {
    const std::size_t end = std::min(dg.size(), off + 1480);
    V4Opts o;
    o.id = 0x4242;
    o.frag = static_cast<unsigned>(off / 8) | (end < dg.size() ? 0x2000u : 0u);
    frames.push_back(eth(0x0800, ipv4(kA4, kB4, 17, Bytes(dg.begin() + static_cast<std::ptrdiff_t>(off),
                                                          dg.begin() + static_cast<std::ptrdiff_t>(end)),
                                      o)));
  }
  ASSERT_EQ(frames.size(), 3u);
  std::swap(frames[0], frames[2]);
  std::span<const std::byte> whole;
  Packet last;
  Counters c;
  for (const Bytes& f : frames) {
    ASSERT_EQ(decode_frame(kLinkEthernet, f, last, c), Result::kFragment);
    whole = r.add(last, 10);
  }
  ASSERT_EQ(whole.size(), dg.size());
  ASSERT_EQ(decode_l4(whole, last, c, 0), Result::kUdp);
  EXPECT_EQ(last.sport, 5060);
  EXPECT_EQ(to_bytes(last.payload), sip);
}

TEST_F(IpReassemblyTest, Ipv6FramesEndToEnd) {
  IpReassembler r(lim_, c_);
  const Bytes dg = udp(5060, 5080, filler(2500, 9));
  auto frame = [&](std::size_t off, std::size_t end, std::uint32_t id) {
    Bytes ext = frag6(17, static_cast<unsigned>(off), end < dg.size(), id);
    append(ext, Bytes(dg.begin() + static_cast<std::ptrdiff_t>(off), dg.begin() + static_cast<std::ptrdiff_t>(end)));
    return eth(0x86DD, ipv6(kA6, kB6, 44, ext));
  };
  // Two datagrams whose 32-bit ids share the low 16 bits do not mix.
  const std::vector<Bytes> frames = {frame(0, 1232, 0x10001), frame(0, 1232, 0x20001), frame(1232, 2464, 0x10001),
                                     frame(2464, dg.size(), 0x10001)};
  std::span<const std::byte> whole;
  Packet p;
  Counters c;
  for (const Bytes& f : frames) {
    ASSERT_EQ(decode_frame(kLinkEthernet, f, p, c), Result::kFragment);
    EXPECT_EQ(p.proto, 17);
    whole = r.add(p, 10);
  }
  ASSERT_EQ(whole.size(), dg.size());
  EXPECT_EQ(to_bytes(whole), dg);
  EXPECT_EQ(r.pending(), 1u);  // 0x20001 is still waiting
  ASSERT_EQ(decode_l4(whole, p, c, 0), Result::kUdp);
  EXPECT_EQ(p.dport, 5080);
}

// ---- TCP reassembly ------------------------------------------------------------------------

class TcpReassemblyTest : public ::testing::Test {
 protected:
  ReassemblyLimits lim_;
  ReassemblyCounters c_;
  std::deque<Bytes> keep_;  // payloads referenced by the packets below

  Packet seg(std::uint32_t seq, std::string_view data, unsigned flags = 0x10, std::uint16_t sport = 40000,
             std::uint16_t dport = 5060) {
    keep_.push_back(text(data));
    Packet p;
    p.src = addr4(kA4);
    p.dst = addr4(kB4);
    p.proto = 6;
    p.sport = sport;
    p.dport = dport;
    p.tcp_seq = seq;
    p.tcp_flags = static_cast<std::uint8_t>(flags);
    p.payload = keep_.back();
    return p;
  }
  static std::string str(const TcpReassembler::Stream& s) {
    std::string r;
    for (std::byte b : s.buf) r.push_back(static_cast<char>(b));
    return r;
  }
};

TEST_F(TcpReassemblyTest, InOrder) {
  TcpReassembler r(lim_, c_);
  EXPECT_EQ(r.add(seg(1000, "", kTcpSyn), 1), nullptr);  // SYN: a stream, no bytes yet
  EXPECT_EQ(r.streams(), 1u);
  EXPECT_EQ(c_[kR_tcp_streams], 1u);
  TcpReassembler::Stream* s = r.add(seg(1001, "INVITE "), 2);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "INVITE ");
  EXPECT_FALSE(s->lost);
  s = r.add(seg(1008, "sip:bob"), 3);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "INVITE sip:bob");
  TcpReassembler::consume(*s, 7);
  EXPECT_EQ(str(*s), "sip:bob");
  TcpReassembler::consume(*s, 100);
  EXPECT_TRUE(s->buf.empty());
  EXPECT_EQ(r.add(seg(1015, ""), 4), nullptr);  // a bare ACK
  EXPECT_EQ(c_[kR_tcp_out_of_order] + c_[kR_tcp_retransmits] + c_[kR_tcp_gaps], 0u);
}

TEST_F(TcpReassemblyTest, BareAckOfUnknownStreamIgnored) {
  TcpReassembler r(lim_, c_);
  EXPECT_EQ(r.add(seg(5, ""), 1), nullptr);
  EXPECT_EQ(r.add(seg(5, "", kTcpFin | 0x10), 1), nullptr);
  EXPECT_EQ(r.streams(), 0u);
}

TEST_F(TcpReassemblyTest, JoinedMidStreamAndDirectionsApart) {
  TcpReassembler r(lim_, c_);
  TcpReassembler::Stream* a = r.add(seg(77777, "SIP/2.0 200 OK\r\n", 0x18, 5060, 40000), 1);
  ASSERT_NE(a, nullptr);
  TcpReassembler::Stream* b = r.add(seg(1, "ACK sip:x SIP/2.0\r\n", 0x18, 40000, 5060), 1);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(r.streams(), 2u);
  EXPECT_EQ(str(*a), "SIP/2.0 200 OK\r\n");
  EXPECT_EQ(str(*b), "ACK sip:x SIP/2.0\r\n");
}

TEST_F(TcpReassemblyTest, OutOfOrderHeldThenDelivered) {
  TcpReassembler r(lim_, c_);
  ASSERT_NE(r.add(seg(100, "abc"), 1), nullptr);
  EXPECT_EQ(r.add(seg(109, "jkl"), 2), nullptr);
  EXPECT_EQ(r.add(seg(106, "ghi"), 3), nullptr);
  EXPECT_EQ(c_[kR_tcp_out_of_order], 2u);
  TcpReassembler::Stream* s = r.add(seg(103, "def"), 4);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "abcdefghijkl");
  EXPECT_FALSE(s->lost);
  // A held segment that overlaps what arrives in order: only its new tail is kept.
  EXPECT_EQ(r.add(seg(114, "opq"), 5), nullptr);
  s = r.add(seg(112, "mnop"), 6);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "abcdefghijklmnopq");
}

TEST_F(TcpReassemblyTest, RetransmissionsTrimmed) {
  TcpReassembler r(lim_, c_);
  EXPECT_EQ(r.add(seg(0xFFFFFFFEu, "", kTcpSyn), 1), nullptr);
  TcpReassembler::Stream* s = r.add(seg(0xFFFFFFFFu, "hello"), 2);  // the sequence wraps
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(r.add(seg(0xFFFFFFFFu, "hello"), 3), nullptr);  // a full retransmission
  EXPECT_EQ(c_[kR_tcp_retransmits], 1u);
  EXPECT_EQ(r.add(seg(1, "ll"), 3), nullptr);  // inside what was seen
  EXPECT_EQ(c_[kR_tcp_retransmits], 2u);
  s = r.add(seg(2, "lo world"), 4);  // overlaps by 2 bytes: only " world" is new
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "hello world");
  EXPECT_EQ(c_[kR_tcp_out_of_order], 0u);
}

TEST_F(TcpReassemblyTest, HoleNeverFilledSkipsAheadAfter32Segments) {
  TcpReassembler r(lim_, c_);
  ASSERT_NE(r.add(seg(1000, "0123456789"), 1), nullptr);
  // Bytes 1010..1019 never arrive; 33 segments after them do.
  std::string expect;
  TcpReassembler::Stream* s = nullptr;
  for (unsigned i = 0; i < 33; ++i) {
    const std::string data(10, static_cast<char>('a' + i % 26));
    expect += data;
    s = r.add(seg(1020 + i * 10, data), 2 + i);
    if (i < 32) {
      EXPECT_EQ(s, nullptr) << i;
    }
  }
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->lost);
  EXPECT_EQ(str(*s), expect);  // what was buffered before the hole is dropped with it
  EXPECT_EQ(c_[kR_tcp_gaps], 1u);
  EXPECT_EQ(c_[kR_tcp_out_of_order], 33u);
  // The stream continues from there.
  s = r.add(seg(1020 + 330, "next"), 40);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), expect + "next");
}

TEST_F(TcpReassemblyTest, HoleNeverFilledSkipsAheadAtBufferCap) {
  lim_.max_tcp_buffer = 64;
  TcpReassembler r(lim_, c_);
  ASSERT_NE(r.add(seg(0, std::string(20, '0')), 1), nullptr);
  EXPECT_EQ(r.add(seg(30, std::string(30, 'a')), 2), nullptr);  // a hole at 20..29
  EXPECT_EQ(r.add(seg(70, std::string(10, 'c')), 2), nullptr);  // a second hole at 60..69
  EXPECT_FALSE(r.add(seg(0, "x"), 2) != nullptr);                // (a retransmission meanwhile)
  TcpReassembler::Stream* s = r.add(seg(80, std::string(10, 'd')), 3);  // 20 + 50 held > 64
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->lost);
  EXPECT_EQ(c_[kR_tcp_gaps], 1u);
  EXPECT_EQ(str(*s), std::string(30, 'a'));  // up to the second hole; the rest is still held
  s = r.add(seg(60, std::string(10, 'b')), 4);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), std::string(30, 'a') + std::string(10, 'b') + std::string(10, 'c') + std::string(10, 'd'));
  EXPECT_EQ(c_[kR_tcp_gaps], 1u);
}

TEST_F(TcpReassemblyTest, BufferCapWhenNothingIsConsumed) {
  lim_.max_tcp_buffer = 16;
  TcpReassembler r(lim_, c_);
  TcpReassembler::Stream* s = r.add(seg(0, "0123456789"), 1);
  ASSERT_NE(s, nullptr);
  s = r.add(seg(10, "abcdefghij"), 2);  // 20 > 16: the buffer starts over
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->lost);
  EXPECT_TRUE(s->buf.empty());
  EXPECT_EQ(c_[kR_tcp_gaps], 1u);
  s->lost = false;  // the framer resynchronised
  s = r.add(seg(20, "INVITE"), 3);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "INVITE");
  EXPECT_FALSE(s->lost);
}

TEST_F(TcpReassemblyTest, SynStartsANewConnection) {
  TcpReassembler r(lim_, c_);
  EXPECT_EQ(r.add(seg(1000, "", kTcpSyn), 1), nullptr);
  ASSERT_NE(r.add(seg(1001, "INVITE sip:a SIP/2.0\r\nCont"), 2), nullptr);
  EXPECT_EQ(r.add(seg(1100, "held"), 3), nullptr);  // out of order, held
  // The same four-tuple opens again: the old bytes belong to the old connection.
  EXPECT_EQ(r.add(seg(90000, "", kTcpSyn), 4), nullptr);
  EXPECT_EQ(r.streams(), 1u);
  EXPECT_EQ(r.add(seg(1026, "ent-Length: 0\r\n\r\n"), 5), nullptr);  // old sequence space: ignored
  TcpReassembler::Stream* s = r.add(seg(90001, "OPTIONS sip:b SIP/2.0\r\n"), 6);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "OPTIONS sip:b SIP/2.0\r\n");
  EXPECT_FALSE(s->lost);
}

TEST_F(TcpReassemblyTest, SynAfterLostBytesStartsClean) {
  lim_.max_tcp_buffer = 8;
  TcpReassembler r(lim_, c_);
  TcpReassembler::Stream* s = r.add(seg(0, "0123456789"), 1);  // over the cap: lost
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->lost);
  // A new connection on the same four-tuple starts at a message boundary: nothing was lost in it.
  EXPECT_EQ(r.add(seg(5000, "", kTcpSyn), 2), nullptr);
  s = r.add(seg(5001, "BYE x"), 3);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "BYE x");
  EXPECT_FALSE(s->lost);
}

TEST_F(TcpReassemblyTest, FinAndRstClose) {
  TcpReassembler r(lim_, c_);
  TcpReassembler::Stream* s = r.add(seg(1, "BYE sip:a SIP/2.0\r\n\r\n", kTcpFin | 0x10), 1);
  ASSERT_NE(s, nullptr);  // the bytes of the FIN segment are delivered
  EXPECT_EQ(str(*s), "BYE sip:a SIP/2.0\r\n\r\n");
  EXPECT_EQ(r.streams(), 1u);
  EXPECT_EQ(r.add(seg(23, ""), 2), nullptr);  // the next call ends it; its late ACK starts nothing
  EXPECT_EQ(r.streams(), 0u);
  ASSERT_NE(r.add(seg(7, "abc", 0x18, 1, 2), 3), nullptr);
  EXPECT_EQ(r.add(seg(10, "", kTcpRst, 1, 2), 4), nullptr);
  EXPECT_EQ(r.streams(), 1u);
  EXPECT_EQ(r.add(seg(10, "", 0x10, 3, 4), 5), nullptr);
  EXPECT_EQ(r.streams(), 0u);
  // Data after the close on the same tuple is a new stream.
  s = r.add(seg(10, "def", 0x18, 1, 2), 6);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "def");
  EXPECT_EQ(c_[kR_tcp_streams], 3u);
}

TEST_F(TcpReassemblyTest, MayCreateFalseFollowsOnlyKnownStreams) {
  TcpReassembler r(lim_, c_);
  EXPECT_EQ(r.add(seg(1, "RTP-ish bytes", 0x18, 7000, 7002), 1, false), nullptr);
  EXPECT_EQ(r.add(seg(1, "", kTcpSyn, 7000, 7002), 1, false), nullptr);
  EXPECT_EQ(r.streams(), 0u);
  EXPECT_EQ(c_[kR_tcp_streams], 0u);
  ASSERT_NE(r.add(seg(1, "INVITE ", 0x18), 2, true), nullptr);
  TcpReassembler::Stream* s = r.add(seg(8, "sip:x", 0x18), 3, false);  // known: followed
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "INVITE sip:x");
}

TEST_F(TcpReassemblyTest, StreamCapEvictsLeastRecentlyUsed) {
  lim_.max_tcp_streams = 2;
  TcpReassembler r(lim_, c_);
  ASSERT_NE(r.add(seg(0, "a", 0x18, 1, 5060), 1), nullptr);
  ASSERT_NE(r.add(seg(0, "b", 0x18, 2, 5060), 2), nullptr);
  ASSERT_NE(r.add(seg(1, "a", 0x18, 1, 5060), 3), nullptr);  // stream 1 used again
  ASSERT_NE(r.add(seg(0, "c", 0x18, 3, 5060), 4), nullptr);  // evicts stream 2
  EXPECT_EQ(c_[kR_tcp_evicted], 1u);
  EXPECT_EQ(r.streams(), 2u);
  TcpReassembler::Stream* s = r.add(seg(2, "a", 0x18, 1, 5060), 5);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "aaa");
  EXPECT_EQ(c_[kR_tcp_evicted], 1u);
  s = r.add(seg(1, "b", 0x18, 2, 5060), 6);  // stream 2 comes back as a new stream (evicting 3)
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "b");
  EXPECT_EQ(c_[kR_tcp_evicted], 2u);
  EXPECT_EQ(c_[kR_tcp_streams], 4u);
}

TEST_F(TcpReassemblyTest, IdleTimeout) {
  lim_.tcp_timeout_ns = 1000;
  TcpReassembler r(lim_, c_);
  ASSERT_NE(r.add(seg(0, "a", 0x18, 1, 5060), 0), nullptr);
  ASSERT_NE(r.add(seg(0, "b", 0x18, 2, 5060), 500), nullptr);
  r.expire(999);
  EXPECT_EQ(r.streams(), 2u);
  r.expire(1000);
  EXPECT_EQ(r.streams(), 1u);
  EXPECT_EQ(c_[kR_tcp_timeout], 1u);
  r.expire(1500);
  EXPECT_EQ(r.streams(), 0u);
  EXPECT_EQ(c_[kR_tcp_timeout], 2u);
}

TEST_F(TcpReassemblyTest, FromDecodedFrames) {
  TcpReassembler r(lim_, c_);
  Counters c;
  Packet p;
  const std::vector<Bytes> frames = {
      eth(0x0800, ipv4(kA4, kB4, 6, tcp(40000, 5060, 500, kTcpSyn, {}))),
      eth(0x0800, ipv4(kA4, kB4, 6, tcp(40000, 5060, 506, 0x18, text("world")))),
      eth(0x0800, ipv4(kA4, kB4, 6, tcp(40000, 5060, 501, 0x18, text("hello")))),
  };
  TcpReassembler::Stream* s = nullptr;
  for (const Bytes& f : frames) {
    ASSERT_EQ(decode_frame(kLinkEthernet, f, p, c), Result::kTcp);
    s = r.add(p, 1);
  }
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(str(*s), "helloworld");
}

}  // namespace
}  // namespace callrec::dataplane::decode

namespace callrec::dataplane::decode {
namespace {

/// An MPLS label stack entry: label, then the bottom-of-stack bit.
Bytes mpls_label(unsigned label, bool bottom) {
  return {static_cast<std::byte>(label >> 12), static_cast<std::byte>(label >> 4),
          static_cast<std::byte>(((label & 0xF) << 4) | (bottom ? 1u : 0u)), std::byte{64}};
}

TEST(Decode, MplsLabelStacksAreStrippedToTheSameIpPacket) {
  const Decoded ref = decode(kLinkEthernet, eth(0x0800, udp4()));
  ASSERT_EQ(ref.r, Result::kUdp);
  Bytes stack = mpls_label(16001, false);
  const Bytes bottom = mpls_label(24, true);
  stack.insert(stack.end(), bottom.begin(), bottom.end());
  Bytes payload = stack;
  const Bytes ip = udp4();
  payload.insert(payload.end(), ip.begin(), ip.end());
  const Decoded d = decode(kLinkEthernet, eth(0x8847, payload));
  ASSERT_EQ(d.r, Result::kUdp);
  expect_same_packet(d.p, ref.p);
  expect_counters(d.c, {{kC_frames, 1}, {kC_mpls, 1}, {kC_ipv4, 1}, {kC_udp, 1}});
  // IPv6 under one label, and a stack that never ends.
  Bytes v6 = mpls_label(3, true);
  const Bytes ip6 = tcp6();
  v6.insert(v6.end(), ip6.begin(), ip6.end());
  EXPECT_EQ(decode(kLinkEthernet, eth(0x8847, v6)).r, Result::kTcp);
  Bytes endless;
  for (int i = 0; i < 3; ++i) {
    const Bytes l = mpls_label(100, false);
    endless.insert(endless.end(), l.begin(), l.end());
  }
  const Decoded bad = decode(kLinkEthernet, eth(0x8847, endless));
  EXPECT_EQ(bad.r, Result::kBad);
  expect_counters(bad.c, {{kC_frames, 1}, {kC_link_truncated, 1}});
}

}  // namespace
}  // namespace callrec::dataplane::decode
