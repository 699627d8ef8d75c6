#pragma once
// The record file format (../shared/spec/record-format.md): a 76-byte header followed by
// RTP packets of one fixed length, back to back.
//
//   offset size field
//   0      64   codec      char[64], ASCII, NUL-padded ("PCMA" / "PCMU", case-insensitive)
//   64     4    rtpLen     int32, bytes per stored RTP packet, RTP header included
//   68     4    increment  int32, RTP timestamp step between stored packets (160 = 20 ms @ 8 kHz)
//   72     4    dataSize   uint32, bytes of RTP data after the header (multiple of rtpLen)
//
// Integers are little-endian on write; a reader also accepts a big-endian header when only
// that reading is plausible.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace callrec::fileio {

inline constexpr std::size_t kHeaderSize = 76;
inline constexpr std::size_t kCodecFieldSize = 64;
inline constexpr std::size_t kRtpHeaderMin = 12;
/// Largest rtpLen the appliance writes or accepts as plausible (a UDP datagram).
inline constexpr std::int32_t kMaxRtpLen = 65535;

enum class Codec : std::uint8_t { kPcmu, kPcma };

struct CodecInfo {
  Codec codec;
  std::string_view name;       ///< canonical name stored in the header ("PCMU")
  std::uint8_t payload_type;   ///< static RTP payload type (0, 8)
  std::uint32_t clock_rate;    ///< RTP clock, Hz
  std::uint8_t silence;        ///< encoded silence byte used to fill gaps (0xFF, 0xD5)
  std::uint32_t bytes_per_sample_num = 1;  ///< G.711: one byte per sample
};

/// Case-insensitive codec lookup by name ("pcma", "PCMU").
std::optional<Codec> codec_from_name(std::string_view name);
/// The RTP clock rate of an SDP encoding name that passive capture and SIPREC store in record
/// headers ("G722" 8000 per RFC 3551, "opus" 48000, "AMR-WB" 16000 ...); 0 when unknown.
/// G.711 names give 8000 too.
std::uint32_t rtp_clock_for_name(std::string_view name);
/// Codec for a static RTP payload type (0 -> PCMU, 8 -> PCMA).
std::optional<Codec> codec_from_payload_type(std::uint8_t pt);
const CodecInfo& codec_info(Codec c);

enum class ByteOrder : std::uint8_t { kLittle, kBig };

struct RecordHeader {
  std::string codec;            ///< as stored (without NUL padding)
  std::int32_t rtp_len = 0;
  std::int32_t increment = 0;
  std::uint32_t data_size = 0;
};

/// Serializes a header (little-endian). The codec name is truncated to 63 bytes + NUL.
std::array<std::byte, kHeaderSize> encode_header(const RecordHeader& h,
                                                 ByteOrder order = ByteOrder::kLittle);

/// Result of decoding the first 76 bytes of a file.
struct HeaderDecode {
  RecordHeader header;
  ByteOrder order = ByteOrder::kLittle;
  bool plausible = false;            ///< both rtpLen and increment in range, codec readable
  std::vector<std::string> problems; ///< human-readable reasons when !plausible
};

/// Decodes a header; picks big-endian only when little-endian is implausible and big-endian is.
HeaderDecode decode_header(std::span<const std::byte, kHeaderSize> bytes);

/// Byte offset of dataSize in the header (rewritten in place at every flush).
inline constexpr std::size_t kDataSizeOffset = 72;

/// Largest dataSize a file may reach for packets of rtp_len bytes (whole packets, <= 2^32-1).
constexpr std::uint64_t max_data_size(std::uint32_t rtp_len) {
  return rtp_len == 0 ? 0 : (0xFFFFFFFFull / rtp_len) * rtp_len;
}

/// The directory a device's recordings are filed in, under the storage (spec: "the server
/// files recordings by device"). Injective, so two devices never share a directory:
/// [A-Za-z0-9.-] are kept, ':' becomes '_' (a MAC reads 02_00_00_00_00_00), every other byte
/// (including '_' and '%') becomes %XX, and a leading '.' becomes %2E (never ".", ".." or a
/// hidden name). The empty device is "~none"; an escaped name over 120 bytes is cut to its
/// first 100 and "~" plus a 64-bit hash of the whole device is appended ('~' appears in no
/// other name, so these never collide with short ones).
std::string device_dir_name(std::string_view device);

/// The UTC creation time (unix ms) in a record file name "Record_<yyyymmddThhmmss.mmm>Z_...",
/// nullopt when the name is not of that form.
std::optional<std::int64_t> record_name_time_ms(std::string_view file_name);

}  // namespace callrec::fileio
