// UDP and TCP. The UDP length is trusted only when it fits the IP payload (it is shorter when
// the IP layer was padded); a reassembled datagram is decoded here too.
#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::decode {

Result decode_l4(std::span<const std::byte> b, Packet& out, Counters& c, unsigned depth) {
  out.l4 = b;
  if (out.proto == 17) {
    if (b.size() < 8) {
      c.inc(kC_l4_bad);
      return Result::kBad;
    }
    const std::size_t len = load_be16(b.data() + 4);
    if (len < 8 || len > b.size()) {
      c.inc(kC_l4_bad);
      return Result::kBad;
    }
    out.sport = load_be16(b.data());
    out.dport = load_be16(b.data() + 2);
    out.payload = b.subspan(8, len - 8);
    c.inc(kC_udp);
    if (out.dport == 4789 && out.payload.size() >= 8 && (std::to_integer<unsigned>(out.payload[0]) & 0x08) != 0 &&
        depth < kMaxDepth)
      return decode_vxlan(out.payload, out, c, depth);
    return Result::kUdp;
  }
  if (out.proto == 6) {
    if (b.size() < 20) {
      c.inc(kC_l4_bad);
      return Result::kBad;
    }
    const std::size_t off = (std::to_integer<std::size_t>(b[12]) >> 4) * 4;
    if (off < 20 || off > b.size()) {
      c.inc(kC_l4_bad);
      return Result::kBad;
    }
    out.sport = load_be16(b.data());
    out.dport = load_be16(b.data() + 2);
    out.tcp_seq = load_be32(b.data() + 4);
    out.tcp_flags = std::to_integer<std::uint8_t>(b[13]);
    out.payload = b.subspan(off);
    c.inc(kC_tcp);
    return Result::kTcp;
  }
  c.inc(kC_l4_other);
  return Result::kOtherL4;
}

}  // namespace callrec::dataplane::decode
