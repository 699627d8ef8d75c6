#pragma once
// The packet decoder shared by every source (libpcap live and offline, DPDK mirror, the tests):
// bytes and a link type in, a small view out. No DPDK, no sockets, no allocation, no state:
// decode says what the bytes are; what to do with them (is it SIP, is it a recorded flow) is
// the calling lane's business (STYLE.md: "decode says what the bytes are; policy decides").
//
// One file per layer family, as Suricata's decode-*.c: decode_link.cpp (Ethernet, 802.1Q/QinQ,
// MPLS, SLL, SLL2, null/loopback, raw IP), decode_tunnel.cpp (GRE/TEB, ERSPAN II and III, VXLAN),
// decode_ip.cpp (IPv4, IPv6 with extension headers, fragments reported, not reassembled),
// decode_l4.cpp (UDP, TCP). Each bounds-checks what it reads, counts what it rejects, strips
// its header and hands the rest to the next.
//
// Counters are defined once (VPP's foreach_*_error X-macro): the enum, the metric names and
// the help text below all come from CALLREC_DECODE_COUNTERS.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "fileio/rtp.hpp"

namespace callrec::dataplane::decode {

/// pcap LINKTYPE_* values (the ones a mirror or a capture file carries).
enum LinkType : std::uint32_t {
  kLinkNull = 0,       ///< BSD loopback: 4-byte host-order family
  kLinkEthernet = 1,
  kLinkRaw = 101,      ///< raw IPv4/IPv6 (LINKTYPE_RAW)
  kLinkRawDlt12 = 12,  ///< DLT_RAW as some writers store it
  kLinkRawDlt14 = 14,  ///< DLT_RAW on OpenBSD
  kLinkLoop = 108,     ///< OpenBSD loopback: 4-byte network-order family
  kLinkSll = 113,      ///< Linux cooked capture v1
  kLinkIpv4 = 228,
  kLinkIpv6 = 229,
  kLinkSll2 = 276,     ///< Linux cooked capture v2
};

#define CALLREC_DECODE_COUNTERS(_)                                                              \
  _(frames, "frames given to the decoder")                                                     \
  _(link_unknown, "frames of a link type the decoder does not know")                           \
  _(link_truncated, "frames shorter than their link header")                                   \
  _(vlan_tags, "802.1Q/802.1ad tags stripped")                                                 \
  _(vlan_too_deep, "frames with more VLAN tags than the decoder follows (4)")                  \
  _(mpls, "MPLS label stacks stripped")                                                       \
  _(not_ip, "frames that carry no IP (ARP, LLDP, STP ...)")                                    \
  _(tunnel_gre, "GRE packets decapsulated")                                                    \
  _(tunnel_erspan, "ERSPAN type II/III packets decapsulated")                                  \
  _(tunnel_vxlan, "VXLAN packets decapsulated")                                                \
  _(tunnel_bad, "tunnel headers that are truncated or of an unknown version/protocol")        \
  _(tunnel_too_deep, "packets nested deeper than the decoder follows (4 tunnels)")            \
  _(ipv4, "IPv4 packets")                                                                      \
  _(ipv6, "IPv6 packets")                                                                      \
  _(ip_bad, "IP headers that are truncated, of a bad version or with lengths that lie")       \
  _(ipv6_ext_bad, "IPv6 extension header chains that are truncated or too long")              \
  _(ip_fragments, "IP fragments (handed to reassembly)")                                       \
  _(udp, "UDP datagrams")                                                                      \
  _(tcp, "TCP segments")                                                                       \
  _(l4_bad, "UDP/TCP headers that are truncated or whose length lies")                        \
  _(l4_other, "IP packets of another protocol (ICMP, SCTP, ESP ...)")

enum Counter : unsigned {
#define CALLREC_DECODE_ENUM(name, help) kC_##name,
  CALLREC_DECODE_COUNTERS(CALLREC_DECODE_ENUM)
#undef CALLREC_DECODE_ENUM
      kCounterCount
};

struct CounterInfo {
  std::string_view name;
  std::string_view help;
};
inline constexpr std::array<CounterInfo, kCounterCount> kCounterInfo = {{
#define CALLREC_DECODE_INFO(name, help) {#name, help},
    CALLREC_DECODE_COUNTERS(CALLREC_DECODE_INFO)
#undef CALLREC_DECODE_INFO
}};

/// One lane's decode counters (owned by that lane; summed by whoever publishes them).
struct Counters {
  std::array<std::uint64_t, kCounterCount> v{};
  void inc(Counter c, std::uint64_t n = 1) { v[c] += n; }
  [[nodiscard]] std::uint64_t operator[](Counter c) const { return v[c]; }
  Counters& operator+=(const Counters& o) {
    for (unsigned i = 0; i < kCounterCount; ++i) v[i] += o.v[i];
    return *this;
  }
};

/// An IP address: family 4 or 6, bytes in network order (IPv4 in the first 4, the rest zero;
/// equality and the endpoint table read only the family's bytes).
struct IpAddr {
  std::uint8_t family = 0;
  std::array<std::uint8_t, 16> b{};
  /// Fixed-size loads, no memcmp call (it was 9% of the DPDK mirror lane's cycles).
  friend bool operator==(const IpAddr& x, const IpAddr& y) {
    if (x.family != y.family) return false;
    if (x.family != 6) {
      std::uint32_t a, c;
      std::memcpy(&a, x.b.data(), 4);
      std::memcpy(&c, y.b.data(), 4);
      return a == c;
    }
    std::uint64_t a0, a1, c0, c1;
    std::memcpy(&a0, x.b.data(), 8);
    std::memcpy(&a1, x.b.data() + 8, 8);
    std::memcpy(&c0, y.b.data(), 8);
    std::memcpy(&c1, y.b.data() + 8, 8);
    return ((a0 ^ c0) | (a1 ^ c1)) == 0;
  }
  [[nodiscard]] bool is_unspecified() const;
};

/// One transport endpoint (address and port): the key of passive-capture flows.
struct Endpoint {
  IpAddr addr;
  std::uint16_t port = 0;
  friend bool operator==(const Endpoint& x, const Endpoint& y) { return x.port == y.port && x.addr == y.addr; }
};

struct EndpointHash {
  std::size_t operator()(const Endpoint& e) const noexcept {
    // FNV-1a over the used bytes: endpoints are few per call, the table is per lane.
    std::uint64_t h = 1469598103934665603ull ^ e.addr.family;
    const unsigned n = e.addr.family == 6 ? 16 : 4;
    for (unsigned i = 0; i < n; ++i) h = (h ^ e.addr.b[i]) * 1099511628211ull;
    h = (h ^ (e.port & 0xFF)) * 1099511628211ull;
    h = (h ^ (e.port >> 8)) * 1099511628211ull;
    return static_cast<std::size_t>(h);
  }
};

/// Formats "192.0.2.1:5060" / "[2001:db8::1]:5060" (port 0: the address alone).
std::string format_endpoint(const IpAddr& a, std::uint16_t port = 0);
/// Parses a dotted IPv4 or an IPv6 text address (SDP c=, Via hosts). False when it is neither.
bool parse_ip(std::string_view text, IpAddr& out);

enum class Result : std::uint8_t {
  kUdp,       ///< src/dst/ports/payload valid
  kTcp,       ///< src/dst/ports/payload/tcp_* valid
  kFragment,  ///< an IP fragment: src/dst/proto/frag_* and l4 (the fragment's bytes) valid
  kOtherL4,   ///< IP, another protocol
  kNotIp,     ///< ARP, LLDP ... (counted)
  kBad,       ///< truncated or inconsistent somewhere (counted by layer)
};

/// What the decoder found. Spans point into the caller's buffer.
struct Packet {
  IpAddr src, dst;
  std::uint8_t proto = 0;       ///< IP protocol of the (innermost) payload: 17 UDP, 6 TCP
  std::uint8_t vlans = 0;       ///< tags stripped (all layers)
  std::uint8_t tunnels = 0;     ///< encapsulations stripped
  std::uint16_t sport = 0, dport = 0;
  // Fragments (Result::kFragment)
  std::uint32_t frag_id = 0;    ///< IPv4: 16-bit id; IPv6: 32-bit identification
  std::uint32_t frag_offset = 0;  ///< bytes
  bool frag_more = false;
  std::span<const std::byte> l4;  ///< the IP payload (fragment bytes for kFragment)
  // TCP
  std::uint32_t tcp_seq = 0;
  std::uint8_t tcp_flags = 0;   ///< FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10
  std::span<const std::byte> payload;  ///< UDP/TCP payload
};

inline constexpr std::uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04;

/// Decodes a frame of link type `link` down to its transport payload. Tunnels are followed
/// (GRE, ERSPAN, VXLAN on UDP 4789) up to 4 deep, VLAN tags up to 4 per Ethernet layer.
Result decode_frame(std::uint32_t link, std::span<const std::byte> frame, Packet& out, Counters& c);

// ---- the layers (also called by each other and by reassembly) ------------------------------
Result decode_ethernet(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth);
/// An IP packet whose version is read from its first nibble.
Result decode_ip(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth);
Result decode_ipv4(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth);
Result decode_ipv6(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth);
/// GRE (IP protocol 47): TEB, ERSPAN II/III, IPv4/IPv6 inside.
Result decode_gre(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth);
Result decode_vxlan(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth);
/// The transport layer of out.proto over `l4` (an unfragmented or reassembled IP payload):
/// UDP or TCP, VXLAN followed on UDP 4789.
Result decode_l4(std::span<const std::byte> l4, Packet& out, Counters& c, unsigned depth);

/// The bytes start like a SIP message: a status line ("SIP/2.0 1xx-6xx"), or a request line
/// (a method token of capitals, then " SIP/2.0" at the end of the first line). Recognises SIP
/// by content on any port (carriers run it on 5080, 6060 ...). Looks at most 2 KiB.
bool looks_like_sip(std::string_view d);

// Byte order: fileio/rtp.hpp's load_be16/load_be32, the project's one copy.
using fileio::load_be16;
using fileio::load_be32;
inline constexpr unsigned kMaxDepth = 4;

}  // namespace callrec::dataplane::decode
