// Link layers: Ethernet II with 802.1Q/802.1ad tags, Linux cooked capture v1 and v2, BSD
// null/loopback, raw IP. Each strips its header and hands the payload to the next layer.
#include <arpa/inet.h>

#include <cstdio>
#include <string>

#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::decode {

namespace {

constexpr std::uint16_t kEtherIpv4 = 0x0800, kEtherIpv6 = 0x86DD, kEtherVlan = 0x8100, kEtherQinq = 0x88A8,
                        kEtherQinqOld = 0x9100, kEtherTeb = 0x6558, kEtherMpls = 0x8847, kEtherMplsMc = 0x8848;

/// MPLS (RFC 3032): labels up to the bottom of the stack, then IP by its version nibble (a
/// carrier's mirror of a core link). Pseudowires (Ethernet over MPLS) are not decoded.
Result decode_mpls(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  for (unsigned n = 0;; ++n) {
    if (b.size() < 4 || n >= 8) {
      c.inc(kC_link_truncated);
      return Result::kBad;
    }
    const bool bottom = (std::to_integer<unsigned>(b[2]) & 0x01) != 0;
    b = b.subspan(4);
    if (bottom) break;
  }
  c.inc(kC_mpls);
  if (!b.empty() && (std::to_integer<unsigned>(b[0]) >> 4) == 4) return decode_ipv4(b, out, c, depth);
  if (!b.empty() && (std::to_integer<unsigned>(b[0]) >> 4) == 6) return decode_ipv6(b, out, c, depth);
  c.inc(kC_not_ip);
  return Result::kNotIp;
}

/// The payload of a link layer carrying `ethertype` (VLAN tags may follow).
Result by_ethertype(std::uint16_t type, std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  unsigned tags = 0;
  while (type == kEtherVlan || type == kEtherQinq || type == kEtherQinqOld) {
    if (++tags > 4) {
      c.inc(kC_vlan_too_deep);
      return Result::kBad;
    }
    if (b.size() < 4) {
      c.inc(kC_link_truncated);
      return Result::kBad;
    }
    c.inc(kC_vlan_tags);
    ++out.vlans;
    type = load_be16(b.data() + 2);
    b = b.subspan(4);
  }
  switch (type) {
    case kEtherIpv4: return decode_ipv4(b, out, c, depth);
    case kEtherIpv6: return decode_ipv6(b, out, c, depth);
    case kEtherTeb: return decode_ethernet(b, out, c, depth + 1);
    case kEtherMpls:
    case kEtherMplsMc: return decode_mpls(b, out, c, depth);
    default: c.inc(kC_not_ip); return Result::kNotIp;
  }
}

}  // namespace

Result decode_ethernet(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  if (depth > kMaxDepth) {
    c.inc(kC_tunnel_too_deep);
    return Result::kBad;
  }
  if (b.size() < 14) {
    c.inc(kC_link_truncated);
    return Result::kBad;
  }
  const std::uint16_t type = load_be16(b.data() + 12);
  if (type < 0x0600) {  // 802.3 length: LLC/SNAP (STP, CDP ...), never IP on a mirror
    c.inc(kC_not_ip);
    return Result::kNotIp;
  }
  return by_ethertype(type, b.subspan(14), out, c, depth);
}

Result decode_frame(std::uint32_t link, std::span<const std::byte> b, Packet& out, Counters& c) {
  c.inc(kC_frames);
  out = Packet{};
  switch (link) {
    case kLinkEthernet: return decode_ethernet(b, out, c, 0);
    case kLinkSll: {
      // type(2) arphrd(2) addrlen(2) addr(8) protocol(2)
      if (b.size() < 16) break;
      return by_ethertype(load_be16(b.data() + 14), b.subspan(16), out, c, 0);
    }
    case kLinkSll2: {
      // protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1) addrlen(1) addr(8)
      if (b.size() < 20) break;
      return by_ethertype(load_be16(b.data()), b.subspan(20), out, c, 0);
    }
    case kLinkNull:
    case kLinkLoop: {
      if (b.size() < 4) break;
      std::uint32_t fam;
      std::memcpy(&fam, b.data(), 4);
      if (link == kLinkLoop) fam = ntohl(fam);
      // The writer's byte order is not recorded for DLT_NULL: accept either.
      if (fam > 0xFFFF) fam = __builtin_bswap32(fam);
      if (fam == 2) return decode_ipv4(b.subspan(4), out, c, 0);
      if (fam == 24 || fam == 28 || fam == 30 || fam == 10) return decode_ipv6(b.subspan(4), out, c, 0);
      c.inc(kC_not_ip);
      return Result::kNotIp;
    }
    case kLinkRaw:
    case kLinkRawDlt12:
    case kLinkRawDlt14: return decode_ip(b, out, c, 0);
    case kLinkIpv4: return decode_ipv4(b, out, c, 0);
    case kLinkIpv6: return decode_ipv6(b, out, c, 0);
    default: c.inc(kC_link_unknown); return Result::kBad;
  }
  c.inc(kC_link_truncated);
  return Result::kBad;
}

bool IpAddr::is_unspecified() const {
  const unsigned n = family == 6 ? 16 : 4;
  for (unsigned i = 0; i < n; ++i)
    if (b[i] != 0) return false;
  return true;
}

std::string format_endpoint(const IpAddr& a, std::uint16_t port) {
  char buf[INET6_ADDRSTRLEN + 16];
  if (a.family == 6) {
    char txt[INET6_ADDRSTRLEN];
    ::inet_ntop(AF_INET6, a.b.data(), txt, sizeof txt);
    if (port == 0) return txt;
    std::snprintf(buf, sizeof buf, "[%s]:%u", txt, port);
  } else {
    if (port == 0)
      std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", a.b[0], a.b[1], a.b[2], a.b[3]);
    else
      std::snprintf(buf, sizeof buf, "%u.%u.%u.%u:%u", a.b[0], a.b[1], a.b[2], a.b[3], port);
  }
  return buf;
}

bool parse_ip(std::string_view text, IpAddr& out) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return false;
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = 0;
  out = IpAddr{};
  if (::inet_pton(AF_INET, buf, out.b.data()) == 1) {
    out.family = 4;
    return true;
  }
  if (::inet_pton(AF_INET6, buf, out.b.data()) == 1) {
    out.family = 6;
    // An IPv4-mapped address is the IPv4 endpoint it names (SDP from dual-stack hosts).
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (std::memcmp(out.b.data(), kMapped, 12) == 0) {
      std::memmove(out.b.data(), out.b.data() + 12, 4);
      std::memset(out.b.data() + 4, 0, 12);
      out.family = 4;
    }
    return true;
  }
  return false;
}

}  // namespace callrec::dataplane::decode
