#pragma once
// Frames for the span lane tests, built from byte arrays: Ethernet / IPv4 / UDP (or a fragment
// of it), and the endpoints they address.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::test {

using Bytes = std::vector<std::byte>;

inline decode::Endpoint ep4(std::uint32_t a, std::uint16_t port) {
  decode::Endpoint e;
  e.addr.family = 4;
  for (int i = 0; i < 4; ++i) e.addr.b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(a >> (24 - 8 * i));
  e.port = port;
  return e;
}

inline void put16(Bytes& b, std::size_t at, unsigned v) {
  b[at] = std::byte(v >> 8);
  b[at + 1] = std::byte(v & 0xFF);
}

/// Ethernet / IPv4 / UDP around `payload` (checksums 0: the lane does not verify them);
/// frag_offset/more: an IPv4 fragment (no UDP header when the offset is not 0: the payload is
/// the fragment's bytes).
inline Bytes udp_frame(std::uint32_t src, std::uint16_t sport, std::uint32_t dst, std::uint16_t dport,
                       const Bytes& payload, unsigned frag_offset = 0, bool more = false) {
  const std::size_t l4 = frag_offset == 0 ? 8 : 0;
  Bytes f(14 + 20 + l4 + payload.size());
  f[12] = std::byte{0x08};
  f[14] = std::byte{0x45};
  put16(f, 16, static_cast<unsigned>(20 + l4 + payload.size()));
  put16(f, 18, 0x1234);
  put16(f, 20, (more ? 0x2000u : 0u) | (frag_offset / 8));
  f[22] = std::byte{64};
  f[23] = std::byte{17};
  for (int i = 0; i < 4; ++i) {
    f[26 + static_cast<std::size_t>(i)] = std::byte((src >> (24 - 8 * i)) & 0xFF);
    f[30 + static_cast<std::size_t>(i)] = std::byte((dst >> (24 - 8 * i)) & 0xFF);
  }
  if (l4 != 0) {
    put16(f, 34, sport);
    put16(f, 36, dport);
    put16(f, 38, static_cast<unsigned>(8 + payload.size()));
  }
  std::copy(payload.begin(), payload.end(), f.begin() + static_cast<std::ptrdiff_t>(34 + l4));
  return f;
}

inline Bytes text(const std::string& s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

}  // namespace callrec::dataplane::test
