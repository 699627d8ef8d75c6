// Remote-mirror encapsulations: GRE (RFC 2784/2890) carrying transparent Ethernet bridging
// (0x6558), ERSPAN type II (0x88BE) and type III (0x22EB), or IP; VXLAN (RFC 7348, UDP 4789).
#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::decode {

Result decode_gre(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  if (depth >= kMaxDepth) {
    c.inc(kC_tunnel_too_deep);
    return Result::kBad;
  }
  if (b.size() < 4) {
    c.inc(kC_tunnel_bad);
    return Result::kBad;
  }
  const unsigned flags = load_be16(b.data());
  const unsigned version = flags & 0x7;
  if (version != 0) {  // version 1 is PPTP's enhanced GRE: no mirror uses it
    c.inc(kC_tunnel_bad);
    return Result::kBad;
  }
  const std::uint16_t proto = load_be16(b.data() + 2);
  std::size_t hl = 4;
  if (flags & 0x8000) hl += 4;  // checksum + reserved1
  if (flags & 0x2000) hl += 4;  // key
  const bool seq = (flags & 0x1000) != 0;
  if (seq) hl += 4;
  if (flags & 0x4000) {  // routing present (RFC 1701): not used by mirrors
    c.inc(kC_tunnel_bad);
    return Result::kBad;
  }
  if (b.size() < hl) {
    c.inc(kC_tunnel_bad);
    return Result::kBad;
  }
  b = b.subspan(hl);
  ++out.tunnels;
  switch (proto) {
    case 0x6558:  // transparent Ethernet bridging
      c.inc(kC_tunnel_gre);
      return decode_ethernet(b, out, c, depth + 1);
    case 0x0800:
      c.inc(kC_tunnel_gre);
      return decode_ipv4(b, out, c, depth + 1);
    case 0x86DD:
      c.inc(kC_tunnel_gre);
      return decode_ipv6(b, out, c, depth + 1);
    case 0x88BE: {
      // ERSPAN: without the sequence bit it is type I (no ERSPAN header, Ethernet follows).
      c.inc(kC_tunnel_erspan);
      if (!seq) return decode_ethernet(b, out, c, depth + 1);
      // Type II: ver(4) vlan(12) cos/en/t(4) session(10) reserved(12) index(20): 8 bytes.
      if (b.size() < 8 || (std::to_integer<unsigned>(b[0]) >> 4) != 1) {
        c.inc(kC_tunnel_bad);
        return Result::kBad;
      }
      return decode_ethernet(b.subspan(8), out, c, depth + 1);
    }
    case 0x22EB: {
      // Type III: 12 bytes, then an 8-byte platform-specific subheader when O (bit 0 of the
      // last byte) is set.
      c.inc(kC_tunnel_erspan);
      if (b.size() < 12 || (std::to_integer<unsigned>(b[0]) >> 4) != 2) {
        c.inc(kC_tunnel_bad);
        return Result::kBad;
      }
      std::size_t eh = 12;
      if ((std::to_integer<unsigned>(b[11]) & 0x01) != 0) eh += 8;
      if (b.size() < eh) {
        c.inc(kC_tunnel_bad);
        return Result::kBad;
      }
      return decode_ethernet(b.subspan(eh), out, c, depth + 1);
    }
    default: c.inc(kC_tunnel_bad); return Result::kBad;
  }
}

Result decode_vxlan(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  if (depth >= kMaxDepth) {
    c.inc(kC_tunnel_too_deep);
    return Result::kBad;
  }
  // flags(1, I = 0x08) reserved(3) VNI(3) reserved(1)
  if (b.size() < 8 || (std::to_integer<unsigned>(b[0]) & 0x08) == 0) {
    c.inc(kC_tunnel_bad);
    return Result::kBad;
  }
  c.inc(kC_tunnel_vxlan);
  ++out.tunnels;
  out.sport = out.dport = 0;
  out.payload = {};  // the outer UDP payload: not the inner packet's (a fragment has none)
  return decode_ethernet(b.subspan(8), out, c, depth + 1);
}

}  // namespace callrec::dataplane::decode
