#pragma once
// The software spread of a mirror over several lanes: a symmetric hash of the innermost IP
// address pair (tunnels decoded), so both directions of a flow reach the same lane, which
// pairs the two directions of a call and reassembles its TCP streams. SIP datagrams, IP
// fragments and frames without IP go to lane 0 (spread_lane()).
#include <cstdint>
#include <cstring>
#include <span>

#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane {

inline std::uint64_t spread_addr_hash(const decode::IpAddr& a) {
  std::uint64_t x0 = 0, x1 = 0;
  std::memcpy(&x0, a.b.data(), 8);
  std::memcpy(&x1, a.b.data() + 8, 8);
  if (a.family != 6) x0 &= 0xFFFFFFFFull, x1 = 0;
  std::uint64_t h = (x0 ^ (x1 * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 31);
}

/// Lane of a decoded packet among `lanes`: the same for (src, dst) and (dst, src).
inline unsigned spread_lane_of(const decode::IpAddr& src, const decode::IpAddr& dst, unsigned lanes) {
  std::uint64_t h = spread_addr_hash(src) + spread_addr_hash(dst);  // commutative
  h = (h ^ (h >> 29)) * 0x94D049BB133111EBull;
  h ^= h >> 32;
  return static_cast<unsigned>(((h & 0xFFFFFFFFull) * lanes) >> 32);
}

/// Lane of a frame of link type `link`. `scratch`: decode counters of the spread (not the
/// lanes'; the lane decodes the frame again and counts it there).
///
/// Two kinds go to lane 0 whatever their pair: SIP datagrams and IP fragments (a fragmented
/// datagram is most often a large INVITE). The tracker then gets the UDP signalling of every
/// dialog from one lane, in the order it came off the wire, where a B2BUA's two legs (two
/// address pairs) would otherwise reach it through two lanes, each a little behind or ahead.
/// Fragments carry no ports, so all of them (of any pair) go to lane 0 together.
inline unsigned spread_lane(std::uint32_t link, std::span<const std::byte> frame, unsigned lanes,
                            decode::Counters& scratch) {
  if (lanes <= 1) return 0;
  decode::Packet p;
  switch (decode::decode_frame(link, frame, p, scratch)) {
    case decode::Result::kUdp: {
      // RTP's first byte is 0x80-0xBF: no SIP message starts so; the full check otherwise.
      if (!p.payload.empty() && (std::to_integer<unsigned>(p.payload[0]) & 0xC0) != 0x80 &&
          decode::looks_like_sip({reinterpret_cast<const char*>(p.payload.data()), p.payload.size()}))
        return 0;
      return spread_lane_of(p.src, p.dst, lanes);
    }
    case decode::Result::kFragment: return 0;
    case decode::Result::kTcp:
    case decode::Result::kOtherL4: return spread_lane_of(p.src, p.dst, lanes);
    default: return 0;
  }
}

}  // namespace callrec::dataplane
