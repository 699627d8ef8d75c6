// IPv4 and IPv6 (extension headers walked, fragments reported for reassembly). An IP header
// whose total length is below the bytes present is trimmed (Ethernet padding); one above them
// (a capture's snap length, a lie) is rejected.
#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::decode {

namespace {

constexpr std::uint8_t kProtoIpip = 4, kProtoTcp = 6, kProtoUdp = 17, kProtoIpv6 = 41, kProtoGre = 47;

Result by_proto(std::span<const std::byte> l4, Packet& out, Counters& c, unsigned depth) {
  switch (out.proto) {
    case kProtoUdp:
    case kProtoTcp: return decode_l4(l4, out, c, depth);
    case kProtoGre: return decode_gre(l4, out, c, depth);
    case kProtoIpip:
      if (depth >= kMaxDepth) break;
      ++out.tunnels;
      return decode_ipv4(l4, out, c, depth + 1);
    case kProtoIpv6:
      if (depth >= kMaxDepth) break;
      ++out.tunnels;
      return decode_ipv6(l4, out, c, depth + 1);
    default: out.l4 = l4; c.inc(kC_l4_other); return Result::kOtherL4;
  }
  c.inc(kC_tunnel_too_deep);
  return Result::kBad;
}

}  // namespace

Result decode_ip(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  if (b.empty()) {
    c.inc(kC_ip_bad);
    return Result::kBad;
  }
  switch (std::to_integer<unsigned>(b[0]) >> 4) {
    case 4: return decode_ipv4(b, out, c, depth);
    case 6: return decode_ipv6(b, out, c, depth);
    default: c.inc(kC_ip_bad); return Result::kBad;
  }
}

Result decode_ipv4(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  if (b.size() < 20) {
    c.inc(kC_ip_bad);
    return Result::kBad;
  }
  const unsigned vihl = std::to_integer<unsigned>(b[0]);
  const std::size_t ihl = (vihl & 0x0F) * 4u;
  const std::size_t total = load_be16(b.data() + 2);
  if ((vihl >> 4) != 4 || ihl < 20 || total < ihl || total > b.size()) {
    c.inc(kC_ip_bad);
    return Result::kBad;
  }
  c.inc(kC_ipv4);
  b = b.first(total);
  out.src = IpAddr{};
  out.dst = IpAddr{};
  out.src.family = out.dst.family = 4;
  std::memcpy(out.src.b.data(), b.data() + 12, 4);
  std::memcpy(out.dst.b.data(), b.data() + 16, 4);
  out.proto = std::to_integer<std::uint8_t>(b[9]);
  const unsigned frag = load_be16(b.data() + 6);
  const std::span<const std::byte> l4 = b.subspan(ihl);
  if ((frag & 0x3FFF) != 0) {  // MF set or an offset: a fragment
    out.frag_id = load_be16(b.data() + 4);
    out.frag_offset = (frag & 0x1FFF) * 8u;
    out.frag_more = (frag & 0x2000) != 0;
    out.l4 = l4;
    c.inc(kC_ip_fragments);
    return Result::kFragment;
  }
  return by_proto(l4, out, c, depth);
}

Result decode_ipv6(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  if (b.size() < 40 || (std::to_integer<unsigned>(b[0]) >> 4) != 6) {
    c.inc(kC_ip_bad);
    return Result::kBad;
  }
  const std::size_t plen = load_be16(b.data() + 4);
  if (plen == 0 || 40 + plen > b.size()) {  // 0: a jumbogram (never on a mirror of calls)
    c.inc(kC_ip_bad);
    return Result::kBad;
  }
  c.inc(kC_ipv6);
  b = b.first(40 + plen);
  out.src = IpAddr{};
  out.dst = IpAddr{};
  out.src.family = out.dst.family = 6;
  std::memcpy(out.src.b.data(), b.data() + 8, 16);
  std::memcpy(out.dst.b.data(), b.data() + 24, 16);
  std::uint8_t next = std::to_integer<std::uint8_t>(b[6]);
  std::size_t off = 40;
  bool fragment = false;
  for (unsigned n = 0;; ++n) {
    if (n > 8) {
      c.inc(kC_ipv6_ext_bad);
      return Result::kBad;
    }
    if (next == 0 || next == 43 || next == 60 || next == 135 || next == 139 || next == 140) {
      // hop-by-hop, routing, destination options, mobility, HIP, shim6: (len + 1) * 8 bytes
      if (off + 8 > b.size()) break;
      const std::size_t len = (std::to_integer<std::size_t>(b[off + 1]) + 1) * 8;
      if (off + len > b.size()) break;
      next = std::to_integer<std::uint8_t>(b[off]);
      off += len;
    } else if (next == 51) {  // AH: (len + 2) * 4 bytes
      if (off + 8 > b.size()) break;
      const std::size_t len = (std::to_integer<std::size_t>(b[off + 1]) + 2) * 4;
      if (off + len > b.size()) break;
      next = std::to_integer<std::uint8_t>(b[off]);
      off += len;
    } else if (next == 44) {  // fragment header
      if (off + 8 > b.size()) break;
      const unsigned fo = load_be16(b.data() + off + 2);
      const std::uint8_t after = std::to_integer<std::uint8_t>(b[off]);
      out.frag_id = load_be32(b.data() + off + 4);
      out.frag_offset = fo & 0xFFF8u;
      out.frag_more = (fo & 1) != 0;
      off += 8;
      next = after;
      // An atomic fragment (offset 0, no more, RFC 6946) is a whole packet.
      fragment = out.frag_offset != 0 || out.frag_more;
      if (fragment) break;
    } else {
      out.proto = next;
      return by_proto(b.subspan(off), out, c, depth);
    }
  }
  if (fragment) {
    out.proto = next;
    out.l4 = b.subspan(off);
    c.inc(kC_ip_fragments);
    return Result::kFragment;
  }
  c.inc(kC_ipv6_ext_bad);
  return Result::kBad;
}

}  // namespace callrec::dataplane::decode
