#pragma once
// The Internet checksum (RFC 1071), one copy for everything that writes or checks one: the DPDK
// host stack (IPv4 header, ICMP, ICMPv6 with the IPv6 pseudo-header), the pcap generator (IPv4
// and UDP) and the tests. Header-only and constexpr, no DPDK: bytes in network order in, sums in
// host order out. A partial sum stays 32-bit and unfolded so that pieces (pseudo-header, header,
// payload) add up before the one fold at the end.
//
// Those writers hold frames as std::uint8_t; the byte-order forms for them at the end forward to
// fileio/rtp.hpp's std::byte ones, the project's one copy of big-endian loads and stores.
#include <cstddef>
#include <cstdint>

#include "fileio/rtp.hpp"

namespace callrec::dataplane::decode {

/// Adds [p, p+len) to `sum` as big-endian 16-bit words, an odd last byte padded with zero.
/// Not folded: good for 128 KiB in one sum (each word adds at most 0xFFFF).
constexpr std::uint32_t inet_sum(std::uint32_t sum, const std::uint8_t* p, std::size_t len) {
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += static_cast<std::uint32_t>((p[i] << 8) | p[i + 1]);
  if ((len & 1) != 0) sum += static_cast<std::uint32_t>(p[len - 1]) << 8;
  return sum;
}

/// The 16-bit one's-complement sum of a partial sum: the carries folded back in.
constexpr std::uint16_t inet_fold(std::uint32_t sum) {
  while ((sum >> 16) != 0) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

/// The checksum field for a partial sum taken with the field zeroed: the complement of its fold.
/// Over data that carries its checksum, 0 means valid.
constexpr std::uint16_t inet_checksum(std::uint32_t sum) { return static_cast<std::uint16_t>(~inet_fold(sum)); }

/// RFC 1071 checksum of [p, p+len).
constexpr std::uint16_t inet_checksum(const std::uint8_t* p, std::size_t len) {
  return inet_checksum(inet_sum(0, p, len));
}

/// Checksum of an upper-layer message of `len` bytes over IPv6 (RFC 8200 8.1 pseudo-header:
/// source, destination, length, next header; ICMPv6 per RFC 4443 2.3). 0 over a message that
/// carries its checksum means valid.
constexpr std::uint16_t inet6_checksum(const std::uint8_t* src, const std::uint8_t* dst, std::uint8_t next_header,
                                       const std::uint8_t* msg, std::uint32_t len) {
  std::uint32_t sum = inet_sum(0, src, 16);
  sum = inet_sum(sum, dst, 16);
  sum += (len >> 16) + (len & 0xFFFF) + next_header;
  return inet_checksum(inet_sum(sum, msg, len));
}

inline std::uint16_t load_be16(const std::uint8_t* p) { return fileio::load_be16(reinterpret_cast<const std::byte*>(p)); }
inline void store_be16(std::uint8_t* p, std::uint16_t v) { fileio::store_be16(reinterpret_cast<std::byte*>(p), v); }
inline void store_be32(std::uint8_t* p, std::uint32_t v) { fileio::store_be32(reinterpret_cast<std::byte*>(p), v); }

}  // namespace callrec::dataplane::decode
