#pragma once
// Minimal RTP (RFC 3550) header view used by the assembler, the dataplane and the tools.
// Parsing never reads past the given span; a packet that is not RTP v2 yields nullopt.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

namespace callrec::fileio {

struct RtpView {
  std::uint8_t payload_type = 0;
  bool marker = false;
  bool padding = false;
  std::uint16_t sequence = 0;
  std::uint32_t timestamp = 0;
  std::uint32_t ssrc = 0;
  std::size_t header_len = 0;   ///< 12 + 4*CC + extension
  std::size_t payload_len = 0;  ///< bytes after the header (padding included)
};

inline std::uint16_t load_be16(const std::byte* p) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1]));
}
inline std::uint32_t load_be32(const std::byte* p) {
  return (std::to_integer<std::uint32_t>(p[0]) << 24) | (std::to_integer<std::uint32_t>(p[1]) << 16) |
         (std::to_integer<std::uint32_t>(p[2]) << 8) | std::to_integer<std::uint32_t>(p[3]);
}
inline void store_be16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v >> 8);
  p[1] = static_cast<std::byte>(v);
}
inline void store_be32(std::byte* p, std::uint32_t v) {
  p[0] = static_cast<std::byte>(v >> 24);
  p[1] = static_cast<std::byte>(v >> 16);
  p[2] = static_cast<std::byte>(v >> 8);
  p[3] = static_cast<std::byte>(v);
}

/// Parses an RTP header. Rejects version != 2, truncated CSRC list or extension.
inline std::optional<RtpView> parse_rtp(std::span<const std::byte> pkt) {
  if (pkt.size() < 12) return std::nullopt;
  const auto b0 = std::to_integer<unsigned>(pkt[0]);
  const auto b1 = std::to_integer<unsigned>(pkt[1]);
  if ((b0 >> 6) != 2) return std::nullopt;
  RtpView v;
  v.padding = (b0 & 0x20) != 0;
  const bool ext = (b0 & 0x10) != 0;
  const std::size_t cc = b0 & 0x0F;
  v.marker = (b1 & 0x80) != 0;
  v.payload_type = static_cast<std::uint8_t>(b1 & 0x7F);
  v.sequence = load_be16(pkt.data() + 2);
  v.timestamp = load_be32(pkt.data() + 4);
  v.ssrc = load_be32(pkt.data() + 8);
  std::size_t len = 12 + 4 * cc;
  if (pkt.size() < len) return std::nullopt;
  if (ext) {
    if (pkt.size() < len + 4) return std::nullopt;
    len += 4 + 4 * static_cast<std::size_t>(load_be16(pkt.data() + len + 2));
    if (pkt.size() < len) return std::nullopt;
  }
  v.header_len = len;
  v.payload_len = pkt.size() - len;
  return v;
}

/// The payload of an RTP packet: after the header (CSRCs, extension) and without RTP padding
/// (RFC 3550 5.1: with P set, the last octet counts the padding octets, itself included).
/// nullopt when the packet is not RTP v2 or its padding count is impossible.
inline std::optional<std::span<const std::byte>> rtp_payload(std::span<const std::byte> pkt) {
  const auto rtp = parse_rtp(pkt);
  if (!rtp) return std::nullopt;
  std::size_t len = rtp->payload_len;
  if (rtp->padding) {
    const auto pad = std::to_integer<std::size_t>(pkt.back());
    if (pad == 0 || pad > len) return std::nullopt;
    len -= pad;
  }
  return pkt.subspan(rtp->header_len, len);
}

/// Writes a plain 12-byte RTP header (no CSRC, no extension) into out[0..12).
inline void write_rtp_header(std::byte* out, std::uint8_t pt, bool marker, std::uint16_t seq,
                             std::uint32_t ts, std::uint32_t ssrc) {
  out[0] = std::byte{0x80};
  out[1] = static_cast<std::byte>((marker ? 0x80 : 0) | (pt & 0x7F));
  store_be16(out + 2, seq);
  store_be32(out + 4, ts);
  store_be32(out + 8, ssrc);
}

}  // namespace callrec::fileio
